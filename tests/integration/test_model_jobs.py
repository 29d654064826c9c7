"""Classify and embed jobs end to end on the real parts (database, Redis, a worker process)."""
import csv
import io

import numpy as np
import pytest

from recognition.models import Embedding, Prediction
from tests.conftest import speech, wait_for_job
from tests.factories import audio_bytes, upload

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

SENTENCES = ["Please call Stella.", "Ask her to bring these things with her from the store.",
             "Six spoons of fresh snow peas, five thick slabs of blue cheese."]


def _labelled_batch(api):
    files, rows = [], ["filename,label,speaker"]
    for voice, label in (("en-us", "native"), ("en-gb-scotland", "non_native")):
        for i, text in enumerate(SENTENCES):
            name = f"{voice}-{i}.wav"
            files.append(upload(name, speech(text, voice=voice)))
            rows.append(f"{name},{label},{voice}")
    rng = np.random.default_rng(0)
    files.append(upload("hiss.wav", audio_bytes((0.01 * rng.standard_normal(16000 * 3)).astype(np.float32))))
    rows.append("hiss.wav,native,noise")
    return api.post("/api/v1/batches/", {"name": "voices", "files": files, "labels": upload("l.csv", "\n".join(rows).encode())},
                    format="multipart").json()


def test_classify_a_labelled_batch_and_its_report(api, celery_worker, tiny_classifier):
    batch = _labelled_batch(api)
    assert len(batch["recordings"]) == 7, batch
    job = api.post("/api/v1/jobs/", {"kind": "classify", "batch": batch["id"], "model": f"tiny@{tiny_classifier.version}",
                                     "params": {"window_s": 1.0, "hop_s": 0.5, "vad": True}}, format="json").json()
    job = wait_for_job(job["id"], timeout=180)
    assert job.status == "succeeded", job.error
    assert (job.done, job.failed) == (7, 0)

    predictions = list(Prediction.objects.filter(result__job=job).select_related("result__recording"))
    by_name = {p.result.recording.original_filename: p for p in predictions}
    assert by_name["hiss.wav"].outcome == "insufficient_speech" and by_name["hiss.wav"].predicted_class == ""
    spoken = [p for name, p in by_name.items() if name != "hiss.wav"]
    for p in spoken:
        assert p.outcome in ("ok", "uncertain") and p.model_version_id == tiny_classifier.pk
        assert p.checkpoint_sha256 == tiny_classifier.sha256
        assert sum(p.probabilities.values()) == pytest.approx(1, abs=1e-5)
        assert p.windows and p.windows[0]["start_s"] == 0.0
        assert sum(p.window_share.values()) == pytest.approx(1, abs=1e-6)

    # the report's confusion matrix, recomputed here from the stored predictions
    labels = ["native", "non_native"]
    expected = np.zeros((2, 2), dtype=int)
    for p in spoken:
        predicted = max(labels, key=lambda lab: p.probabilities[lab])
        expected[labels.index(p.result.recording.label), labels.index(predicted)] += 1
    report = api.get(f"/api/v1/jobs/{job.pk}/report/").json()
    assert report["confusion_matrix"]["labels"] == labels
    assert np.array_equal(np.array(report["confusion_matrix"]["matrix"]), expected)
    assert report["excluded"]["insufficient_speech"] == 1
    accuracy = np.trace(expected) / expected.sum()
    assert report["accuracy"] == pytest.approx(accuracy)

    exported = list(csv.reader(io.StringIO(b"".join(api.get(f"/api/v1/jobs/{job.pk}/results/?export=csv").streaming_content).decode())))
    assert {"p_native", "p_non_native", "p_raw_native", "window_pct_native"} <= set(exported[0]) and len(exported) == 8


def test_a_reading_model_uses_each_recordings_transcript_or_the_jobs(api, celery_worker, tiny_reading_classifier):
    """Recordings of a batch uploaded with the text they read are aligned to it and fused; a
    recording without one takes the job's transcript; with neither, the window model answers."""
    batch = api.post("/api/v1/batches/", {"name": "read", "transcript": SENTENCES[1],
                                          "files": [upload(f"{v}.wav", speech(SENTENCES[1], voice=v))
                                                    for v in ("en-us", "en-gb-x-rp")]}, format="multipart").json()
    loose = api.post("/api/v1/recordings/", {"file": upload("loose.wav", speech(SENTENCES[2]))}, format="multipart").json()
    ids = [r["id"] for r in batch["recordings"]] + [loose["id"]]
    model = f"tiny-reading@{tiny_reading_classifier.version}"
    first = api.post("/api/v1/jobs/", {"kind": "classify", "recordings": ids, "model": model,
                                       "params": {"vad": False}}, format="json").json()
    second = api.post("/api/v1/jobs/", {"kind": "classify", "recordings": [loose["id"]], "model": model,
                                        "params": {"vad": False, "transcript": SENTENCES[2]}}, format="json").json()
    first, second = wait_for_job(first["id"], timeout=180), wait_for_job(second["id"], timeout=180)
    assert first.status == second.status == "succeeded", (first.error, second.error)
    by_name = {p.result.recording.original_filename: p
               for p in Prediction.objects.filter(result__job=first).select_related("result__recording")}
    for name in ("en-us.wav", "en-gb-x-rp.wav"):
        reading = by_name[name].reading
        assert reading["fused"] and reading["words_read"] >= 3 and reading["prompt_words"] == 11
        assert reading["gop_mean"] < 0 and 0 < reading["read_share"] <= 1
        words = reading["words"]  # the per-word report: in reading order, inside the recording
        assert len(words) == reading["words_read"] and all(w["start_s"] < w["end_s"] for w in words)
        assert [w["start_s"] for w in words] == sorted(w["start_s"] for w in words)
        assert "reading" in by_name[name].result.timings
    assert by_name["loose.wav"].reading is None  # no transcript anywhere: the window model's answer
    loose_read = Prediction.objects.get(result__job=second).reading
    assert loose_read["fused"] and loose_read["prompt_words"] == 12
    shown = api.get(f"/api/v1/jobs/{second.pk}/results/").json()["results"][0]
    assert shown["prediction"]["reading"]["words_read"] == loose_read["words_read"]


def test_embed_job_and_similarity_search(api, celery_worker):
    wav = speech("The quick brown fox jumps over the lazy dog.", voice="en-us")
    import soundfile as sf

    samples, sr = sf.read(io.BytesIO(wav), dtype="float32")
    files = [upload("a.wav", wav), upload("a-quieter.wav", audio_bytes(samples * 0.8, sr)),
             upload("b.wav", speech("Thick slabs of blue cheese for her brother Bob.", voice="en-gb-x-rp", speed=120)),
             upload("c.wav", speech("Please call Stella.", voice="en-029", speed=170))]
    batch = api.post("/api/v1/batches/", {"name": "emb", "files": files}, format="multipart").json()
    job = api.post("/api/v1/jobs/", {"kind": "embed", "batch": batch["id"], "model": "speaker-encoder"}, format="json").json()
    job = wait_for_job(job["id"], timeout=180)
    assert job.status == "succeeded", job.error
    vectors = Embedding.objects.filter(result__job=job)
    assert vectors.count() == 4 and {v.dim for v in vectors} == {256}
    assert all(np.linalg.norm(v.vector) == pytest.approx(1, abs=1e-3) for v in vectors)

    ids = {r["original_filename"]: r["id"] for r in batch["recordings"]}
    similar = api.get(f"/api/v1/recordings/{ids['a.wav']}/similar/?k=3").json()["results"]
    assert [s["recording"]["original_filename"] for s in similar][0] == "a-quieter.wav"
    assert similar[0]["similarity"] > 0.99 and similar[0]["similarity"] >= similar[1]["similarity"]
    assert ids["a.wav"] not in [s["recording"]["id"] for s in similar]


def test_a_whisper_probe_classifies_and_embeds_in_the_worker(api, celery_worker, tiny_whisper_probe):
    """The whisper_probe family through the real worker: its encoder is the bundled Whisper folder,
    not the (small) checkpoint. (Embedding on it: the shipped accent-embed, test_embed_job_and_similarity_search.)"""
    batch = _labelled_batch(api)
    model = f"tiny-whisper@{tiny_whisper_probe.version}"
    job = api.post("/api/v1/jobs/", {"kind": "classify", "batch": batch["id"], "model": model}, format="json").json()
    job = wait_for_job(job["id"], timeout=300)
    assert job.status == "succeeded", job.error
    assert (job.done, job.failed) == (7, 0)
    for p in Prediction.objects.filter(result__job=job):
        assert p.outcome in ("ok", "uncertain") and sum(p.probabilities.values()) == pytest.approx(1, abs=1e-5)
        assert p.checkpoint_sha256 == tiny_whisper_probe.sha256 and len(p.windows) == 1  # clips < one 20-s window
