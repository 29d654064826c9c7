"""The Celery application.

Workers import this module before forking; nothing here (or in the task modules) may run a torch
operation at import time, or prefork children hang in OpenMP (see ENVIRONMENT.md).
"""
import os

from celery import Celery
from celery.signals import worker_process_init

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "accentsite.settings")

app = Celery("accentsite")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks(["workers"])


@worker_process_init.connect
def _limit_thread_pools(**_: object) -> None:
    """Give each worker child a deliberate thread budget.

    numpy's OpenBLAS pool and torch's OpenMP pool fight over the same cores and make inference
    2-3x slower; each child gets ``WORKER_TORCH_THREADS`` torch threads and one BLAS thread.
    """
    from workers.runtime import configure_threads

    configure_threads()
