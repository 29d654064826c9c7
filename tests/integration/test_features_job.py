"""End to end on the real parts: API upload -> PostgreSQL/SQLite -> Redis -> a Celery worker
process -> feature rows and .npz arrays in storage."""
import io

import numpy as np
import pytest
from django.core.files.storage import default_storage

from recognition.models import FeatureSet, RecordingResult
from tests.conftest import wait_for_job
from tests.factories import audio_bytes, pulse_train, truncated_wav, upload

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def test_features_job_over_a_batch_with_one_corrupt_file(api, celery_worker, settings):
    settings.JOB_CHUNK_SIZE = {"features": 2}
    files = [upload(f"voice{f0}.wav", audio_bytes(pulse_train(f0=f0, seconds=1.5, seed=f0))) for f0 in (120, 150, 200)]
    files.append(upload("cut.wav", truncated_wav()))
    batch = api.post("/api/v1/batches/", {"name": "e2e", "files": files}, format="multipart").json()
    assert len(batch["recordings"]) == 4, batch  # the truncated file's header is fine: it fails in the worker

    job = api.post("/api/v1/jobs/", {"kind": "features", "batch": batch["id"],
                                     "params": {"extractors": ["prosody", "mfcc"]}}, format="json").json()
    job = wait_for_job(job["id"], timeout=180)
    assert job.status == "succeeded"
    assert (job.total, job.done, job.failed) == (4, 3, 1)
    assert job.started_at and job.finished_at and job.timings["features"] > 0
    assert set(job.chunks.values_list("status", flat=True)) == {"done"}
    assert all(w.startswith("test-") for w in job.chunks.values_list("worker", flat=True))

    failed = RecordingResult.objects.get(job=job, status="failed")
    assert failed.recording.original_filename == "cut.wav"
    assert failed.error_code == "corrupt" and failed.error_message

    for f0 in (120, 150, 200):
        prosody = FeatureSet.objects.get(result__job=job, result__recording__original_filename=f"voice{f0}.wav", extractor="prosody")
        assert prosody.summary["f0_mean_hz"] == pytest.approx(f0, abs=3)
        assert set(FeatureSet.objects.filter(result=prosody.result).values_list("extractor", flat=True)) == {"prosody", "mfcc"}
        with default_storage.open(prosody.arrays, "rb") as fh:
            arrays = np.load(io.BytesIO(fh.read()))
            assert arrays["mfcc/mfcc"].shape[0] == 39

    results = api.get(f"/api/v1/jobs/{job.pk}/results/").json()
    assert results["count"] == 4
    assert api.get(f"/api/v1/jobs/{job.pk}/").json()["progress"] == {"total": 4, "done": 3, "failed": 1}


def test_cancel_keeps_finished_results(api, celery_worker, settings):
    from recognition import services
    from recognition.models import Job, Recording

    settings.JOB_CHUNK_SIZE = {"features": 1}
    files = [upload(f"c{i}.wav", audio_bytes(pulse_train(f0=100 + 7 * i, seconds=1.0, seed=i))) for i in range(12)]
    batch = api.post("/api/v1/batches/", {"name": "cancel", "files": files}, format="multipart").json()
    job = services.job_submit(owner=api.user, kind="features", recordings=list(Recording.objects.filter(batches=batch["id"])),
                              params={"extractors": ["voice_quality"]})
    import time

    deadline = time.monotonic() + 60
    while Job.objects.get(pk=job.pk).done < 1 and time.monotonic() < deadline:
        time.sleep(0.1)
    services.job_cancel(job=Job.objects.get(pk=job.pk))
    time.sleep(2)
    job.refresh_from_db()
    assert job.status == "cancelled"
    stored = RecordingResult.objects.filter(job=job).count()
    assert 1 <= stored < 12
    time.sleep(1)
    assert RecordingResult.objects.filter(job=job).count() <= stored + 1  # at most the chunk in hand finishes
