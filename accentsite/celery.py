"""The Celery application, and nothing else.

This module imports no app code (``recognition``, ``workers``): Django settings are read lazily and
tasks are autodiscovered when the worker starts. The worker's signal receivers (heartbeat, thread
budgets, log context) live in ``recognition/worker_signals.py`` and are connected from
``RecognitionConfig.ready()``, which Celery's Django fix-up runs (``django.setup()``) before the
worker sends ``worker_init``, ``setup_logging`` or ``worker_ready``.

Workers import this module before forking; nothing here (or in the task modules) may run a torch
operation at import time, or prefork children hang in OpenMP (see ENVIRONMENT.md).
"""
import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "accentsite.settings")

app = Celery("accentsite")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks(["workers"])
app.autodiscover_tasks(["workers"], related_name="maintenance")  # beat tasks (CELERY_BEAT_SCHEDULE)
