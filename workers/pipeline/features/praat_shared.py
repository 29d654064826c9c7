"""Praat objects shared by the parselmouth extractors of one recording (through ``shared``).

``prosody``, ``formants`` and ``voice_quality`` each need a ``parselmouth.Sound`` of the same
samples and the same autocorrelation pitch track (75-500 Hz, 10 ms). ``extract_features`` runs
them one after another on one array, so the Sound and each Pitch are built once and reused:
a Pitch is ~3 ms per second of audio, a third of what the three extractors spent on pitch.
"""

from __future__ import annotations

import numpy as np
import parselmouth

from workers.pipeline.features import shared

__all__ = ["pitch_ac", "sound"]


def sound(x: np.ndarray, sample_rate: int) -> parselmouth.Sound:
    """The ``parselmouth.Sound`` of float32 ``[time]`` samples (shared; do not modify it)."""
    return shared.cached(x, sample_rate, ("praat.sound",),
                         lambda: parselmouth.Sound(x.astype(np.float64), sampling_frequency=sample_rate))


def pitch_ac(x: np.ndarray, sample_rate: int, *, time_step: float, floor: float, ceiling: float) -> parselmouth.Pitch:
    """Praat "To Pitch (ac)" of ``x`` ``[time]`` with the given time step, floor and ceiling (Hz).

    Identical to ``sound.to_pitch_ac(time_step=..., pitch_floor=..., pitch_ceiling=...)``;
    computed once per recording and settings.
    """
    return shared.cached(
        x, sample_rate, ("praat.pitch_ac", float(time_step), float(floor), float(ceiling)),
        lambda: sound(x, sample_rate).to_pitch_ac(time_step=time_step, pitch_floor=floor, pitch_ceiling=ceiling),
    )
