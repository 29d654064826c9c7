"""Feature extractors, registered by name on import (see ``base`` for the interface)."""

from workers.pipeline.features import formants, logmel, mfcc, prosody, spectral, voice_quality  # noqa: F401  (registration)
from workers.pipeline.features.base import (
    EXTRACTORS,
    FeatureExtractor,
    FeatureResult,
    extract_features,
    get_extractor,
    register_extractor,
    result_to_npz_bytes,
    summaries,
)

__all__ = [
    "EXTRACTORS",
    "FeatureExtractor",
    "FeatureResult",
    "extract_features",
    "get_extractor",
    "register_extractor",
    "result_to_npz_bytes",
    "summaries",
]
