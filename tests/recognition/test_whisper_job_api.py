"""Language and transcribe jobs without a worker: submission checks, queues, stored rows through the
API, the CSV export and the admin review; /predict/ with task=language|transcribe runs Whisper here."""
from __future__ import annotations

import csv
import io
import uuid
from pathlib import Path

import pytest

from recognition import review, services
from recognition.errors import ServiceError
from recognition.models import LanguageResult, Recording, Transcript
from tests.conftest import speech
from tests.factories import upload

pytestmark = pytest.mark.django_db
MODEL_DIR = Path(__file__).resolve().parents[2] / "var" / "models" / "whisper-base"
ENGINE = {"model": "whisper-base", "model_sha256": "d" * 64}


def _recording(owner, name: str = "a.wav", duration_s: float = 12.0) -> Recording:
    return Recording.objects.create(owner=owner, file=f"recordings/{name}", original_filename=name, sha256=uuid.uuid4().hex,
                                    format="wav", duration_s=duration_s)


@pytest.mark.parametrize(("kind", "params", "message"), [
    ("language", {"window_s": 31}, "window_s"),
    ("language", {"window_s": 1}, "window_s"),
    ("language", {"languages": ["en", "xx"]}, "xx"),
    ("language", {"languages": [1]}, "languages"),
    ("language", {"languages": []}, "at least one"),
    ("language", {"language": "en"}, "Unknown parameter"),
    ("language", {"scan_s": 0.5}, "scan_s"),
    ("language", {"min_probability": 1.0}, "min_probability"),
    ("language", {"min_windows": -1}, "min_windows"),
    ("language", {"pad_windows": 1}, "wrong type"),
    ("transcribe", {"language": "klingon"}, "klingon"),
    ("transcribe", {"beam_size": 0}, "beam_size"),
    ("transcribe", {"beam_size": True}, "wrong type"),
    ("transcribe", {"window_s": 4}, "Unknown parameter"),
    ("transcribe", {"languages": ["en", "xx"]}, "xx"),
    ("transcribe", {"languages": "en"}, "wrong type"),
    ("transcribe", {"languages": []}, "at least one"),
])
def test_bad_params_are_refused_at_submission(user, kind, params, message) -> None:
    with pytest.raises(ServiceError, match=message) as caught:
        services.job_submit(owner=user, kind=kind, recordings=[_recording(user)], params=params, enqueue=False)
    assert caught.value.code == "invalid_params"


def test_good_params_are_cleaned_and_chunked_small(user, api, settings) -> None:
    recs = [_recording(user, f"r{i}.wav") for i in range(9)]
    job = services.job_submit(owner=user, kind="language", recordings=recs, params={"languages": ["EN", "fr", "en"], "window_s": 2.5},
                              enqueue=False)
    assert job.params["languages"] == ["en", "fr"] and job.model_version is None
    assert job.chunks.count() == 1  # 16 per chunk
    tr = services.job_submit(owner=user, kind="transcribe", recordings=recs, params={"language": "EN", "beam_size": 2}, enqueue=False)
    assert tr.params["language"] == "en" and tr.chunks.count() == 1  # cut by audio: 9 short clips, under 300 s
    assert {c.queue for c in tr.chunks.all()} == {"gpu"}  # 9 recordings: over INTERACTIVE_MAX_RECORDINGS (8)
    many = [_recording(user, f"m{i}.wav", duration_s=2.0) for i in range(20)]
    packed = services.job_submit(owner=user, kind="transcribe", recordings=many, enqueue=False)
    assert sorted(len(c.recording_ids) for c in packed.chunks.all()) == [4, 16]  # 40 s of audio, at most 16 recordings a chunk
    among = services.job_submit(owner=user, kind="transcribe", recordings=recs[:1], params={"languages": ["EN", "fr", "en"]},
                                enqueue=False)
    assert among.params["languages"] == ["en", "fr"]
    small = services.job_submit(owner=user, kind="transcribe", recordings=recs[:2], enqueue=False)
    assert {c.queue for c in small.chunks.all()} == {"interactive"}
    settings.JOB_CHUNK_SIZE = {}
    fixed = services.job_submit(owner=user, kind="transcribe", recordings=recs, params={"chunk_size": 4}, enqueue=False)
    assert fixed.chunks.count() == 3  # a chunk_size param still cuts by count
    with pytest.raises(ServiceError, match="model"):
        services.job_submit(owner=user, kind="language", recordings=recs, model="tiny", enqueue=False)
    from recognition.models import ModelVersion

    ModelVersion.objects.create(name="m", version="1", family="cnn", task="classify", labels=["a", "b"], is_default=True)
    auto = services.job_submit(owner=user, kind="classify", recordings=recs, params={"transcript": "auto"}, model="m@1", enqueue=False)
    assert auto.chunks.count() == 3  # short chunks (4): Whisper may transcribe each recording alone first
    bad = api.post("/api/v1/jobs/", {"kind": "language", "recordings": [recs[0].pk], "params": {"languages": ["zz"]}}, format="json")
    assert bad.status_code == 400 and "zz" in bad.json()["error"]["message"]


def _language_outcome() -> dict:
    windows = [
        {"start_s": 0.0, "end_s": 4.0, "speech": True, "language": "en", "probability": 0.9, "top": {"en": 0.9, "es": 0.05}},
        {"start_s": 4.0, "end_s": 8.0, "speech": False, "language": None, "probability": None, "top": {}},
        {"start_s": 8.0, "end_s": 12.0, "speech": True, "language": "es", "probability": 0.8, "top": {"es": 0.8, "en": 0.1}},
    ]
    return {"outcome": "ok", "language": "en", "probability": 0.5, "shares": {"en": 0.5, "es": 0.5},
            "mean_probabilities": {"en": 0.5, "es": 0.425}, "windows": windows, "languages": None, "window_s": 4.0}


def _transcript() -> dict:
    return {"text": "=Please call Stella.", "language": "en", "language_probability": 0.97, "params": {"beam_size": 1},
            "segments": [{"start_s": 0.0, "end_s": 1.2, "text": "Please call Stella.", "avg_logprob": -0.2, "no_speech_prob": 0.01,
                          "words": [{"word": "Please", "start_s": 0.0, "end_s": 0.4, "probability": 0.9},
                                    {"word": "call", "start_s": 0.4, "end_s": 0.7, "probability": 0.3},
                                    {"word": "Stella.", "start_s": 0.7, "end_s": 1.2, "probability": 0.95}]}]}


def test_stored_results_in_the_api_csv_and_admin(user, api, client, django_user_model) -> None:
    rec = _recording(user)
    lang = services.job_submit(owner=user, kind="language", recordings=[rec], enqueue=False)
    services.result_store_language(job=lang, recording=rec, outcome=_language_outcome(), model=ENGINE, timings={"language": 0.2})
    tr = services.job_submit(owner=user, kind="transcribe", recordings=[rec], enqueue=False)
    services.result_store_transcript(job=tr, recording=rec, transcript=_transcript(), model=ENGINE, timings={})
    # stored again (a redelivered chunk): still one row each
    services.result_store_transcript(job=tr, recording=rec, transcript=_transcript(), model=ENGINE, timings={})
    assert Transcript.objects.filter(result__job=tr).count() == 1 and LanguageResult.objects.count() == 1

    shown = api.get(f"/api/v1/jobs/{lang.pk}/results/").json()["results"][0]
    assert shown["language"]["language"] == "en" and shown["language"]["shares"] == {"en": 0.5, "es": 0.5}
    assert shown["language"]["model_sha256"] == "d" * 64 and shown["transcript"] is None and shown["prediction"] is None
    said = api.get(f"/api/v1/jobs/{tr.pk}/results/").json()["results"][0]["transcript"]
    assert said["text"] == "=Please call Stella." and said["segments"][0]["words"][1]["word"] == "call"

    rows = list(csv.reader(io.StringIO(b"".join(api.get(f"/api/v1/jobs/{tr.pk}/results/?export=csv").streaming_content).decode())))
    assert rows[0][-3:] == ["language", "language_probability", "text"]
    assert rows[1][-3:] == ["en", "0.97", "'=Please call Stella."]  # formula neutralised
    rows = list(csv.reader(io.StringIO(b"".join(api.get(f"/api/v1/jobs/{lang.pk}/results/?export=csv").streaming_content).decode())))
    assert rows[0][-4:] == ["language", "language_probability", "language_outcome", "shares"]
    assert rows[1][-4:] == ["en", "0.5", "ok", "en:0.500 es:0.500"]

    timeline = review.language_timeline(_language_outcome()["windows"], {"en": 0.5, "es": 0.5}, 12.0)
    assert [s["language"] for s in timeline["segments"]] == ["en", "", "es"]
    assert [s["left"] for s in timeline["segments"]] == pytest.approx([0, 33.333, 66.667])
    assert timeline["segments"][0]["colour"] != timeline["segments"][2]["colour"]
    assert [(item["language"], item["percent"]) for item in timeline["legend"]] == [("en", 50.0), ("es", 50.0)]

    admin = django_user_model.objects.create_superuser("boss", "boss@example.com", "pw-123456789")
    client.force_login(admin)
    page = client.get(f"/admin/recognition/recording/{rec.pk}/change/").content.decode()
    assert 'class="langbar"' in page and 'data-language="es"' in page and "en 50.0 %" in page
    assert "=Please call Stella." in page and 'class="word low"' in page  # "call" at 0.3
    for job in (lang, tr):
        assert client.get(f"/admin/recognition/job/{job.pk}/change/").status_code == 200


@pytest.fixture
def whisper_here():
    """The bundled model, and /predict's worker task run eagerly in this process (as in test_predict.py;
    tests/integration/test_whisper_jobs.py runs Whisper on a real worker)."""
    from accentsite.celery import app

    if not (MODEL_DIR / "model.bin").is_file():
        pytest.fail("the bundled Whisper base is not assembled (make setup)")
    previous = app.conf.task_always_eager
    app.conf.task_always_eager = True
    yield
    app.conf.task_always_eager = previous


def test_predict_language_and_transcribe(api, whisper_here) -> None:
    wav = speech("Please call Stella. Ask her to bring these things with her from the store.")
    got = api.post("/api/v1/predict/", {"file": upload("a.wav", wav), "task": "language", "languages": "en, fr,es", "window_s": 3},
                   format="multipart")
    assert got.status_code == 200, got.content
    body = got.json()
    assert body["task"] == "language" and body["language"] == "en" and body["languages"] == ["en", "fr", "es"]
    assert body["window_s"] == 3.0 and body["model_sha256"] and body["windows"][0]["end_s"] == 3.0
    said = api.post("/api/v1/predict/", {"file": upload("a.wav", wav), "task": "transcribe"}, format="multipart").json()
    assert "ask her to bring these things with her from the store" in said["text"].lower() and said["language"] == "en"
    assert said["segments"][0]["words"][0]["word"].lower() == "please"
    among = api.post("/api/v1/predict/", {"file": upload("a.wav", wav), "task": "transcribe", "languages": "fr,es"},
                     format="multipart").json()
    assert among["language"] in ("fr", "es") and all(seg["language"] in ("fr", "es") for seg in among["segments"])
    assert among["params"]["languages"] == ["fr", "es"]
    scanned = api.post("/api/v1/predict/", {"file": upload("a.wav", wav), "task": "language", "scan_s": 2,
                                            "min_probability": 0.99}, format="multipart").json()
    assert scanned["scan_s"] == 2.0 and scanned["min_probability"] == 0.99
    bad = api.post("/api/v1/predict/", {"file": upload("a.wav", wav), "task": "language", "languages": "en,xx"}, format="multipart")
    assert bad.status_code == 400 and "xx" in bad.json()["error"]["message"]
    bad = api.post("/api/v1/predict/", {"file": upload("a.wav", wav), "task": "language", "window_s": 45}, format="multipart")
    assert bad.status_code == 400


def test_a_missing_whisper_is_a_409_for_predict(api, settings, tmp_path, whisper_here) -> None:
    settings.WHISPER_MODEL_DIR = str(tmp_path / "none")
    got = api.post("/api/v1/predict/", {"file": upload("a.wav", speech("Hello there, good morning.")), "task": "transcribe"},
                   format="multipart")
    assert got.status_code == 409 and got.json()["error"]["code"] == "model_unavailable"
