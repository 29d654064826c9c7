"""Shared bits of the operations commands (retry_failed, requeue_stuck, cancel_job, purge_queue, job_timeline)."""
from django.core.management.base import CommandError

from recognition.models import Job


def get_job(job_id: int) -> Job:
    job = Job.objects.filter(pk=job_id).first()
    if job is None:
        raise CommandError(f"No job #{job_id}.")
    return job
