"""Queue a new job over only the recordings that failed in a finished job.

    manage.py retry_failed JOB_ID
"""
from django.core.management.base import BaseCommand, CommandError

from recognition import services
from recognition.errors import ServiceError
from recognition.management.commands._ops import get_job


class Command(BaseCommand):
    help = __doc__.split("\n")[0]

    def add_arguments(self, parser):
        parser.add_argument("job_id", type=int)

    def handle(self, *args, job_id, **options):
        try:
            new = services.job_retry_failed(job=get_job(job_id))
        except ServiceError as exc:
            raise CommandError(exc.message) from exc
        self.stdout.write(f"Job #{job_id}: {new.total} failed recordings queued as job #{new.pk}.")
        return None
