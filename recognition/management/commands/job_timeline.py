"""Show a job's timeline: each chunk with its worker, attempts, start / finish, wait, run and stage seconds.

    manage.py job_timeline JOB_ID [--json]
"""
import json

from django.core.management.base import BaseCommand

from recognition import ops
from recognition.management.commands._ops import get_job


class Command(BaseCommand):
    help = __doc__.split("\n")[0]

    def add_arguments(self, parser):
        parser.add_argument("job_id", type=int)
        parser.add_argument("--json", action="store_true", help="JSON lines instead of a table")

    def handle(self, *args, job_id, json: bool = False, **options):
        job = get_job(job_id)
        rows = ops.job_timeline(job=job)
        if json:
            for row in rows:
                self.stdout.write(_dumps(row))
            return
        self.stdout.write(f"{job}: {job.status}, {job.done} done, {job.failed} failed of {job.total}; "
                          f"stage seconds summed: {job.timings or {}}")
        self.stdout.write(ops.timeline_table(rows))


def _dumps(row: dict) -> str:
    return json.dumps(row, default=str)
