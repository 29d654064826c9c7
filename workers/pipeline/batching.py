"""Batching windows through a model: window spans, slicing, device moves, bf16 autocast, and the
forward pass that packs windows of many recordings into batches and halves the batch on an
out-of-memory error (see :mod:`workers.pipeline.inference`, the one inference path, for the rules).
Pure numpy / torch: no Django.

Docstring shapes: signals ``[time]``, window rows ``[m, 3]`` of ``(signal_index, start, end)``.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from models.hooks import model_hook

__all__ = ["PAD_RATIO", "autocast_context", "forward_windows", "is_oom_error", "window_spans"]

logger = logging.getLogger(__name__)

ProgressFn = Callable[[int, int], None]

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
def autocast_context(enabled: bool, device: Any) -> Iterator[None]:
    if not enabled:
        yield
        return
    import torch

    device_type = torch.device(device if device is not None else "cpu").type
    with torch.autocast(device_type=device_type, dtype=torch.bfloat16):
        yield


#: a window shorter than this fraction of its batch's longest starts a new batch (see :func:`forward_windows`)
PAD_RATIO = 0.8


def forward_windows(
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
    variable = bool(model_hook(getattr(loaded, "model", None), "variable_length"))
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
                with autocast_context(autocast, device if device is not None else model_hook(loaded, "device")):
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
