"""Voice activity detection with silero-vad (the model ships inside the ``silero_vad`` package).

The model is loaded lazily, once per process, on first use, never at import: importing
``silero_vad`` itself calls ``torch.set_num_threads(1)`` for the whole process, so that import
also happens only on first use and the caller's torch thread count is restored afterwards.
The TorchScript (JIT) model is used (no onnxruntime dependency); it is stateful (it carries RNN
state between 32 ms chunks), so calls are serialised with a lock and run on ``num_threads``
torch threads (1 by default, as silero recommends), restoring the previous count afterwards.
"""

from __future__ import annotations

import contextlib
import threading
import warnings
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

__all__ = ["VAD_SAMPLE_RATE", "speech_duration", "speech_fraction", "speech_timestamps"]

#: Sample rate the VAD runs at; other rates must be resampled by the caller (load_audio does).
VAD_SAMPLE_RATE = 16000

_MODEL: Any = None
_LOCK = threading.Lock()


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence silero-vad / torch.jit deprecation chatter, here only (not process-wide)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        warnings.filterwarnings("ignore", message=".*multiply of 16000.*")
        yield


@contextlib.contextmanager
def _torch_threads(n: int | None) -> Iterator[None]:
    import torch

    if n is None:
        yield
        return
    previous = torch.get_num_threads()
    if previous != n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if torch.get_num_threads() != previous:
            torch.set_num_threads(previous)


def _load_model() -> Any:
    """The silero JIT model, loaded once per process (call with ``_LOCK`` held)."""
    global _MODEL
    if _MODEL is None:
        import torch

        previous = torch.get_num_threads()
        with _quiet():
            from silero_vad import load_silero_vad  # sets torch threads to 1 on first import

            model = load_silero_vad(onnx=False)
        torch.set_num_threads(previous)
        _MODEL = model
    return _MODEL


def speech_timestamps(
    samples: np.ndarray,
    sr: int = VAD_SAMPLE_RATE,
    *,
    threshold: float = 0.5,
    min_speech_duration_ms: int = 250,
    min_silence_duration_ms: int = 100,
    speech_pad_ms: int = 30,
    num_threads: int | None = 1,
) -> list[tuple[float, float]]:
    """Speech regions of a mono signal.

    Parameters
    ----------
    samples : np.ndarray
        Mono waveform, float in ``[-1, 1]``, shape ``[time]``.
    sr : int
        Sample rate: 16000 or 8000 (what silero supports; multiples of 16000 are decimated).
    threshold, min_speech_duration_ms, min_silence_duration_ms, speech_pad_ms
        Passed to ``silero_vad.get_speech_timestamps`` (its defaults).
    num_threads : int or None
        Torch threads during the call (restored afterwards); None leaves them alone.

    Returns
    -------
    list of (start_s, end_s)
        Sorted, non-overlapping speech regions in seconds (sample-exact, not rounded).
    """
    import torch

    x = np.asarray(samples, dtype=np.float32)
    if x.ndim != 1:
        raise ValueError(f"speech_timestamps needs mono [time] samples, got shape {x.shape}")
    if len(x) == 0:
        return []
    from_sr = sr
    with _LOCK, _quiet(), _torch_threads(num_threads), torch.inference_mode():
        model = _load_model()
        from silero_vad import get_speech_timestamps

        stamps = get_speech_timestamps(
            torch.from_numpy(np.ascontiguousarray(x)),
            model,
            threshold=threshold,
            sampling_rate=sr,
            min_speech_duration_ms=min_speech_duration_ms,
            min_silence_duration_ms=min_silence_duration_ms,
            speech_pad_ms=speech_pad_ms,
            return_seconds=False,
        )
        model.reset_states()
    # In samples of the original rate (silero maps decimated positions back via `step`).
    return [(int(s["start"]) / from_sr, int(s["end"]) / from_sr) for s in stamps]


def speech_fraction(
    spans: Sequence[tuple[float, float]] | np.ndarray,
    timestamps: Sequence[tuple[float, float]],
) -> np.ndarray:
    """Fraction of each span covered by speech.

    Parameters
    ----------
    spans : sequence of (start_s, end_s) or np.ndarray
        Windows in seconds, shape ``[n_windows, 2]``.
    timestamps : sequence of (start_s, end_s)
        Speech regions from :func:`speech_timestamps` (non-overlapping).

    Returns
    -------
    np.ndarray
        float64, shape ``[n_windows]``, each in ``[0, 1]`` (0 for an empty span).
    """
    spans_arr = np.asarray(spans, dtype=np.float64).reshape(-1, 2)
    if len(spans_arr) == 0:
        return np.zeros(0)
    ts = np.asarray(timestamps, dtype=np.float64).reshape(-1, 2)
    if len(ts) == 0:
        return np.zeros(len(spans_arr))
    start, end = spans_arr[:, :1], spans_arr[:, 1:]
    overlap = np.clip(np.minimum(end, ts[None, :, 1]) - np.maximum(start, ts[None, :, 0]), 0.0, None)
    length = (end - start)[:, 0]
    covered = overlap.sum(axis=1)
    return np.where(length > 0, np.clip(covered / np.where(length > 0, length, 1.0), 0.0, 1.0), 0.0)


def speech_duration(timestamps: Sequence[tuple[float, float]]) -> float:
    """Total speech in seconds of :func:`speech_timestamps` output."""
    return float(sum(max(0.0, e - s) for s, e in timestamps))
