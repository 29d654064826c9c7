"""Requeue stuck chunks: of one job (by hand), or of every job whose chunks went silent (the reaper).

    manage.py requeue_stuck JOB_ID [--older-than SECONDS]   # one job; default: all its open chunks
    manage.py requeue_stuck --all [--older-than SECONDS]    # what the beat reaper does (default JOB_STUCK_AFTER_S)

A requeued chunk that was in fact still running only skips the recordings already stored.
"""
from datetime import timedelta

from django.core.management.base import BaseCommand, CommandError

from recognition import ops
from recognition.errors import ServiceError
from recognition.management.commands._ops import get_job


class Command(BaseCommand):
    help = __doc__.split("\n")[0]

    def add_arguments(self, parser):
        parser.add_argument("job_id", type=int, nargs="?")
        parser.add_argument("--all", action="store_true", help="every unfinished job (the reaper)")
        parser.add_argument("--older-than", type=float, default=None, help="seconds without a heartbeat")

    def handle(self, *args, job_id, all, older_than, **options):
        if (job_id is None) == (not all):
            raise CommandError("Give a JOB_ID or --all.")
        limit = timedelta(seconds=older_than) if older_than is not None else None
        if all:
            chunks = ops.chunks_reap(older_than=limit)
            self.stdout.write(f"Requeued {len(chunks)} stuck chunks: {chunks}")
            return
        try:
            chunks = ops.job_requeue(job=get_job(job_id), older_than=limit or timedelta(0))
        except ServiceError as exc:
            raise CommandError(exc.message) from exc
        self.stdout.write(f"Job #{job_id}: requeued {len(chunks)} chunks: {chunks}")
