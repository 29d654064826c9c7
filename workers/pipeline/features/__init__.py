"""Feature extractors, registered by name on import (see ``base`` for the interface)."""

from workers.pipeline.features import (  # noqa: F401  (registration)
    compare,
    egemaps,
    formants,
    logmel,
    mfcc,
    prosody,
    spectral,
    voice_quality,
)
from workers.pipeline.features.base import (
    EXTRACTORS,
    FeatureExtractor,
    FeatureResult,
    default_extractors,
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
    "default_extractors",
    "extract_features",
    "get_extractor",
    "register_extractor",
    "result_to_npz_bytes",
    "summaries",
]
