"""ComParE 2016: the Interspeech Computational Paralinguistics Challenge's large set (openSMILE)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from workers.pipeline.features.base import FeatureExtractor, FeatureResult, register_extractor
from workers.pipeline.features.opensmile_shared import functionals


@register_extractor
class ComParE(FeatureExtractor):
    """The 6,373 ComParE_2016 functionals over the recording (Schuller et al. 2016): statistics of
    65 low-level descriptors (loudness, energy in bands, MFCC 1-14, RASTA auditory spectrum,
    spectral shape, F0, jitter, shimmer, HNR, voicing) and their deltas.

    Summary: ``{openSMILE name: value}`` (e.g. ``audspec_lengthL1norm_sma_range``); None where
    openSMILE gives NaN. No frame arrays. Opt-in: not in a features job's default set, because
    6,373 values per recording make every summary (and an export's row) ~70x larger than
    eGeMAPS'; ask for it by name (``"extractors": ["compare"]``).
    """

    name = "compare"
    version = "1"
    in_default_set = False

    @dataclass(frozen=True)
    class Config:
        feature_set: str = "ComParE_2016"

        def __post_init__(self) -> None:
            if self.feature_set != "ComParE_2016":
                raise ValueError(f"compare feature_set must be ComParE_2016, not {self.feature_set!r}")

    def extract(self, samples: np.ndarray, sample_rate: int) -> FeatureResult:
        return self.result(functionals(self.config.feature_set, samples, sample_rate), {}, None)
