"""Workers that die or stop mid-chunk, the stuck-chunk reaper, and the admin Workers page."""
from __future__ import annotations

import json
import signal
from collections import Counter

import pytest

from recognition import ops, services
from recognition.models import Job, JobChunk, RecordingResult
from tests.conftest import WorkerProcess, wait_for_job
from tests.conftest import wait_until as wait_for
from tests.ops.conftest import make_recordings

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

# ~2-4 s of parselmouth work per 90-s recording here: long enough to catch a chunk in hand.
SLOW = {"extractors": ["formants", "voice_quality"]}


def _one_result_per_recording(job: Job, recs) -> None:
    per_recording = Counter(RecordingResult.objects.filter(job=job).values_list("recording_id", flat=True))
    assert per_recording == Counter({r.pk: 1 for r in recs})


def _running_chunk(job: Job) -> JobChunk | None:
    return JobChunk.objects.filter(job=job, status=JobChunk.Status.RUNNING).first()


def test_reaper_requeues_the_chunk_of_a_killed_worker(user, worker_env, tmp_path, settings, other_workers_paused):
    from workers.maintenance import reap_stuck_chunks

    settings.JOB_CHUNK_SIZE = {"features": 1}
    recs = make_recordings(user, 3, seconds=90)
    first = WorkerProcess(worker_env, tmp_path / "first.log", queues="cpu").start()
    try:
        job = services.job_submit(owner=user, kind="features", recordings=recs, params=SLOW)
        chunk = wait_for(lambda: _running_chunk(job), timeout=90)
        first.kill(signal.SIGKILL)
    finally:
        first.kill(signal.SIGKILL)
        ops.broker_redis().delete(ops.WORKER_KEY_PREFIX + first.name)  # what its heartbeat TTL does in 30 s
    chunk.refresh_from_db()
    assert chunk.status == JobChunk.Status.RUNNING and chunk.attempts == 1  # it died holding the chunk
    before = ops.counters().get("chunks_requeued_by_reaper", 0)
    # the dead worker's beat key goes (its helper sees the pipe close, or the key's TTL ends): then the reaper acts
    wait_for(lambda: chunk.pk not in services.chunks_beating([chunk.pk]), timeout=45)

    requeued = reap_stuck_chunks(older_than_s=0)  # the beat task's body, with a tiny limit
    assert chunk.pk in requeued
    assert ops.counters()["chunks_requeued_by_reaper"] >= before + 1
    chunk.refresh_from_db()
    assert chunk.status == JobChunk.Status.QUEUED and chunk.error == "requeued: no heartbeat"

    second = WorkerProcess(worker_env, tmp_path / "second.log", queues="cpu").start()
    try:
        job = wait_for_job(job.pk, timeout=120)
    finally:
        second.stop()
    assert job.status == Job.Status.SUCCEEDED and (job.done, job.failed) == (3, 0)
    _one_result_per_recording(job, recs)
    chunk.refresh_from_db()
    assert chunk.status == JobChunk.Status.DONE and chunk.attempts == 2 and chunk.worker == second.name


def test_sigterm_finishes_the_chunk_in_hand_then_another_worker_completes_the_job(
    user, worker_env, tmp_path, settings, other_workers_paused
):
    settings.JOB_CHUNK_SIZE = {"features": 1}
    recs = make_recordings(user, 3, seconds=90)
    log = tmp_path / "term.log"
    first = WorkerProcess({**worker_env, "LOG_FORMAT": "json"}, log, queues="cpu").start()
    try:
        job = services.job_submit(owner=user, kind="features", recordings=recs, params=SLOW)
        chunk = wait_for(lambda: _running_chunk(job), timeout=90)
        first.proc.send_signal(signal.SIGTERM)  # warm shutdown
        first.proc.wait(timeout=60)
    finally:
        first.kill(signal.SIGKILL)
    chunk.refresh_from_db()
    assert chunk.status == JobChunk.Status.DONE and chunk.attempts == 1 and chunk.worker == first.name
    assert Job.objects.get(pk=job.pk).status == Job.Status.RUNNING  # the rest waits for a worker

    second = WorkerProcess(worker_env, tmp_path / "second.log", queues="cpu").start()
    try:
        job = wait_for_job(job.pk, timeout=120)
    finally:
        second.stop()
    assert job.status == Job.Status.SUCCEEDED and (job.done, job.failed) == (3, 0)
    _one_result_per_recording(job, recs)
    assert JobChunk.objects.filter(job=job).exclude(attempts=1).count() == 0

    # JSON lines from inside the task carry the task, chunk and job ids.
    records = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    assert records, "the worker wrote no JSON log lines"
    in_task = [r for r in records if r.get("chunk_id") == chunk.pk]
    assert in_task and all(r.get("job_id") == job.pk and r.get("task_id") for r in in_task)


def test_workers_page_lists_a_live_worker(client, django_user_model, celery_worker):
    client.force_login(django_user_model.objects.create_superuser("ops-admin", "a@example.com", "pw-123456789"))
    rows = {w["name"]: w for w in ops.workers_overview()}
    row = rows[celery_worker.name]
    assert (row["answered"], row["pool"], row["device"]) == (True, "solo", "cpu"), rows
    assert set(row["queues"]) == {"cpu", "gpu", "interactive"}
    assert row["heartbeat_at"] is not None and row["tasks_done"] is not None

    page = client.get("/admin/recognition/workers/")
    assert page.status_code == 200
    html = page.content.decode()
    assert celery_worker.name in html and "cpu, gpu, interactive" in html and 'id="queue-depths"' in html
    assert "/admin/recognition/workers/" in client.get("/admin/recognition/job/").content.decode()
    assert client.get("/admin/recognition/workers/", follow=False).status_code == 200
    client.logout()
    assert client.get("/admin/recognition/workers/").status_code == 302  # staff only
