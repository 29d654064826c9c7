"""Batch reports: the evaluation report over a classify job whose recordings carry true labels."""
from __future__ import annotations

import numpy as np

from recognition.models import Job, Prediction


def classify_report(*, job: Job) -> dict | None:
    """Evaluation report over the job's labelled predictions, or ``None`` when nothing is labelled.

    A recording's true label is mapped through ``params["label_map"]`` when given (e.g.
    ``native_english -> native``). Recordings whose label is outside the model's classes, and
    ``insufficient_speech`` outcomes, are counted in ``excluded`` rather than guessed.

    ``selective`` says what withholding unsure answers did: ``coverage`` (the share answered
    ``ok``), ``accuracy_accepted`` (on those) beside ``accuracy_all`` (on every top class, the
    report's ``accuracy``), the risk-coverage ``curve`` and its area ``aurc``, the job's
    ``threshold`` (None: the model's default) and the ``abstained`` counts (``uncertain`` among the
    reported items; ``insufficient_speech``, which have no answer and are outside ``n``).
    """
    from recognition.services.recordings import batch_labels
    from workers.pipeline.evaluation import evaluation_report, selective_report

    # a zero-shot model (spoken-words) answered the job's own classes
    labels = list(job.params.get("classes") or job.model_version.labels)
    label_map = job.params.get("label_map") or {}
    # a batch's job is judged by the labels that batch gave (another upload of a file may say otherwise)
    own = batch_labels(batch=job.batch) if job.batch_id else {}
    predictions = (
        Prediction.objects.filter(result__job=job)
        .select_related("result__recording")
        .exclude(result__recording__isnull=True)
    )
    y_true, proba, speakers, corpora, confidence, accepted = [], [], [], [], [], []
    excluded = {"insufficient_speech": 0, "label_not_in_model": 0}
    for p in predictions:
        rec = p.result.recording
        label, speaker = own.get(rec.pk, (rec.label, rec.speaker))
        if not label:
            continue
        truth = label_map.get(label, label)
        if p.outcome == Prediction.Outcome.INSUFFICIENT_SPEECH:
            excluded["insufficient_speech"] += 1
            continue
        if truth not in labels:
            excluded["label_not_in_model"] += 1
            continue
        y_true.append(truth)
        proba.append([p.probabilities.get(label, 0.0) for label in labels])
        confidence.append(p.confidence if p.confidence is not None else max(proba[-1]))
        accepted.append(p.outcome == Prediction.Outcome.OK)
        speakers.append(speaker or f"recording-{rec.pk}")
        corpora.append(str(rec.metadata.get("corpus", "")) or "unspecified")
    if not y_true:
        return None
    report = evaluation_report(y_true, np.asarray(proba, dtype=np.float64), labels, speakers=speakers, corpora=corpora)
    report["excluded"] = excluded
    predicted = np.asarray(proba).argmax(axis=1)
    correct = [labels[j] == truth for j, truth in zip(predicted, y_true, strict=True)]
    # the answers given (outcome ok) apart from every answer: with a threshold these differ
    report["selective"] = dict(
        selective_report(correct, confidence, accepted),
        threshold=job.params.get("threshold"),
        abstained={"uncertain": len(accepted) - sum(accepted), "insufficient_speech": excluded["insufficient_speech"]},
    )
    report["model"] = f"{job.model_version.name}@{job.model_version.version}"
    return report
