"""Faults caused for real while a batch runs: a worker SIGKILLed, the broker killed and restarted,
the database connections terminated, a chunk over its time limit, a recording deleted while its
job waits. The promise each test checks: the accepted job finishes (or says why not), every
recording has exactly one result, nothing is lost, nothing is stored twice.

Every test runs on a private Redis (see conftest.py) with its own worker processes, on the same
test database (PostgreSQL or SQLite) as the rest of the suite.
"""
from __future__ import annotations

import io
import time
from collections import Counter
from datetime import timedelta

import pytest
from django.core.files.storage import default_storage

from recognition import services
from recognition.models import FeatureSet, Job, JobChunk, RecordingResult
from tests.conftest import wait_for_job, wait_until
from tests.factories import audio_bytes, pulse_train
from tests.reliability.conftest import point_app_at

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

# parselmouth + librosa extractors without numba (no first-call compile inside a timed task).
EXTRACTORS = ["voice_quality", "formants", "spectral", "mfcc"]


def _recordings(user, seconds: list[float]):
    """One stored recording per duration, each a different voice (distinct sha256)."""
    recs = []
    for i, s in enumerate(seconds):
        data = audio_bytes(pulse_train(f0=110 + 5 * i, seconds=s, seed=i))
        rec, created = services.recording_create(owner=user, fileobj=io.BytesIO(data), filename=f"r{i}-{s:g}s.wav")
        assert created
        recs.append(rec)
    return recs


def _submit(user, recs, chunk_size: int = 1, extractors=EXTRACTORS) -> Job:
    return services.job_submit(owner=user, kind="features", recordings=recs,
                               params={"extractors": extractors, "chunk_size": chunk_size})


def _running(chunk: JobChunk) -> bool:
    return JobChunk.objects.filter(pk=chunk.pk, status=JobChunk.Status.RUNNING).exists()


def assert_each_recording_once(job: Job, recs, *, succeeded: int | None = None) -> None:
    """Exactly one result per recording, counters equal the rows, no chunk left open, no stray arrays."""
    job.refresh_from_db()
    per_recording = Counter(RecordingResult.objects.filter(job=job).values_list("recording_id", flat=True))
    assert per_recording == {r.pk: 1 for r in recs}
    assert job.total == len(recs) and job.done + job.failed == job.total
    assert job.done == (succeeded if succeeded is not None else len(recs))
    assert set(job.chunks.values_list("status", flat=True)) <= {"done", "failed"}
    n_extractors = len(job.params["extractors"])
    for result in RecordingResult.objects.filter(job=job, status="succeeded"):
        assert FeatureSet.objects.filter(result=result).count() == n_extractors
    arrays = default_storage.listdir(f"features/job-{job.pk}")[1] if default_storage.exists(f"features/job-{job.pk}") else []
    assert len(arrays) == job.done  # no .npz left behind by an interrupted attempt


def test_worker_sigkilled_mid_chunk_is_redelivered_by_the_broker(broker, user):
    """acks_late: the killed worker never acked, so Redis gives the message to the next worker
    once the visibility timeout (6 s here, CELERY_VISIBILITY_TIMEOUT) has passed. No reaper involved."""
    recs = _recordings(user, [2, 2, 240, 2, 2, 2])  # the 240-s one keeps its chunk busy for seconds
    first = broker.worker().start()
    job = _submit(user, recs)
    long_chunk = JobChunk.objects.get(job=job, index=2)
    wait_until(lambda: _running(long_chunk), timeout=90, what="the long chunk to start")
    first.kill()  # SIGKILL, in the middle of the long recording
    long_chunk.refresh_from_db()
    assert long_chunk.status == "running" and long_chunk.attempts == 1
    assert not Job.objects.get(pk=job.pk).is_terminal

    second = broker.worker().start()
    job = wait_for_job(job.pk, timeout=120)
    assert job.status == "succeeded", job.error
    assert_each_recording_once(job, recs)
    long_chunk.refresh_from_db()
    assert long_chunk.attempts == 2 and long_chunk.worker == second.name
    assert not RecordingResult.objects.filter(job=job, status="failed").exists()


def test_broker_killed_and_restarted_mid_batch(broker, user, settings):
    """Redis dies (SIGKILL) while a chunk runs and comes back on the same port with its AOF: the
    worker reconnects, the queued chunks run, the unacked one is restored, and the job completes.
    A job submitted while Redis is down is still accepted at once, and its unsent chunks are sent
    by the reaper's first pass once Redis is back (JOB_UNSENT_GRACE_S, not the 600-s lost limit)."""
    settings.JOB_UNSENT_GRACE_S = 0
    recs = _recordings(user, [2, 2, 180, 2, 2, 2])
    broker.worker().start()
    job = _submit(user, recs)
    long_chunk = JobChunk.objects.get(job=job, index=2)
    wait_until(lambda: _running(long_chunk), timeout=90, what="the long chunk to start")
    broker.redis.kill()

    # A job submitted while Redis is down is accepted at once: the request does not sit through the
    # publish retries; its chunks wait unsent and the reaper's first pass sends them once Redis is back.
    during = _submit(user, recs[:2])
    assert during.status == "queued" and not during.chunks.filter(enqueued_at__isnull=False).exists()
    broker.redis.start()
    point_app_at(broker.redis.url, broker.redis.url)
    requeued = services.job_requeue_stuck(older_than=timedelta(hours=1), queued_older_than=timedelta(hours=1))
    assert set(requeued) >= set(during.chunks.values_list("id", flat=True))  # unsent: no 600-s wait for them

    job = wait_for_job(job.pk, timeout=120)
    assert job.status == "succeeded", job.error
    assert_each_recording_once(job, recs)
    during = wait_for_job(during.pk, timeout=60)
    assert during.status == "succeeded"
    assert_each_recording_once(during, recs[:2])


def test_chunk_over_its_soft_time_limit_fails_its_unfinished_recordings(broker, user, monkeypatch):
    """A worker with a 2-s soft limit: the slow chunk's recordings fail with code time_limit, the
    other chunk finishes, the job succeeds. Celery enforces the limit in prefork children, the pool
    every shipped worker runs (the gpu worker too: prefork, concurrency 1). The solo pool enforces
    no time limits; it is left to tests and local runs.

    Celery stamps the limits into each message from the *publisher's* settings (the web process),
    so the test process's task gets the short limits too, not only the worker."""
    from workers import tasks

    task = tasks.run_features_chunk._get_current_object()
    monkeypatch.setattr(task, "soft_time_limit", 2)
    monkeypatch.setattr(task, "time_limit", 30)
    monkeypatch.setattr(task, "_exec_options", None)
    # chunk 0 = [300 s, 2 s, 2 s]: formants + voice quality on 300 s take ~6-10 s even on a quiet
    # machine (~20-35 ms per audio second), far over the 2-s soft limit
    recs = _recordings(user, [300, 2, 2, 2, 2, 2])
    w = broker.worker(pool="prefork", CELERY_TASK_SOFT_TIME_LIMIT="2", CELERY_TASK_TIME_LIMIT="30").start()
    job = wait_for_job(_submit(user, recs, chunk_size=3, extractors=["voice_quality", "formants"]).pk, timeout=120)
    assert job.status == "succeeded", job.error
    assert job.done == 3, w.log.read_text()[-4000:]
    assert_each_recording_once(job, recs, succeeded=3)
    failed = RecordingResult.objects.filter(job=job, status="failed")
    assert {r.recording_id for r in failed} == {r.pk for r in recs[:3]}
    assert {r.error_code for r in failed} == {"time_limit"} and all("time limit" in r.error_message for r in failed)
    chunks = list(job.chunks.order_by("index"))
    assert chunks[0].status == "failed" and "time limit" in chunks[0].error and chunks[1].status == "done"


def test_recording_deleted_while_its_job_is_queued(broker, user):
    """Nobody is consuming yet: the job waits in Redis, a recording is deleted, then a worker starts."""
    recs = _recordings(user, [2, 2, 2])
    job = _submit(user, recs, chunk_size=2, extractors=["spectral"])
    deleted_id, key = recs[1].pk, recs[1].file.name
    services.recording_delete(recording=recs[1])
    assert not default_storage.exists(key)
    broker.worker().start()
    job = wait_for_job(job.pk, timeout=60)
    assert job.status == "succeeded" and (job.done, job.failed) == (2, 1)
    gone = RecordingResult.objects.get(job=job, status="failed")
    assert gone.recording_id is None and gone.error_code == "deleted" and gone.recording_ref == f"deleted recording #{deleted_id}"
    assert RecordingResult.objects.filter(job=job).count() == 3
    time.sleep(0.5)  # a late duplicate delivery would show up here
    assert RecordingResult.objects.filter(job=job).count() == 3
