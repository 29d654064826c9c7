"""The admin job page's bounded data: the wrong-or-unsure recordings of a classify job a page at a
time, chosen by one database filter, and a bounded sample of an embed job's vectors for its picture.

Each costs the same few queries for a job of 100 and of 100,000 recordings (the page used to load
every prediction and every vector of the job on each view: 15.5 s and 9.6 s at 100k)."""
from __future__ import annotations

import operator
from functools import reduce
from typing import Any

from django.db.models import F, Q, QuerySet
from django.db.models.functions import Mod

from recognition.models import Embedding, Job, Prediction, Recording

#: Rows per page of the wrong-or-unsure table.
WRONG_PAGE_SIZE = 50
#: At most this many points in an embed job's projection picture (an even sample of the job's vectors).
PROJECTION_POINTS = 2000


def truth(job: Job, recording: Recording | None) -> str:
    """A recording's true label as the job's model would call it (``params["label_map"]`` applied).

    Empty when the recording has no label or one outside the model's classes (the report excludes
    those too rather than count them wrong).
    """
    if recording is None or not recording.label:
        return ""
    mapped = (job.params.get("label_map") or {}).get(recording.label, recording.label)
    return mapped if job.model_version_id and mapped in job.model_version.labels else ""


def _wrong_or_unsure_q(job: Job) -> Q:
    """The predictions :func:`truth` calls wrong, or withheld, as one filter the database runs.

    Wrong: a recording label that maps (``label_map``, else itself) into the model's classes and a
    prediction of another class, its outcome not ``insufficient_speech``; unsure: any outcome but ``ok``."""
    unsure = ~Q(outcome=Prediction.Outcome.OK)
    classes = set(job.model_version.labels) if job.model_version_id else set()
    if not classes:
        return unsure
    label_map = {k: v for k, v in (job.params.get("label_map") or {}).items() if k}
    wrong = [Q(result__recording__label=label) & ~Q(predicted_class=mapped)
             for label, mapped in sorted(label_map.items()) if mapped in classes]
    same = sorted(c for c in classes if c and c not in label_map)
    if same:
        wrong.append(Q(result__recording__label__in=same) & ~Q(predicted_class=F("result__recording__label")))
    if not wrong:
        return unsure
    return unsure | (reduce(operator.or_, wrong) & ~Q(outcome=Prediction.Outcome.INSUFFICIENT_SPEECH))


def _wrong_or_unsure(job: Job) -> QuerySet[Prediction]:
    return (Prediction.objects.filter(result__job=job).filter(_wrong_or_unsure_q(job))
            .select_related("result__recording").order_by("result__recording_id", "id"))


def _row(job: Job, p: Prediction) -> dict[str, Any]:
    rec = p.result.recording
    known = truth(job, rec)
    reasons = []
    if known and p.outcome != Prediction.Outcome.INSUFFICIENT_SPEECH and known != p.predicted_class:
        reasons.append("wrong")
    if p.outcome != Prediction.Outcome.OK:
        reasons.append(p.outcome)
    return {
        "recording": rec.pk if rec else None, "filename": rec.original_filename if rec else p.result.recording_ref,
        "label": rec.label if rec else "", "predicted": p.predicted_class, "outcome": p.outcome, "confidence": p.confidence,
        "reasons": reasons,
    }


def job_wrong_or_unsure(*, job: Job) -> list[dict[str, Any]]:
    """Every recording of a classify job a person should listen to: wrong, uncertain or without enough speech.

    Wrong means a true label (after ``label_map``) that differs from the prediction; ``uncertain`` and
    ``insufficient_speech`` outcomes are listed whether labelled or not. (The admin pages show
    :func:`wrong_or_unsure_page` instead: one page of them.)
    """
    return [_row(job, p) for p in _wrong_or_unsure(job)]


def wrong_or_unsure_page(*, job: Job, page: Any = 1, per_page: int = WRONG_PAGE_SIZE) -> dict[str, Any]:
    """One page of :func:`job_wrong_or_unsure`: ``{rows, count, page, pages, first, last}``; two queries
    (the count and the page) whatever the job's size."""
    chosen = _wrong_or_unsure(job)
    count = chosen.count()
    pages = max(1, -(-count // per_page))
    try:
        number = min(max(1, int(page)), pages)
    except (TypeError, ValueError):
        number = 1
    start = (number - 1) * per_page
    rows = [_row(job, p) for p in chosen[start : start + per_page]] if count else []
    return {"rows": rows, "count": count, "page": number, "pages": pages, "per_page": per_page,
            "first": start + 1 if rows else 0, "last": start + len(rows)}


def projection_rows(*, job: Job, limit: int | None = None) -> tuple[list[Embedding], int]:
    """An embed job's embeddings in recording order, with their recordings' names and labels, and how
    many the job has. With ``limit``: an even sample of at most about ``limit`` of them (every n-th
    by row id, chosen by the database), so a picture of 100,000 vectors costs what one of 2,000 does."""
    rows = Embedding.objects.filter(result__job=job)
    total = rows.count() if limit else None
    if limit and total > limit:
        step = -(-total // limit)
        rows = rows.alias(pick=Mod(F("id"), step)).filter(pick=0)
    chosen = list(rows.select_related("recording").order_by("recording_id").only(
        "vector", "recording__id", "recording__original_filename", "recording__label", "recording__speaker"))
    return chosen, total if total is not None else len(chosen)
