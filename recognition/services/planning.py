"""Planning a job: which recordings it runs on, how they are cut into chunks, and sending the chunks.

A job of at most ``JOB_PLAN_INLINE_MAX`` recordings is planned inside the request that submits it
(``services.jobs.job_submit``), so a person waiting on a one-recording job waits for no extra task.
A larger job is planned by tasks: the request counts its recordings (one ``COUNT``, no rows
loaded), saves the job with a ``plan`` (what the task must resolve, and its slice size) and sends
``workers.tasks.plan_job`` on commit; each task (:func:`job_plan`) reads the next ``JOB_PLAN_SLICE``
``(id, duration_s)`` pairs, writes their recording rows and chunks in bulk, sends the chunks through
one producer connection and sends the task of the next slice. The request's cost no longer grows with
the job, and no plan task holds the interactive worker for long.

Both paths cut chunks with the same function (:func:`chunk_groups`), and a slice ends on a chunk
boundary, so a planned job's chunks are those the inline path would have made.

Delivery is at least once: :func:`job_plan` locks the job row and does nothing once the plan's step
has moved past the task's (in the same transaction as the slice's chunks are written) or ``plan`` is
cleared, so a redelivered task makes no duplicates. Chunks written but never sent (the worker or the broker went away between the commit
and the publish) are sent by the reaper ``JOB_PLAN_LOST_AFTER_S`` after ``Job.planned_at`` (sooner
would race the task's own sending of thousands of chunks); a plan task lost before it ran is
sent again by the reaper after ``JOB_PLAN_LOST_AFTER_S`` (:func:`plans_resend`).
"""
from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Count, Max, Q
from django.utils import timezone

from recognition import jobkinds
from recognition.models import Batch, Job, JobChunk, Recording

logger = logging.getLogger(__name__)

#: rows read and written per round trip while planning
PAGE_SIZE = 5000

# A request (or the reaper) publishing chunks does not sit through the worker-side retry policy when
# the broker is down: chunks left unsent are sent by the reaper's next pass (JOB_UNSENT_GRACE_S).
QUICK_PUBLISH = {"max_retries": 1, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.5}

Row = tuple[int, float | None]  # (recording id, duration_s)


def batch_count(*, batch: Batch, owner_id: int) -> tuple[int, int, int | None]:
    """``(recordings, recordings of another owner, the highest membership row id)`` of a batch in one
    query, without loading a row. The last bounds the job to the members the batch had at submission,
    so recordings appended while it waits to be planned are not part of it."""
    counts = Batch.recordings.through.objects.filter(batch_id=batch.pk).aggregate(
        n=Count("id"), foreign=Count("id", filter=~Q(recording__owner_id=owner_id)), upto=Max("id"))
    return counts["n"], counts["foreign"], counts["upto"]


def batch_rows(*, batch_id: int, owner_id: int, upto: int | None) -> list[Row]:
    """The batch's recordings as ``(id, duration_s)``, by id, read in pages (no model instances)."""
    if upto is None:
        return []
    rows = (Batch.recordings.through.objects.filter(batch_id=batch_id, id__lte=upto, recording__owner_id=owner_id)
            .order_by("recording_id").values_list("recording_id", "recording__duration_s"))
    return list(rows.iterator(chunk_size=PAGE_SIZE))


def job_count(*, job_id: int, owner_id: int) -> tuple[int, int]:
    """``(recordings, recordings of another owner)`` of an earlier job, counted in one query (a re-run)."""
    counts = Job.recordings.through.objects.filter(job_id=job_id).aggregate(
        n=Count("id"), foreign=Count("id", filter=~Q(recording__owner_id=owner_id)))
    return counts["n"], counts["foreign"]


def job_rows(*, job_id: int, owner_id: int) -> list[Row]:
    """An earlier job's recordings that still exist as ``(id, duration_s)``, by id, read in pages."""
    rows = (Job.recordings.through.objects.filter(job_id=job_id, recording__owner_id=owner_id)
            .order_by("recording_id").values_list("recording_id", "recording__duration_s"))
    return list(rows.iterator(chunk_size=PAGE_SIZE))


def recording_rows(*, ids: list[int], owner_id: int) -> list[Row]:
    """``(id, duration_s)`` of the recordings ``ids`` that still exist, by id, ``PAGE_SIZE`` ids per query."""
    ids = sorted(set(ids))
    out: list[Row] = []
    for start in range(0, len(ids), PAGE_SIZE):
        out += Recording.objects.filter(pk__in=ids[start : start + PAGE_SIZE], owner_id=owner_id).order_by("id") \
            .values_list("id", "duration_s")
    return out


def chunking(kind: str, params: dict[str, Any], total: int) -> tuple[int | None, int]:
    """``(chunk_size, cap)`` for a job: a fixed count (the job's ``chunk_size``, else the kind's), one
    chunk for a train job, or for model kinds that say so, by audio seconds (``chunk_size`` ``None``)
    at most ``cap`` recordings a chunk."""
    spec = jobkinds.get(kind)
    chunk_size = jobkinds.chunk_size_for(kind, params)
    cap = settings.JOB_CHUNK_MAX_RECORDINGS
    if chunk_size is None:
        chunk_size = max(total, 1)
    elif spec.chunk_by_audio and "chunk_size" not in params and params.get("transcript") != "auto":
        cap, chunk_size = min(cap, chunk_size), None  # by audio, at most the kind's count
    return chunk_size, cap


def chunk_groups(rows: Iterable[Row], *, kind: str, chunk_size: int | None, cap: int) -> list[list[int]]:
    """Recording ids per chunk. A fixed ``chunk_size`` (a job's param; features jobs: their setting)
    cuts by count; kinds cut by audio without one are cut by audio seconds (the kind's
    ``chunk_audio_s``, else ``JOB_CHUNK_AUDIO_S``), at most ``cap`` recordings each (the kind's count,
    at most ``JOB_CHUNK_MAX_RECORDINGS``), so a chunk of two-hour files takes about as long as one of
    short clips. Train jobs arrive here as a single chunk."""
    rows = list(rows)
    if chunk_size:
        ids = [rid for rid, _ in rows]
        return [ids[start : start + chunk_size] for start in range(0, len(ids), chunk_size)]
    budget = jobkinds.get(kind).chunk_audio_s or settings.JOB_CHUNK_AUDIO_S
    groups: list[list[int]] = []
    current: list[int] = []
    seconds = 0.0
    for rid, duration in rows:
        length = duration or 0.0
        if current and (seconds + length > budget or len(current) >= cap):
            groups.append(current)
            current, seconds = [], 0.0
        current.append(rid)
        seconds += length
    if current:
        groups.append(current)
    return groups


def job_chunks_write(job: Job, rows: list[Row]) -> list[int]:
    """Write a saved job's recording rows and its chunks in bulk (the caller holds a transaction);
    the chunks' ids, by index. The job's ``total`` is set to ``len(rows)`` (the caller saves it)."""
    chunk_size, cap = chunking(job.kind, job.params, len(rows))
    groups = chunk_groups(rows, kind=job.kind, chunk_size=chunk_size, cap=cap)
    queue = jobkinds.queue_for(job.kind, len(rows), sum(duration or 0.0 for _, duration in rows))
    job.total = len(rows)
    return _rows_write(job, rows, groups, queue=queue, first=0)


def _rows_write(job: Job, rows: list[Row], groups: list[list[int]], *, queue: str, first: int) -> list[int]:
    """Write ``rows`` as the job's recording rows and ``groups`` as its chunks numbered from ``first``
    (one empty chunk when there is no group: it closes the job like any other); their ids, by index."""
    Job.recordings.through.objects.bulk_create(
        [Job.recordings.through(job_id=job.pk, recording_id=rid) for rid, _ in rows], batch_size=PAGE_SIZE,
        ignore_conflicts=True)
    seconds = {rid: duration or 0.0 for rid, duration in rows}
    chunks = [JobChunk(job=job, index=first + i, recording_ids=ids, queue=queue, audio_s=sum(seconds[r] for r in ids))
              for i, ids in enumerate(groups)] or [JobChunk(job=job, index=first, recording_ids=[], queue=queue)]
    JobChunk.objects.bulk_create(chunks, batch_size=PAGE_SIZE)
    return list(job.chunks.filter(index__gte=first).order_by("index").values_list("id", flat=True))


def chunk_queue(chunk: JobChunk) -> str:
    """The queue a chunk goes to: the one chosen at submit (older rows: by the job's size)."""
    return chunk.queue or jobkinds.queue_for(chunk.job.kind, chunk.job.total)


def chunks_send(job: Job, chunk_ids: list[int]) -> None:
    """Send chunks to their queues through one producer connection, then record their task ids
    and send time in one ``UPDATE``: a constant number of database queries however many chunks (was
    two round trips per chunk: 12,605 chunks took 71 s inside the submitting request). A chunk's task
    id is this send's random prefix and the chunk's id, so the database can write every one at once
    (a ``bulk_update`` of 2,500 task ids took 2.4 s)."""
    import uuid

    from django.db.models import CharField, Value
    from django.db.models.functions import Cast, Concat

    from accentsite.celery import app

    task = jobkinds.load_task(job.kind)
    now = timezone.now()
    # a chunk whose audio needs longer than the configured chunk limits gets its own (train jobs keep
    # their task's limits); the others run under the limits the worker is configured with
    scaled = jobkinds.get(job.kind).chunk_size is not None
    chunks = list(JobChunk.objects.filter(pk__in=chunk_ids).select_related("job").order_by("index"))
    sent: list[int] = []
    prefix = f"{uuid.uuid4().hex}-"
    try:
        with app.producer_or_acquire() as producer:
            for chunk in chunks:
                soft, hard = jobkinds.time_limits(job.kind, chunk.audio_s)
                longer = scaled and soft > settings.CELERY_TASK_SOFT_TIME_LIMIT
                limits = {"soft_time_limit": soft, "time_limit": hard} if longer else {}
                task.apply_async((chunk.pk,), task_id=f"{prefix}{chunk.pk}", queue=chunk_queue(chunk), producer=producer,
                                 retry_policy=QUICK_PUBLISH, **limits)
                sent.append(chunk.pk)
    except Exception:  # broker down past the publish retries: the job row is committed, so leave the
        # unsent chunks queued with no enqueued_at; job_requeue_stuck sends them at its next pass.
        logger.exception("could not enqueue %d of %d chunks; the reaper sends them", len(chunks) - len(sent), len(chunks),
                         extra={"job_id": job.pk})
    finally:
        if sent:
            JobChunk.objects.filter(pk__in=sent).update(
                task_id=Concat(Value(prefix), Cast("id", output_field=CharField())), enqueued_at=now)


def plan_send(job_id: int, step: int | None = None) -> bool:
    """Send the job's plan task (``jobkinds.PLAN_TASK`` on ``jobkinds.PLAN_QUEUE``) and note when in
    ``Job.plan``; ``False`` when the broker could not take it (the reaper sends it later). ``step``: the
    slice it is for (a task for a slice already planned does nothing); ``None``: whichever is next."""
    from kombu.utils.imports import symbol_by_name

    try:
        symbol_by_name(jobkinds.PLAN_TASK).apply_async((job_id,), {} if step is None else {"step": step},
                                                       queue=jobkinds.PLAN_QUEUE, retry_policy=QUICK_PUBLISH)
    except Exception:  # broker down: the job stays planning; plans_resend sends it at a later pass
        logger.exception("could not send the plan task; the reaper sends it", extra={"job_id": job_id})
        return False
    with transaction.atomic():
        job = Job.objects.select_for_update().filter(pk=job_id, plan__isnull=False).first()
        if job is not None:  # not planned yet (a fast worker may have planned it already)
            job.plan = {**job.plan, "sent_at": timezone.now().isoformat()}
            job.save(update_fields=["plan"])
    return True


def _slice_rows(job: Job, plan: dict[str, Any], after: int, limit: int) -> tuple[list[Row], bool]:
    """The next ``limit`` recordings of a planning job after recording id ``after``, as ``(id,
    duration_s)`` by id, and whether more come after them: one query (an index range from ``after``)."""
    if "recordings" in plan:
        ids = [i for i in plan["recordings"] if i > after]  # sorted at submit; bounded by the request that sent them
        return recording_rows(ids=ids[:limit], owner_id=job.owner_id), len(ids) > limit
    through = Job.recordings.through if "job" in plan else Batch.recordings.through
    rows = through.objects.filter(recording__owner_id=job.owner_id, recording_id__gt=after)
    if "job" in plan:  # a re-run: the recordings of the earlier job
        rows = rows.filter(job_id=plan["job"])
    else:
        rows = rows.filter(batch_id=job.batch_id, id__lte=plan.get("batch_upto") or 0)
    rows = list(rows.order_by("recording_id").values_list("recording_id", "recording__duration_s")[: limit + 1])
    return rows[:limit], len(rows) > limit


def job_plan(*, job_id: int, step: int | None = None) -> Job | None:
    """Plan the next slice of a planning job: resolve up to ``plan["slice"]`` (``JOB_PLAN_SLICE`` at
    submit) of its recordings, write their recording rows and chunks, send the chunks, and send the plan
    task of the next slice; the last slice clears ``plan``. One slice holds a worker for a second or two,
    so a 100,000-recording plan never holds the interactive worker for long.

    A slice ends on a chunk boundary (its last, still open chunk is left to the next slice), so a job
    planned in slices gets the chunks the inline path would have made. Idempotent: the job row is locked
    and ``plan``'s step and cursor move in the transaction that writes the slice, so a redelivered task
    (``step`` behind the plan's) does nothing; ``step=None`` (the reaper's resend) plans whichever slice is
    next. A job cancelled while planning gets no more chunks. Chunks of earlier slices run meanwhile: the
    job does not finish while ``plan`` is set (``services.jobs.chunk_finish``)."""
    with transaction.atomic():
        job = Job.objects.select_for_update().filter(pk=job_id).first()
        if job is None:
            logger.warning("job %s to plan no longer exists", job_id)
            return None
        plan = job.plan
        if plan is None or (step is not None and step != plan.get("step", 0)):  # planned already, or a stale slice
            return job
        if job.is_terminal:  # cancelled while it waited to be planned
            job.plan = None
            job.save(update_fields=["plan"])
            return job
        if not any(key in plan for key in ("recordings", "job", "batch_upto")) or ("batch_upto" in plan and job.batch_id is None):
            job.plan = None
            job.mark_finished(Job.Status.FAILED, error="The batch was deleted before the job was planned.")
            job.save(update_fields=["plan", "status", "error", "finished_at"])
            return job
        chunk_size, cap = chunking(job.kind, job.params, job.total)
        limit = max(int(plan.get("slice") or settings.JOB_PLAN_SLICE), chunk_size or cap, 1)
        first, done = int(plan.get("chunks", 0)), int(plan.get("rows", 0))
        rows, more = _slice_rows(job, plan, int(plan.get("after", 0)), limit)
        groups = chunk_groups(rows, kind=job.kind, chunk_size=chunk_size, cap=cap)
        if more and len(groups) > 1 and len(groups[-1]) < (chunk_size or cap):
            groups.pop()  # may still be open: the next slice's rows may join it
            rows = rows[: sum(len(g) for g in groups)]
        if not more and first == 0:  # the whole job in one slice: the inline path's queue rule exactly
            queue = jobkinds.queue_for(job.kind, len(rows), sum(d or 0.0 for _, d in rows))
        else:
            queue = jobkinds.queue_for(job.kind, max(job.total, done + len(rows)), sum(d or 0.0 for _, d in rows))
        chunk_ids = _rows_write(job, rows, groups, queue=queue, first=first) if rows or not more else []
        if more:
            job.plan = {**plan, "step": int(plan.get("step", 0)) + 1, "after": rows[-1][0] if rows else plan.get("after", 0),
                        "chunks": first + len(chunk_ids), "rows": done + len(rows)}
        else:
            job.plan, job.total = None, done + len(rows)
        job.planned_at = timezone.now()  # the reaper leaves its unsent chunks to chunks_send for a while
        job.save(update_fields=["plan", "total", "planned_at"])
        following = job.plan["step"] if more else None
        transaction.on_commit(lambda: chunks_send(job, chunk_ids))
        if more:
            transaction.on_commit(lambda: plan_send(job.pk, following))
    logger.info("job planned: %s, %d recordings in %d chunks so far%s", job.kind, done + len(rows), first + len(chunk_ids),
                "; next slice sent" if more else "", extra={"job_id": job.pk})
    return job


def plans_resend(*, now=None) -> list[int]:
    """The reaper's part for planning jobs: send again the plan task of a job still planning whose
    task was never sent (the broker was down at submit; after ``JOB_UNSENT_GRACE_S``) or was sent more
    than ``JOB_PLAN_LOST_AFTER_S`` ago (lost, or its worker died before committing). A resent task
    that finds the job planned does nothing. The ids of the jobs whose task was sent."""
    now = now or timezone.now()
    unsent = now - timedelta(seconds=settings.JOB_UNSENT_GRACE_S)
    lost = now - timedelta(seconds=settings.JOB_PLAN_LOST_AFTER_S)
    resent = []
    # a job planned in slices may be running already (its first slices' chunks) while later slices wait
    for job_id, plan, created_at in Job.objects.filter(status__in=[Job.Status.QUEUED, Job.Status.RUNNING],
                                                       plan__isnull=False).values_list("id", "plan", "created_at"):
        sent_at = plan.get("sent_at")
        if (created_at < unsent) if not sent_at else (datetime.fromisoformat(sent_at) < lost):
            if plan_send(job_id):
                resent.append(job_id)
    if resent:
        logger.warning("resent the plan tasks of jobs %s", resent)
    return resent
