"""Loaded by worker processes the interactive tests start with this folder first on PYTHONPATH:
``ACCENTSITE_TEST_TASK_DELAY_S`` seconds of sleep before every task named in
``ACCENTSITE_TEST_SLOW_TASKS`` (comma-separated), so a test gets a real worker process that is
slow, as a cold model or a loaded machine makes it, without a line of test code in the service."""
import os
import time

_delay = float(os.environ.get("ACCENTSITE_TEST_TASK_DELAY_S", "0") or 0)
_names = {n for n in os.environ.get("ACCENTSITE_TEST_SLOW_TASKS", "").split(",") if n}

if _delay > 0 and _names:
    from celery.signals import task_prerun

    def _slow(sender=None, **_):
        if getattr(sender, "name", None) in _names:
            time.sleep(_delay)

    task_prerun.connect(_slow, weak=False)
