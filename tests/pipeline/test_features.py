"""Tests for workers.pipeline.features: interface, registry, and that the values are right."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest

from workers.pipeline.features import (
    EXTRACTORS,
    FeatureResult,
    extract_features,
    get_extractor,
    result_to_npz_bytes,
    summaries,
)

SR = 16000
ALL = ("logmel", "mfcc", "spectral", "prosody", "formants", "voice_quality", "egemaps", "compare")


def _summary(name: str, samples: np.ndarray, **config) -> dict:
    return get_extractor(name, config).extract(samples, SR).summary


# --- interface and registry -------------------------------------------------------------------


def test_all_extractors_are_registered() -> None:
    assert set(EXTRACTORS) == set(ALL)


def test_unknown_extractor_and_option_are_clear_errors(synth) -> None:
    with pytest.raises(ValueError, match=r"Unknown feature extractor 'pitch'; available: compare, egemaps, formants, logmel"):
        extract_features(synth.tone(440, 0.5), SR, names=["logmel", "pitch"])
    with pytest.raises(ValueError, match=r"Unknown option\(s\) \['n_bins'\] for feature extractor 'logmel'"):
        get_extractor("logmel", {"n_bins": 40})
    with pytest.raises(ValueError, match="unknown feature extractor"):
        extract_features(synth.tone(440, 0.5), SR, configs={"pitch": {}})


def test_extract_features_runs_only_the_named_extractors_with_their_configs(synth) -> None:
    results = extract_features(synth.tone(440, 0.5), SR, names=["spectral", "logmel"], configs={"logmel": {"n_mels": 40}})
    assert list(results) == ["spectral", "logmel"]
    assert results["logmel"].arrays["logmel"].shape[0] == 40
    assert results["logmel"].config["n_mels"] == 40 and results["logmel"].version == EXTRACTORS["logmel"].version


def test_config_dict_round_trips() -> None:
    extractor = get_extractor("prosody", {"f0_floor": 60.0})
    assert get_extractor("prosody", extractor.config_dict()).config == extractor.config
    json.dumps(extractor.config_dict())


def test_summary_refuses_nan() -> None:
    with pytest.raises(ValueError, match="not a finite"):
        FeatureResult({"x": float("nan")}, {}, None)
    with pytest.raises(ValueError, match="not a finite"):
        FeatureResult({"x": np.float32(1.0)}, {}, None)  # not JSON-able


def test_npz_and_summaries(synth) -> None:
    results = extract_features(synth.harmonics(150, 0.5), SR, names=["logmel", "prosody"])
    with np.load(io.BytesIO(result_to_npz_bytes(results))) as npz:
        assert set(npz.files) == {"logmel/logmel", "prosody/times", "prosody/f0", "prosody/voiced", "prosody/intensity"}
        np.testing.assert_array_equal(npz["prosody/f0"], results["prosody"].arrays["f0"])
    assert json.loads(json.dumps(summaries(results), allow_nan=False))["prosody"]["f0_mean_hz"] == pytest.approx(150, abs=3)


@pytest.mark.parametrize("n_samples", [0, 100, 1000])
@pytest.mark.parametrize("kind", ["zeros", "noise"])
def test_short_and_silent_input_gives_none_not_a_crash(n_samples, kind) -> None:
    x = np.zeros(n_samples, np.float32) if kind == "zeros" else 0.1 * np.random.default_rng(0).standard_normal(n_samples).astype(np.float32)
    for name, result in extract_features(x, SR, [n for n in ALL if n != "compare"]).items():
        json.dumps(result.summary, allow_nan=False)
        if n_samples < 400:  # shorter than every analysis window
            assert all(v in (None, 0) for v in result.summary.values()), name
            assert all(0 in a.shape for a in result.arrays.values()), name


def test_one_second_of_silence(synth) -> None:
    results = extract_features(np.zeros(SR, np.float32), SR, [n for n in ALL if n != "compare"])
    assert results["prosody"].summary["f0_mean_hz"] is None and results["prosody"].summary["voiced_fraction"] == 0.0
    assert results["formants"].summary["f1_mean_hz"] is None
    assert all(v is None for v in results["voice_quality"].summary.values())
    assert results["spectral"].summary["centroid_mean"] is None and results["spectral"].summary["loud_fraction"] == 0.0
    assert results["logmel"].summary["mean_db"] == pytest.approx(-100.0)  # the log floor


def test_mono_input_is_required() -> None:
    with pytest.raises(ValueError, match=r"shape \[time\]"):
        get_extractor("logmel").extract(np.zeros((2, SR), np.float32), SR)


# --- values -----------------------------------------------------------------------------------


def _mel(f: float) -> float:
    return 2595 * np.log10(1 + f / 700)  # HTK mel scale, torchaudio's default


def test_logmel_shape_and_tone_bin(synth) -> None:
    x = synth.tone(1000, 1.3)
    result = get_extractor("logmel").extract(x, SR)
    db = result.arrays["logmel"]
    assert db.shape == (80, x.size // 160 + 1) and db.dtype == np.float32
    assert result.frame_rate_hz == 100.0
    centres = np.linspace(_mel(0), _mel(SR / 2), 80 + 2)[1:-1]
    assert abs(int(np.argmax(db.mean(axis=1))) - int(np.argmin(np.abs(centres - _mel(1000))))) <= 1
    assert result.summary["n_frames"] == db.shape[1]


def test_mfcc_shape_and_summary(synth) -> None:
    x = synth.harmonics(150, 1.3)
    result = get_extractor("mfcc").extract(x, SR)
    assert result.arrays["mfcc"].shape == (39, x.size // 160 + 1)
    assert {f"mfcc_{i}_{s}" for i in range(13) for s in ("mean", "std")} <= set(result.summary)
    assert result.summary["delta2_12_std"] is not None


@pytest.mark.parametrize("freq", [500, 2000, 5000])
def test_spectral_centroid_of_a_tone_is_its_frequency(synth, freq) -> None:
    summary = _summary("spectral", synth.tone(freq, 1.0))
    assert summary["centroid_mean"] == pytest.approx(freq, rel=0.03)
    assert summary["flatness_mean"] < 0.01  # tonal


def test_spectral_flatness_of_white_noise_is_high() -> None:
    noise = 0.1 * np.random.default_rng(0).standard_normal(SR).astype(np.float32)
    assert _summary("spectral", noise)["flatness_mean"] > 0.4


def test_prosody_f0_of_a_150_hz_voice(synth) -> None:
    summary = _summary("prosody", synth.harmonics(150, 1.0))
    assert summary["f0_mean_hz"] == pytest.approx(150, abs=3)
    assert summary["f0_std_hz"] < 2
    assert summary["voiced_fraction"] > 0.9
    assert summary["f0_mean_st"] == pytest.approx(12 * np.log2(1.5), abs=0.3)


def test_prosody_glide_gives_a_range(synth) -> None:
    summary = _summary("prosody", synth.harmonics(np.linspace(120, 240, 2 * SR), 2.0))
    assert summary["f0_min_hz"] == pytest.approx(120, abs=6)
    assert summary["f0_max_hz"] == pytest.approx(240, abs=6)
    assert summary["f0_range_st"] == pytest.approx(12, abs=1)  # one octave
    assert summary["f0_p5_hz"] < summary["f0_p50_hz"] < summary["f0_p95_hz"]


def test_prosody_speaking_rate_counts_syllable_bursts(synth) -> None:
    summary = _summary("prosody", synth.syllables(4.0, 3.0))
    assert summary["speaking_rate_syll_per_s"] == pytest.approx(4.0, abs=0.7)


@pytest.mark.parametrize("targets", [(700, 1220, 2600), (300, 2300, 3000)], ids=["a", "i"])
def test_formants_of_synthetic_vowels(synth, targets) -> None:
    upper = (3500, 4500) if targets[0] > 500 else (3700, 4500)  # F4, F5 as in real vowels
    summary = _summary("formants", synth.vowel((*targets, *upper)))
    for k, target in enumerate(targets, start=1):
        assert summary[f"f{k}_mean_hz"] == pytest.approx(target, rel=0.1)
        assert summary[f"f{k}_median_hz"] == pytest.approx(target, rel=0.1)
    assert summary["voiced_frames"] > 80


def test_jitter_and_shimmer_are_near_zero_when_periodic_and_rise_with_perturbation(synth) -> None:
    clean = _summary("voice_quality", synth.perturbed(150, 1.0, jitter=0.0, shimmer=0.0))
    rough = _summary("voice_quality", synth.perturbed(150, 1.0, jitter=0.02, shimmer=0.1))
    assert clean["jitter_local"] < 0.002 and clean["jitter_rap"] < 0.002
    assert clean["shimmer_local"] < 0.01 and clean["shimmer_apq3"] < 0.01
    assert rough["jitter_local"] > 0.01 and rough["jitter_rap"] > 0.005
    assert rough["shimmer_local"] > 0.03


def test_hnr_is_high_for_a_clean_voice_and_low_with_noise(synth) -> None:
    x = synth.harmonics(150, 1.0)
    noisy = x + np.sqrt(np.mean(x**2)) * np.random.default_rng(0).standard_normal(x.size).astype(np.float32)
    assert _summary("voice_quality", x)["hnr_mean_db"] > 20
    assert _summary("voice_quality", noisy)["hnr_mean_db"] < 10


def test_voice_quality_flags_select_the_measures(synth) -> None:
    result = get_extractor("voice_quality", {"jitter": False, "shimmer": False}).extract(synth.harmonics(150, 0.5), SR)
    assert set(result.summary) == {"hnr_mean_db"}
    result = get_extractor("voice_quality", {"hnr": False}).extract(synth.harmonics(150, 0.5), SR)
    assert set(result.summary) == {"jitter_local", "jitter_rap", "shimmer_local", "shimmer_apq3"}
    assert result.arrays == {} and result.frame_rate_hz is None


@pytest.mark.parametrize("name", ["logmel", "mfcc"])
def test_torch_extractors_give_the_same_values_on_gpu(synth, name) -> None:
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    x = synth.harmonics(150, 1.0)
    cpu, gpu = (get_extractor(name, {"device": d}).extract(x, SR).arrays[name] for d in ("cpu", "cuda"))
    np.testing.assert_allclose(gpu, cpu, atol=1e-2)
