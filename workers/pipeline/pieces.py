"""Long recordings in resumable pieces: a two-hour transcription is cut into pieces of about
``piece_s`` seconds (each cut at the quietest moment near its boundary, so no word is split), each
piece's result is saved as soon as it is done, and a run that was interrupted (a worker lost, a
redelivered chunk) starts again after the last saved piece instead of from the beginning.

Pure: no Django. The caller supplies ``run_piece`` (e.g. ``transcribe`` on a slice) and ``save``
(which stores the partial state, e.g. on the job's chunk row).
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

#: how far around a nominal boundary the cut may move to find a pause
SEARCH_S = 5.0
FRAME_S = 0.1


def cut_points(samples: np.ndarray, sample_rate: int, piece_s: float) -> list[int]:
    """Sample indices where the recording is cut: about every ``piece_s`` seconds, each moved to the
    quietest 100-ms frame within ``SEARCH_S`` of its nominal place. ``[0, ..., len(samples)]``."""
    n = len(samples)
    step = int(piece_s * sample_rate)
    if step <= 0 or n <= step:
        return [0, n]
    frame = max(1, int(FRAME_S * sample_rate))
    search = int(SEARCH_S * sample_rate)
    points = [0]
    while n - points[-1] > 1.25 * step:  # no short last piece: the rest joins the one before
        nominal = points[-1] + step
        lo, hi = max(points[-1] + frame, nominal - search), min(n - frame, nominal + search)
        if hi <= lo:
            cut = nominal
        else:
            starts = np.arange(lo, hi, frame)
            energy = [float(np.mean(np.square(samples[s : s + frame], dtype=np.float64))) for s in starts]
            cut = int(starts[int(np.argmin(energy))])
        points.append(cut)
    points.append(n)
    return points


def _shift(outcome: dict[str, Any], offset_s: float) -> dict[str, Any]:
    """A piece's transcript with its times moved to the recording's time."""
    segments = []
    for seg in outcome.get("segments") or []:
        seg = dict(seg, start_s=round(seg["start_s"] + offset_s, 3), end_s=round(seg["end_s"] + offset_s, 3))
        if seg.get("words"):
            seg["words"] = [dict(w, start_s=round(w["start_s"] + offset_s, 3), end_s=round(w["end_s"] + offset_s, 3))
                            for w in seg["words"]]
        segments.append(seg)
    return dict(outcome, segments=segments)


def merge_transcripts(pieces: list[dict[str, Any]], duration_s: float) -> dict[str, Any]:
    """One transcript from the pieces' (times already in the recording's time): segments in order, the
    text joined, the language of the most speech (by segment time) with its mean probability."""
    segments = [seg for piece in pieces for seg in piece.get("segments") or []]
    speech: dict[str, float] = {}
    probability: dict[str, list[float]] = {}
    for piece in pieces:
        lang = piece.get("language")
        if lang:
            spoken = sum(s["end_s"] - s["start_s"] for s in piece.get("segments") or [])
            speech[lang] = speech.get(lang, 0.0) + spoken
            if piece.get("language_probability") is not None:
                probability.setdefault(lang, []).append(float(piece["language_probability"]))
    language = max(speech, key=speech.get) if speech else None
    timings: dict[str, float] = {}
    for piece in pieces:
        for key, seconds in (piece.get("timings") or {}).items():
            timings[key] = timings.get(key, 0.0) + float(seconds)
    first = pieces[0] if pieces else {}
    return {**first, "text": " ".join(p["text"].strip() for p in pieces if (p.get("text") or "").strip()),
            "language": language,
            "language_probability": float(np.mean(probability[language])) if language in probability else None,
            "segments": segments, "duration_s": round(duration_s, 3), "timings": timings,
            "pieces": len(pieces)}


def run_in_pieces(run_piece: Callable[[np.ndarray], dict[str, Any]], samples: np.ndarray, *, sample_rate: int,
                  piece_s: float, partial: dict[str, Any] | None = None,
                  save: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Run ``run_piece`` over ``samples`` ``[time]`` piece by piece and merge the results.

    ``partial``: what an earlier, interrupted run saved (``{"cuts": [...], "done": [outcome, ...]}``);
    its pieces are kept and the run goes on after them. ``save(partial)`` is called after every piece.
    """
    cuts = list((partial or {}).get("cuts") or cut_points(samples, sample_rate, piece_s))
    done = list((partial or {}).get("done") or [])
    for i in range(len(done), len(cuts) - 1):
        start, end = cuts[i], cuts[i + 1]
        done.append(_shift(run_piece(samples[start:end]), start / sample_rate))
        if save is not None and i < len(cuts) - 2:  # the last piece is stored with the whole result
            save({"cuts": cuts, "done": done})
    return merge_transcripts(done, len(samples) / sample_rate)
