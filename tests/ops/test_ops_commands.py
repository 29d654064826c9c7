"""manage.py recovery commands: retry_failed, requeue_stuck, cancel_job, purge_queue, job_timeline;
and the storage clean-up."""
from __future__ import annotations

import io
from datetime import timedelta

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.core.management import CommandError, call_command

from recognition import ops, services
from recognition.models import Job, JobChunk
from tests.conftest import wait_for_job
from tests.ops.conftest import make_recordings

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def _call(*args) -> str:
    out = io.StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def test_retry_failed_queues_only_the_failed_recordings_and_timeline_shows_workers(user, celery_worker, settings):
    settings.JOB_CHUNK_SIZE = {"features": 2}
    recs = make_recordings(user, 2, corrupt=2)
    job = wait_for_job(services.job_submit(owner=user, kind="features", recordings=recs, params={"extractors": ["mfcc"]}).pk)
    assert (job.total, job.done, job.failed) == (4, 2, 2)

    out = _call("retry_failed", str(job.pk))
    retry = Job.objects.exclude(pk=job.pk).get(owner=user)
    assert f"queued as job #{retry.pk}" in out
    assert sorted(retry.recordings.values_list("original_filename", flat=True)) == ["cut0.wav", "cut1.wav"]
    retry = wait_for_job(retry.pk)
    assert (retry.total, retry.failed) == (2, 2)

    table = _call("job_timeline", str(job.pk))
    assert celery_worker.name in table and "features" in table.splitlines()[1] and "done" in table
    assert len(table.splitlines()) == 2 + 2  # summary, header, one row per chunk
    rows = ops.job_timeline(job=job)
    assert all(r["worker"] == celery_worker.name and r["run_s"] is not None and r["attempts"] == 1 for r in rows)
    assert rows[0]["timings"]["features"] > 0  # the chunk of the two good recordings (the other only failed)

    with pytest.raises(CommandError, match="No recording of this job failed"):
        _call("retry_failed", str(wait_for_job(services.job_submit(
            owner=user, kind="features", recordings=recs[:1], params={"extractors": ["mfcc"]}).pk).pk))


def test_purge_requeue_and_cancel_with_no_worker_consuming(user, settings, other_workers_paused):
    settings.JOB_CHUNK_SIZE = {"features": 1}
    ops.queue_purge(queue="cpu")
    job = services.job_submit(owner=user, kind="features", recordings=make_recordings(user, 3), params={"extractors": ["mfcc"]})
    assert ops.queue_depths()["cpu"] == 3

    with pytest.raises(CommandError, match="holds 3 messages; add --yes"):
        _call("purge_queue", "cpu")
    out = _call("purge_queue", "cpu", "--yes")
    assert "Purged 3 messages" in out and f"[{job.pk}]" in out
    assert ops.queue_depths()["cpu"] == 0

    out = _call("requeue_stuck", str(job.pk))  # the lost messages of a job, by hand
    assert "requeued 3 chunks" in out
    assert ops.queue_depths()["cpu"] == 3
    assert set(JobChunk.objects.filter(job=job).values_list("error", flat=True)) == {"requeued by hand"}

    out = _call("cancel_job", str(job.pk))
    assert f"Job #{job.pk} cancelled" in out
    job.refresh_from_db()
    assert job.status == Job.Status.CANCELLED
    assert set(JobChunk.objects.filter(job=job).values_list("status", flat=True)) == {"cancelled"}
    with pytest.raises(CommandError, match="already cancelled"):
        _call("cancel_job", str(job.pk))
    with pytest.raises(CommandError, match="already cancelled"):
        _call("requeue_stuck", str(job.pk))
    out = _call("purge_queue", "cpu", "--yes")  # what a cancelled job left behind: revoked, never run
    assert "Purged 3 messages" in out and "waiting there: none" in out

    job2 = services.job_submit(owner=user, kind="features", recordings=make_recordings(user, 1, seconds=1.2),
                               params={"extractors": ["mfcc"]})
    out = _call("purge_queue", "cpu", "--yes", "--cancel-jobs")
    assert "Purged 1 messages" in out and f"Cancelled: [{job2.pk}]" in out
    assert Job.objects.get(pk=job2.pk).status == Job.Status.CANCELLED


def test_reaper_enqueues_chunks_that_never_reached_the_broker(user, settings, other_workers_paused, monkeypatch):
    ops.queue_purge(queue="cpu")
    monkeypatch.setattr("recognition.services.jobs._enqueue_chunks", lambda job, ids: None)  # the broker was down
    job = services.job_submit(owner=user, kind="features", recordings=make_recordings(user, 2), params={"extractors": ["mfcc"]})
    monkeypatch.undo()
    assert ops.queue_depths()["cpu"] == 0
    assert ops.chunks_reap(older_than=timedelta(hours=1)) == []  # too young
    requeued = ops.chunks_reap(older_than=timedelta(0))
    assert sorted(requeued) == sorted(job.chunks.values_list("pk", flat=True))
    assert ops.queue_depths()["cpu"] == 1
    services.job_cancel(job=job)
    ops.queue_purge(queue="cpu")


def test_storage_clean_deletes_only_orphans(user):
    from recognition.models import Recording

    rec = make_recordings(user, 1)[0]
    orphan_npz = default_storage.save("features/job-999999/0123.npz", ContentFile(b"x"))
    orphan_rec = default_storage.save("recordings/ff/ffff-orphan.wav", ContentFile(b"x"))
    result = ops.storage_clean_orphans(grace=timedelta(hours=1))
    assert orphan_npz not in result.deleted and default_storage.exists(orphan_npz)  # young: its row may be on the way
    result = ops.storage_clean_orphans(grace=timedelta(0))
    assert orphan_npz in result.deleted and orphan_rec in result.deleted
    assert not default_storage.exists(orphan_npz) and not default_storage.exists(orphan_rec)
    assert default_storage.exists(Recording.objects.get(pk=rec.pk).file.name)
    assert rec.file.name not in result.deleted


def test_storage_clean_sweeps_predict_uploads_no_worker_can_take(settings):
    key = default_storage.save("predict/0123abcd.wav", ContentFile(b"x"))
    assert key not in ops.storage_clean_orphans(grace=timedelta(0)).deleted  # a queued predict may still run
    assert default_storage.exists(key)
    settings.PREDICT_QUEUE_EXPIRES_S, settings.CELERY_TASK_TIME_LIMIT = 0, 0  # past the queue's expiry and the task limit
    assert key in ops.storage_clean_orphans(grace=timedelta(0)).deleted and not default_storage.exists(key)


def test_files_of_a_killed_upload_are_swept_within_minutes_by_default(settings):
    """The shipped grace and period: a file whose request died is gone within half an hour, not a day."""
    period = settings.CELERY_BEAT_SCHEDULE["clean-orphaned-storage"]["schedule"]
    assert settings.STORAGE_ORPHAN_GRACE_S + period <= 30 * 60
    import runpy
    from pathlib import Path

    web_timeout = runpy.run_path(str(Path(__file__).resolve().parents[2] / "gunicorn.conf.py"))["timeout"]
    assert settings.STORAGE_ORPHAN_GRACE_S > web_timeout  # no file of a request still running is taken


def test_beat_schedule_names_registered_tasks():
    from django.conf import settings

    from accentsite.celery import app

    app.loader.import_default_modules()
    for entry in settings.CELERY_BEAT_SCHEDULE.values():
        assert entry["task"] in app.tasks


def test_job_page_links_its_timeline_with_worker_and_stage_seconds(client, django_user_model, user):
    from django.utils import timezone

    client.force_login(django_user_model.objects.create_superuser("ops-tl", "tl@example.com", "pw-123456789"))
    now = timezone.now()
    job = Job.objects.create(owner=user, kind="features", status="succeeded", total=2, done=2)
    JobChunk.objects.create(job=job, index=0, recording_ids=[1, 2], status="done", worker="cpu@host-a", attempts=2,
                            enqueued_at=now - timedelta(seconds=5), started_at=now - timedelta(seconds=3), finished_at=now,
                            timings={"decode": 0.25, "features": 2.5})
    page = client.get(f"/admin/recognition/job/{job.pk}/change/").content.decode()
    assert f"/admin/recognition/job/{job.pk}/timeline/" in page and "/admin/recognition/workers/" in page
    html = client.get(f"/admin/recognition/job/{job.pk}/timeline/").content.decode()
    assert "cpu@host-a" in html and "<th>features s</th>" in html and "2.500" in html and "3.00" in html
    table = _call("job_timeline", str(job.pk))
    assert "cpu@host-a" in table and "2.50" in table and "0.25" in table
