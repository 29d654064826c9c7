"""Warm a process for feature extraction before its first recording.

A fresh process pays, on its first recording, the imports librosa makes lazily (its numba
``vectorize`` / ``guvectorize`` kernels compile or load from ``NUMBA_CACHE_DIR`` on import: ~1-2.5 s
on an idle core), openSMILE's library load and configuration parsing (~1 s), Praat's and
torchaudio's first calls. :func:`warm_up` runs each extractor once on one second of a synthetic
voice, so all of that happens at worker start instead (``workers.runners.FeaturesRunner.warm_up``,
called from the worker's start-up signals): the extractors that run no torch operation in the
worker's parent before the prefork fork (the children inherit the loaded modules and compiled
kernels, shared copy-on-write), the torch ones in each child after it (no torch operation may run
before the fork).
"""

from __future__ import annotations

import time
from collections.abc import Iterable

import numpy as np

from workers.pipeline.features import shared
from workers.pipeline.features.base import EXTRACTORS, default_extractors, get_extractor

__all__ = ["warm_up", "warm_up_signal"]


def warm_up_signal(sample_rate: int = 16000, seconds: float = 1.0) -> np.ndarray:
    """A voiced test signal ``[time]``: a 120 Hz glottal-like pulse train through two resonances, a
    little noise, faded in and out, so pitch, formants, jitter and shimmer all find something."""
    rng = np.random.default_rng(0)
    n = int(sample_rate * seconds)
    t = np.arange(n) / sample_rate
    pulses = (np.diff(np.floor(120.0 * t), prepend=0.0) > 0).astype(np.float64)
    x = np.zeros(n)
    for f, bw in ((700.0, 80.0), (1200.0, 100.0)):  # two-pole resonators, applied in a loop-free way
        r = np.exp(-np.pi * bw / sample_rate)
        k = np.arange(int(0.02 * sample_rate))
        x += np.convolve(pulses, r**k * np.sin(2 * np.pi * f * k / sample_rate))[:n]
    x = x / np.max(np.abs(x)) * 0.5 * np.sin(np.pi * t / seconds) + 0.001 * rng.standard_normal(n)
    return x.astype(np.float32)


def warm_up(names: Iterable[str] | None = None, *, uses_torch: bool | None = None, sample_rate: int = 16000) -> dict[str, float]:
    """Run extractors once on :func:`warm_up_signal` and return ``{name: seconds}``.

    Parameters
    ----------
    names : iterable of str, optional
        Extractors to warm; None: the default set (:func:`~workers.pipeline.features.default_extractors`).
    uses_torch : bool, optional
        Only the extractors whose ``uses_torch`` is this (False before a prefork fork, True after
        it); None: all of them.
    """
    signal = warm_up_signal(sample_rate)
    seconds: dict[str, float] = {}
    for name in default_extractors() if names is None else names:
        if uses_torch is not None and EXTRACTORS[name].uses_torch != uses_torch:
            continue
        t0 = time.perf_counter()
        get_extractor(name).extract(signal, sample_rate)
        seconds[name] = time.perf_counter() - t0
    shared.forget()  # keep no objects of the test signal
    return seconds
