"""Whisper's language-ID posteriors as accent features (issue 26; rule: docs/models/rules/accent-group-3.0.0.md,
"Third candidate").

A language-ID model hears L2 English partly as the speaker's first language, so the probabilities
Whisper's language head gives every language it knows are a feature vector for accent models. No
Django here. A clip (16 kHz mono ``[time]``, already at the level the caller wants) is low-passed with
the probes' :class:`models.frontends.BandLimit`, cut into touching 30-s windows
(:func:`workers.pipeline.whisper_lang.window_spans`), each window's log-mel zero-padded to Whisper's 30 s
and given to CTranslate2's ``detect_language``, as :mod:`workers.pipeline.whisper_lang` does for a padded
window (no VAD). The clip's features are ``log(max(p, FLOOR))`` of the mean over its windows of every
language's probability, in :func:`language_order`'s order.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np

#: Probabilities under this are this (the head gives most of its 99 languages ~0)
FLOOR = 1e-6
WINDOW_S = 30.0
SAMPLE_RATE = 16000


def language_order(engine: Any) -> list[str]:
    """The languages the engine's head scores, in Whisper's code order (99 for Whisper base)."""
    from workers.pipeline.whisper_lang import _detect_batch, language_codes, window_features

    probe = window_features(engine, np.zeros(SAMPLE_RATE, dtype=np.float32), padded=True)
    scored = _detect_batch(engine, [probe], 1)[0]
    return [code for code in language_codes() if code in scored]


def lid_log_posteriors(engine: Any, signals: list[np.ndarray], codes: list[str], *, band_limit_hz: float | None = 4000.0,
                       batch_size: int = 8) -> np.ndarray:
    """LID log-posteriors of each signal.

    Parameters
    ----------
    engine : WhisperEngine
        A multilingual Whisper (:func:`workers.pipeline.whisper_lang.load_engine`).
    signals : list of np.ndarray
        float32 ``[time]`` at 16 kHz.
    codes : list of str
        The languages, in feature order (:func:`language_order`).

    Returns
    -------
    np.ndarray
        ``[len(signals), len(codes)]`` float32.
    """
    import torch

    from models.frontends import BandLimit
    from workers.pipeline.whisper_lang import _detect_batch, window_features, window_spans

    band = BandLimit(SAMPLE_RATE, band_limit_hz)
    feats, owner = [], []
    for k, x in enumerate(signals):
        x = np.asarray(x, dtype=np.float32).reshape(-1)
        with torch.inference_mode():
            x = band(torch.from_numpy(x)[None])[0].numpy()
        for a, b in window_spans(max(len(x), 1) / SAMPLE_RATE, WINDOW_S):
            feats.append(window_features(engine, x[int(round(a * SAMPLE_RATE)) : int(round(b * SAMPLE_RATE))], padded=True))
            owner.append(k)
    probs = _detect_batch(engine, feats, batch_size) if feats else []
    table = np.array([[p.get(code, 0.0) for code in codes] for p in probs], dtype=np.float64).reshape(-1, len(codes))
    owner_arr = np.asarray(owner)
    out = np.stack([table[owner_arr == k].mean(axis=0) for k in range(len(signals))]) if signals else table
    return np.log(np.maximum(out, FLOOR)).astype(np.float32)


def cached_lid(engine: Any, utts: list[Any], codes: list[str], cache_dir: str | Path, *, band_limit_hz: float | None = 4000.0,
               progress: Any = None) -> np.ndarray:
    """:func:`lid_log_posteriors` of utterances (``.samples``, ``.key``), cached per utterance under
    ``cache_dir/lid/<tag>/``; ``[len(utts), len(codes)]``."""
    tag = hashlib.sha1(repr((engine.sha256, engine.compute_type, band_limit_hz, tuple(codes), FLOOR, "v1")).encode()).hexdigest()[:12]
    folder = Path(cache_dir) / "lid" / tag
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / (hashlib.sha1(u.key.encode()).hexdigest()[:20] + ".npy") for u in utts]
    missing = [i for i, p in enumerate(paths) if not p.exists()]
    for start in range(0, len(missing), 32):
        part = missing[start : start + 32]
        rows = lid_log_posteriors(engine, [utts[i].samples for i in part], codes, band_limit_hz=band_limit_hz)
        for i, row in zip(part, rows, strict=True):
            tmp = paths[i].with_suffix(".tmp.npy")
            np.save(tmp, row)
            tmp.replace(paths[i])
        if progress is not None:
            progress(min(start + 32, len(missing)), len(missing))
    return np.stack([np.load(p) for p in paths]) if paths else np.zeros((0, len(codes)), dtype=np.float32)
