"""Log formatting and context: JSON lines carrying job, chunk, recording and task ids.

``ContextFilter`` (on the console handler) copies the ids bound with ``log_context`` onto every
record, unless the record already carries them through ``extra=``. Celery's ``task_prerun`` signal
binds ``task_id``, ``chunk_id`` and ``job_id`` for everything a task logs (recognition/worker_signals.py), and
web code passes ``extra={"job_id": ...}``, so ``grep '"job_id": 42'`` follows one job across web and
workers when ``LOG_FORMAT=json``.
"""
from __future__ import annotations

import contextlib
import contextvars
import json
import logging
from collections.abc import Iterator

_CONTEXT_KEYS = ("job_id", "chunk_id", "recording_id", "task_id")
_context: contextvars.ContextVar[dict | None] = contextvars.ContextVar("accentsite_log_context", default=None)


def bind(**ids: object) -> contextvars.Token:
    """Add ids to the log context of this thread / task; returns a token for ``unbind``."""
    return _context.set({**(_context.get() or {}), **{k: v for k, v in ids.items() if v is not None}})


def unbind(token: contextvars.Token | None = None) -> None:
    """Drop what ``bind`` added (all of it when no token is given)."""
    if token is None:
        _context.set(None)
    else:
        _context.reset(token)


@contextlib.contextmanager
def log_context(**ids: object) -> Iterator[None]:
    token = bind(**ids)
    try:
        yield
    finally:
        unbind(token)


class ContextFilter(logging.Filter):
    """Copy the bound ids onto each record (never overriding ``extra=``); ``%(context)s`` for text logs."""

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in (_context.get() or {}).items():
            if not hasattr(record, key):
                setattr(record, key, value)
        present = [f"{k}={getattr(record, k)}" for k in _CONTEXT_KEYS if getattr(record, k, None) is not None]
        record.context = f" [{' '.join(present)}]" if present else ""
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        payload = {
            "time": self.formatTime(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in _CONTEXT_KEYS:
            if getattr(record, key, None) is not None:
                payload[key] = getattr(record, key)
        if record.exc_info:
            payload["exc"] = self.formatException(record.exc_info)
        return json.dumps(payload, default=str)
