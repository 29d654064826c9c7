"""Batched inference over whole recordings: windowing, VAD gate, batched forward, aggregation.

(The outcomes live in :mod:`workers.pipeline.outcomes`, windowing and the batched forward pass in
:mod:`workers.pipeline.batching`; this module plans, calibrates and aggregates. The names in
``__all__`` are importable from here, the one inference path's API.)

``classify_batch`` and ``embed_batch`` take a loaded model (``models.checkpoint.LoadedModel`` or
anything with the same attributes: ``spec``, ``calibration``, ``device``, ``prepare``, ``logits``,
``embed``) and a list of mono signals at ``loaded.spec.sample_rate``, and return one typed outcome per signal
(:class:`ClassifyOutcome`, :class:`EmbedOutcome`; ``as_dict()`` gives the JSON-able dict). This is
the one inference path: classify jobs, ``/predict`` and ``manage.py classify`` all call
``classify_batch`` and shape their answer from :meth:`ClassifyOutcome.api_dict`.

Windowing (:func:`window_spans`)
    Windows of ``window_s`` every ``hop_s`` (the spec's by default) from the start. A tail that
    no full window covers gets one extra window aligned to the end of the signal (real audio,
    no padding; it overlaps the previous window), so every sample is seen, exactly as the
    trainer's ``workers.pipeline.data.window_starts`` does, so evaluation during training and
    inference agree. A signal shorter than one window becomes one window zero-padded at the end.
    All windows fed to the model therefore have the same length, ``window_s``.

VAD gate (classify only, ``vad=True``)
    silero-vad runs once per recording; a window is kept when at least half of its real
    (unpadded) span is speech. A recording with less than ``min_speech_s`` of speech in total,
    or with no window kept, has outcome ``insufficient_speech`` and no prediction.

Batching
    Kept windows of *all* signals are packed together into batches of ``batch_size``,
    ordered by real length so the zero-padded windows of short signals share batches (for a
    model that runs only the real length, ``variable_length`` such as ``whisper_probe``, a batch
    is also cut where a window is under ``PAD_RATIO`` of its longest), and
    sliced from the signals per batch (a long recording is never materialised as one
    ``[n_windows, samples]`` array). Forward passes run under ``torch.inference_mode()``,
    optionally under bf16 autocast. A CUDA out-of-memory error halves the batch size and
    retries the same batch (down to 1), and the smaller size is kept for the rest of the call.

Aggregation and calibration
    Calibration (``workers.pipeline.calibration.calibrate``: temperature, then prior correction)
    is applied **per window**, to each window's logits, because the temperature is fitted on
    window logits by the trainer; the recording's ``probabilities`` are the mean of the
    calibrated window probabilities, and ``probabilities_raw`` the mean of the uncalibrated
    (softmax) window probabilities. ``confidence`` is the largest calibrated probability;
    outcome ``uncertain`` when it is below the threshold (``threshold`` or
    ``loaded.calibration["threshold"]``).

Phonetic fusion (``phonetic_fusion`` family)
    The recording's ``probabilities`` are the model's ``fuse`` of the mean calibrated window
    probabilities and the recording's phone-recogniser features (``workers.pipeline.phones``,
    decoded once per recording; timed as ``phones``); windows and ``window_share`` stay the
    window model's.

Reading fusion (``reading_fusion`` family)
    For a recording with a transcript (``transcripts[k]``) that the aligner can follow (at least
    one word read), ``probabilities`` are the ``fuse`` of the mean calibrated window probabilities
    and its reading features (``workers.pipeline.reading``; timed as ``reading``), and the default
    threshold is the calibration's ``fused_threshold``. Without one, the window model's result
    stands. ``fused`` says which, and ``reading`` summarises the alignment (words read, reading
    rate, goodness of pronunciation, words missing from the dictionary).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from models.hooks import model_hook
from workers.pipeline import vad as vad_mod
from workers.pipeline.batching import forward_windows, is_oom_error, window_spans
from workers.pipeline.outcomes import ClassifyOutcome, EmbedOutcome

__all__ = [
    "SPEECH_WINDOW_FRACTION",
    "ClassifyOutcome",
    "EmbedOutcome",
    "classify_batch",
    "embed_batch",
    "is_oom_error",
    "window_spans",
]

logger = logging.getLogger(__name__)

#: A window counts as speech when at least this fraction of its real span is speech.
SPEECH_WINDOW_FRACTION = 0.5

ProgressFn = Callable[[int, int], None]


# ---------------------------------------------------------------------------------------------
# Calibration
# ---------------------------------------------------------------------------------------------


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _fallback_calibrate(logits: np.ndarray, calibration: dict) -> np.ndarray:
    """The contract's calibration (temperature, then prior correction), if the module is absent."""
    t = float(calibration.get("temperature") or 1.0)
    p = _softmax(logits / t)
    train, deploy = calibration.get("train_prior"), calibration.get("deploy_prior")
    if train is not None and deploy is not None:
        p = p * (np.asarray(deploy, dtype=np.float64) / np.asarray(train, dtype=np.float64))
        p = p / p.sum(axis=1, keepdims=True)
    return p


def _calibrate(logits: np.ndarray, calibration: dict | None) -> np.ndarray:
    """Calibrated probabilities ``[n, C]`` from logits ``[n, C]``."""
    if not calibration:
        return _softmax(logits)
    try:
        from workers.pipeline.calibration import calibrate
    except ImportError:
        return _fallback_calibrate(logits, calibration)
    return np.asarray(calibrate(logits, calibration), dtype=np.float64)


# ---------------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------------


def _as_signal(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 1:
        raise ValueError(f"signals must be mono [time] arrays, got shape {x.shape}")
    return x


def _as_signals(loaded: Any, signals: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Mono float32 ``[time]`` arrays, each brought to the level the model was trained at (the
    ``input_level_dbfs`` hook: DC removed, whole-recording RMS) when it declares one, as its trainer did."""
    from workers.pipeline.data import normalise_signal

    level = model_hook(getattr(loaded, "model", None), "input_level_dbfs")
    out = [_as_signal(x) for x in signals]
    return out if level is None else [normalise_signal(x, float(level)) for x in out]


def _plan(
    signals: Sequence[np.ndarray], sr: int, window_s: float, hop_s: float, use_vad: bool
) -> tuple[list[np.ndarray], list[np.ndarray], list[list[tuple[float, float]] | None], np.ndarray, np.ndarray]:
    """Window spans, VAD timestamps and the per-window speech mask of every signal."""
    spans, stamps, keeps = [], [], []
    t_win = np.zeros(len(signals))
    t_vad = np.zeros(len(signals))
    for k, x in enumerate(signals):
        t0 = time.perf_counter()
        sp = window_spans(len(x), sr, window_s, hop_s)
        t1 = time.perf_counter()
        if use_vad and len(x):
            ts = vad_mod.speech_timestamps(x, sr)
            frac = vad_mod.speech_fraction(sp / sr, ts)
            keep = frac >= SPEECH_WINDOW_FRACTION
        else:
            ts = None
            keep = np.ones(len(sp), dtype=bool)
        t_win[k] = t1 - t0
        t_vad[k] = time.perf_counter() - t1
        spans.append(sp)
        stamps.append(ts)
        keeps.append(keep)
    return spans, keeps, stamps, t_win, t_vad


def _items(spans: list[np.ndarray], keeps: list[np.ndarray], use: list[bool]) -> np.ndarray:
    rows = [
        np.column_stack([np.full(int(keep.sum()), k, dtype=np.int64), sp[keep]])
        for k, (sp, keep) in enumerate(zip(spans, keeps, strict=True))
        if use[k] and keep.any()
    ]
    return np.concatenate(rows) if rows else np.zeros((0, 3), dtype=np.int64)


def classify_batch(
    loaded: Any,
    signals: Sequence[np.ndarray],
    *,
    window_s: float | None = None,
    hop_s: float | None = None,
    threshold: float | None = None,
    batch_size: int = 64,
    vad: bool = True,
    min_speech_s: float = 1.0,
    progress: ProgressFn | None = None,
    device: Any = None,
    autocast: bool = False,
    transcripts: Sequence[str | None] | None = None,
) -> list[ClassifyOutcome]:
    """Classify whole recordings by their windows.

    Parameters
    ----------
    loaded : LoadedModel
        A classify model: ``spec`` (labels, sample_rate, window_s, hop_s), ``calibration``,
        ``device``, ``prepare(windows [n, samples]) -> inputs``, ``logits(inputs) -> [n, C]``.
    signals : sequence of np.ndarray
        Mono float signals ``[time]`` at ``loaded.spec.sample_rate`` (16 kHz for the VAD).
    window_s, hop_s : float, optional
        Window length and hop in seconds; the spec's by default.
    threshold : float, optional
        Confidence below which the outcome is ``uncertain``; default
        ``loaded.calibration["threshold"]`` (0 when absent).
    batch_size : int
        Windows per forward pass (halved on out-of-memory).
    vad : bool
        Drop non-speech windows and gate recordings on ``min_speech_s``.
    min_speech_s : float
        Least total speech (seconds, by VAD) for a prediction.
    progress : callable, optional
        ``progress(done_windows, total_windows)`` after each batch.
    device : torch.device or str, optional
        Device the prepared inputs are moved to (the model must already be there); default
        ``loaded.device``, where ``prepare`` puts them.
    autocast : bool
        Run the forward pass under bf16 autocast (on the input device's type).
    transcripts : sequence of str or None, optional
        What each recording's speaker read, when known; only ``reading_fusion`` models use it.

    Returns
    -------
    list of ClassifyOutcome
        One per signal, in order, with: ``outcome`` (``ok`` | ``uncertain`` | ``insufficient_speech``),
        ``predicted_class``, ``confidence``, ``probabilities`` (calibrated, ``{label: p}``),
        ``probabilities_raw`` (softmax, ``{label: p}``), ``window_share`` (``{label: fraction of
        windows whose arg-max is label}``), ``agreement`` (share of the predicted class),
        ``windows`` (``[{"start_s", "end_s", "probabilities": {label: p}}]`` for the windows
        used), ``n_windows`` (used), ``n_windows_total``, ``duration_s``, ``speech_s`` and
        ``speech_fraction`` (None without VAD), ``threshold``, ``timings`` (seconds:
        ``windowing``, ``vad``, ``forward`` (batched time apportioned by window), ``aggregate``).
        With ``insufficient_speech`` the prediction fields are None and ``windows`` is empty.
        Reading models also fill ``reading`` (the alignment summary, None without a transcript)
        and ``fused``.
    """
    spec = loaded.spec
    labels = [str(label) for label in spec.labels]
    sr = int(spec.sample_rate)
    window_s = float(window_s if window_s is not None else spec.window_s)
    hop_s = float(hop_s if hop_s is not None else spec.hop_s)
    win = max(1, int(round(window_s * sr)))
    calibration = dict(model_hook(loaded, "calibration") or {})
    fused_threshold = threshold
    if threshold is None:
        threshold = float(calibration.get("threshold") or 0.0)
        fused_threshold = float(calibration.get("fused_threshold") or threshold)
    signals = _as_signals(loaded, signals)
    transcripts = list(transcripts) if transcripts is not None else [None] * len(signals)
    if len(transcripts) != len(signals):
        raise ValueError(f"{len(transcripts)} transcripts for {len(signals)} signals")

    spans, keeps, stamps, t_win, t_vad = _plan(signals, sr, window_s, hop_s, vad)
    speech_s = [vad_mod.speech_duration(ts) if ts is not None else None for ts in stamps]
    enough = [bool(keep.any()) and (s is None or s >= min_speech_s) for keep, s in zip(keeps, speech_s, strict=True)]
    items = _items(spans, keeps, enough)
    logits, slice_s, forward_s = forward_windows(
        loaded,
        signals,
        items,
        win,
        "logits",
        batch_size=batch_size,
        device=device,
        autocast=autocast,
        progress=progress,
    )

    fusion = getattr(loaded, "model", None)
    reading = bool(model_hook(fusion, "needs_transcript"))
    if not (reading or model_hook(fusion, "needs_phone_features")):
        fusion = None
    results: list[ClassifyOutcome] = []
    owner = items[:, 0]
    for k, x in enumerate(signals):
        t0 = time.perf_counter()
        t_phones = 0.0
        cut = float(threshold)
        duration = len(x) / sr
        res: dict[str, Any] = {
            "outcome": "insufficient_speech",
            "predicted_class": None,
            "confidence": None,
            "probabilities": None,
            "probabilities_raw": None,
            "window_share": None,
            "agreement": None,
            "windows": [],
            "n_windows": 0,
            "n_windows_total": int(len(spans[k])),
            "duration_s": duration,
            "speech_s": speech_s[k],
            "speech_fraction": (min(1.0, speech_s[k] / duration) if duration > 0 else 0.0) if speech_s[k] is not None else None,
            "threshold": float(threshold),
        }
        if reading:
            res.update(reading=None, fused=False)
        mine = np.flatnonzero(owner == k)
        if enough[k] and len(mine):
            # items of one signal were added in time order; keep that order
            win_logits = logits[mine].astype(np.float64)
            p_raw = _softmax(win_logits)
            p_cal = _calibrate(win_logits, calibration)
            mean_cal = p_cal.mean(axis=0)
            mean_raw = p_raw.mean(axis=0)
            if fusion is not None and not reading:  # phonetic_fusion: phone features join the window mean
                from workers.pipeline.phones import phone_features

                tp = time.perf_counter()
                mean_cal = fusion.fuse(mean_cal[None], phone_features(x, sr)[None])[0]
                t_phones = time.perf_counter() - tp
            elif fusion is not None:  # reading_fusion: reading features, where there is a transcript
                tp = time.perf_counter()
                fused_cal, res["reading"] = _fuse_reading(fusion, mean_cal, x, sr, transcripts[k])
                res["fused"] = fused_cal is not mean_cal
                mean_cal = fused_cal
                cut = fused_threshold if res["fused"] else cut
                t_phones = time.perf_counter() - tp
            pred = int(np.argmax(mean_cal))
            share = np.bincount(p_cal.argmax(axis=1), minlength=len(labels)) / len(mine)
            confidence = float(mean_cal[pred])
            res["threshold"] = cut
            res.update(
                {
                    "outcome": "ok" if confidence >= cut else "uncertain",
                    "predicted_class": labels[pred],
                    "confidence": confidence,
                    "probabilities": {lab: float(p) for lab, p in zip(labels, mean_cal, strict=True)},
                    "probabilities_raw": {lab: float(p) for lab, p in zip(labels, mean_raw, strict=True)},
                    "window_share": {lab: float(s) for lab, s in zip(labels, share, strict=True)},
                    "agreement": float(share[pred]),
                    "windows": [
                        {
                            "start_s": float(a / sr),
                            "end_s": float(b / sr),
                            "probabilities": {lab: float(p) for lab, p in zip(labels, row, strict=True)},
                        }
                        for (a, b), row in zip(items[mine, 1:], p_cal, strict=True)
                    ],
                    "n_windows": int(len(mine)),
                }
            )
        res["timings"] = {
            "windowing": float(t_win[k] + slice_s[mine].sum()),
            "vad": float(t_vad[k]),
            "forward": float(forward_s[mine].sum()),
            "aggregate": time.perf_counter() - t0 - t_phones,
        }
        if fusion is not None:
            res["timings"]["reading" if reading else "phones"] = t_phones
        results.append(ClassifyOutcome(**res))
    return results


#: a passage model fuses only recordings whose aligned words span at least this share of the recording:
#: every one of the 491 SAA clips spans 0.77 or more; noise, tones and short unrelated espeak sentences 0.12 or
#: less. A floor, not a detector: real speech of another text often spans more (the grammar lets the aligner
#: place some of the passage's words on any speech: 0.53-1.0 on the benchmark's non-SAA clips)
MIN_PASSAGE_READ_SHARE = 0.5


def _fuse_reading(fusion: Any, mean_cal: np.ndarray, x: np.ndarray, sr: int,
                  transcript: str | None) -> tuple[np.ndarray, dict[str, Any] | None]:
    """The reading-fused probabilities of one recording and a summary of its alignment (the window
    probabilities and None without a transcript; unchanged probabilities when nothing was read, or,
    for a passage model, when the transcript is not its passage or the recording does not follow it:
    its aligned words span under :data:`MIN_PASSAGE_READ_SHARE` of it). The caller tells a fused
    answer by identity: unchanged probabilities are ``mean_cal`` itself."""
    from workers.pipeline.reading import FEATURE_NAMES, fusion_features, normalise_prompt, passage_matches, word_report

    if not transcript or not normalise_prompt(transcript):
        return mean_cal, None
    passage = list(model_hook(fusion, "passage") or [])
    if passage and not passage_matches(transcript, passage):
        return mean_cal, {"words_read": 0, "prompt_words": len(normalise_prompt(transcript)), "oov": [],
                          "note": "the transcript does not begin with the passage this model was trained on ("
                                  + " ".join(passage) + " ...); the window model's answer stands"}
    feats, al = fusion_features(x, sr, transcript, passage)
    named = dict(zip(FEATURE_NAMES, feats[: len(FEATURE_NAMES)], strict=True))
    summary = {"words_read": len(al.words), "prompt_words": al.prompt_words, "oov": al.oov,
               **{key: round(float(named[key]), 4) for key in ("read_share", "words_per_s", "phones_per_s", "gop_mean",
                                                                "low_gop_share", "skipped_word_share",
                                                                "unaligned_word_share")},
               "words": word_report(al)}
    if not al.words:
        return mean_cal, summary
    if passage and summary["read_share"] < MIN_PASSAGE_READ_SHARE:
        summary["note"] = (f"the passage was followed through only {100 * summary['read_share']:.0f} % of the recording "
                           f"(under {100 * MIN_PASSAGE_READ_SHARE:.0f} %): it does not seem to read the passage; the "
                           "window model's answer stands")
        return mean_cal, summary
    return fusion.fuse(mean_cal[None], feats[None])[0], summary


def embed_batch(
    loaded: Any,
    signals: Sequence[np.ndarray],
    *,
    window_s: float | None = None,
    hop_s: float | None = None,
    per_window: bool = False,
    batch_size: int = 64,
    vad: bool = False,
    progress: ProgressFn | None = None,
    device: Any = None,
    autocast: bool = False,
) -> list[EmbedOutcome]:
    """One L2-normalised embedding per recording: the re-normalised mean of window embeddings.

    Parameters
    ----------
    loaded : LoadedModel
        A model with ``embed(inputs) -> [n, d]`` (L2-normalised rows).
    signals : sequence of np.ndarray
        Mono float signals ``[time]`` at ``loaded.spec.sample_rate``.
    window_s, hop_s : float, optional
        Window length and hop in seconds; the spec's by default.
    per_window : bool
        Also return each window's vector.
    batch_size : int
        Windows per forward pass (halved on out-of-memory).
    vad : bool
        Use only windows that are at least half speech (all windows when none is).
    progress, device, autocast
        As in :func:`classify_batch`.

    Returns
    -------
    list of EmbedOutcome
        One per signal: ``vector`` (``list[float]`` of length d; None for an empty signal),
        ``n_windows``, ``duration_s``, ``timings`` and, with ``per_window``, ``windows``
        (``[{"start_s", "end_s", "vector"}]``).
    """
    spec = loaded.spec
    sr = int(spec.sample_rate)
    window_s = float(window_s if window_s is not None else spec.window_s)
    hop_s = float(hop_s if hop_s is not None else spec.hop_s)
    win = max(1, int(round(window_s * sr)))
    signals = _as_signals(loaded, signals)
    spans, keeps, _, t_win, t_vad = _plan(signals, sr, window_s, hop_s, vad)
    keeps = [keep if keep.any() else np.ones_like(keep) for keep in keeps]
    items = _items(spans, keeps, [True] * len(signals))
    vectors, slice_s, forward_s = forward_windows(
        loaded,
        signals,
        items,
        win,
        "embed",
        batch_size=batch_size,
        device=device,
        autocast=autocast,
        progress=progress,
    )
    results: list[EmbedOutcome] = []
    owner = items[:, 0]
    for k, x in enumerate(signals):
        t0 = time.perf_counter()
        mine = np.flatnonzero(owner == k)
        res: dict[str, Any] = {"vector": None, "n_windows": int(len(mine)), "duration_s": len(x) / sr}
        if len(mine):
            v = vectors[mine].astype(np.float64)
            mean = v.mean(axis=0)
            mean /= max(float(np.linalg.norm(mean)), 1e-12)
            res["vector"] = [float(c) for c in mean]
            if per_window:
                res["windows"] = [
                    {"start_s": float(a / sr), "end_s": float(b / sr), "vector": [float(c) for c in row]}
                    for (a, b), row in zip(items[mine, 1:], v, strict=True)
                ]
        elif per_window:
            res["windows"] = []
        res["timings"] = {
            "windowing": float(t_win[k] + slice_s[mine].sum()),
            "vad": float(t_vad[k]),
            "forward": float(forward_s[mine].sum()),
            "aggregate": time.perf_counter() - t0,
        }
        results.append(EmbedOutcome(**res))
    return results
