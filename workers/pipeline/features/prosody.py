"""Prosody with Praat (parselmouth): F0, intensity and a speaking-rate estimate."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.signal import find_peaks

from workers.pipeline.features import praat_shared
from workers.pipeline.features.base import FeatureExtractor, FeatureResult, as_mono, describe, nearest_frames, register_extractor

F0_STATS = ("mean", "std", "min", "max", "range", "p5", "p50", "p95")


@register_extractor
class Prosody(FeatureExtractor):
    """F0 contour (Praat "To Pitch", autocorrelation), intensity and syllable rate.

    Arrays, one value per pitch frame (``time_step`` apart): ``times`` (s, frame centres), ``f0`` (Hz,
    0 where unvoiced), ``voiced`` (bool), ``intensity`` (dB re 2e-5 with samples read as pascal, so
    a full-scale sine is ~91 dB).

    Summary: ``f0_{stat}_hz`` and ``f0_{stat}_st`` (semitones re ``semitone_ref_hz``) for stat in
    mean, std, min, max, range, p5, p50, p95 over voiced frames; ``voiced_fraction``;
    ``intensity_mean_db`` / ``intensity_std_db`` over voiced frames; ``syllable_count`` and
    ``speaking_rate_syll_per_s``.

    Speaking rate follows de Jong & Wempe (2009, Behavior Research Methods 41:385), simplified: a
    syllable nucleus is a peak of the intensity contour that is (1) no more than ``peak_window_db``
    below the contour's 99th percentile, (2) at least ``min_dip_db`` above the dips on either side
    (scipy prominence, instead of their dip to the next peak only) and (3) in a voiced frame. The
    rate is nuclei per second of the whole recording, pauses included.

    Signals shorter than 6.4 periods of ``f0_floor`` (Praat's intensity window) give empty arrays
    and None statistics; silence gives no voiced frames, so None F0 and intensity statistics.
    """

    name = "prosody"
    version = "1"

    @dataclass(frozen=True)
    class Config:
        f0_floor: float = 75.0
        f0_ceiling: float = 500.0
        time_step: float = 0.01
        semitone_ref_hz: float = 100.0
        peak_window_db: float = 25.0
        min_dip_db: float = 2.0

    def extract(self, samples: np.ndarray, sample_rate: int) -> FeatureResult:
        c = self.config
        x = as_mono(samples)
        duration = x.size / sample_rate
        if duration < 6.4 / c.f0_floor:
            times = f0 = intensity = np.zeros(0)
            n_syllables = 0
        else:
            sound = praat_shared.sound(x, sample_rate)
            pitch = praat_shared.pitch_ac(x, sample_rate, time_step=c.time_step, floor=c.f0_floor, ceiling=c.f0_ceiling)
            times, f0 = pitch.xs(), pitch.selected_array["frequency"]
            contour = sound.to_intensity(minimum_pitch=c.f0_floor, time_step=c.time_step)
            int_times, int_db = contour.xs(), contour.values[0]
            intensity = np.interp(times, int_times, int_db)
            n_syllables = self._count_nuclei(int_times, int_db, times, f0 > 0)
        voiced = f0 > 0
        f0_voiced = f0[voiced]
        summary = {
            **describe(f0_voiced, "f0", F0_STATS, "_hz"),
            **describe(12.0 * np.log2(f0_voiced / c.semitone_ref_hz), "f0", F0_STATS, "_st"),
            "voiced_fraction": float(voiced.mean()) if f0.size else None,
            **describe(intensity[voiced], "intensity", ("mean", "std"), "_db"),
            "syllable_count": n_syllables if f0.size else None,
            "speaking_rate_syll_per_s": n_syllables / duration if f0.size else None,
        }
        arrays = {
            "times": times.astype(np.float32),
            "f0": f0.astype(np.float32),
            "voiced": voiced,
            "intensity": intensity.astype(np.float32),
        }
        return self.result(summary, arrays, 1.0 / c.time_step)

    def _count_nuclei(self, int_times: np.ndarray, int_db: np.ndarray, pitch_times: np.ndarray, voiced: np.ndarray) -> int:
        """Syllable nuclei: prominent, loud-enough intensity peaks ``[frames]`` at voiced pitch frames."""
        c = self.config
        threshold = np.percentile(int_db, 99) - c.peak_window_db
        peaks, _ = find_peaks(int_db, height=threshold, prominence=c.min_dip_db)
        return int(voiced[nearest_frames(int_times[peaks], pitch_times)].sum())
