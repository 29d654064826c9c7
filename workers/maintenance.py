"""Beat-scheduled housekeeping (CELERY_BEAT_SCHEDULE in settings): keep jobs moving, storage tidy.

Thin like workers/tasks.py: each task calls one service in recognition.ops and logs what it did.
"""
from __future__ import annotations

import logging
from datetime import timedelta

from celery import shared_task
from django.db import close_old_connections

logger = logging.getLogger(__name__)


@shared_task(ignore_result=True, acks_late=False)  # a lost run is harmless: the next beat repeats it
def reap_stuck_chunks(older_than_s: float | None = None) -> list[int]:
    """Requeue chunks of unfinished jobs with no heartbeat for ``JOB_STUCK_AFTER_S`` (a worker died)."""
    from recognition import ops

    close_old_connections()
    requeued = ops.chunks_reap(older_than=timedelta(seconds=older_than_s) if older_than_s is not None else None)
    if requeued:
        logger.warning("stuck-chunk reaper requeued %d chunks: %s", len(requeued), requeued)
    return requeued


@shared_task(ignore_result=True, acks_late=False)
def clean_orphaned_storage(grace_s: float | None = None) -> int:
    """Delete feature arrays and recording files no row points to (older than ``STORAGE_ORPHAN_GRACE_S``)."""
    from recognition import ops

    close_old_connections()
    result = ops.storage_clean_orphans(grace=timedelta(seconds=grace_s) if grace_s is not None else None)
    logger.info("storage clean-up: %d orphaned files deleted, %d young ones kept", len(result.deleted), result.kept_young)
    return len(result.deleted)
