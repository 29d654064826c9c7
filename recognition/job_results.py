"""A job's results recording by recording, a page at a time, for the admin job page.

Language, transcribe and features jobs store one row per recording (``LanguageResult``,
``Transcript``, ``FeatureSet``) that the job page lists: the language with its outcome and the bar of
window shares, the transcript with its weak words marked, the feature summary. Classify jobs have
their own report (:func:`recognition.review.job_review`). Read-only, plain dicts for the template.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from django.core.paginator import Paginator

from recognition import jobkinds
from recognition.models import Job, RecordingResult
from recognition.review import language_timeline

#: Recordings per page of the job page's results table.
PAGE_SIZE = 25
#: Whisper words under this probability are marked weak (as on the recording page).
WEAK_WORD = 0.5
#: Summary values shown per extractor before the rest is folded away.
FEATURE_VALUES_SHOWN = 12



def transcript_words(segments: Sequence[Mapping[str, Any]], weak: float = WEAK_WORD) -> list[dict[str, Any]]:
    """The transcript's words in order ``[{word, start_s, end_s, probability, weak}]``."""
    words = []
    for seg in segments or []:
        for w in seg.get("words") or []:
            p = w.get("probability")
            words.append({"word": w.get("word", ""), "start_s": w.get("start_s"), "end_s": w.get("end_s"), "probability": p,
                          "weak": p is not None and float(p) < weak})
    return words


def _value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return f"[{len(value)} values]"
    return "-" if value is None else str(value)


def feature_summary(summary: Mapping[str, Any], shown: int = FEATURE_VALUES_SHOWN) -> dict[str, Any]:
    """An extractor's summary as ``{values: [(key, text)], more: [(key, text)]}`` (the first ``shown`` in view)."""
    items = [(key, _value(value)) for key, value in (summary or {}).items()]
    return {"values": items[:shown], "more": items[shown:]}


def _language(r: RecordingResult) -> dict[str, Any]:
    lang, rec = getattr(r, "language_id", None), r.recording
    row: dict[str, Any] = {"language": lang}
    if lang is not None:
        row["timeline"] = language_timeline(lang.windows or [], lang.shares or {}, rec.duration_s if rec else None)
    return row


def _transcript(r: RecordingResult) -> dict[str, Any]:
    tr = getattr(r, "transcription", None)
    row: dict[str, Any] = {"transcript": tr}
    if tr is not None:
        row["words"] = transcript_words(tr.segments)
        row["weak_words"] = sum(w["weak"] for w in row["words"])
    return row


def _features(r: RecordingResult) -> dict[str, Any]:
    return {"features": [{"extractor": f.extractor, "version": f.extractor_version, **feature_summary(f.summary)}
                         for f in r.feature_sets.all()]}


#: what a page row shows per ``JobKind.stores``: (the row's part, the related row to select; None: prefetch feature sets)
SECTIONS: dict[str, tuple[Callable[[RecordingResult], dict[str, Any]], str | None]] = {
    "language": (_language, "language_id"), "transcript": (_transcript, "transcription"), "features": (_features, None),
}


def _row(held: str, r: RecordingResult) -> dict[str, Any]:
    rec = r.recording
    row: dict[str, Any] = {"result": r, "recording": r.recording_id, "filename": r.recording_ref or (rec.original_filename if rec else ""),
                           "status": r.status, "error_code": r.error_code, "error_message": r.error_message}
    return row | SECTIONS[held][0](r)


def job_results_page(*, job: Job, page: Any = None, per_page: int = PAGE_SIZE) -> dict[str, Any] | None:
    """Page ``page`` (1-based; anything else gives the first or last page) of a language, transcribe or
    features job's results in recording order: ``{kind, rows, page, count, page_range, weak}``; None
    for other kinds."""
    held = jobkinds.stores(job.kind)
    if held not in SECTIONS:
        return None
    results = job.results.select_related("recording").order_by("id")
    related = SECTIONS[held][1]
    results = results.select_related(related) if related else results.prefetch_related("feature_sets")
    paginator = Paginator(results, per_page)
    page_obj = paginator.get_page(page)
    return {"kind": job.kind, "rows": [_row(held, r) for r in page_obj], "page": page_obj, "count": paginator.count,
            "page_range": list(paginator.get_elided_page_range(page_obj.number, on_each_side=2, on_ends=1)), "weak": WEAK_WORD}
