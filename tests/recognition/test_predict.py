"""POST /api/v1/predict/: one file, synchronous, every class probability."""
import pytest

from tests.conftest import speech
from tests.factories import upload

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _eager_predict():
    """The web sends /predict to the interactive queue; here the task runs in the test process
    (eagerly), so these tests need no worker. tests/reliability/test_safety.py runs it on a real one."""
    from accentsite.celery import app

    previous = app.conf.task_always_eager
    app.conf.task_always_eager = True
    yield
    app.conf.task_always_eager = previous


def test_predict_returns_every_class_probability(api, tiny_classifier):
    wav = speech("Please call Stella. Ask her to bring these things with her from the store.")
    response = api.post("/api/v1/predict/", {"file": upload("s.wav", wav), "model": f"tiny@{tiny_classifier.version}"},
                        format="multipart")
    assert response.status_code == 200, response.json()
    body = response.json()
    assert set(body["probabilities"]) == set(body["probabilities_raw"]) == {"native", "non_native"}
    assert sum(body["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
    assert body["predicted_class"] == max(body["probabilities"], key=body["probabilities"].get)
    assert body["confidence"] == pytest.approx(max(body["probabilities"].values()))
    # the old Flask / Gradio key stays, as a deprecated alias
    assert body["all_predictions"] == body["probabilities"] and body["all_predictions_raw"] == body["probabilities_raw"]
    assert body["calibrated"] is True and body["outcome"] == "ok"
    assert body["windows"] and all(w["end_s"] > w["start_s"] for w in body["windows"])
    assert body["model"] == f"tiny@{tiny_classifier.version}"


def test_predict_refuses_answers_under_the_threshold(api, tiny_classifier):
    wav = speech("Please call Stella.")
    body = api.post("/api/v1/predict/", {"file": upload("s.wav", wav), "model": f"tiny@{tiny_classifier.version}",
                                         "threshold": 0.999}, format="multipart").json()
    assert body["outcome"] == "uncertain"


def test_predict_bad_audio_and_unknown_model(api, tiny_classifier):
    bad = api.post("/api/v1/predict/", {"file": upload("x.wav", b"nope"), "model": "tiny"}, format="multipart")
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "not_audio"
    unknown = api.post("/api/v1/predict/", {"file": upload("s.wav", speech("hello")), "model": "nope"}, format="multipart")
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "unknown_model"


def test_predict_with_a_transcript_on_a_reading_model(api, tiny_reading_classifier):
    """A reading model aligns the transcript and says so; without one it answers from the audio
    alone and ``reading`` is null."""
    text = "Ask her to bring these things with her from the store."
    wav = speech(text)
    model = f"tiny-reading@{tiny_reading_classifier.version}"
    read = api.post("/api/v1/predict/", {"file": upload("s.wav", wav), "model": model, "transcript": text,
                                         "vad": False}, format="multipart").json()
    assert read["reading"]["fused"] and read["reading"]["prompt_words"] == 11 and read["reading"]["words_read"] >= 3
    assert "reading" in read["timings"]
    plain = api.post("/api/v1/predict/", {"file": upload("s.wav", wav), "model": model, "vad": False},
                     format="multipart").json()
    assert plain["reading"] is None and plain["probabilities"] != read["probabilities"]


def test_predict_answers_with_the_keys_of_a_jobs_prediction(api, tiny_classifier):
    """One inference path: /predict's answer holds every field a classify job's result returns,
    under the same names (both are ClassifyOutcome.api_dict())."""
    from recognition.api.serializers import PredictionSerializer

    wav = speech("Please call Stella. Ask her to bring these things with her from the store.")
    body = api.post("/api/v1/predict/", {"file": upload("s.wav", wav), "model": f"tiny@{tiny_classifier.version}"},
                    format="multipart").json()
    assert set(PredictionSerializer.Meta.fields) <= set(body)
