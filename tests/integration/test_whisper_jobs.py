"""Language and transcribe jobs, and classify with transcript "auto", on the real parts (database,
Redis, a worker process running the bundled Whisper base on the CPU)."""
import csv
import io
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from recognition.models import LanguageResult, Prediction, Transcript
from tests.conftest import speech, wait_for_job
from tests.factories import audio_bytes, upload

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

MODEL_DIR = Path(__file__).resolve().parents[2] / "var" / "models" / "whisper-base"
# espeak-ng voices Whisper base hears as their language (not de / pt / nl)
SPOKEN = {
    "en": ("en-us", "The quick brown fox jumps over the lazy dog. Please call Stella and ask her to bring these things with her."),
    "fr": ("fr-fr", "Le renard brun rapide saute par-dessus le chien paresseux. Veuillez appeler Stella et lui demander d'apporter ces choses."),
    "es": ("es", "El rápido zorro marrón salta sobre el perro perezoso. Por favor, llama a Estela y pídele que traiga estas cosas."),
    "it": ("it", "La volpe marrone veloce salta sopra il cane pigro. Per favore chiama Stella e chiedile di portare queste cose."),
    "pl": ("pl", "W Szczebrzeszynie chrząszcz brzmi w trzcinie. Jutro pojedziemy pociągiem do Krakowa na wycieczkę."),
}


@pytest.fixture(autouse=True)
def _whisper():
    if not (MODEL_DIR / "model.bin").is_file():
        pytest.skip("the bundled Whisper base is not assembled (make setup)")


def _say(code: str) -> bytes:
    voice, text = SPOKEN[code]
    return speech(text, voice=voice, speed=175)


def _samples(wav: bytes) -> tuple[np.ndarray, int]:
    x, sr = sf.read(io.BytesIO(wav), dtype="float32")
    return x, sr


def words(text: str) -> list[str]:
    return re.sub(r"[^\w\s']", " ", text.lower()).split()


def test_language_job_over_five_languages_and_a_switch(api, celery_worker):
    files = [upload(f"{code}.wav", _say(code)) for code in SPOKEN]
    en, sr = _samples(speech(SPOKEN["en"][1] + " " + SPOKEN["en"][1], voice="en-us", speed=175))
    es, sr_es = _samples(speech(SPOKEN["es"][1] + " " + SPOKEN["es"][1], voice="es", speed=175))
    assert sr == sr_es and len(en) > 8 * sr and len(es) > 8 * sr
    switch_s = len(en) / sr
    files.append(upload("switch.wav", audio_bytes(np.concatenate([en, es]), sr)))
    quiet, sr_q = _samples(_say("en"))  # peak -50 dBFS, RMS under -60 dBFS: refused as silent before
    files.append(upload("quiet.wav", audio_bytes((quiet * (10 ** (-50 / 20) / np.abs(quiet).max())).astype(np.float32), sr_q)))
    batch = api.post("/api/v1/batches/", {"name": "tongues", "files": files}, format="multipart").json()
    job = api.post("/api/v1/jobs/", {"kind": "language", "batch": batch["id"], "params": {"window_s": 4}}, format="json").json()
    assert job["model"] is None
    job = wait_for_job(job["id"], timeout=240)
    assert job.status == "succeeded", job.error
    assert (job.done, job.failed) == (7, 0) and job.timings["language"] > 0

    rows = {r.result.recording.original_filename: r for r in LanguageResult.objects.filter(result__job=job).select_related("result__recording")}
    for code in SPOKEN:  # one sentence each: heard whole; espeak's French voice reading this one is heard as Thai (the pipeline test)
        row = rows[f"{code}.wav"]
        assert row.scored == "whole" and row.min_probability is not None
        assert code == "fr" or (row.outcome == "ok" and row.language == code), (code, row.language, row.probability)
        assert row.model_name == "whisper-base" and len(row.model_sha256) == 64
    assert rows["quiet.wav"].outcome == "ok" and rows["quiet.wav"].language == "en"
    switch = rows["switch.wav"]
    assert switch.shares.get("en", 0) >= 0.3 and switch.shares.get("es", 0) >= 0.3, switch.shares
    spoken = [w for w in switch.windows if w["speech"]]
    assert spoken[0]["language"] == "en" and spoken[-1]["language"] == "es"
    after = [w["language"] for w in spoken if w["start_s"] >= switch_s]
    assert after and after.count("es") >= 0.75 * len(after)

    shown = api.get(f"/api/v1/jobs/{job.pk}/results/").json()["results"]
    assert {r["filename"]: r["language"]["language"] for r in shown}["es.wav"] == "es"
    exported = list(csv.reader(io.StringIO(b"".join(api.get(f"/api/v1/jobs/{job.pk}/results/?export=csv").streaming_content).decode())))
    assert exported[0][-4:] == ["language", "language_probability", "language_outcome", "shares"] and len(exported) == 8
    windows = list(csv.DictReader(io.StringIO(b"".join(
        api.get(f"/api/v1/jobs/{job.pk}/results/?export=csv&windows=1").streaming_content).decode())))
    assert len(windows) == sum(len(r.windows) for r in rows.values()) > 7
    assert {w["language"] for w in windows if w["filename"] == "switch.wav" and w["speech"] == "True"} >= {"en", "es"}

    restricted = api.post("/api/v1/jobs/", {"kind": "language", "recordings": [r["id"] for r in batch["recordings"][:2]],
                                            "params": {"languages": ["fr", "es"]}}, format="json").json()
    restricted = wait_for_job(restricted["id"], timeout=120)
    assert restricted.status == "succeeded", restricted.error
    for row in LanguageResult.objects.filter(result__job=restricted):
        assert row.languages == ["fr", "es"] and set(row.mean_probabilities) == {"fr", "es"}
        assert row.language in ("fr", "es")


def test_transcribe_job(api, celery_worker):
    """Two short recordings in one chunk: their speech shares one Whisper encoding, and each keeps its own words."""
    text = "Please call Stella. Ask her to bring these things with her from the store."
    other = "Seven purple elephants were dancing in the garden yesterday."
    rec = api.post("/api/v1/recordings/", {"file": upload("stella.wav", speech(text, speed=175))}, format="multipart").json()
    rec2 = api.post("/api/v1/recordings/", {"file": upload("elephants.wav", speech(other, speed=175))}, format="multipart").json()
    job = api.post("/api/v1/jobs/", {"kind": "transcribe", "recordings": [rec["id"], rec2["id"]]}, format="json").json()
    job = wait_for_job(job["id"], timeout=120)
    assert job.status == "succeeded", job.error
    row = Transcript.objects.get(result__job=job, result__recording_id=rec["id"])
    assert words(row.text) == words(text), row.text
    row2 = Transcript.objects.get(result__job=job, result__recording_id=rec2["id"])
    assert words(row2.text) == words(other), row2.text
    assert row2.result.timings.get("pack", 0) > 0 and row.result.timings.get("pack", 0) > 0  # read from one shared encoding
    assert row.language == "en" and row.params == {"language": None, "languages": None, "beam_size": 5, "vad_filter": True,
                                                   "temperature_fallback": True, "context_s": 30.0, "pack": True}
    stamps = [w for seg in row.segments for w in seg["words"]]
    assert [w["start_s"] for w in stamps] == sorted(w["start_s"] for w in stamps)
    assert all(0 <= w["start_s"] <= w["end_s"] <= rec["duration_s"] + 0.05 for w in stamps)
    shown = {r["recording"]: r["transcript"] for r in api.get(f"/api/v1/jobs/{job.pk}/results/").json()["results"]}
    assert shown[rec["id"]]["text"] == row.text and shown[rec["id"]]["model_name"] == "whisper-base"
    exported = list(csv.reader(io.StringIO(b"".join(api.get(f"/api/v1/jobs/{job.pk}/results/?export=csv").streaming_content).decode())))
    assert exported[0][-1] == "text" and sorted(words(r[-1]) for r in exported[1:]) == sorted([words(text), words(other)])


def test_classify_with_transcript_auto(api, celery_worker, tiny_reading_classifier, tiny_classifier):
    """A reading model gets Whisper's transcript of recordings uploaded without one (kept beside the
    prediction); a recording's own transcript wins; a model that reads no text gets none made."""
    said = "Ask her to bring these things with her from the store."
    loose = api.post("/api/v1/recordings/", {"file": upload("loose.wav", speech(said, speed=175))}, format="multipart").json()
    own = api.post("/api/v1/recordings/", {"file": upload("own.wav", speech(said, voice="en-gb-x-rp", speed=175)),
                                           "transcript": said}, format="multipart").json()
    ids = [loose["id"], own["id"]]
    reading = api.post("/api/v1/jobs/", {"kind": "classify", "recordings": ids, "model": f"tiny-reading@{tiny_reading_classifier.version}",
                                         "params": {"vad": False, "transcript": "auto"}}, format="json").json()
    plain = api.post("/api/v1/jobs/", {"kind": "classify", "recordings": ids, "model": f"tiny@{tiny_classifier.version}",
                                       "params": {"transcript": "auto"}}, format="json").json()
    reading, plain = wait_for_job(reading["id"], timeout=180), wait_for_job(plain["id"], timeout=180)
    assert reading.status == plain.status == "succeeded", (reading.error, plain.error)
    made = Transcript.objects.get(result__job=reading)  # only the recording without a transcript
    assert made.result.recording_id == loose["id"] and made.params["language"] == "en"
    assert len(set(words(made.text)) & set(words(said))) >= 0.7 * len(set(words(said))), made.text  # word-perfect: test_transcribe_job
    predictions = Prediction.objects.filter(result__job=reading).select_related("result__recording")
    by_name = {p.result.recording.original_filename: p for p in predictions}
    assert by_name["loose.wav"].reading["prompt_words"] == len(words(made.text)) and by_name["loose.wav"].reading["words_read"] >= 3
    assert by_name["own.wav"].reading["prompt_words"] == len(words(said))
    assert "transcribe" in reading.timings
    shown = {r["filename"]: r for r in api.get(f"/api/v1/jobs/{reading.pk}/results/").json()["results"]}
    assert shown["loose.wav"]["transcript"]["text"] == made.text and shown["own.wav"]["transcript"] is None
    assert not Transcript.objects.filter(result__job=plain).exists() and "transcribe" not in plain.timings
