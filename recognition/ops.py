"""Operations: the worker fleet, queue depths, stuck chunks, storage housekeeping and manual recovery.

(Over 500 lines on purpose: fleet views, the reaper and the recovery commands share the same
Redis and chunk-state helpers; split, each half would import the other's privates.)

Two sides meet in Redis (the broker):

* Every worker process writes what it is under ``accentsite:worker:<name>`` every
  ``WORKER_HEARTBEAT_S`` seconds with a TTL of three beats (``worker_heartbeat_start``, connected
  to Celery's ``worker_ready`` in recognition/worker_signals.py): host, pid, pool, concurrency, queues, the
  device it runs models on (CUDA device name and memory, or ``cpu``) and, for solo pools, the task
  in hand. A solo worker busy with a chunk does not answer ``inspect()`` broadcasts, so the
  heartbeat is how the admin page and ``/healthz`` still see it.
* The web side reads it beside ``app.control.inspect()`` (``workers_overview``) and the queue
  lengths (``queue_depths``).

Writes (``job_requeue``, ``queue_purge``, ``chunks_reap``, ``storage_clean_orphans``) are services:
keyword-only, logged, and idempotent where delivery may repeat them.
"""
from __future__ import annotations

import json
import logging
import os
import platform
import socket
import threading
import time
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.core.files.storage import default_storage
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from recognition import jobkinds
from recognition.broker import (  # noqa: F401 - the broker primitives, re-exported for ops callers
    COUNTERS_KEY,
    QUEUES,
    broker_connection,
    broker_redis,
    counter_incr,
    counters,
    queue_depths,
    unacked_count,
)
from recognition.errors import ServiceError
from recognition.models import FeatureSet, Job, JobChunk, Recording

logger = logging.getLogger(__name__)

WORKER_KEY_PREFIX = "accentsite:worker:"


# --- The worker side: heartbeat with device and task in hand -----------------------------------

@dataclass
class _Heartbeat:
    hostname: str
    consumer: Any
    solo: bool
    started_at: float = field(default_factory=time.time)
    device: dict = field(default_factory=dict)
    current: dict | None = None
    stop: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None


_heartbeat: _Heartbeat | None = None


def device_info(*, solo: bool) -> dict:
    """Where this worker runs models: CUDA device name and memory, or ``cpu``.

    A prefork parent must not initialise CUDA before it forks children (ENVIRONMENT.md), so it only
    counts GPUs through NVML (``torch.cuda.device_count`` does not create a context) and reports
    the configured device; a solo worker is the process that runs the models and asks CUDA itself.
    """
    from workers import runtime

    wanted = settings.WORKER_DEVICE
    info: dict[str, Any] = {"device": wanted, "torch_threads": int(os.environ.get("WORKER_TORCH_THREADS") or 0) or None}
    try:
        import torch
    except ImportError:
        return {**info, "device": "cpu", "device_name": platform.processor() or "cpu"}
    if not solo:
        gpus = torch.cuda.device_count()
        info["gpus"] = gpus
        if wanted == "auto":
            info["device"] = "cuda (in each child)" if gpus else "cpu"
    else:
        info["device"] = runtime.device()
        info["torch_threads"] = torch.get_num_threads()  # set by worker_process_init; solo pools run models here
    if info["device"].startswith("cuda") and solo:
        index = torch.device(info["device"]).index or 0
        props = torch.cuda.get_device_properties(index)
        free, total = torch.cuda.mem_get_info(index)
        info.update(device_name=props.name, memory_total_mb=total // 2**20, memory_free_mb=free // 2**20,
                    torch_threads=torch.get_num_threads())
    elif not info["device"].startswith("cuda"):
        info.update(device_name=_cpu_name(), cpu_cores=len(os.sched_getaffinity(0)))
    return info


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "cpu"


def _worker_record(hb: _Heartbeat) -> dict:
    consumer = hb.consumer
    try:
        queues = sorted(q.name for q in consumer.task_consumer.queues)
    except Exception:  # the consumer is restarting (broker reconnect)
        queues = []
    pool = getattr(consumer, "pool", None)
    record = {
        "name": hb.hostname, "host": socket.gethostname(), "pid": os.getpid(), "queues": queues,
        "pool": type(pool).__module__.rsplit(".", 1)[-1] if pool is not None else "",
        "concurrency": 1 if hb.solo else getattr(getattr(consumer, "controller", None), "concurrency", None),
        "started_at": hb.started_at, "heartbeat_at": time.time(), **hb.device,
        "current": hb.current,
    }
    if hb.solo and hb.device.get("device", "").startswith("cuda"):
        try:
            import torch

            index = torch.device(hb.device["device"]).index or 0
            free, _ = torch.cuda.mem_get_info(index)
            record["memory_free_mb"] = free // 2**20
        except Exception:
            pass
    return record


def _beat_once(client, hb: _Heartbeat) -> None:
    ttl = max(3 * settings.WORKER_HEARTBEAT_S, 5)
    client.set(WORKER_KEY_PREFIX + hb.hostname, json.dumps(_worker_record(hb), default=str), ex=ttl)


def worker_heartbeat_start(*, consumer: Any) -> None:
    """Start this worker's heartbeat thread (``worker_ready``); writes one beat before returning."""
    global _heartbeat
    solo = type(getattr(consumer, "pool", None)).__module__.endswith((".solo", ".threads"))
    hb = _Heartbeat(hostname=consumer.hostname, consumer=consumer, solo=solo)
    try:
        hb.device = device_info(solo=solo)
    except Exception as exc:  # a broken driver must not keep the worker from starting
        hb.device = {"device": "unknown", "device_error": f"{type(exc).__name__}: {exc}"}
    _heartbeat = hb
    client = broker_redis(consumer.app.conf.broker_url)

    def loop() -> None:
        while not hb.stop.is_set():
            try:
                _beat_once(client, hb)
            except Exception as exc:  # broker hiccup: try again next beat
                logger.warning("worker heartbeat failed: %s", exc)
            hb.stop.wait(settings.WORKER_HEARTBEAT_S)

    try:
        _beat_once(client, hb)
    except Exception as exc:
        logger.warning("worker heartbeat failed: %s", exc)
    hb.thread = threading.Thread(target=loop, name="accentsite-heartbeat", daemon=True)
    hb.thread.start()
    logger.info("worker %s runs models on %s", hb.hostname, hb.device.get("device_name") or hb.device.get("device"))


def worker_heartbeat_stop() -> None:
    """Stop the heartbeat and remove this worker's key (``worker_shutdown``)."""
    global _heartbeat
    hb, _heartbeat = _heartbeat, None
    if hb is None:
        return
    hb.stop.set()
    if hb.thread is not None:
        hb.thread.join(timeout=3)  # a beat in flight must not write the key again after the delete
    try:
        broker_redis(hb.consumer.app.conf.broker_url).delete(WORKER_KEY_PREFIX + hb.hostname)
    except Exception:
        pass


def worker_task_started(*, task_id: str, name: str, args: Any) -> None:
    """Note the task in hand (solo pools run tasks in the heartbeat's process)."""
    if _heartbeat is not None:
        _heartbeat.current = {"id": task_id, "name": name, "args": list(args or [])[:3], "time_start": time.time()}


def worker_task_finished() -> None:
    if _heartbeat is not None:
        _heartbeat.current = None


# --- The web side: who is online, doing what ----------------------------------------------------

def worker_records(*, client=None) -> dict[str, dict]:
    """Heartbeat records of the workers alive within the last three beats, by name."""
    client = client or broker_redis()
    keys = sorted(client.scan_iter(match=WORKER_KEY_PREFIX + "*", count=500))
    records = {}
    for raw in client.mget(keys) if keys else []:
        if raw:
            record = json.loads(raw)
            records[record["name"]] = record
    return records


def _ts(value: float | None):
    from datetime import UTC, datetime

    return datetime.fromtimestamp(value, tz=UTC) if value else None


def workers_overview(*, timeout: float = 1.0) -> list[dict]:
    """Every worker online: from ``inspect()`` (stats, active_queues, active) and the heartbeats.

    A worker listed only by its heartbeat is alive but did not answer the broadcast in
    ``timeout`` (a solo pool busy with a chunk answers only between tasks).
    """
    from accentsite.celery import app

    records = worker_records()
    # limit: return as soon as every worker with a heartbeat answered (a busy solo worker costs the timeout)
    inspector = app.control.inspect(timeout=timeout, limit=len(records) or None)
    stats = inspector.stats() or {}
    if records and len(stats) < len(records):  # someone is busy or gone: do not wait for it twice more
        inspector = app.control.inspect(timeout=timeout, destination=sorted(stats)) if stats else None
    queues = (inspector.active_queues() or {}) if inspector else {}
    active = (inspector.active() or {}) if inspector else {}
    rows = []
    for name in sorted(set(stats) | set(queues) | set(active) | set(records)):
        rec, st = records.get(name, {}), stats.get(name, {})
        pool_info = st.get("pool") or {}
        tasks = [
            {"id": t.get("id"), "name": t.get("name"), "args": t.get("args"), "since": _ts(t.get("time_start"))}
            for t in active.get(name, [])
        ]
        if not tasks and rec.get("current"):
            cur = rec["current"]
            tasks = [{"id": cur["id"], "name": cur["name"], "args": cur.get("args"), "since": _ts(cur.get("time_start"))}]
        implementation = str(pool_info.get("implementation") or "")
        rows.append({
            "name": name,
            "host": rec.get("host") or name.partition("@")[2],
            "queues": sorted(q["name"] for q in queues[name]) if name in queues else rec.get("queues", []),
            "pool": implementation.split(":")[0].rsplit(".", 1)[-1] or rec.get("pool", ""),
            "concurrency": pool_info.get("max-concurrency") or rec.get("concurrency"),
            "pid": st.get("pid") or rec.get("pid"),
            "device": rec.get("device", "?"),
            "device_name": rec.get("device_name", ""),
            "memory_total_mb": rec.get("memory_total_mb"),
            "memory_free_mb": rec.get("memory_free_mb"),
            "active": tasks,
            "tasks_done": sum((st.get("total") or {}).values()) if st else None,
            "uptime_s": st.get("uptime"),
            "heartbeat_at": _ts(rec.get("heartbeat_at")),
            "answered": name in stats,
        })
    return rows


def serving_queues(*, required: tuple[str, ...] = (), timeout: float = 1.0) -> dict[str, list[str]]:
    """Queue -> live workers consuming it, from fresh heartbeats and, when they leave one of
    ``required`` unserved (or ``required`` is empty), an ``active_queues`` broadcast."""
    from accentsite.celery import app

    serving: dict[str, set[str]] = {}
    for name, rec in worker_records().items():
        for queue in rec.get("queues", []):
            serving.setdefault(queue, set()).add(name)
    if required and all(q in serving for q in required):
        return {queue: sorted(names) for queue, names in serving.items()}
    replies = app.control.inspect(timeout=timeout).active_queues() or {}
    for name, queues in replies.items():
        for q in queues:
            serving.setdefault(q["name"], set()).add(name)
    return {queue: sorted(names) for queue, names in serving.items()}


# --- Jobs: timeline, requeue, reaper -------------------------------------------------------------

def job_timeline(*, job: Job) -> list[dict]:
    """One row per chunk: who ran it, when, how long it waited and ran, and seconds per stage."""
    rows = []
    for chunk in job.chunks.order_by("index"):
        wait = (chunk.started_at - chunk.enqueued_at).total_seconds() if chunk.started_at and chunk.enqueued_at else None
        run = (chunk.finished_at - chunk.started_at).total_seconds() if chunk.finished_at and chunk.started_at else None
        rows.append({
            "chunk": chunk.index, "id": chunk.pk, "status": chunk.status, "worker": chunk.worker,
            "attempts": chunk.attempts, "recordings": len(chunk.recording_ids),
            "enqueued_at": chunk.enqueued_at, "started_at": chunk.started_at,
            "heartbeat_at": chunk.heartbeat_at, "finished_at": chunk.finished_at,
            "wait_s": wait, "run_s": run, "timings": dict(chunk.timings or {}), "error": chunk.error,
        })
    return rows


def timeline_table(rows: list[dict]) -> str:
    """The timeline as a plain-text table (manage.py job_timeline)."""
    stages = sorted({s for r in rows for s in r["timings"]})
    head = ["chunk", "status", "worker", "try", "recs", "started", "finished", "wait_s", "run_s", *stages]

    def fmt(v: Any) -> str:
        if v is None:
            return "-"
        if isinstance(v, float):
            return f"{v:.2f}"
        if hasattr(v, "strftime"):
            return timezone.localtime(v).strftime("%H:%M:%S")
        return str(v)

    body = [
        [fmt(r["chunk"]), r["status"], r["worker"] or "-", fmt(r["attempts"]), fmt(r["recordings"]), fmt(r["started_at"]),
         fmt(r["finished_at"]), fmt(r["wait_s"]), fmt(r["run_s"]), *[fmt(r["timings"].get(s)) for s in stages]]
        for r in rows
    ]
    widths = [max(len(str(c)) for c in col) for col in zip(head, *body, strict=True)]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in [head, *body]]
    return "\n".join(lines)


def job_requeue(*, job: Job, older_than: timedelta = timedelta(0)) -> list[int]:
    """Requeue a job's open chunks (queued or running) silent for ``older_than``; by hand.

    Also catches chunks that were never enqueued (the broker was down when the job committed).
    Safe while a chunk is in fact running: the second run skips recordings already stored.
    """
    from recognition.services.jobs import _enqueue_chunks

    job = Job.objects.get(pk=job.pk)
    if job.is_terminal:
        raise ServiceError("not_running", f"Job #{job.pk} already {job.status}; nothing to requeue.", status_code=409)
    limit = timezone.now() - older_than
    with transaction.atomic():
        stuck = job.chunks.select_for_update().filter(
            Q(status=JobChunk.Status.RUNNING) & (Q(heartbeat_at__lte=limit) | Q(heartbeat_at__isnull=True))
            | Q(status=JobChunk.Status.QUEUED) & (Q(enqueued_at__lte=limit) | Q(enqueued_at__isnull=True))
        )
        chunk_ids = list(stuck.values_list("pk", flat=True))
        JobChunk.objects.filter(pk__in=chunk_ids).update(status=JobChunk.Status.QUEUED, error="requeued by hand")
        if chunk_ids:
            transaction.on_commit(lambda: _enqueue_chunks(job, chunk_ids))
    logger.warning("requeued %d chunks by hand", len(chunk_ids), extra={"job_id": job.pk})
    counter_incr("chunks_requeued_by_hand", len(chunk_ids))
    return chunk_ids


def chunks_reap(*, older_than: timedelta | None = None) -> list[int]:
    """The beat's reaper: ``services.job_requeue_stuck`` with the configured limit, and the plan task of
    a large job that never reached a worker sent again (``planning.plans_resend``); counts what it did."""
    from recognition import services
    from recognition.services import planning

    if older_than is None:
        older_than = timedelta(seconds=settings.JOB_STUCK_AFTER_S)
        queued = timedelta(seconds=max(settings.JOB_QUEUED_LOST_AFTER_S, settings.JOB_STUCK_AFTER_S))
    else:
        queued = older_than
    requeued = services.job_requeue_stuck(older_than=older_than, queued_older_than=queued)
    replanned = planning.plans_resend()
    if replanned:
        counter_incr("plans_resent_by_reaper", len(replanned))
    if requeued:
        counter_incr("chunks_requeued_by_reaper", len(requeued))
        logger.warning("reaper requeued chunks %s (no heartbeat for %s)", requeued, older_than)
    return requeued


# --- Queues ------------------------------------------------------------------------------------

@dataclass
class PurgeResult:
    queue: str
    messages: int
    jobs: list[int]
    cancelled: list[int]


def queue_purge(*, queue: str, cancel_jobs: bool = False) -> PurgeResult:
    """Drop every message waiting in ``queue`` (messages a worker holds are not touched).

    Jobs that had chunks waiting there are listed; with ``cancel_jobs`` they are cancelled (their
    finished results stay). Otherwise their chunks stay ``queued`` and the reaper enqueues them
    again after ``JOB_STUCK_AFTER_S``, so a purge alone only delays them.
    """
    from accentsite.celery import app
    from recognition import services

    if queue not in QUEUES:
        raise ServiceError("unknown_queue", f"Unknown queue '{queue}'; use one of {list(QUEUES)}.")
    with app.connection_for_write() as conn:
        messages = conn.default_channel.queue_purge(queue) or 0
    open_chunks = JobChunk.objects.filter(status=JobChunk.Status.QUEUED, job__status__in=[Job.Status.QUEUED, Job.Status.RUNNING])
    # the queue is stored on the chunk; rows from before it was (queue blank) are judged by the job's size
    jobs = sorted({c.job_id for c in open_chunks.select_related("job") if (c.queue or jobkinds.queue_for(c.job.kind, c.job.total)) == queue})
    cancelled = []
    if cancel_jobs:
        for job in Job.objects.filter(pk__in=jobs):
            try:
                services.job_cancel(job=job)
                cancelled.append(job.pk)
            except ServiceError:
                pass
    logger.warning("purged %d messages from queue %s; jobs waiting there: %s; cancelled: %s", messages, queue, jobs, cancelled)
    counter_incr(f"messages_purged_{queue}", messages)
    return PurgeResult(queue=queue, messages=messages, jobs=jobs, cancelled=cancelled)


# --- Storage -----------------------------------------------------------------------------------

def _walk(storage, top: str):
    """Yield every file key under ``top`` (storage API only, so it works on S3 too)."""
    try:
        dirs, files = storage.listdir(top)
    except (FileNotFoundError, NotADirectoryError):
        return
    for name in files:
        yield f"{top}/{name}"
    for d in dirs:
        yield from _walk(storage, f"{top}/{d}")


def _older_than(storage, key: str, limit) -> bool:
    try:
        return storage.get_modified_time(key) < limit
    except (FileNotFoundError, NotImplementedError):
        return False


@dataclass
class CleanResult:
    deleted: list[str]
    kept_young: int


def storage_clean_orphans(*, grace: timedelta | None = None, dry_run: bool = False) -> CleanResult:
    """Delete storage files no row points to, once older than ``grace``.

    ``features/job-N/*.npz`` without a FeatureSet row (a job deleted, a result replaced),
    ``recordings/**`` without a Recording row (an upload whose transaction rolled back or whose
    request was killed, a delete that lost its file), ``predict/*`` uploads no worker can still take,
    and ``healthz/*`` files written by the write probes of older versions. Younger files are kept:
    their row may be about to commit.
    """
    storage = default_storage
    grace = grace if grace is not None else timedelta(seconds=settings.STORAGE_ORPHAN_GRACE_S)
    limit = timezone.now() - grace
    deleted: list[str] = []
    young = 0

    def consider(key: str, referenced: set[str]) -> None:
        nonlocal young
        if key in referenced:
            return
        if not _older_than(storage, key, limit):
            young += 1
            return
        if not dry_run:
            storage.delete(key)
        deleted.append(key)

    # (storage folder, model, field holding the key): one sub-folder at a time bounds the query
    for top, model, key_field in (("features", FeatureSet, "arrays"), ("recordings", Recording, "file")):
        try:
            subdirs = storage.listdir(top)[0]
        except FileNotFoundError:
            subdirs = []
        for d in subdirs:
            prefix = f"{top}/{d}"
            referenced = set(model.objects.filter(**{f"{key_field}__startswith": prefix + "/"}).values_list(key_field, flat=True))
            for key in _walk(storage, prefix):
                consider(key, referenced)
    for key in _walk(storage, "healthz"):
        consider(key, set())
    # /predict uploads: the worker deletes each when done; one whose request was killed before it was
    # sent, or whose task expired unstarted, is garbage once no worker can still pick it up
    predict_limit = timezone.now() - max(grace, timedelta(seconds=settings.PREDICT_QUEUE_EXPIRES_S + settings.CELERY_TASK_TIME_LIMIT))
    for key in _walk(storage, "predict"):
        if _older_than(storage, key, predict_limit):
            if not dry_run:
                storage.delete(key)
            deleted.append(key)
        else:
            young += 1
    if deleted:
        logger.warning("%s %d orphaned storage files", "would delete" if dry_run else "deleted", len(deleted))
        if not dry_run:
            counter_incr("storage_orphans_deleted", len(deleted))
    return CleanResult(deleted=deleted, kept_young=young)
