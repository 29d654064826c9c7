"""Rows for the scale benchmark and the page-cost tests: a batch of ``n`` recordings with finished
classify, embed, language, transcribe and features jobs, written by ``bulk_create`` (no audio is
decoded: the read paths only read rows). Needs Django set up.

    from bench.scale_data import build
    made = build(owner=user, n=20_000)      # {"batch", "jobs": {kind: Job}, "recordings": [first ids]}
"""
from __future__ import annotations

import hashlib
import math
from typing import Any

#: rows per bulk_create round trip
STEP = 2000
LABELS = ("native", "non_native")
KINDS = ("classify", "embed", "language", "transcribe", "features")


def _vector(i: int, dim: int) -> list[float]:
    """A deterministic L2-normalised vector, two loose clusters by label."""
    sign = 1.0 if i % 2 == 0 else -1.0
    raw = [sign * (1.0 + 0.3 * math.sin(i * 0.7 + d)) if d < 2 else math.sin(i * 1.3 + d * 0.9) for d in range(dim)]
    norm = math.sqrt(sum(v * v for v in raw)) or 1.0
    return [round(v / norm, 6) for v in raw]


def _bulk(model, rows: list) -> list:
    out = []
    for start in range(0, len(rows), STEP):
        out.extend(model.objects.bulk_create(rows[start : start + STEP]))
    return out


def _classify(job, results: list, n: int, wrong_every: int, dim: int) -> None:
    from recognition.models import Prediction

    rows = []
    for i, res in enumerate(results):
        truth = LABELS[i % 2]
        predicted = LABELS[(i + 1) % 2] if i % wrong_every == 0 else truth
        confidence = 0.55 if i % 7 == 0 else 0.9
        outcome = Prediction.Outcome.UNCERTAIN if i % 7 == 0 else Prediction.Outcome.OK
        probs = {predicted: confidence, LABELS[0] if predicted == LABELS[1] else LABELS[1]: 1 - confidence}
        rows.append(Prediction(result=res, model_version=job.model_version, checkpoint_sha256="0" * 64, outcome=outcome,
                               predicted_class=predicted, confidence=confidence, probabilities=probs, probabilities_raw=probs,
                               window_share={predicted: 1.0}, agreement=1.0, speech_fraction=0.9,
                               windows=[{"start_s": 0.0, "end_s": 4.0, "probabilities": probs}]))
    _bulk(Prediction, rows)
    wrong = len(range(0, n, wrong_every))
    job.report = {"n": n, "accuracy": 1 - wrong / n if n else None, "balanced_accuracy": 1 - wrong / n if n else None,
                  "macro_f1": None, "confusion_matrix": {"labels": list(LABELS), "matrix": [[n // 2, 0], [0, n - n // 2]]},
                  "per_class": {label: {"precision": None, "recall": None, "f1": None, "support": n // 2, "predicted": n // 2}
                                for label in LABELS}}
    job.save(update_fields=["report"])


def _embed(job, results: list, n: int, wrong_every: int, dim: int) -> None:
    from recognition.models import Embedding

    _bulk(Embedding, [Embedding(result=res, recording_id=res.recording_id, model_version=job.model_version,
                                checkpoint_sha256="0" * 64, dim=dim, vector=_vector(i, dim)) for i, res in enumerate(results)])


def _language(job, results: list, n: int, wrong_every: int, dim: int) -> None:
    from recognition.models import LanguageResult

    _bulk(LanguageResult, [LanguageResult(
        result=res, outcome="ok", language="en", probability=0.9, scored="windows", min_probability=0.4,
        shares={"en": 1.0}, mean_probabilities={"en": 0.9}, window_s=4.0, model_name="tiny", model_sha256="0" * 64,
        windows=[{"start_s": 0.0, "end_s": 4.0, "speech": True, "language": "en", "probability": 0.9}]) for res in results])


def _transcribe(job, results: list, n: int, wrong_every: int, dim: int) -> None:
    from recognition.models import Transcript

    words = [{"word": w, "start_s": 0.5 * j, "end_s": 0.5 * j + 0.4, "probability": 0.3 if j == 1 else 0.9}
             for j, w in enumerate(("please", "call", "stella"))]
    _bulk(Transcript, [Transcript(
        result=res, text="please call stella", language="en", language_probability=0.9, model_name="tiny", model_sha256="0" * 64,
        segments=[{"start_s": 0.0, "end_s": 2.0, "text": "please call stella", "words": words}]) for res in results])


def _features(job, results: list, n: int, wrong_every: int, dim: int) -> None:
    from recognition.models import FeatureSet

    _bulk(FeatureSet, [FeatureSet(result=res, extractor="prosody", extractor_version="1",
                                  summary={"f0_mean": 120.0 + i % 50, "f0_std": 12.5, "voiced_fraction": 0.7})
                       for i, res in enumerate(results)])


#: what each kind's finished job stores per recording
ROWS = {"classify": _classify, "embed": _embed, "language": _language, "transcribe": _transcribe, "features": _features}


def build(*, owner, n: int, name: str | None = None, kinds: tuple[str, ...] = KINDS, dim: int = 16,
          wrong_every: int = 4) -> dict[str, Any]:
    """A batch of ``n`` recordings (labels alternating, half of them given again by a ``BatchMember``)
    and one finished job of each of ``kinds`` over it, with a result row per recording.

    Classify: every ``wrong_every``-th prediction is wrong and every 7th uncertain, so the job page
    has wrong-or-unsure rows at any size; embed: ``dim``-long vectors."""
    from django.utils import timezone

    from recognition import jobkinds
    from recognition.models import Batch, BatchMember, Job, ModelVersion, Recording, RecordingResult

    tag = name or f"scale-{n}-{timezone.now().strftime('%H%M%S%f')}"
    batch = Batch.objects.create(owner=owner, name=tag)
    recs = _bulk(Recording, [
        Recording(owner=owner, file=f"recordings/scale/{tag}-{i}.wav", original_filename=f"{tag}-{i:06d}.wav",
                  sha256=hashlib.sha256(f"{tag}/{i}".encode()).hexdigest(), size_bytes=64_000, format="wav",
                  duration_s=4.0, sample_rate=16000, channels=1, label=LABELS[i % 2]) for i in range(n)])
    through = Batch.recordings.through
    _bulk(through, [through(batch_id=batch.pk, recording_id=r.pk) for r in recs])
    _bulk(BatchMember, [BatchMember(batch=batch, recording=r, label=r.label) for r in recs[: n // 2]])
    now = timezone.now()
    jobs: dict[str, Any] = {}
    for kind in kinds:
        task = jobkinds.get(kind).model_task
        mv = ModelVersion.objects.get_or_create(
            name=f"scale-{kind}", version="1", owner=None,
            defaults={"family": "cnn", "task": task, "labels": list(LABELS) if task == ModelVersion.Task.CLASSIFY else []},
        )[0] if task else None
        job = Job.objects.create(owner=owner, kind=kind, batch=batch, model_version=mv, status=Job.Status.SUCCEEDED,
                                 total=n, done=n, started_at=now, finished_at=now, timings={"forward": 1.0, "decode": 0.5})
        results = _bulk(RecordingResult, [
            RecordingResult(job=job, recording=r, recording_ref=r.original_filename, recording_key=r.pk,
                            status=RecordingResult.Status.SUCCEEDED) for r in recs])
        ROWS[kind](job, results, n, wrong_every, dim)
        jobs[kind] = job
    return {"batch": batch, "jobs": jobs, "recordings": [r.pk for r in recs[:3]]}
