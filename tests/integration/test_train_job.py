"""A train job through the API: labelled batch in, a registered model version out, usable at once."""
import time
from datetime import timedelta

import pytest

from recognition import services
from recognition.models import Job, JobChunk, ModelVersion
from tests.conftest import speech, wait_for_job
from tests.factories import upload

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

VOICES = {"us": ["en-us", "en-us-nyc", "en-029"], "gb": ["en-gb", "en-gb-scotland", "en-gb-x-rp"]}
TEXTS = ["Please call Stella.", "Ask her to bring these things.", "We also need a small plastic snake."]


def _labelled_batch(api, name: str, prefix: str = "") -> dict:
    """36 espeak clips: 2 accents x 3 voices x 2 speeds x 3 sentences, one speaker per voice and speed."""
    files, rows = [], ["filename,label,speaker"]
    for label, voices in VOICES.items():
        for voice in voices:
            for speed in (130, 170):
                speaker = f"{voice}-{speed}"
                for i, text in enumerate(TEXTS):
                    filename = f"{prefix}{speaker}-{i}.wav"
                    files.append(upload(filename, speech(text, voice=voice, speed=speed)))
                    rows.append(f"{filename},{label},{speaker}")
    return api.post("/api/v1/batches/", {"name": name, "files": files, "labels": upload("l.csv", "\n".join(rows).encode())},
                    format="multipart").json()


def test_train_job_registers_a_model_that_classifies(api, celery_worker):
    batch = _labelled_batch(api, "train")
    assert len(batch["recordings"]) == 36 and not batch["rejected"]
    params = {"family": "cnn", "name": "us-vs-gb", "epochs": 3, "window_s": 1.0, "hop_s": 0.5,
              "hparams": {"n_mels": 32, "channels": 4, "embedding_dim": 16, "specaug": False}}
    job = api.post("/api/v1/jobs/", {"kind": "train", "batch": batch["id"], "params": params}, format="json")
    assert job.status_code == 202, job.json()
    job_id = job.json()["id"]
    assert JobChunk.objects.filter(job_id=job_id).count() == 1  # one training, one unit of work
    # while it trains, a reaper with a 1-s silence limit finds nothing to restart: the chunk beats
    deadline = time.monotonic() + 300
    while not Job.objects.get(pk=job_id).is_terminal and time.monotonic() < deadline:
        # a 1-s silence limit for running chunks; queued ones keep the shipped 10-min limit (a chunk the worker has
        # received but not yet started is neither silent nor lost)
        assert services.job_requeue_stuck(older_than=timedelta(seconds=1), queued_older_than=timedelta(minutes=10)) == [], \
            "the reaper restarted a live training"
        time.sleep(0.5)
    job = wait_for_job(job_id, timeout=10)
    assert job.status == "succeeded", job.error
    assert job.done == job.total == 3  # progress moved by epoch
    assert JobChunk.objects.get(job=job).attempts == 1

    mv = ModelVersion.objects.get(name="us-vs-gb")
    assert mv.train_job_id == job.pk and mv.owner_id == api.user.pk  # private to whoever trained it
    assert mv.labels == ["gb", "us"] and mv.checkpoint.startswith("storage:") and len(mv.sha256) == 64
    assert mv.is_default and mv.calibration["temperature"] > 0
    assert mv.metrics["test"]["confusion_matrix"]["labels"] == ["gb", "us"]
    splits = mv.training_data["splits"]
    assert splits["train"]["speakers"] and splits["test"]["speakers"]
    assert job.params["trained_model"] == str(mv)

    listed = api.get("/api/v1/models/?name=us-vs-gb").json()["results"]
    assert [m["version"] for m in listed] == [mv.version]

    one = [r for r in batch["recordings"]][0]
    classify = api.post("/api/v1/jobs/", {"kind": "classify", "recordings": [one["id"]], "model": "us-vs-gb"}, format="json")
    assert wait_for_job(classify.json()["id"], timeout=120).status == "succeeded"


def test_cancelling_a_running_training_stops_it_and_registers_nothing(api, celery_worker):
    """The cancel arrives while the worker trains (after its first epoch): training stops at its next
    step, the chunk closes as cancelled, and no model takes the name."""
    from tests.conftest import wait_until

    batch = _labelled_batch(api, "cancel-me", prefix="c-")
    params = {"family": "cnn", "name": "never-registered", "epochs": 1000, "window_s": 1.0, "hop_s": 0.5,
              "hparams": {"n_mels": 32, "channels": 4, "embedding_dim": 16, "specaug": False}}
    job_id = api.post("/api/v1/jobs/", {"kind": "train", "batch": batch["id"], "params": params}, format="json").json()["id"]

    def training():
        job = Job.objects.get(pk=job_id)
        assert not job.is_terminal, job.error
        return job.done >= 1

    wait_until(training, timeout=300, interval=0.2, what="the first epoch")
    assert api.post(f"/api/v1/jobs/{job_id}/cancel/").status_code == 200
    chunk = wait_until(lambda: JobChunk.objects.filter(job_id=job_id, status=JobChunk.Status.CANCELLED).first(), timeout=120,
                       interval=0.2, what="the training to stop")
    job = Job.objects.get(pk=job_id)
    assert job.status == Job.Status.CANCELLED and job.done < 1000 and chunk.finished_at is not None
    assert not ModelVersion.objects.filter(name="never-registered").exists()
    assert job.params.get("trained_model") is None
