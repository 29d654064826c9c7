"""Nearest-neighbour search over embeddings with pgvector's HNSW index, on a PostgreSQL that has
the ``vector`` extension.

The ``Embedding`` rows (vector as JSON) stay the source of truth on every database. Where the
extension is available, ``enable()`` (run by migration 0003 and by ``manage.py vector_index``)
adds a side table with the newest vector per (model version, recording) as a pgvector column, and
one partial HNSW index per vector dimension (cosine distance)::

    CREATE INDEX ... USING hnsw ((vec::vector(128)) vector_cosine_ops) WHERE dim = 128

(pgvector indexes only columns of a fixed dimension; a cast expression plus a partial index per
dimension lets models of different sizes share one table). A trigger on ``recognition_embedding``
keeps it current whatever writes the row (embed jobs, the admin, bulk inserts), in the same
transaction, and creates the index of a new dimension the first time one arrives; deleting a
recording, embedding or model version cascades.

Everywhere else (SQLite, a PostgreSQL without the extension, ``SIMILARITY_BACKEND=exact``) the
selector searches exactly in numpy. Both return the same neighbours on the same data: HNSW is
approximate in principle, but with ``ef_search`` well above ``k`` and pgvector's iterative
scans it finds the exact top-k on collections of this size (tested against numpy).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from django.conf import settings
from django.db import connection, transaction
from django.db.backends.base.base import BaseDatabaseWrapper

logger = logging.getLogger(__name__)

TABLE = "recognition_embedding_ann"
_state: dict[tuple[str, str], bool] = {}  # (alias, database name) -> side table present


def _key(conn: BaseDatabaseWrapper) -> tuple[str, str]:
    return conn.alias, str(conn.settings_dict.get("NAME"))


def _literal(vector: Sequence[float]) -> str:
    return "[" + ",".join(repr(float(v)) for v in vector) + "]"


def extension_available(conn: BaseDatabaseWrapper = connection) -> bool:
    """Whether this database can have the ``vector`` extension (PostgreSQL with pgvector installed)."""
    if conn.vendor != "postgresql":
        return False
    with conn.cursor() as cur:
        cur.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'vector'")
        return cur.fetchone() is not None


def is_enabled(conn: BaseDatabaseWrapper = connection) -> bool:
    """Whether the side table exists here (cached per database)."""
    if conn.vendor != "postgresql":
        return False
    key = _key(conn)
    if key not in _state:
        with conn.cursor() as cur:
            cur.execute("SELECT to_regclass(%s) IS NOT NULL", [TABLE])
            _state[key] = bool(cur.fetchone()[0])
    return _state[key]


def backend(conn: BaseDatabaseWrapper = connection) -> str:
    """``pgvector-hnsw`` or ``exact``: what similarity search uses here (``SIMILARITY_BACKEND``)."""
    wanted = getattr(settings, "SIMILARITY_BACKEND", "auto")
    if wanted == "exact":
        return "exact"
    if is_enabled(conn):
        return "pgvector-hnsw"
    if wanted == "pgvector":
        raise RuntimeError(
            "SIMILARITY_BACKEND=pgvector but this database has no pgvector index "
            "(PostgreSQL with the vector extension, then `python manage.py vector_index`)."
        )
    return "exact"


_SYNC = f"""
CREATE OR REPLACE FUNCTION {TABLE}_sync() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  idx text := '{TABLE}_hnsw_' || NEW.dim;
BEGIN
  IF to_regclass(idx) IS NULL THEN
    -- first vector of this dimension: one partial HNSW index for it (the lock keeps workers
    -- that meet a new dimension at once from racing on the DDL)
    PERFORM pg_advisory_xact_lock(hashtext(idx));
    EXECUTE format('CREATE INDEX IF NOT EXISTS %I ON {TABLE} USING hnsw ((vec::vector(%s)) vector_cosine_ops) WHERE dim = %s',
                   idx, NEW.dim, NEW.dim);
  END IF;
  INSERT INTO {TABLE} (model_version_id, recording_id, embedding_id, dim, vec)
  VALUES (NEW.model_version_id, NEW.recording_id, NEW.id, NEW.dim, (NEW.vector::text)::vector)
  ON CONFLICT (model_version_id, recording_id) DO UPDATE
    SET embedding_id = EXCLUDED.embedding_id, dim = EXCLUDED.dim, vec = EXCLUDED.vec
    WHERE {TABLE}.embedding_id <= EXCLUDED.embedding_id;
  RETURN NEW;
END $$;
DROP TRIGGER IF EXISTS {TABLE}_sync ON recognition_embedding;
CREATE TRIGGER {TABLE}_sync AFTER INSERT OR UPDATE OF vector, dim ON recognition_embedding
  FOR EACH ROW EXECUTE FUNCTION {TABLE}_sync();
"""


def enable(conn: BaseDatabaseWrapper = connection, *, backfill: bool = True) -> str:
    """Create the extension, the side table and its indexes, and copy the newest vector per
    (model version, recording) into it. Returns what happened, for logs and the command."""
    if conn.vendor != "postgresql":
        return f"skipped: {conn.vendor} database (exact numpy search is used)"
    if not extension_available(conn):
        return "skipped: this PostgreSQL has no pgvector extension installed (exact numpy search is used)"
    with transaction.atomic(using=conn.alias), conn.cursor() as cur:
        cur.execute("CREATE EXTENSION IF NOT EXISTS vector")
        cur.execute(
            f"""CREATE TABLE IF NOT EXISTS {TABLE} (
                model_version_id bigint NOT NULL REFERENCES recognition_modelversion(id) ON DELETE CASCADE,
                recording_id bigint NOT NULL REFERENCES recognition_recording(id) ON DELETE CASCADE,
                embedding_id bigint NOT NULL REFERENCES recognition_embedding(id) ON DELETE CASCADE,
                dim integer NOT NULL,
                vec vector NOT NULL,
                PRIMARY KEY (model_version_id, recording_id))"""
        )
        cur.execute(_SYNC)
        n = 0
        if backfill:
            # through the trigger, so each dimension gets its index the same way
            cur.execute(
                """UPDATE recognition_embedding SET dim = dim WHERE id IN (
                    SELECT DISTINCT ON (model_version_id, recording_id) id FROM recognition_embedding
                    ORDER BY model_version_id, recording_id, id DESC)"""
            )
            n = cur.rowcount
        cur.execute(f"SELECT DISTINCT dim FROM {TABLE} ORDER BY dim")
        dims = [row[0] for row in cur.fetchall()]
    _state[_key(conn)] = True
    return f"enabled: pgvector HNSW search ({n} vectors indexed, dimensions {dims or 'none yet'})"


def disable(conn: BaseDatabaseWrapper = connection) -> None:
    """Drop the side table (the ``Embedding`` rows are untouched)."""
    if conn.vendor == "postgresql":
        with conn.cursor() as cur:
            cur.execute(f"DROP TRIGGER IF EXISTS {TABLE}_sync ON recognition_embedding")
            cur.execute(f"DROP FUNCTION IF EXISTS {TABLE}_sync()")
            cur.execute(f"DROP TABLE IF EXISTS {TABLE}")
    _state.pop(_key(conn), None)


def nearest_sql(dim: int) -> str:
    """The k-NN query (parameters: query vector, model version, owner, excluded recording, query
    vector, k); its ORDER BY matches the partial index expression so the planner can use it."""
    d = int(dim)
    return (
        f"SELECT a.recording_id, 1 - (a.vec::vector({d}) <=> %s::vector({d})) AS similarity "
        f"FROM {TABLE} a JOIN recognition_recording r ON r.id = a.recording_id "
        f"WHERE a.dim = {d} AND a.model_version_id = %s AND r.owner_id = %s AND a.recording_id <> %s "
        f"ORDER BY a.vec::vector({d}) <=> %s::vector({d}) LIMIT %s"
    )


def nearest(
    *, vector: Sequence[float], model_version_id: int, owner_id: int, exclude_recording_id: int, k: int, conn: BaseDatabaseWrapper = connection
) -> list[tuple[int, float]]:
    """``k`` nearest (recording id, cosine similarity), best first, through the HNSW index."""
    q = _literal(vector)
    with transaction.atomic(using=conn.alias), conn.cursor() as cur:
        # candidates examined per query; iterative scans (pgvector >= 0.8) keep going when the
        # owner / model filter removes candidates, so a filtered query still returns k rows
        cur.execute("SELECT set_config('hnsw.ef_search', %s, true)", [str(max(100, 4 * k))])
        cur.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'")
        version = tuple(int(p) for p in cur.fetchone()[0].split(".")[:2])
        if version >= (0, 8):
            cur.execute("SELECT set_config('hnsw.iterative_scan', 'relaxed_order', true)")
        cur.execute(nearest_sql(len(vector)), [q, model_version_id, owner_id, exclude_recording_id, q, k])
        rows = [(int(r), float(s)) for r, s in cur.fetchall()]
    # relaxed_order may return near-ties slightly out of order
    return sorted(rows, key=lambda t: -t[1])
