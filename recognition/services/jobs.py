"""Jobs: submission, chunk lifecycle, per-recording results, finalisation, cancel and retry.

(Over 500 lines on purpose: every transition of a job and its chunks, the reaper's included, locks the
same rows in the same order; one module keeps that ordering in one place.)

Delivery is at least once (``acks_late``), so every write here is idempotent: a chunk that runs
twice skips recordings whose results are stored and replaces partial ones in one transaction;
job counters are recounted from result rows, never incremented.
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import transaction
from django.db.models import Count, F, Q
from django.db.models.functions import Greatest
from django.utils import timezone

from recognition import jobkinds
from recognition.errors import ServiceError, scrub_paths
from recognition.models import (
    Batch,
    Embedding,
    FeatureSet,
    Job,
    JobChunk,
    LanguageResult,
    Prediction,
    Recording,
    RecordingResult,
    Transcript,
)
from recognition.services import planning

if TYPE_CHECKING:
    from workers.pipeline.outcomes import ClassifyOutcome, EmbedOutcome
    from workers.pipeline.whisper_outcomes import LanguageOutcome, TranscribeOutcome

logger = logging.getLogger(__name__)

# A train job's ``name`` becomes part of a storage key and a model name: a slug, bounded.
MODEL_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")


def model_name_check(name: object, *, owner: AbstractBaseUser | None = None) -> str:
    """``name`` if it may name a model trained by ``owner``; else ``ServiceError`` (400).

    A slug (letters, digits, ``-``, ``_``; at most 64 characters, starting with a letter or digit),
    so it can never be a path; and not the name of a shipped model."""
    if not isinstance(name, str) or not MODEL_NAME_RE.fullmatch(name):
        raise ServiceError(
            "invalid_name", "'name' must be 1-64 letters, digits, '-' or '_', starting with a letter or digit "
                            f"(got {str(name)[:80]!r}).")
    from recognition.models import ModelVersion

    # names are per owner: only a shipped model's (public) name is refused; whether another user has
    # a private model of that name is neither checked nor told
    if owner is not None and ModelVersion.objects.filter(name=name, owner__isnull=True).exists():
        raise ServiceError("name_taken", f"'{name}' is the name of a shipped model; choose another.")
    return name


def validate_job_params(kind: str, params: dict[str, Any]) -> dict[str, Any]:
    """The kind's parameter declaration in ``recognition.jobkinds``, as a ``ServiceError``; NUL
    characters and over-deep JSON anywhere in it are refused first (``recognition.validation``)."""
    if isinstance(params, dict):
        from recognition.validation import json_check

        json_check(params, field="params")
    try:
        return jobkinds.validate_params(kind, params)
    except jobkinds.ParamsError as exc:
        raise ServiceError("invalid_params", exc.message) from exc


def classes_check(model_version: Any, classes: list[str] | None) -> None:
    """``classes`` apply only to a zero-shot model (``spoken-words``): a ``ServiceError`` for any other."""
    if classes is None or model_version is None:
        return
    from models.registry import FAMILIES

    family = FAMILIES.get(model_version.family)
    if family is None or not family.zero_shot:
        raise ServiceError("invalid_params", f"'classes' applies to zero-shot models such as spoken-words; "
                                             f"{model_version.name} answers its own classes {list(model_version.labels)}.")


def job_submit(
    *,
    owner: AbstractBaseUser,
    kind: str,
    batch: Batch | None = None,
    recordings: list[Recording] | None = None,
    params: dict[str, Any] | None = None,
    model: str | None = None,
    enqueue: bool = True,
    rerun_of: Job | None = None,
) -> Job:
    """Create a job over a batch or recordings, split it into chunks and enqueue them on commit.

    ``rerun_of``: over the recordings of that earlier job instead (still there, the owner's), counted and
    read by the database, never loaded as rows here (the admin's "Re-run"; ``batch`` then gives the labels).

    A job of more than ``JOB_PLAN_INLINE_MAX`` recordings is only counted and saved with a ``plan``:
    one task writes its chunks (``services.planning``), so this costs the same whatever its size.
    ``enqueue=False`` leaves the chunks for the caller to run in-process (``manage.py train --batch``):
    such a job is always planned here.
    """
    from recognition.services.models import model_resolve

    if kind not in Job.Kind.values:
        raise ServiceError("invalid_kind", f"Unknown job kind '{kind}'; use one of {Job.Kind.values}.")
    if kind not in jobkinds.KINDS:  # Job.Kind has a value the registry lacks: a declaration is missing
        raise ServiceError("invalid_kind", f"Job kind '{kind}' has no declaration in recognition.jobkinds.")
    spec = jobkinds.get(kind)
    params = dict(validate_job_params(kind, params if params is not None else {}))
    if spec.makes_model:  # the model's name is settled now, default or given, not when training ends
        from models.registry import default_train_family

        family = params.get("family") or default_train_family()
        params.setdefault("name", f"batch-{batch.pk}-{family}" if batch is not None
                          else f"recordings-{timezone.now():%Y%m%d-%H%M%S}-{family}")
        model_name_check(params["name"], owner=owner)
    if batch is not None and batch.owner_id != owner.pk:
        raise ServiceError("not_found", "No such batch.", status_code=404)
    # a batch alone: all its recordings, counted in one query (no row loaded); a batch and recordings:
    # those recordings, read with the batch's labels (retry-failed keeps its job's batch, so its report
    # keeps the batch's labels)
    upto = None
    whole_batch = batch is not None and recordings is None and rerun_of is None
    if rerun_of is not None:
        total, foreign = planning.job_count(job_id=rerun_of.pk, owner_id=owner.pk)
        if foreign or rerun_of.owner_id != owner.pk:
            raise ServiceError("not_found", "No such job.", status_code=404)
    elif whole_batch:
        total, foreign, upto = planning.batch_count(batch=batch, owner_id=owner.pk)
        if foreign:
            raise ServiceError("not_found", "No such recording.", status_code=404)
    else:
        targets = list(recordings or [])
        if batch is not None and len(set(batch.recordings.filter(pk__in=[r.pk for r in targets]).values_list("pk", flat=True))) \
                != len({r.pk for r in targets}):
            raise ServiceError("not_found", "No such recording in that batch.", status_code=404)
        if any(r.owner_id != owner.pk for r in targets):
            raise ServiceError("not_found", "No such recording.", status_code=404)
        total = len({r.pk for r in targets})
    if spec.needs_recordings and not total:
        raise ServiceError("no_recordings", "The job has no recordings to run on.")
    model_version = None
    if spec.model_task is not None:
        model_version = model_resolve(model, task=spec.model_task, user=owner)
        classes_check(model_version, params.get("classes"))
    elif model:
        raise ServiceError("invalid_params", f"'model' does not apply to {kind} jobs.")
    # a large job is planned by a task (services.planning): the request's cost does not grow with it
    inline = not enqueue or total <= settings.JOB_PLAN_INLINE_MAX
    with transaction.atomic():
        job = Job(owner=owner, kind=kind, batch=batch, params=params, model_version=model_version, total=total)
        if not inline:
            job.plan = ({"job": rerun_of.pk} if rerun_of is not None else {"batch_upto": upto} if whole_batch
                        else {"recordings": sorted({r.pk for r in targets})})
            job.plan["slice"] = settings.JOB_PLAN_SLICE  # recordings per plan task (planning.job_plan)
        job.full_clean()
        job.save()
        if inline:
            rows = (planning.job_rows(job_id=rerun_of.pk, owner_id=owner.pk) if rerun_of is not None
                    else planning.batch_rows(batch_id=batch.pk, owner_id=owner.pk, upto=upto) if whole_batch
                    else sorted({r.pk: r.duration_s for r in targets}.items()))
            chunk_ids = planning.job_chunks_write(job, rows)
            job.save(update_fields=["total"])
            if enqueue:
                transaction.on_commit(lambda: _enqueue_chunks(job, chunk_ids))
        else:
            transaction.on_commit(lambda: planning.plan_send(job.pk))
    logger.info("job submitted: %s over %d recordings (%s)", kind, total,
                f"{len(chunk_ids)} chunks" if inline else "planned by a task", extra={"job_id": job.pk})
    return job


# the chunks' queue and their sending live with planning (services.planning); the names stay here for
# the reaper and the recovery commands (tests replace _enqueue_chunks to keep jobs unsent)
_chunk_queue = planning.chunk_queue
_enqueue_chunks = planning.chunks_send


@dataclass
class ChunkContext:
    job: Job
    chunk: JobChunk
    recordings: list[Recording]


def chunk_start(*, chunk_id: int, worker: str = "", task_id: str = "") -> ChunkContext | None:
    """Claim a chunk for a worker; ``None`` when there is nothing to do (done, cancelled, gone).

    Recordings that vanished while the job was queued are recorded as failed with a reason;
    recordings whose result already succeeded (a redelivered chunk) are skipped. A chunk already
    delivered ``JOB_MAX_DELIVERIES`` times is given up instead (:func:`chunk_give_up`).
    """
    with transaction.atomic():
        chunk = JobChunk.objects.select_for_update().select_related("job").filter(pk=chunk_id).first()
        if chunk is None:
            logger.warning("chunk %s no longer exists", chunk_id)
            return None
        job = Job.objects.select_for_update().get(pk=chunk.job_id)
        if job.is_terminal or chunk.status in (JobChunk.Status.DONE, JobChunk.Status.CANCELLED):
            return None
        if chunk.attempts >= settings.JOB_MAX_DELIVERIES:
            give_up = True  # delivered JOB_MAX_DELIVERIES times and never finished: its worker keeps dying
        else:
            give_up = False
            if job.status == Job.Status.QUEUED:
                job.mark_running()
                job.save(update_fields=["status", "started_at"])
            # its Redis beat first: the reaper must never see a running chunk that neither beats yet nor
            # has its helper process started (a slow worker can take seconds to reach :func:`_heartbeating`)
            chunk_beat_now(chunk_id=chunk.pk, ttl_s=3 * settings.CHUNK_HEARTBEAT_S + 1)
            now = timezone.now()
            chunk.status = JobChunk.Status.RUNNING
            chunk.worker = worker
            chunk.task_id = task_id or chunk.task_id
            chunk.attempts += 1
            chunk.started_at = now
            chunk.heartbeat_at = now
            chunk.save(update_fields=["status", "worker", "task_id", "attempts", "started_at", "heartbeat_at"])
            found = {r.pk: r for r in Recording.objects.filter(pk__in=chunk.recording_ids)}
            finished = set(
                RecordingResult.objects.filter(job=job, recording_id__in=chunk.recording_ids, status=RecordingResult.Status.SUCCEEDED)
                .values_list("recording_id", flat=True)
            )
            for missing in [rid for rid in chunk.recording_ids if rid not in found]:
                if not RecordingResult.objects.filter(job=job, recording_key=missing).exists():
                    RecordingResult.objects.create(
                        job=job, recording=None, recording_key=missing, recording_ref=f"deleted recording #{missing}",
                        status=RecordingResult.Status.FAILED, error_code="deleted",
                        error_message="The recording was deleted after the job was queued.",
                    )
    if give_up:
        chunk_give_up(chunk_id=chunk_id)
        return None
    todo = [found[rid] for rid in chunk.recording_ids if rid in found and rid not in finished]
    return ChunkContext(job=job, chunk=chunk, recordings=todo)


def chunk_heartbeat(*, chunk_id: int) -> None:
    JobChunk.objects.filter(pk=chunk_id).update(heartbeat_at=timezone.now())


CHUNK_BEAT_PREFIX = "accentsite:chunk-beat:"


def chunk_beat_url() -> str:
    """The Redis that carries chunk beats: the broker the Celery app talks to."""
    from accentsite.celery import app

    return app.conf.broker_url or settings.CELERY_BROKER_URL


def chunk_beat_key(chunk_id: int) -> str:
    return f"{CHUNK_BEAT_PREFIX}{chunk_id}"


def chunk_beat_now(*, chunk_id: int, ttl_s: float) -> None:
    """Set a chunk's Redis beat key at once (the helper process keeps it alive from then on): a
    chunk is never without a beat while its helper starts. A broker blip is ignored: the helper and
    the database heartbeat follow."""
    from recognition.broker import broker_redis

    try:
        broker_redis(chunk_beat_url()).set(chunk_beat_key(chunk_id), "start", ex=max(2, int(ttl_s)))
    except Exception as exc:  # noqa: BLE001 - never fail a chunk for its heartbeat
        logger.warning("chunk beat key not set: %s", exc)


def chunks_beating(chunk_ids: list[int]) -> set[int]:
    """Chunks whose worker process still beats (``workers.chunkbeat``); empty when Redis cannot be asked."""
    if not chunk_ids:
        return set()
    from recognition.broker import broker_redis

    try:
        client = broker_redis(chunk_beat_url())
        pipe = client.pipeline()
        for chunk_id in chunk_ids:
            pipe.exists(chunk_beat_key(chunk_id))
        return {cid for cid, alive in zip(chunk_ids, pipe.execute(), strict=True) if alive}
    except Exception:  # broker down: fall back to the database heartbeat alone
        return set()


WORKER_LOST = "worker_lost"


def chunk_give_up(*, chunk_id: int) -> Job | None:
    """A chunk delivered ``JOB_MAX_DELIVERIES`` times without finishing (its worker died each time,
    e.g. a file that crashes the decoder or exhausts memory): its remaining recordings fail with
    ``worker_lost``, the chunk closes ``failed`` and the job finishes if nothing else is open.
    A train job fails with the reason."""
    message = (f"The work was started {settings.JOB_MAX_DELIVERIES} times and its worker was lost each time "
               "(killed, out of memory or crashed); not retried again.")
    with transaction.atomic():
        chunk = JobChunk.objects.select_for_update().filter(pk=chunk_id).first()
        if chunk is None:
            return None
        job = Job.objects.select_for_update().get(pk=chunk.job_id)
        if chunk.status in (JobChunk.Status.DONE, JobChunk.Status.CANCELLED, JobChunk.Status.FAILED) or job.is_terminal:
            return job
        if jobkinds.get(job.kind).makes_model:  # fails as a whole
            if job.status == Job.Status.QUEUED:
                job.mark_running()
            job.mark_finished(Job.Status.FAILED, error=message)
            job.save()
            job.chunks.update(status=JobChunk.Status.FAILED, error=WORKER_LOST, finished_at=timezone.now())
            logger.error("train job gave up after %d deliveries", chunk.attempts, extra={"job_id": job.pk})
            return job
        stored = set(RecordingResult.objects.filter(job=job, recording_id__in=chunk.recording_ids)
                     .values_list("recording_id", flat=True))
        for rec in Recording.objects.filter(pk__in=chunk.recording_ids).exclude(pk__in=stored):
            _replace_result(job, rec, status=RecordingResult.Status.FAILED, error_code=WORKER_LOST, error_message=message)
        chunk.status = JobChunk.Status.FAILED
        chunk.error = WORKER_LOST
        chunk.finished_at = timezone.now()
        chunk.save(update_fields=["status", "error", "finished_at"])
        _recount(job)
        job.save(update_fields=["done", "failed"])
        open_chunks = job.chunks.filter(status__in=[JobChunk.Status.QUEUED, JobChunk.Status.RUNNING]).exists()
    logger.error("chunk %s gave up after %d deliveries", chunk_id, chunk.attempts, extra={"job_id": job.pk})
    if not open_chunks and not job.is_terminal and job.plan is None:  # a job still planning has chunks to come
        return job_finalize(job_id=job.pk)
    return job


def chunk_partial(*, chunk_id: int, recording_id: int) -> dict | None:
    """What an interrupted run of this chunk saved of one long recording (``None``: nothing)."""
    partial = JobChunk.objects.filter(pk=chunk_id).values_list("partial", flat=True).first() or {}
    return partial.get(str(recording_id))


def chunk_partial_save(*, chunk_id: int, recording_id: int, state: dict | None) -> None:
    """Save (or, with ``None``, forget) the pieces of one long recording done so far."""
    with transaction.atomic():
        chunk = JobChunk.objects.select_for_update().filter(pk=chunk_id).first()
        if chunk is None:
            return
        partial = dict(chunk.partial or {})
        if state is None:
            partial.pop(str(recording_id), None)
        else:
            partial[str(recording_id)] = state
        JobChunk.objects.filter(pk=chunk_id).update(partial=partial)


def job_is_cancelled(*, job_id: int) -> bool:
    return Job.objects.filter(pk=job_id, status=Job.Status.CANCELLED).exists()


def _replace_result(job: Job, recording: Recording, **fields: Any) -> RecordingResult:
    """Replace the recording's result in this job and move the job's progress counters with it,
    so progress moves per recording, not per chunk. Callers hold a transaction; the counters move
    by the difference the replacement makes (a redelivered recording does not count twice), and
    ``chunk_finish`` still recounts them from the rows."""
    old = list(RecordingResult.objects.filter(job=job, recording=recording).values_list("status", flat=True))
    RecordingResult.objects.filter(job=job, recording=recording).delete()
    result = RecordingResult.objects.create(
        job=job, recording=recording, recording_key=recording.pk, recording_ref=recording.original_filename, **fields
    )
    done = (result.status == RecordingResult.Status.SUCCEEDED) - old.count(RecordingResult.Status.SUCCEEDED)
    failed = (result.status == RecordingResult.Status.FAILED) - old.count(RecordingResult.Status.FAILED)
    if done or failed:
        Job.objects.filter(pk=job.pk).update(done=Greatest(F("done") + done, 0), failed=Greatest(F("failed") + failed, 0))
    return result


def result_fail(*, job: Job, recording: Recording, code: str, message: str, timings: dict | None = None) -> RecordingResult:
    """Record that one recording failed in this job, with a reason a person can act on (server paths
    in it, e.g. from an exception's text, are replaced by ``<path>``)."""
    with transaction.atomic():
        return _replace_result(
            job, recording, status=RecordingResult.Status.FAILED, error_code=code[:50], error_message=scrub_paths(message),
            timings=timings or {}
        )


def result_store_features(
    *, job: Job, recording: Recording, features: dict[str, Any], npz: bytes, timings: dict
) -> RecordingResult:
    """Store a recording's features: one .npz of frame arrays in storage, one row per extractor.

    ``features`` maps extractor name to ``{"version", "config", "summary", "array_names"}``.
    """
    key = f"features/job-{job.pk}/{recording.uuid.hex}.npz"
    if default_storage.exists(key):
        default_storage.delete(key)
    key = default_storage.save(key, ContentFile(npz))
    try:
        with transaction.atomic():
            result = _replace_result(job, recording, status=RecordingResult.Status.SUCCEEDED, timings=timings)
            FeatureSet.objects.bulk_create(
                FeatureSet(
                    result=result, extractor=name, extractor_version=f["version"], config=f["config"],
                    summary=f["summary"], arrays=key, array_names=f["array_names"],
                )
                for name, f in features.items()
            )
    except Exception:
        default_storage.delete(key)
        raise
    return result


def result_store_prediction(*, job: Job, recording: Recording, outcome: ClassifyOutcome, timings: dict,
                            transcript: TranscribeOutcome | dict | None = None, transcript_model: dict | None = None) -> RecordingResult:
    """Store a prediction: the row's fields are ``outcome.api_dict()``, the same keys ``/predict``
    answers with. ``transcript`` (with ``transcript_model``) is the Whisper transcript a
    ``"transcript": "auto"`` job made for this recording and fed to the reading model."""
    mv = job.model_version
    fields = outcome.api_dict()
    fields["predicted_class"] = fields["predicted_class"] or ""
    with transaction.atomic():
        result = _replace_result(job, recording, status=RecordingResult.Status.SUCCEEDED, timings=timings)
        Prediction.objects.create(result=result, model_version=mv, checkpoint_sha256=mv.sha256, **fields)
        if transcript is not None and transcript_model is not None:
            _transcript_row(result, transcript, transcript_model).save()
    return result


def result_store_language(*, job: Job, recording: Recording, outcome: LanguageOutcome | dict, model: dict,
                          timings: dict) -> RecordingResult:
    """Store a recording's language identification (``outcome``: a ``LanguageOutcome``, or the dict
    ``identify_languages`` returns; ``model`` is the engine's ``describe()``)."""
    from workers.pipeline.whisper_outcomes import LanguageOutcome

    out = LanguageOutcome.from_dict(outcome)
    with transaction.atomic():
        result = _replace_result(job, recording, status=RecordingResult.Status.SUCCEEDED, timings=timings)
        LanguageResult.objects.create(
            result=result, outcome=out.outcome, language=out.language or "", probability=out.probability,
            scored=out.scored or "", min_probability=out.min_probability, scan_s=out.scan_s, shares=out.shares or {},
            mean_probabilities=out.mean_probabilities or {}, windows=out.windows or [], languages=out.languages,
            window_s=out.window_s, model_name=model["model"], model_sha256=model["model_sha256"],
        )
    return result


def _transcript_row(result: RecordingResult, transcript: TranscribeOutcome | dict, model: dict) -> Transcript:
    from workers.pipeline.whisper_outcomes import TranscribeOutcome

    heard = TranscribeOutcome.from_dict(transcript)
    return Transcript(
        result=result, text=heard.text or "", language=heard.language or "", language_probability=heard.language_probability,
        segments=heard.segments or [], params=heard.params or {}, model_name=model["model"], model_sha256=model["model_sha256"],
    )


def result_store_transcript(*, job: Job, recording: Recording, transcript: TranscribeOutcome | dict, model: dict,
                            timings: dict) -> RecordingResult:
    """Store what Whisper heard in a recording (``transcript``: a ``TranscribeOutcome``, or the dict
    ``whisper_asr.transcribe`` returns)."""
    with transaction.atomic():
        result = _replace_result(job, recording, status=RecordingResult.Status.SUCCEEDED, timings=timings)
        _transcript_row(result, transcript, model).save()
    return result


def result_store_embedding(*, job: Job, recording: Recording, outcome: EmbedOutcome, timings: dict) -> RecordingResult:
    """Store an embedding (``outcome.vector``, and ``outcome.windows`` when per-window vectors were asked for)."""
    mv = job.model_version
    vector = outcome.vector
    if vector is None:  # embed_batch gives no vector only for an empty signal, which decoding refuses
        raise ValueError("an empty recording has no embedding")
    with transaction.atomic():
        result = _replace_result(job, recording, status=RecordingResult.Status.SUCCEEDED, timings=timings)
        Embedding.objects.create(
            result=result, recording=recording, model_version=mv, checkpoint_sha256=mv.sha256,
            dim=len(vector), vector=[float(v) for v in vector], windows=outcome.windows or [],
        )
    return result


def _recount(job: Job) -> None:
    counts = job.results.aggregate(
        done=Count("id", filter=Q(status=RecordingResult.Status.SUCCEEDED)),
        failed=Count("id", filter=Q(status=RecordingResult.Status.FAILED)),
    )
    job.done, job.failed = counts["done"], counts["failed"]


def chunk_finish(*, chunk_id: int, timings: dict[str, float], error: str = "") -> Job | None:
    """Close a chunk, add its stage timings to the job, recount progress; finalise the last one."""
    with transaction.atomic():
        chunk = JobChunk.objects.select_for_update().filter(pk=chunk_id).first()
        if chunk is None:
            return None
        job = Job.objects.select_for_update().get(pk=chunk.job_id)
        if chunk.status != JobChunk.Status.DONE:
            chunk.status = JobChunk.Status.FAILED if error else JobChunk.Status.DONE
            chunk.error = error
            chunk.timings = {k: round(v, 4) for k, v in timings.items()}
            chunk.finished_at = timezone.now()
            chunk.save(update_fields=["status", "error", "timings", "finished_at"])
            for stage, seconds in timings.items():
                job.timings[stage] = round(job.timings.get(stage, 0.0) + seconds, 4)
        _recount(job)
        job.save(update_fields=["done", "failed", "timings"])
        open_chunks = job.chunks.filter(status__in=[JobChunk.Status.QUEUED, JobChunk.Status.RUNNING]).exists()
    if not open_chunks and not job.is_terminal and job.plan is None:  # a job still planning has chunks to come
        return job_finalize(job_id=job.pk)
    return job


def job_finalize(*, job_id: int) -> Job:
    """Close a job whose chunks are all done: succeeded unless every recording failed.

    A job of a kind that ``evaluates`` (classify), over recordings with true labels, ends by computing
    the evaluation report.
    """
    report = None
    job = Job.objects.get(pk=job_id)
    if jobkinds.get(job.kind).evaluates and not job.is_terminal:
        from recognition.services.reports import classify_report

        report = classify_report(job=job)
    with transaction.atomic():
        job = Job.objects.select_for_update().get(pk=job_id)
        if job.is_terminal:
            return job
        _recount(job)
        if job.status == Job.Status.QUEUED:
            job.mark_running()
        if job.total and job.failed == job.total:
            job.mark_finished(Job.Status.FAILED, error=f"All {job.total} recordings failed; see the per-recording errors.")
        else:
            job.mark_finished(Job.Status.SUCCEEDED)
        job.report = report
        job.save()
    logger.info("job %s %s: %d done, %d failed", job.pk, job.status, job.done, job.failed, extra={"job_id": job.pk})
    return job


def job_cancel(*, job: Job) -> Job:
    """Stop a job: queued chunks never start, running ones stop between recordings, results stay."""
    with transaction.atomic():
        job = Job.objects.select_for_update().get(pk=job.pk)
        if job.is_terminal:
            raise ServiceError("not_cancellable", f"The job already {job.status}.", status_code=409)
        job.mark_finished(Job.Status.CANCELLED, error="Cancelled by request.")
        _recount(job)
        job.save()
        job.chunks.filter(status=JobChunk.Status.QUEUED).update(status=JobChunk.Status.CANCELLED, finished_at=timezone.now())
    _revoke_chunks(job)
    return job


def _revoke_chunks(job: Job) -> None:
    from accentsite.celery import app

    for task_id in job.chunks.exclude(task_id="").values_list("task_id", flat=True):
        try:
            app.control.revoke(task_id)
        except Exception:  # the broker being down must not make cancel fail; chunks check status too
            logger.warning("could not revoke task %s", task_id, extra={"job_id": job.pk})


def job_rerun(*, job: Job) -> Job:
    """A new job of the same kind, model, params and batch over the recordings of ``job`` (those still
    there): counted and read by the database, so the request costs the same for 10 or 100,000."""
    model = f"{job.model_version.name}@{job.model_version.version}" if job.model_version else None
    return job_submit(owner=job.owner, kind=job.kind, batch=job.batch, rerun_of=job, params=dict(job.params), model=model)


def job_retry_failed(*, job: Job) -> Job:
    """A new job of the same kind, model and params over only the recordings that failed."""
    if not job.is_terminal:
        raise ServiceError("not_finished", "Retry the failed recordings once the job has finished.", status_code=409)
    failed = list(
        Recording.objects.filter(results__job=job, results__status=RecordingResult.Status.FAILED).order_by("id")
    )
    if not failed:
        raise ServiceError("nothing_failed", "No recording of this job failed.", status_code=409)
    model = f"{job.model_version.name}@{job.model_version.version}" if job.model_version else None
    return job_submit(owner=job.owner, kind=job.kind, batch=job.batch, recordings=failed, params=dict(job.params), model=model)


def _empty_queues() -> set[str]:
    """Queues with no message waiting in the broker (empty set when the broker cannot be asked)."""
    from recognition.broker import queue_depths

    try:
        return {queue for queue, depth in queue_depths().items() if depth == 0}
    except Exception:  # broker down: no queue is known to be empty, so nothing waiting is resent
        return set()


def job_requeue_stuck(*, older_than: timedelta = timedelta(minutes=30),
                      queued_older_than: timedelta | None = None) -> list[int]:
    """Requeue chunks of active jobs that went silent for ``older_than``:

    - running with no heartbeat (its worker died or hangs);
    - never sent (the broker was down when the job was submitted);
    - sent long ago but its queue is now empty (the message was lost, e.g. a broker restarted
      without persistence). A chunk merely waiting behind a long queue is left alone, so the
      reaper does not pile duplicates onto a busy queue.

    Idempotent: a chunk that was in fact still running only skips recordings already stored.
    Every running chunk heartbeats from a thread while it works (training included), so silence
    means its worker is gone. ``queued_older_than`` (default ``older_than``) is the limit for
    queued chunks. A running chunk already delivered ``JOB_MAX_DELIVERIES`` times is not sent
    again: :func:`chunk_give_up` fails its remaining recordings with ``worker_lost``.
    """
    now = timezone.now()
    limit = now - older_than
    queued_limit = now - (queued_older_than if queued_older_than is not None else older_than)
    # never sent (the broker was down at submit): nothing can be waiting for them, so no long wait
    unsent_limit = now - min(timedelta(seconds=settings.JOB_UNSENT_GRACE_S), now - queued_limit)
    # a planned job's chunks are sent by its plan task after it commits (25 s for 12,500 chunks): not
    # resent while that may still be going on
    planned_limit = now - min(timedelta(seconds=settings.JOB_PLAN_LOST_AFTER_S), now - queued_limit)
    stuck = JobChunk.objects.filter(job__status__in=[Job.Status.RUNNING, Job.Status.QUEUED]).filter(
        Q(status=JobChunk.Status.RUNNING, heartbeat_at__lt=limit)
        | Q(status=JobChunk.Status.QUEUED, enqueued_at__lt=queued_limit)
        | (Q(status=JobChunk.Status.QUEUED, enqueued_at__isnull=True, job__created_at__lt=unsent_limit)
           & (Q(job__planned_at__isnull=True) | Q(job__planned_at__lt=planned_limit)))
    )
    empty = None
    requeued: dict[int, list[int]] = {}
    candidates = list(stuck.select_related("job"))
    alive = chunks_beating([c.pk for c in candidates if c.status == JobChunk.Status.RUNNING])
    for chunk in candidates:
        if chunk.pk in alive:  # its database beat is late (C code holding the GIL), but its worker lives
            continue
        if chunk.status == JobChunk.Status.RUNNING and chunk.attempts >= settings.JOB_MAX_DELIVERIES:
            chunk_give_up(chunk_id=chunk.pk)
            continue
        if chunk.status == JobChunk.Status.QUEUED and chunk.enqueued_at is not None:
            empty = _empty_queues() if empty is None else empty
            if _chunk_queue(chunk) not in empty:
                continue
        # compare and set: a chunk that beat, finished or was claimed since it was read is left alone
        if not JobChunk.objects.filter(pk=chunk.pk, status=chunk.status, heartbeat_at=chunk.heartbeat_at,
                                       attempts=chunk.attempts, job__status__in=[Job.Status.RUNNING, Job.Status.QUEUED]
                                       ).update(status=JobChunk.Status.QUEUED, error="requeued: no heartbeat"):
            continue
        requeued.setdefault(chunk.job_id, []).append(chunk.pk)
    for job_id, chunk_ids in requeued.items():
        job = Job.objects.get(pk=job_id)
        logger.warning("requeued %d stuck chunks", len(chunk_ids), extra={"job_id": job_id})
        _enqueue_chunks(job, chunk_ids)
    return [cid for ids in requeued.values() for cid in ids]
