"""A job above JOB_PLAN_INLINE_MAX end to end: the API answers at once with the job planning, a real
worker runs its plan task (interactive queue), then its chunks, and the job completes."""
import pytest

from recognition.models import RecordingResult
from tests.conftest import wait_for_job
from tests.factories import audio_bytes, pulse_train, upload

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


@pytest.mark.parametrize("plan_slice", [5000, 2])  # one plan task, or three (2 recordings a slice, each sending the next)
def test_a_planned_job_completes_on_a_real_worker(api, celery_worker, settings, plan_slice):
    settings.JOB_PLAN_INLINE_MAX = 2
    settings.JOB_PLAN_SLICE = plan_slice  # fixed in the plan at submit: the worker reads it there
    files = [upload(f"p{f0}.wav", audio_bytes(pulse_train(f0=f0, seconds=1.0, seed=f0))) for f0 in (110, 130, 150, 170, 190)]
    batch = api.post("/api/v1/batches/", {"name": "planned", "files": files}, format="multipart").json()
    assert len(batch["recordings"]) == 5, batch

    answer = api.post("/api/v1/jobs/", {"kind": "features", "batch": batch["id"],
                                        "params": {"extractors": ["prosody"], "chunk_size": 2}}, format="json")
    assert answer.status_code == 202, answer.content
    body = answer.json()
    assert body["planning"] is True and body["progress"]["total"] == 5  # planned by the worker, not the request

    job = wait_for_job(body["id"], timeout=180)
    assert job.status == "succeeded" and job.plan is None
    assert (job.total, job.done, job.failed) == (5, 5, 0)
    assert [len(c.recording_ids) for c in job.chunks.order_by("index")] == [2, 2, 1]
    assert set(job.chunks.values_list("status", flat=True)) == {"done"}
    assert job.recordings.count() == 5 and RecordingResult.objects.filter(job=job, status="succeeded").count() == 5
    assert api.get(f"/api/v1/jobs/{job.pk}/").json()["planning"] is False
