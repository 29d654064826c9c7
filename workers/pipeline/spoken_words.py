"""Zero-shot spoken words around the ``spoken_words`` model family (``models/spoken_words.py``).

A request's classes bind to the loaded model (:func:`bind_classes`): the inference engine
(``workers.pipeline.inference.classify_batch``) then windows, batches and thresholds as for any
classify model, with the requested words as its labels. :func:`split_at_pauses` cuts a recording of
several words said with pauses between them into one clip per word (the benchmark cuts accent-mini's
FSDD digit strings with it).

Shapes: samples ``[time]`` float32 at 16 kHz.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np

from models.hooks import model_hook
from models.spoken_words import DIGITS, check_classes, spellings

__all__ = ["DIGITS", "bind_classes", "check_classes", "is_zero_shot", "spellings", "split_at_pauses"]


def is_zero_shot(loaded: Any) -> bool:
    """The loaded model takes its classes from the request."""
    return bool(model_hook(getattr(loaded, "model", None), "zero_shot"))


def bind_classes(loaded: Any, classes: Sequence[str] | str | None) -> Any:
    """``loaded`` answering over ``classes`` (a zero-shot model) or ``loaded`` itself (``classes`` None).

    The result is a shallow copy of the ``LoadedModel`` whose ``spec.labels`` are the classes and
    whose model is a view sharing the loaded Whisper. ``ValueError`` for classes given to a model
    whose classes are fixed by training, or for classes :func:`check_classes` refuses.
    """
    if classes is None:
        return loaded
    if not is_zero_shot(loaded):
        raise ValueError(f"{loaded.spec.name} has fixed classes {list(loaded.spec.labels)}; 'classes' applies to zero-shot models")
    model = loaded.model.with_classes(classes)
    spec = dataclasses.replace(loaded.spec, labels=tuple(model.classes))
    return dataclasses.replace(loaded, model=model, spec=spec)


def split_at_pauses(samples: np.ndarray, sr: int = 16000, *, min_gap_s: float = 0.1, frame_s: float = 0.01,
                    floor_db: float = -45.0, min_word_s: float = 0.08) -> list[tuple[int, int]]:
    """Sample spans ``(start, end)`` of the words of a recording said with pauses between them.

    A pause is at least ``min_gap_s`` of frames (``frame_s`` long) whose RMS is ``floor_db`` under the
    recording's loudest frame (or digital silence); pieces shorter than ``min_word_s`` are dropped.
    """
    x = np.asarray(samples, dtype=np.float32).reshape(-1)
    hop = max(1, int(round(frame_s * sr)))
    n = len(x) // hop
    if n == 0:
        return []
    rms = np.sqrt(np.mean(x[: n * hop].reshape(n, hop).astype(np.float64) ** 2, axis=1))
    quiet = rms <= max(float(rms.max()) * 10 ** (floor_db / 20), 1e-6)
    gap = int(np.ceil(min_gap_s / frame_s))
    spans, start, k = [], 0, 0
    while k < n:
        if quiet[k]:
            j = k
            while j < n and quiet[j]:
                j += 1
            if j - k >= gap or k == 0 or j == n:
                if k * hop > start:
                    spans.append((start, k * hop))
                start = j * hop
            k = j
        else:
            k += 1
    if start < len(x) and not quiet[-1]:
        spans.append((start, len(x)))
    return [(a, b) for a, b in spans if b - a >= int(min_word_s * sr)]
