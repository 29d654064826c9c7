"""Health probes: liveness (the process answers) and readiness (its dependencies answer).

``/healthz/live`` depends on nothing: a container health check or a Kubernetes liveness probe
restarts the process only when the process itself is stuck, never because PostgreSQL is down.

``/healthz/ready`` (and ``/healthz``, kept as its alias) runs :data:`READINESS_CHECKS` in order
and answers 503 naming every check that failed. The checks only read: no probe writes to storage
or the database.

Adding a readiness check
------------------------
A check is a function that returns ``None`` or a dict of details on success and raises on failure
(the exception text becomes the ``error`` shown), plus a name::

    def _whisper_models() -> dict:
        from django.conf import settings
        missing = [p for p in settings.WHISPER_MODEL_DIRS if not (Path(p) / "model.bin").exists()]
        if missing:
            raise RuntimeError(f"Whisper model files missing in {missing}")
        return {"models": len(settings.WHISPER_MODEL_DIRS)}

    READINESS_CHECKS.append(Check("whisper_models", _whisper_models))

Append it here, or call :func:`register` from an ``AppConfig.ready()``. ``needs`` names earlier
checks without which this one cannot run (``workers`` needs ``broker``); when one of them failed
the check is reported failed with that reason instead of being run.
"""
from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.core.files.storage import FileSystemStorage, default_storage
from django.db import connection

from recognition import jobkinds

_STARTED = time.time()


@dataclass(frozen=True)
class Check:
    name: str
    run: Callable[[], dict | None]
    needs: tuple[str, ...] = ()


def _database() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")


def _broker() -> None:
    from recognition import ops

    with ops.broker_connection():  # connects through kombu, one attempt
        pass


def _storage() -> dict:
    """Read-only: the media folder exists and is writable (local), or the bucket lists (S3)."""
    storage = default_storage
    if isinstance(storage, FileSystemStorage):
        root = Path(storage.location)
        probe = root if root.exists() else root.parent  # created on the first upload
        if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
            raise RuntimeError(f"media folder {root} is not a writable directory")
        return {"backend": "filesystem"}
    storage.listdir("")  # one list request: the bucket exists and the credentials may read it
    return {"backend": storage.__class__.__name__}  # the LazyObject passes __class__ through


def _workers() -> dict:
    """A live worker per required queue, from fresh heartbeats and ``inspect()`` replies.

    A solo-pool worker busy with a chunk does not answer broadcasts; its heartbeat, written by a
    thread every WORKER_HEARTBEAT_S, still shows it alive and which queues it consumes.
    """
    from recognition import ops

    queues = jobkinds.REQUIRED_QUEUES
    serving = ops.serving_queues(required=queues, timeout=1.0)
    online = sorted({w for names in serving.values() for w in names})
    missing = [q for q in queues if q not in serving]
    if missing:
        raise RuntimeError(f"no worker consumes queue(s) {missing}; workers online: {online}")
    return {"workers": online}


def _whisper_model() -> dict:
    """The Whisper folder (``WHISPER_MODEL_DIR``) is complete and its model.bin has the expected
    sha256 (hashed once per process): language, transcribe and whisper_probe models need it."""
    from workers.runtime import whisper_model_problem

    problem = whisper_model_problem()
    if problem:
        raise RuntimeError(problem)
    return {"model_dir": Path(settings.WHISPER_MODEL_DIR).name}


READINESS_CHECKS: list[Check] = [
    Check("database", _database),
    Check("broker", _broker),
    Check("storage", _storage),
    Check("workers", _workers, needs=("broker",)),
    Check("whisper_model", _whisper_model),
    Check("similarity", lambda: _similarity(), needs=("database",)),
]

#: over this many stored embeddings (None: ``SIMILAR_EXACT_MAX``), an exact (numpy) similarity search
#: may stop at a user's newest ``SIMILAR_EXACT_MAX`` (searching 100k took 11 s on the project's 2-core
#: machine before the cap): readiness says so
EXACT_SIMILARITY_WARN_AT: int | None = None


def _similarity() -> dict:
    """Which similarity search answers (pgvector's HNSW index or the exact numpy fallback) and, for the
    fallback over many embeddings, a warning that queries will be slow. Never fails readiness: a
    slow search still answers."""
    from recognition import vectorindex
    from recognition.models import Embedding

    used = vectorindex.backend()
    detail: dict = {"backend": used}
    if used == "exact":
        count = Embedding.objects.count()
        detail["embeddings"] = count
        cap = settings.SIMILAR_EXACT_MAX
        if count > (cap if EXACT_SIMILARITY_WARN_AT is None else EXACT_SIMILARITY_WARN_AT):
            detail["warning"] = (f"{count:,} embeddings and no pgvector index here: an exact similarity query compares at most "
                                 f"the user's newest {cap:,} (SIMILAR_EXACT_MAX) and says so. Install pgvector in this "
                                 "PostgreSQL and run 'manage.py vector_index' to search them all.")
    return detail


def register(check: Check) -> None:
    """Add a readiness check (once: a second check of the same name replaces the first)."""
    READINESS_CHECKS[:] = [c for c in READINESS_CHECKS if c.name != check.name] + [check]


def _timed(fn: Callable[[], dict | None]) -> dict:
    t0 = time.perf_counter()
    try:
        detail = fn()
        return {"ok": True, "ms": round((time.perf_counter() - t0) * 1000, 1), **(detail or {})}
    except Exception as exc:  # every failure is reported, none raised
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}


def readiness(checks: list[Check] | None = None) -> dict[str, dict]:
    """Run the checks in order: name -> ``{"ok": bool, "ms" | "error": ..., details}``."""
    results: dict[str, dict] = {}
    for check in READINESS_CHECKS if checks is None else checks:
        failed = [n for n in check.needs if not results.get(n, {}).get("ok")]
        if failed:
            results[check.name] = {"ok": False, "error": f"{', '.join(failed)} unreachable"}
        else:
            results[check.name] = _timed(check.run)
    return results


def liveness() -> dict:
    """The process answers: no database, broker or storage is touched."""
    return {"status": "ok", "pid": os.getpid(), "uptime_s": round(time.time() - _STARTED, 1),
            "debug": bool(settings.DEBUG)}
