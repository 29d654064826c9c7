"""Issue 14's recovery promises, caused for real (private Redis, real worker processes, SIGKILL):

* a running chunk heartbeats from a thread, so the reaper's short silence limit never requeues a
  chunk that is alive however long its one recording takes, and does requeue it within seconds of
  its worker dying (the broker's visibility timeout is an hour here: the reaper alone recovers it);
* a chunk whose worker dies on every delivery is given up after ``JOB_MAX_DELIVERIES``: its
  recordings fail with ``worker_lost`` and the job finishes.
"""
from __future__ import annotations

import time

import pytest

from recognition import ops
from recognition.models import JobChunk, RecordingResult
from tests.conftest import wait_for_job, wait_until
from tests.reliability.test_faults import _recordings, _running, _submit, assert_each_recording_once

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def _started(worker):
    """Start a worker without waiting for its ping: a solo worker that picks up a long chunk at
    once answers no broadcast until the chunk ends."""
    try:
        worker.start(timeout=0.01)
    except RuntimeError:
        assert worker.proc.poll() is None, worker.log.read_text()[-2000:]
    return worker


def test_the_reaper_leaves_a_live_chunk_alone_and_recovers_a_killed_one(broker, user, settings):
    settings.JOB_STUCK_AFTER_S = 3  # this test process plays celery beat's reaper
    recs = _recordings(user, [600, 2])
    slow = dict(CHUNK_HEARTBEAT_S="0.5", CELERY_VISIBILITY_TIMEOUT="3600")  # no broker redelivery
    first = broker.worker(**slow).start()
    # ~25 ms of CPU per audio second: the 600-s recording keeps its worker busy for well over the 7 s
    # watched below, even on a quiet machine with a warmed-up worker
    job = _submit(user, recs, extractors=["voice_quality", "formants", "egemaps", "spectral"])
    long_chunk = JobChunk.objects.get(job=job, index=0)
    wait_until(lambda: _running(long_chunk), timeout=90, what="the long chunk to start")
    started = time.monotonic()
    alive_for = 0.0
    while _running(long_chunk) and alive_for < 2 * settings.JOB_STUCK_AFTER_S + 1:
        assert ops.chunks_reap() == [], "the reaper requeued a chunk whose worker is alive"
        alive_for = time.monotonic() - started
        time.sleep(0.5)
    assert alive_for > 2 * settings.JOB_STUCK_AFTER_S, f"the long chunk ran only {alive_for:.1f} s; make it longer"
    assert _running(long_chunk), "the long chunk finished before the worker could be killed; make it longer"
    first.kill()
    requeued = wait_until(lambda: ops.chunks_reap(), timeout=30, interval=0.5, what="the reaper to requeue the chunk")
    assert requeued == [long_chunk.pk]
    second = broker.worker(**slow).start()
    job = wait_for_job(job.pk, timeout=240)
    assert job.status == "succeeded", job.error
    long_chunk.refresh_from_db()
    assert long_chunk.attempts == 2 and long_chunk.worker == second.name
    assert_each_recording_once(job, recs)


def test_a_chunk_whose_worker_dies_every_time_fails_with_worker_lost(broker, user, settings):
    settings.JOB_MAX_DELIVERIES = 3
    recs = _recordings(user, [300, 2])
    job = _submit(user, recs, extractors=["voice_quality", "formants", "spectral"])
    long_chunk = JobChunk.objects.get(job=job, index=0)
    for attempt in (1, 2, 3):  # the broker redelivers after its 6-s visibility timeout each time
        worker = _started(broker.worker(JOB_MAX_DELIVERIES="3"))
        wait_until(lambda a=attempt: JobChunk.objects.filter(pk=long_chunk.pk, status="running", attempts=a).exists(),
                   timeout=120, what=f"delivery {attempt} of the long chunk")
        worker.kill()
    _started(broker.worker(JOB_MAX_DELIVERIES="3"))
    job = wait_for_job(job.pk, timeout=180)
    assert job.status == "succeeded" and job.done == 1 and job.failed == 1
    lost = RecordingResult.objects.get(job=job, recording=recs[0])
    assert lost.error_code == "worker_lost" and "3 times" in lost.error_message
    long_chunk.refresh_from_db()
    assert long_chunk.status == "failed" and long_chunk.attempts == 3
