"""A classify job with the zero-shot spoken-words model and its own classes, end to end on the real
parts (database, Redis, a worker process), and the job's report over a labelled batch."""
import pytest

from recognition.models import Prediction
from tests.conftest import speech, wait_for_job
from tests.factories import upload

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def test_a_classify_job_with_classes_and_its_report(api, celery_worker):
    from recognition.services import shipped_models_register

    shipped_models_register()
    said = [("en-us", "stop"), ("en-gb-x-rp", "stop"), ("en-us", "go"), ("en-gb", "yes"), ("en-us", "no")]
    files, rows = [], ["filename,label,speaker"]
    for i, (voice, word) in enumerate(said):
        files.append(upload(f"{i}-{word}.wav", speech(word, voice=voice)))
        rows.append(f"{i}-{word}.wav,{word},{voice}")
    batch = api.post("/api/v1/batches/", {"name": "words", "files": files, "labels": upload("l.csv", "\n".join(rows).encode())},
                     format="multipart").json()
    classes = ["yes", "no", "stop", "go"]
    job = api.post("/api/v1/jobs/", {"kind": "classify", "batch": batch["id"], "model": "spoken-words",
                                     "params": {"classes": classes, "threshold": 0.8}}, format="json").json()
    job = wait_for_job(job["id"], timeout=240)
    assert job.status == "succeeded", job.error
    assert (job.done, job.failed) == (5, 0) and job.params["classes"] == classes

    predictions = list(Prediction.objects.filter(result__job=job).select_related("result__recording"))
    for p in predictions:
        assert set(p.probabilities) == set(classes) and sum(p.probabilities.values()) == pytest.approx(1, abs=1e-5)
        assert p.outcome == ("ok" if p.confidence >= 0.8 else "uncertain")
        assert p.model_version.name == "spoken-words"
    right = sum(p.predicted_class == p.result.recording.label for p in predictions)
    assert right >= 4  # espeak's words as measured (docs/models/spoken-words.md); one may go astray

    report = api.get(f"/api/v1/jobs/{job.pk}/report/").json()
    assert report["confusion_matrix"]["labels"] == classes
    assert sum(map(sum, report["confusion_matrix"]["matrix"])) == 5
    assert report["accuracy"] == pytest.approx(right / 5)
    answered = sum(p.outcome == "ok" for p in predictions)
    assert report["selective"]["coverage"] == pytest.approx(answered / 5) and report["selective"]["threshold"] == 0.8
