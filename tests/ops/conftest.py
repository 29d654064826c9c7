"""Fixtures for the operations tests: recordings made here, and other workers kept off the queues.

Tests that kill or stop their own worker must be the only consumer of the job queues: when the
session's ``celery_worker`` (or any other worker on this broker database) is up, its consumers are
cancelled for the test and added back afterwards.
"""
from __future__ import annotations

import io

import pytest

from recognition import ops
from tests.factories import audio_bytes, pulse_train, truncated_wav


def make_recordings(owner, n: int, seconds: float = 1.0, corrupt: int = 0) -> list:
    from recognition import services

    recs = []
    for i in range(n):
        data = audio_bytes(pulse_train(f0=110 + 9 * i, seconds=seconds, seed=i))
        recs.append(services.recording_create(owner=owner, fileobj=io.BytesIO(data), filename=f"r{i}.wav")[0])
    for i in range(corrupt):
        data = truncated_wav(seconds=1.5 + 0.1 * i)
        recs.append(services.recording_create(owner=owner, fileobj=io.BytesIO(data), filename=f"cut{i}.wav")[0])
    return recs


@pytest.fixture
def other_workers_paused():
    """Cancel every other live worker's consumers of the job queues for this test."""
    from accentsite.celery import app

    paused: dict[str, list[str]] = {}
    for name in ops.worker_records():  # who is alive; what each consumes now, from the worker itself
        replies = app.control.inspect(destination=[name], timeout=3).active_queues() or {}
        queues = [q["name"] for q in replies.get(name, []) if q["name"] in ops.QUEUES]
        for queue in queues:
            app.control.cancel_consumer(queue, destination=[name], reply=True, timeout=5)
        paused[name] = queues
    yield paused
    for name, queues in paused.items():
        for queue in queues:
            app.control.add_consumer(queue, destination=[name], reply=True, timeout=5)

