"""Batched inference over whole recordings: windowing, VAD gate, batched forward, aggregation.

(Over 500 lines on purpose: this is the one inference path jobs, /predict and the CLI share, with its
typed outcomes; windowing, batching, calibration and aggregation read best side by side.)

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

import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from workers.pipeline import vad as vad_mod

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
# Outcomes
# ---------------------------------------------------------------------------------------------


class _MappingBridge:
    """Read-only ``outcome["key"]`` / ``outcome.get("key")`` / ``"key" in outcome`` over the keys of
    ``as_dict()``, for code written against the old dict outcomes. Deprecated: use attributes."""

    def as_dict(self) -> dict[str, Any]:  # pragma: no cover - overridden
        raise NotImplementedError

    def _has(self, key: object) -> bool:
        return isinstance(key, str) and key in self.as_dict()

    def __getitem__(self, key: str) -> Any:
        if not self._has(key):
            raise KeyError(key)
        return getattr(self, key)

    def get(self, key: str, default: Any = None) -> Any:
        return getattr(self, key) if self._has(key) else default

    def __contains__(self, key: object) -> bool:
        return self._has(key)


@dataclass(frozen=True)
class ClassifyOutcome(_MappingBridge):
    """One recording's classification (the fields are those of :func:`classify_batch`'s Returns).

    Frozen, but its dicts and lists are plain containers: treat them as read-only. ``reading`` and
    ``fused`` are None for models that do not read a transcript (and then absent from ``as_dict()``).
    """

    outcome: str
    predicted_class: str | None = None
    confidence: float | None = None
    probabilities: dict[str, float] | None = None
    probabilities_raw: dict[str, float] | None = None
    window_share: dict[str, float] | None = None
    agreement: float | None = None
    windows: list[dict[str, Any]] = field(default_factory=list)
    n_windows: int = 0
    n_windows_total: int = 0
    duration_s: float = 0.0
    speech_s: float | None = None
    speech_fraction: float | None = None
    threshold: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)
    reading: dict[str, Any] | None = None
    fused: bool | None = None

    def as_dict(self) -> dict[str, Any]:
        """Every field as a dict (shallow), without ``reading`` / ``fused`` for non-reading models."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        if self.fused is None:
            del out["reading"], out["fused"]
        return out

    def api_dict(self) -> dict[str, Any]:
        """The outcome under the API's key names: the fields a job's ``Prediction`` stores (and
        ``results/`` returns), the core of the ``/predict`` answer and of ``manage.py classify`` rows.

        ``probabilities``, ``probabilities_raw`` and ``window_share`` are ``{}`` and ``windows`` ``[]``
        without a prediction; ``reading`` carries ``fused`` and is None without a transcript.
        """
        return {
            "outcome": self.outcome,
            "predicted_class": self.predicted_class,
            "confidence": self.confidence,
            "probabilities": dict(self.probabilities or {}),
            "probabilities_raw": dict(self.probabilities_raw or {}),
            "window_share": dict(self.window_share or {}),
            "agreement": self.agreement,
            "speech_fraction": self.speech_fraction,
            "windows": list(self.windows or []),
            "reading": {**self.reading, "fused": bool(self.fused)} if self.reading else None,
        }


@dataclass(frozen=True)
class EmbedOutcome(_MappingBridge):
    """One recording's embedding (the fields are those of :func:`embed_batch`'s Returns);
    ``windows`` is None unless per-window vectors were asked for (and then absent from ``as_dict()``)."""

    vector: list[float] | None
    n_windows: int
    duration_s: float
    windows: list[dict[str, Any]] | None = None
    timings: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        if self.windows is None:
            del out["windows"]
        return out


# ---------------------------------------------------------------------------------------------
# Windowing
# ---------------------------------------------------------------------------------------------


def window_spans(n_samples: int, sr: int, window_s: float, hop_s: float) -> np.ndarray:
    """Sample spans of the analysis windows of a signal.

    Parameters
    ----------
    n_samples : int
        Length of the signal in samples.
    sr : int
        Sample rate (Hz).
    window_s, hop_s : float
        Window length and hop in seconds (both > 0).

    Returns
    -------
    np.ndarray
        int64, shape ``[n_windows, 2]``: ``(start, end)`` sample indices of the real audio of each
        window, ``end - start == round(window_s * sr)`` except for the single window of a signal
        shorter than one window (``[[0, n_samples]]``, padded by the caller). Full windows start
        at ``0, hop, 2 hop, ...``; an uncovered tail adds one window ending at ``n_samples``
        (same starts as ``workers.pipeline.data.window_starts``). Empty for ``n_samples == 0``.
    """
    if window_s <= 0 or hop_s <= 0:
        raise ValueError("window_s and hop_s must be positive")
    win = max(1, int(round(window_s * sr)))
    hop = max(1, int(round(hop_s * sr)))
    n = int(n_samples)
    if n <= 0:
        return np.zeros((0, 2), dtype=np.int64)
    if n <= win:
        return np.array([[0, n]], dtype=np.int64)
    starts = np.arange(0, n - win + 1, hop, dtype=np.int64)
    tail = n - (int(starts[-1]) + win)
    if tail > 0:
        starts = np.append(starts, n - win)
    return np.stack([starts, starts + win], axis=1)


def _window_batch(signals: Sequence[np.ndarray], items: np.ndarray, win: int) -> np.ndarray:
    """Slice (and zero-pad) a batch of windows.

    Parameters
    ----------
    signals : sequence of np.ndarray
        Float32 ``[time]`` signals.
    items : np.ndarray
        ``[b, 3]`` rows of ``(signal_index, start, end)``.
    win : int
        Window length in samples.

    Returns
    -------
    np.ndarray
        float32, shape ``[b, win]``.
    """
    out = np.zeros((len(items), win), dtype=np.float32)
    for r, (s, a, b) in enumerate(items):
        out[r, : b - a] = signals[s][a:b]
    return out


# ---------------------------------------------------------------------------------------------
# Forward passes
# ---------------------------------------------------------------------------------------------


def is_oom_error(exc: BaseException) -> bool:
    """True for a CUDA (or other accelerator) out-of-memory error."""
    try:
        import torch

        if isinstance(exc, torch.cuda.OutOfMemoryError):
            return True
    except (ImportError, AttributeError):  # pragma: no cover - torch always present here
        pass
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def _free_accelerator_memory() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _to_device(inputs: Any, device: Any) -> Any:
    if device is None:
        return inputs
    if hasattr(inputs, "to"):
        return inputs.to(device)
    if isinstance(inputs, (tuple, list)):
        return type(inputs)(_to_device(x, device) for x in inputs)
    if isinstance(inputs, dict):
        return {k: _to_device(v, device) for k, v in inputs.items()}
    return inputs


@contextlib.contextmanager
def _autocast(enabled: bool, device: Any) -> Iterator[None]:
    if not enabled:
        yield
        return
    import torch

    device_type = torch.device(device if device is not None else "cpu").type
    with torch.autocast(device_type=device_type, dtype=torch.bfloat16):
        yield


#: a window shorter than this fraction of its batch's longest starts a new batch (see :func:`_forward`)
PAD_RATIO = 0.8


def _forward(
    loaded: Any,
    signals: Sequence[np.ndarray],
    items: np.ndarray,
    win: int,
    method: str,
    *,
    batch_size: int,
    device: Any,
    autocast: bool,
    progress: ProgressFn | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Run ``loaded.<method>`` over all windows in batches, halving the batch on OOM.

    Parameters
    ----------
    items : np.ndarray
        ``[m, 3]`` rows of ``(signal_index, start, end)``.
    method : str
        ``"logits"`` (``[b, C]``) or ``"embed"`` (``[b, d]``).

    Returns
    -------
    outputs : np.ndarray
        float32, shape ``[m, D]``, in the order of ``items``.
    slice_s, forward_s : np.ndarray
        Seconds spent slicing windows and in the model, apportioned per item, ``[m]``.
    """
    import torch

    m = len(items)
    slice_s = np.zeros(m)
    forward_s = np.zeros(m)
    if m == 0:
        return np.zeros((0, 0), dtype=np.float32), slice_s, forward_s
    # Bucket by real length (longest first): padded windows of short signals batch together.
    lengths = items[:, 2] - items[:, 1]
    order = np.argsort(-lengths, kind="stable")
    outputs: np.ndarray | None = None
    fn = getattr(loaded, method)
    # only a model whose input is as long as its batch's longest real window gains from length-cut batches
    # (a CNN runs every window at ``win`` samples whatever the batch)
    variable = bool(getattr(getattr(loaded, "model", None), "variable_length", False))
    bs = max(1, int(batch_size))
    i = 0
    with torch.inference_mode():
        while i < m:
            idx = order[i : i + bs]
            # a batch is as long as its longest window: cut it where a window is under PAD_RATIO of that, so no
            # window computes more than ~1/PAD_RATIO of its own length (mixed 3-s and 18-s recordings no longer
            # all run at 18 s)
            short = np.flatnonzero(lengths[idx] < PAD_RATIO * lengths[idx[0]]) if variable else ()
            if len(short):
                idx = idx[: short[0]]
            t0 = time.perf_counter()
            batch = _window_batch(signals, items[idx], win)
            t1 = time.perf_counter()
            try:
                with _autocast(autocast, device if device is not None else getattr(loaded, "device", "cpu")):
                    inputs = _to_device(loaded.prepare(batch), device)
                    out = fn(inputs)
                out_np = out.detach().float().cpu().numpy()
            except Exception as exc:  # noqa: BLE001 - re-raised unless it is an OOM we can absorb
                if not is_oom_error(exc) or bs == 1:
                    raise
                bs = max(1, bs // 2)
                logger.warning("out of memory at batch %d; retrying with batch size %d", len(idx), bs)
                _free_accelerator_memory()
                continue
            t2 = time.perf_counter()
            if outputs is None:
                outputs = np.empty((m, out_np.shape[1]), dtype=np.float32)
            outputs[idx] = out_np
            slice_s[idx] = (t1 - t0) / len(idx)
            forward_s[idx] = (t2 - t1) / len(idx)
            i += len(idx)
            if progress is not None:
                progress(i, m)
    assert outputs is not None
    return outputs, slice_s, forward_s


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
    calibration = dict(getattr(loaded, "calibration", None) or {})
    fused_threshold = threshold
    if threshold is None:
        threshold = float(calibration.get("threshold") or 0.0)
        fused_threshold = float(calibration.get("fused_threshold") or threshold)
    signals = [_as_signal(x) for x in signals]
    transcripts = list(transcripts) if transcripts is not None else [None] * len(signals)
    if len(transcripts) != len(signals):
        raise ValueError(f"{len(transcripts)} transcripts for {len(signals)} signals")

    spans, keeps, stamps, t_win, t_vad = _plan(signals, sr, window_s, hop_s, vad)
    speech_s = [vad_mod.speech_duration(ts) if ts is not None else None for ts in stamps]
    enough = [bool(keep.any()) and (s is None or s >= min_speech_s) for keep, s in zip(keeps, speech_s, strict=True)]
    items = _items(spans, keeps, enough)
    logits, slice_s, forward_s = _forward(
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
    reading = bool(getattr(fusion, "needs_transcript", False))
    if not (reading or getattr(fusion, "needs_phone_features", False)):
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
    passage = list(getattr(fusion, "passage", None) or [])
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
    signals = [_as_signal(x) for x in signals]
    spans, keeps, _, t_win, t_vad = _plan(signals, sr, window_s, hop_s, vad)
    keeps = [keep if keep.any() else np.ones_like(keep) for keep in keeps]
    items = _items(spans, keeps, [True] * len(signals))
    vectors, slice_s, forward_s = _forward(
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
