"""The openSMILE extractors (eGeMAPSv02, ComParE_2016 functionals): registry, config, values."""

from __future__ import annotations

import json

import numpy as np
import pytest

from workers.pipeline.features import EXTRACTORS, default_extractors, extract_features, get_extractor

SR = 16000


def _semitones(f0: float) -> float:
    return 12 * np.log2(f0 / 27.5)  # eGeMAPS' pitch scale


def test_registered_by_name_egemaps_by_default_compare_opt_in() -> None:
    assert {"egemaps", "compare"} <= set(EXTRACTORS)
    assert "egemaps" in default_extractors() and "compare" not in default_extractors()
    assert set(extract_features(np.zeros(0, np.float32), SR)) == set(default_extractors())
    assert list(extract_features(np.zeros(0, np.float32), SR, names=["compare"])) == ["compare"]


def test_config_is_frozen_and_checked() -> None:
    extractor = get_extractor("egemaps")
    assert extractor.config_dict() == {"feature_set": "eGeMAPSv02"}
    with pytest.raises(Exception):  # noqa: B017  (FrozenInstanceError)
        extractor.config.feature_set = "x"
    with pytest.raises(ValueError, match="feature_set must be"):
        get_extractor("egemaps", {"feature_set": "ComParE_2016"})
    with pytest.raises(ValueError, match="feature_set must be"):
        get_extractor("compare", {"feature_set": "eGeMAPSv02"})
    assert get_extractor("egemaps", {"feature_set": "GeMAPSv01b"}).config.feature_set == "GeMAPSv01b"


@pytest.mark.parametrize("f0", [120.0, 220.0])
def test_egemaps_functionals_of_a_voiced_signal(synth, f0) -> None:
    result = get_extractor("egemaps").extract(synth.harmonics(f0, 1.5), SR)
    assert len(result.summary) == 88 and result.arrays == {} and result.frame_rate_hz is None
    assert result.version == "1" and result.config == {"feature_set": "eGeMAPSv02"}
    assert result.summary["F0semitoneFrom27.5Hz_sma3nz_amean"] == pytest.approx(_semitones(f0), abs=0.5)
    assert result.summary["loudness_sma3_amean"] > 0
    json.dumps(result.summary, allow_nan=False)


def test_egemaps_louder_signal_is_louder(synth) -> None:
    quiet = get_extractor("egemaps").extract(0.05 * synth.harmonics(150, 1.0), SR).summary
    loud = get_extractor("egemaps").extract(0.5 * synth.harmonics(150, 1.0), SR).summary
    assert loud["loudness_sma3_amean"] > 2 * quiet["loudness_sma3_amean"]


def test_compare_has_all_6373_functionals(synth) -> None:
    result = get_extractor("compare").extract(synth.harmonics(150, 1.0), SR)
    assert len(result.summary) == 6373
    assert all(v is None or np.isfinite(v) for v in result.summary.values())
    json.dumps(result.summary, allow_nan=False)


@pytest.mark.parametrize("n_samples", [0, 100])
def test_too_short_gives_none_for_every_key(n_samples) -> None:
    for name in ("egemaps", "compare"):
        summary = get_extractor(name).extract(np.zeros(n_samples, np.float32), SR).summary
        assert summary and all(v is None for v in summary.values()), name
