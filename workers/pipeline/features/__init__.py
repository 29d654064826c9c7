"""Feature extractors, registered by name on import (see ``base`` for the interface)."""

from workers.pipeline.features import (  # noqa: F401  (registration; shared and spectrogram_shared for bench/ and tests)
    compare,
    egemaps,
    formants,
    logmel,
    mfcc,
    prosody,
    shared,
    spectral,
    spectrogram_shared,
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
from workers.pipeline.features.warmup import warm_up, warm_up_signal

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
    "warm_up",
    "warm_up_signal",
]
