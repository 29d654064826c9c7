"""Set up (or drop) the pgvector HNSW similarity index on a PostgreSQL that has the extension.

    manage.py vector_index            # create extension, side table, indexes; copy existing vectors
    manage.py vector_index --status   # what similarity search uses now
    manage.py vector_index --drop     # back to exact numpy search

Migration 0003 does the same on `migrate` when the extension is already installed; run this after
installing pgvector into a database that was migrated without it.
"""

from django.core.management.base import BaseCommand

from recognition import vectorindex


class Command(BaseCommand):
    help = __doc__.split("\n")[0]

    def add_arguments(self, parser):
        group = parser.add_mutually_exclusive_group()
        group.add_argument("--status", action="store_true", help="print the similarity backend and exit")
        group.add_argument("--drop", action="store_true", help="drop the side table (embeddings stay)")

    def handle(self, *args, status, drop, **options):
        if drop:
            vectorindex.disable()
            self.stdout.write("dropped the pgvector side table; similarity search is exact (numpy)")
        elif not status:
            self.stdout.write(vectorindex.enable())
        self.stdout.write(f"similarity backend: {vectorindex.backend()}")
