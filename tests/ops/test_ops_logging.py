"""JSON log lines carry the ids bound in the log context, and extra= wins over the context."""
import json
import logging

from accentsite.logging import ContextFilter, JsonFormatter, log_context


def _format(logger_name: str, msg: str, **extra) -> dict:
    record = logging.getLogger(logger_name).makeRecord(logger_name, logging.INFO, __file__, 1, msg, (), None, extra=extra)
    assert ContextFilter().filter(record)
    return json.loads(JsonFormatter().format(record))


def test_context_ids_reach_json_lines():
    with log_context(task_id="t-1", chunk_id=7, job_id=3):
        line = _format("x", "hello", recording_id=11)
        inner = _format("x", "override", job_id=99)
    assert line == {**line, "message": "hello", "task_id": "t-1", "chunk_id": 7, "job_id": 3, "recording_id": 11}
    assert inner["job_id"] == 99
    assert "job_id" not in _format("x", "outside")
