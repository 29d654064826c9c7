"""Voice quality with Praat (parselmouth): jitter, shimmer and harmonics-to-noise ratio."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import parselmouth
from parselmouth.praat import call

from workers.pipeline.features import praat_shared
from workers.pipeline.features.base import FeatureExtractor, FeatureResult, as_mono, register_extractor, to_float

JITTER = ("local", "rap")
SHIMMER = ("local", "apq3")


@register_extractor
class VoiceQuality(FeatureExtractor):
    """Praat's voice-report measures, each group switchable in the config.

    Glottal periods come from "To PointProcess (cc)" guided by an autocorrelation pitch track
    (Praat's voice report uses a cross-correlation track; on accent-mini clips that changed jitter
    and shimmer by under ~10 % at 12x the cost). Summary (fractions, not percent): ``jitter_local``, ``jitter_rap``,
    ``shimmer_local``, ``shimmer_apq3``; ``hnr_mean_db`` (mean of "To Harmonicity (cc)" over voiced
    frames). None where Praat finds too few periods. Arrays: ``times`` (s) and ``hnr`` (dB, NaN
    where unvoiced, since 0 dB is a valid value), when ``hnr`` is on. Signals shorter than 3
    periods of ``f0_floor`` give None statistics.

    Version 2: the harmonicity track steps 20 ms instead of Praat's 10 ms. "To Harmonicity (cc)"
    was half of all feature time; on 40 accent-mini clips the 20 ms step changes ``hnr_mean_db``
    by 0.17 dB on average (at most 0.39 dB, correlation 0.998 with the 10 ms values) at half the
    cost (``bench/micro.py``'s ``feature_breakdown`` measures it). Set ``hnr_time_step=0.01`` for Praat's default.
    The pitch track guiding the glottal pulses is shared with ``prosody`` and ``formants``
    (``praat_shared``), with Praat's default step for it, ``0.75 / f0_floor``.

    Opt-in (``"extractors": [..., "voice_quality"]``): not in a features job's default set, which
    measures jitter, shimmer and HNR once, through eGeMAPS (``jitterLocal``, ``shimmerLocaldB``,
    ``HNRdBACF``, plus H1-H2 and H1-A3). Praat's voice report is the clinical reference and costs
    ~7 ms per second of audio, two thirds of eGeMAPS.
    """

    name = "voice_quality"
    version = "2"
    in_default_set = False

    @dataclass(frozen=True)
    class Config:
        jitter: bool = True
        shimmer: bool = True
        hnr: bool = True
        f0_floor: float = 75.0
        f0_ceiling: float = 500.0
        period_floor: float = 0.0001  # s; Praat's defaults for jitter and shimmer
        period_ceiling: float = 0.02
        max_period_factor: float = 1.3
        max_amplitude_factor: float = 1.6
        hnr_time_step: float = 0.02  # Praat's default is 0.01; see the class docstring
        hnr_silence_threshold: float = 0.1
        hnr_periods_per_window: float = 1.0

    def extract(self, samples: np.ndarray, sample_rate: int) -> FeatureResult:
        c = self.config
        x = as_mono(samples)
        long_enough = x.size / sample_rate >= 3.0 / c.f0_floor
        sound = praat_shared.sound(x, sample_rate) if long_enough else None
        summary: dict[str, float | None] = {}
        arrays: dict[str, np.ndarray] = {}
        if c.jitter or c.shimmer:
            summary |= self._perturbation(x, sample_rate, sound)
        if c.hnr:
            times, hnr = np.zeros(0), np.zeros(0)
            if sound is not None:
                harmonicity = sound.to_harmonicity_cc(
                    time_step=c.hnr_time_step,
                    minimum_pitch=c.f0_floor,
                    silence_threshold=c.hnr_silence_threshold,
                    periods_per_window=c.hnr_periods_per_window,
                )
                times, hnr = harmonicity.xs(), harmonicity.values[0]
                hnr = np.where(hnr == -200.0, np.nan, hnr)  # Praat marks unvoiced frames with -200 dB
            voiced = hnr[np.isfinite(hnr)]
            summary["hnr_mean_db"] = float(voiced.mean()) if voiced.size else None
            arrays = {"times": times.astype(np.float32), "hnr": hnr.astype(np.float32)}
        return self.result(summary, arrays, 1.0 / c.hnr_time_step if c.hnr else None)

    def _perturbation(self, x: np.ndarray, sample_rate: int, sound: parselmouth.Sound | None) -> dict[str, float | None]:
        """Jitter and/or shimmer from the glottal pulses of ``sound``; None values without one."""
        c = self.config
        measures = [("jitter", v) for v in JITTER if c.jitter] + [("shimmer", v) for v in SHIMMER if c.shimmer]
        if sound is None:
            return {f"{kind}_{variant}": None for kind, variant in measures}
        # Praat's default step, 0.75 / floor (10 ms at 75 Hz): the same track prosody and formants use.
        pitch = praat_shared.pitch_ac(x, sample_rate, time_step=0.75 / c.f0_floor, floor=c.f0_floor, ceiling=c.f0_ceiling)
        pulses = call([sound, pitch], "To PointProcess (cc)")
        args = (0.0, 0.0, c.period_floor, c.period_ceiling, c.max_period_factor)  # 0, 0: the whole signal
        out = {}
        for kind, variant in measures:
            if kind == "jitter":
                value = call(pulses, f"Get jitter ({variant})", *args)
            else:
                value = call([sound, pulses], f"Get shimmer ({variant})", *args, c.max_amplitude_factor)
            out[f"{kind}_{variant}"] = to_float(value)
        return out
