"""eGeMAPS: the extended Geneva Minimalistic Acoustic Parameter Set (openSMILE functionals)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from workers.pipeline.features.base import FeatureExtractor, FeatureResult, register_extractor
from workers.pipeline.features.opensmile_shared import functionals


@register_extractor
class EGeMAPS(FeatureExtractor):
    """The 88 eGeMAPSv02 functionals over the recording (Eyben et al. 2016), the field's standard
    compact set for paralinguistics: pitch in semitones from 27.5 Hz, jitter, shimmer, loudness,
    HNR, formants F1-F3 with bandwidths and amplitudes, alpha ratio, Hammarberg index, spectral
    slopes, MFCC 1-4, spectral flux, and rates and lengths of voiced / unvoiced segments.

    Summary: ``{openSMILE name: value}``, e.g. ``F0semitoneFrom27.5Hz_sma3nz_amean``,
    ``loudness_sma3_amean``, ``jitterLocal_sma3nz_amean``, ``VoicedSegmentsPerSec``; None where
    openSMILE gives NaN (silence or a signal shorter than its 60 ms window). No frame arrays.
    In the default set of a features job (about 12 ms per second of audio on one core).
    """

    name = "egemaps"
    version = "1"

    @dataclass(frozen=True)
    class Config:
        feature_set: str = "eGeMAPSv02"  # also eGeMAPSv01b, GeMAPSv01b (older releases of the set)

        def __post_init__(self) -> None:
            if self.feature_set not in ("eGeMAPSv02", "eGeMAPSv01b", "GeMAPSv01b"):
                raise ValueError(f"egemaps feature_set must be eGeMAPSv02, eGeMAPSv01b or GeMAPSv01b, not {self.feature_set!r}")

    def extract(self, samples: np.ndarray, sample_rate: int) -> FeatureResult:
        return self.result(functionals(self.config.feature_set, samples, sample_rate), {}, None)
