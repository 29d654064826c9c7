"""Drop every message waiting in one queue (cpu, gpu or interactive). Needs --yes.

    manage.py purge_queue QUEUE --yes [--cancel-jobs]

Messages a worker already holds are not touched. Jobs that had chunks waiting there are listed;
--cancel-jobs cancels them (finished results stay). Without it their chunks stay queued and the
stuck-chunk reaper enqueues them again after JOB_STUCK_AFTER_S.
"""
from django.core.management.base import BaseCommand, CommandError

from recognition import ops
from recognition.errors import ServiceError


class Command(BaseCommand):
    help = __doc__.split("\n")[0]

    def add_arguments(self, parser):
        parser.add_argument("queue", choices=ops.QUEUES)
        parser.add_argument("--yes", action="store_true", help="really purge")
        parser.add_argument("--cancel-jobs", action="store_true", help="also cancel the jobs that were waiting there")

    def handle(self, *args, queue, yes, cancel_jobs, **options):
        if not yes:
            depth = ops.queue_depths(queues=(queue,))[queue]
            raise CommandError(f"Queue '{queue}' holds {depth} messages; add --yes to drop them all.")
        try:
            result = ops.queue_purge(queue=queue, cancel_jobs=cancel_jobs)
        except ServiceError as exc:
            raise CommandError(exc.message) from exc
        self.stdout.write(f"Purged {result.messages} messages from '{queue}'. Jobs that were waiting there: {result.jobs or 'none'}.")
        if cancel_jobs:
            self.stdout.write(f"Cancelled: {result.cancelled or 'none'}.")
