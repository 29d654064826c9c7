"""The Celery application.

Workers import this module before forking; nothing here (or in the task modules) may run a torch
operation at import time, or prefork children hang in OpenMP (see ENVIRONMENT.md).
"""
import os

from celery import Celery
from celery.signals import (
    setup_logging,
    task_postrun,
    task_prerun,
    worker_init,
    worker_process_init,
    worker_ready,
    worker_shutdown,
)

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "accentsite.settings")

app = Celery("accentsite")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks(["workers"])
app.autodiscover_tasks(["workers"], related_name="maintenance")  # beat tasks (CELERY_BEAT_SCHEDULE)

# Tasks whose first argument is a JobChunk id: their log records carry chunk_id and job_id.
CHUNK_TASKS = {"workers.tasks.run_features_chunk", "workers.tasks.run_model_chunk", "workers.tasks.run_train_job"}


@worker_init.connect
def _preload_libraries(**_: object) -> None:
    """Import the heavy pure-Python libraries once, in the worker's main process before the pool
    starts: scikit-learn's first import costs ~1 s, which otherwise lands on the first job's report.
    Importing runs no torch computation, so it is safe before a prefork fork."""
    import sklearn.metrics  # noqa: F401


@worker_process_init.connect
def _limit_thread_pools(**_: object) -> None:
    """Give each worker child a deliberate thread budget.

    numpy's OpenBLAS pool and torch's OpenMP pool fight over the same cores and make inference
    2-3x slower; each child gets ``WORKER_TORCH_THREADS`` torch threads and one BLAS thread.
    """
    from workers.runtime import configure_threads

    configure_threads()


@setup_logging.connect
def _django_logging(**_: object) -> None:
    """Workers log through Django's LOGGING (LOG_FORMAT=json gives JSON lines with the ids)."""
    from logging.config import dictConfig

    from django.conf import settings

    dictConfig(settings.LOGGING)


@worker_ready.connect
def _start_heartbeat(sender=None, **_: object) -> None:
    """Publish this worker's queues, pool, device and task in hand to Redis (recognition.ops)."""
    from recognition import ops

    ops.worker_heartbeat_start(consumer=sender)


@worker_shutdown.connect
def _stop_heartbeat(**_: object) -> None:
    from recognition import ops

    ops.worker_heartbeat_stop()


@task_prerun.connect
def _bind_task_context(task_id=None, task=None, args=None, **_: object) -> None:
    """Every log record of a task carries its task_id, and chunk_id / job_id for chunk tasks."""
    from accentsite.logging import bind
    from recognition import ops

    ids: dict = {"task_id": task_id}
    if task is not None and task.name in CHUNK_TASKS and args:
        ids["chunk_id"] = args[0]
        try:
            from recognition.models import JobChunk

            ids["job_id"] = JobChunk.objects.filter(pk=args[0]).values_list("job_id", flat=True).first()
        except Exception:  # a dropped connection here is the task's to handle, with its retries
            pass
    bind(**ids)
    ops.worker_task_started(task_id=task_id or "", name=getattr(task, "name", ""), args=args)


@task_postrun.connect
def _unbind_task_context(**_: object) -> None:
    from accentsite.logging import unbind
    from recognition import ops

    unbind()
    ops.worker_task_finished()
