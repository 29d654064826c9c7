"""Praat objects shared by the parselmouth extractors of one recording.

``prosody``, ``formants`` and ``voice_quality`` each need a ``parselmouth.Sound`` of the same
samples and the same autocorrelation pitch track (75-500 Hz, 10 ms). ``extract_features`` runs
them one after another on one array, so the Sound and each Pitch are built once and reused:
a Pitch is ~3 ms per second of audio, a third of what the three extractors spent on pitch.

The cache holds the objects of the last recording only (per thread), keyed by a hash of the
samples' bytes, so a different or modified array never gets a stale object.
"""

from __future__ import annotations

import hashlib
import threading

import numpy as np
import parselmouth

__all__ = ["pitch_ac", "sound"]

_local = threading.local()


def _key(x: np.ndarray, sample_rate: int) -> tuple[int, int, bytes]:
    digest = hashlib.blake2b(memoryview(np.ascontiguousarray(x)).cast("B"), digest_size=16).digest()
    return (int(sample_rate), int(x.size), digest)


def _entry(x: np.ndarray, sample_rate: int) -> dict:
    key = _key(x, sample_rate)
    entry = getattr(_local, "entry", None)
    if entry is None or entry["key"] != key:
        entry = {"key": key, "sound": parselmouth.Sound(x.astype(np.float64), sampling_frequency=sample_rate), "pitch": {}}
        _local.entry = entry
    return entry


def sound(x: np.ndarray, sample_rate: int) -> parselmouth.Sound:
    """The ``parselmouth.Sound`` of float32 ``[time]`` samples (shared; do not modify it)."""
    return _entry(x, sample_rate)["sound"]


def pitch_ac(x: np.ndarray, sample_rate: int, *, time_step: float, floor: float, ceiling: float) -> parselmouth.Pitch:
    """Praat "To Pitch (ac)" of ``x`` ``[time]`` with the given time step, floor and ceiling (Hz).

    Identical to ``sound.to_pitch_ac(time_step=..., pitch_floor=..., pitch_ceiling=...)``;
    computed once per recording and settings.
    """
    entry = _entry(x, sample_rate)
    settings = (float(time_step), float(floor), float(ceiling))
    if settings not in entry["pitch"]:
        entry["pitch"][settings] = entry["sound"].to_pitch_ac(time_step=time_step, pitch_floor=floor, pitch_ceiling=ceiling)
    return entry["pitch"][settings]
