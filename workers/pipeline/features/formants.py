"""Formants F1-F3 with Praat (parselmouth), summarised over voiced frames."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from parselmouth.praat import call

from workers.pipeline.features import praat_shared
from workers.pipeline.features.base import FeatureExtractor, FeatureResult, as_mono, describe, nearest_frames, register_extractor


@register_extractor
class Formants(FeatureExtractor):
    """Praat "To Formant (burg)" tracks, with voicing from "To Pitch" (autocorrelation).

    Arrays, one value per formant frame (``time_step`` apart): ``times`` (s), ``f1``, ``f2``, ``f3``
    (Hz, 0 where Praat finds no formant), ``voiced`` (bool, from the nearest pitch frame).
    Summary: ``f{k}_mean_hz``, ``f{k}_std_hz`` and ``f{k}_median_hz`` over voiced frames, and
    ``voiced_frames``. ``max_formant`` 5500 Hz suits adult female voices; Praat's manual advises
    5000 Hz for adult males. Signals shorter than 3 periods of ``f0_floor`` give empty arrays.

    Opt-in (``"extractors": [..., "formants"]``): not in a features job's default set, which measures
    F1-F3 once, through eGeMAPS (frequency, bandwidth and relative amplitude, openSMILE's LPC
    tracker). Praat's Burg tracks are the phonetician's reference and cost about as much as all
    of eGeMAPS (~8 ms per second of audio, most of it Praat's resampling to 2 x ``max_formant``);
    ``docs/benchmarks.md``'s features section measures both.
    """

    name = "formants"
    version = "1"
    in_default_set = False

    @dataclass(frozen=True)
    class Config:
        max_formant: float = 5500.0
        n_formants: float = 5.0  # Praat accepts halves, e.g. 5.5
        time_step: float = 0.01
        window_length: float = 0.025
        pre_emphasis_from: float = 50.0
        f0_floor: float = 75.0
        f0_ceiling: float = 500.0

    def extract(self, samples: np.ndarray, sample_rate: int) -> FeatureResult:
        c = self.config
        x = as_mono(samples)
        if x.size / sample_rate < 3.0 / c.f0_floor:
            times, tracks, voiced = np.zeros(0), np.zeros((3, 0)), np.zeros(0, dtype=bool)
        else:
            sound = praat_shared.sound(x, sample_rate)
            formant = sound.to_formant_burg(
                time_step=c.time_step,
                max_number_of_formants=c.n_formants,
                maximum_formant=c.max_formant,
                window_length=c.window_length,
                pre_emphasis_from=c.pre_emphasis_from,
            )
            times = formant.xs()
            # "To Matrix" gives a formant's frequency per frame, 0 where undefined.
            tracks = np.stack([call(formant, "To Matrix", k).values[0] for k in (1, 2, 3)])  # [3, frames]
            pitch = praat_shared.pitch_ac(x, sample_rate, time_step=c.time_step, floor=c.f0_floor, ceiling=c.f0_ceiling)
            voiced = pitch.selected_array["frequency"][nearest_frames(times, pitch.xs())] > 0
        summary: dict[str, float | None] = {}
        for k, track in enumerate(tracks, start=1):
            summary |= describe(track[voiced & (track > 0)], f"f{k}", ("mean", "std", "median"), "_hz")
        summary["voiced_frames"] = int(voiced.sum())
        arrays = {"times": times.astype(np.float32), **{f"f{k}": t.astype(np.float32) for k, t in enumerate(tracks, 1)}, "voiced": voiced}
        return self.result(summary, arrays, 1.0 / c.time_step)
