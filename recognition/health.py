"""Health checks for load balancers: database, broker, storage, and a live worker per queue."""
from __future__ import annotations

import time
import uuid

from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import connection

QUEUES = ("cpu", "gpu")


def _timed(fn) -> dict:
    t0 = time.perf_counter()
    try:
        detail = fn()
        return {"ok": True, "ms": round((time.perf_counter() - t0) * 1000, 1), **(detail or {})}
    except Exception as exc:  # every failure is reported, none raised
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}


def _database() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")


def _broker() -> None:
    import redis

    redis.Redis.from_url(settings.CELERY_BROKER_URL, socket_timeout=2, socket_connect_timeout=2).ping()


def _storage() -> None:
    key = default_storage.save(f"healthz/{uuid.uuid4().hex}", ContentFile(b"ok"))
    default_storage.delete(key)


def _workers() -> dict:
    """A live worker per queue, from inspect() replies and fresh heartbeats (recognition.ops).

    A solo-pool worker busy with a chunk does not answer broadcasts; its heartbeat, written by a
    thread every WORKER_HEARTBEAT_S, still shows it alive and which queues it consumes.
    """
    from recognition import ops

    serving = ops.serving_queues(required=QUEUES, timeout=1.0)
    online = sorted({w for names in serving.values() for w in names})
    missing = [q for q in QUEUES if q not in serving]
    if missing:
        raise RuntimeError(f"no worker consumes queue(s) {missing}; workers online: {online}")
    return {"workers": online}


def health_checks() -> dict[str, dict]:
    checks = {"database": _timed(_database), "broker": _timed(_broker), "storage": _timed(_storage)}
    checks["workers"] = _timed(_workers) if checks["broker"]["ok"] else {"ok": False, "error": "broker unreachable"}
    return checks
