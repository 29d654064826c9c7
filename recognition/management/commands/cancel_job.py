"""Cancel jobs: queued chunks never start, running ones stop between recordings, results stay.

    manage.py cancel_job JOB_ID [JOB_ID ...]
"""
from django.core.management.base import BaseCommand, CommandError

from recognition import services
from recognition.errors import ServiceError
from recognition.management.commands._ops import get_job


class Command(BaseCommand):
    help = __doc__.split("\n")[0]

    def add_arguments(self, parser):
        parser.add_argument("job_ids", type=int, nargs="+")

    def handle(self, *args, job_ids, **options):
        errors = []
        for job_id in job_ids:
            try:
                job = services.job_cancel(job=get_job(job_id))
            except (ServiceError, CommandError) as exc:
                errors.append(f"Job #{job_id}: {getattr(exc, 'message', exc)}")
                continue
            self.stdout.write(f"Job #{job_id} cancelled: {job.done} done, {job.failed} failed of {job.total} kept.")
        if errors:
            raise CommandError("\n".join(errors))
