"""Celery tasks: thin and idempotent. Load ids, call the pipeline, call a service.

A chunk task claims its chunk, keeps it beating, hands it to its kind's runner
(:data:`workers.runners.RUNNERS`: how each kind processes its recordings) and closes it. Pipeline and
torch imports happen inside the runners, never at import time, so nothing touches torch before a
prefork worker forks.
"""
from __future__ import annotations

import contextlib
import logging
import time
from collections import defaultdict
from collections.abc import Iterator

from celery import shared_task
from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.db import InterfaceError, OperationalError, close_old_connections

from recognition import services
from workers.runners import RUNNERS, TRANSIENT

logger = logging.getLogger(__name__)

_RETRY = dict(autoretry_for=TRANSIENT, retry_backoff=2, retry_backoff_max=60, retry_jitter=True, max_retries=10)


@contextlib.contextmanager
def _heartbeating(chunk_id: int, every_s: float | None = None) -> Iterator[None]:
    """Keep the chunk visibly alive while the block runs (a long decode, one batched inference, a
    whole training), so the reaper's short silence limit only catches chunks whose worker is gone.

    Two beats: a thread updates ``JobChunk.heartbeat_at`` every ``CHUNK_HEARTBEAT_S`` (what the
    timeline shows), and a tiny process (:mod:`workers.chunkbeat`) keeps a Redis key alive, which
    also beats while C code holds the GIL (parselmouth on a long recording stalls the thread). The
    process ends when the block ends or this worker dies (its stdin pipe closes)."""
    import subprocess
    import sys
    import threading

    from django.conf import settings
    from django.db import connection

    every = every_s or settings.CHUNK_HEARTBEAT_S
    stop = threading.Event()

    def beat() -> None:
        try:
            while not stop.wait(every):
                try:
                    services.chunk_heartbeat(chunk_id=chunk_id)
                except Exception as exc:  # a database blip: try again next beat
                    logger.warning("chunk heartbeat failed: %s", exc)
        finally:
            connection.close()

    helper = None
    services.chunk_beat_now(chunk_id=chunk_id, ttl_s=3 * every + 1)  # alive before the helper has started
    try:
        helper = subprocess.Popen(
            [sys.executable, "-m", "workers.chunkbeat", services.chunk_beat_url(), services.chunk_beat_key(chunk_id),
             str(every)],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, close_fds=True,
            cwd=str(settings.BASE_DIR),
        )
    except Exception as exc:  # no process to spare: the thread's beat still runs; never fail the chunk for it
        logger.warning("chunk heartbeat process did not start: %s", exc)
    thread = threading.Thread(target=beat, name=f"chunk-{chunk_id}-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        if helper is not None:
            helper.stdin.close()
            try:
                helper.wait(timeout=5)
            except subprocess.TimeoutExpired:
                helper.kill()
        thread.join(timeout=every + 5)


def _run_chunk(task, chunk_id: int) -> None:
    """The chunk loop every per-recording kind shares: claim, hand the chunk to its kind's runner,
    fail what the time limit left unfinished, close the chunk."""
    close_old_connections()
    ctx = services.chunk_start(chunk_id=chunk_id, worker=task.request.hostname or "", task_id=task.request.id or "")
    if ctx is None:
        return
    timings: dict[str, float] = defaultdict(float)
    error = ""
    # the chunk closes while it still beats: between the last beat and the close a reaper would see a
    # running chunk that is silent
    with _heartbeating(chunk_id):
        try:
            RUNNERS[ctx.job.kind].run(ctx, timings)
        except SoftTimeLimitExceeded:  # raised by Celery's prefork pool in the child (every shipped pool is prefork)
            error = "The chunk exceeded its time limit; its unfinished recordings failed."
            done = set(ctx.job.results.values_list("recording_id", flat=True))
            for rec in ctx.recordings:
                if rec.pk not in done:
                    services.result_fail(job=ctx.job, recording=rec, code="time_limit", message=error)
        services.chunk_finish(chunk_id=chunk_id, timings=dict(timings), error=error)


# One task name per queue family (recognition.jobkinds routes by them; chunks already sent keep working):
# each runs whatever kind its chunk belongs to.

@shared_task(bind=True, **_RETRY)
def run_features_chunk(self, chunk_id: int) -> None:
    """Decode each recording of a chunk and run the job's feature extractors on it."""
    _run_chunk(self, chunk_id)


@shared_task(bind=True, **_RETRY)
def run_model_chunk(self, chunk_id: int) -> None:
    """Classify or embed a chunk (``workers.runners.ModelRunner``)."""
    _run_chunk(self, chunk_id)


@shared_task(bind=True, **_RETRY)
def run_whisper_chunk(self, chunk_id: int) -> None:
    """Language identification or transcription of a chunk with the process's Whisper, one recording at a time."""
    _run_chunk(self, chunk_id)


@shared_task(bind=True, acks_late=True, autoretry_for=(OperationalError, InterfaceError), retry_backoff=5, max_retries=3,
             soft_time_limit=settings.TRAIN_SOFT_TIME_LIMIT_S, time_limit=settings.TRAIN_TIME_LIMIT_S)
def run_train_job(self, chunk_id: int) -> None:
    """Train a model on a job's labelled recordings; progress moves by epoch.

    Its own time limits (``TRAIN_SOFT_TIME_LIMIT_S`` / ``TRAIN_TIME_LIMIT_S``, hours), not the chunk
    tasks' minutes: Celery's prefork pool enforces them, the soft one fails the job with its reason."""
    from recognition.errors import ServiceError
    from recognition.services import training

    close_old_connections()
    ctx = services.chunk_start(chunk_id=chunk_id, worker=self.request.hostname or "", task_id=self.request.id or "")
    if ctx is None:
        return
    job_id = ctx.job.pk

    checked = [0.0]

    def progress(stage: str, done: int, total: int, info: dict) -> None:
        """Every step of training reports here: progress by epoch, and a cancel stops it (checked at
        most every TRAIN_CANCEL_CHECK_S, between epochs, feature batches and evaluation steps)."""
        if stage == "train":
            training.train_job_progress(job_id=job_id, done=done, total=total)
        now = time.monotonic()
        if now - checked[0] >= settings.TRAIN_CANCEL_CHECK_S:
            checked[0] = now
            if services.job_is_cancelled(job_id=job_id):
                raise training.TrainingCancelled()

    # a training may run for hours: the reaper must see it alive, until its job is closed
    with _heartbeating(chunk_id):
        try:
            mv = training.train_job_run(job=ctx.job, progress=progress)
        except training.TrainingCancelled:
            training.train_job_stopped(job_id=job_id, chunk_id=chunk_id)
        except ServiceError as exc:
            training.train_job_finish(job_id=job_id, model_version=None, error=exc.message)
        except SoftTimeLimitExceeded:
            training.train_job_finish(job_id=job_id, model_version=None, error="Training exceeded its time limit.")
        except TRANSIENT:
            raise  # retried
        except Exception as exc:  # bad hyper-parameters, too little data for a split, a bug: fail once, with the reason
            logger.exception("training failed", extra={"job_id": job_id})
            training.train_job_finish(job_id=job_id, model_version=None, error=f"Training failed: {type(exc).__name__}: {exc}")
        else:
            training.train_job_finish(job_id=job_id, model_version=mv)


@shared_task(bind=True, acks_late=True, autoretry_for=(OperationalError, InterfaceError), retry_backoff=2, max_retries=5)
def plan_job(self, job_id: int, step: int | None = None) -> None:
    """Plan a slice of a large job (``services.planning.job_plan``): write its recording rows and chunks
    in bulk, send the chunks and the task of the next slice. Idempotent, so a redelivered or resent task
    makes no duplicates (``step``: the slice it was sent for; ``None``: the next one)."""
    from recognition.services import planning

    close_old_connections()
    planning.job_plan(job_id=job_id, step=step)


@shared_task(bind=True, acks_late=False, ignore_result=True)  # a person waits: a lost message shows as a lapsed request
def run_predict(self, *, request_id: str, key: str, format: str, model_version_id: int | None, threshold, vad: bool,
                transcript: str, task: str = "classify", params: dict | None = None, classes: list | None = None) -> None:
    """``/predict`` on a worker (``workers/predict.py``): run one stored upload, publish the answer."""
    from workers.predict import predict_serve

    if not self.request.is_eager:
        close_old_connections()
    predict_serve(request_id=request_id, key=key, format=format, model_version_id=model_version_id, threshold=threshold,
                  vad=vad, transcript=transcript, task=task, params=params or {}, classes=classes,
                  worker=self.request.hostname or "")
