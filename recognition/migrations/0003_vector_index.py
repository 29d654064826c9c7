"""pgvector HNSW similarity index where the PostgreSQL has the extension (see recognition/vectorindex.py).

Elsewhere (SQLite, PostgreSQL without pgvector) this migration does nothing and similarity search
stays exact in numpy; ``manage.py vector_index`` enables it later.
"""

import logging

from django.db import migrations

logger = logging.getLogger(__name__)


def forwards(apps, schema_editor):
    from recognition import vectorindex

    logger.info("vector index: %s", vectorindex.enable(schema_editor.connection))


def backwards(apps, schema_editor):
    from recognition import vectorindex

    vectorindex.disable(schema_editor.connection)


class Migration(migrations.Migration):
    dependencies = [("recognition", "0002_result_recording_key")]

    operations = [migrations.RunPython(forwards, backwards)]
