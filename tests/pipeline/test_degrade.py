"""Degraded copies for robustness evaluation: the SNR asked for is the SNR made, every condition keeps
the length and is deterministic in its seed, the channels do what they say, and the evaluation
reports balanced accuracy and recall per condition beside clean."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.signal import welch

from workers.pipeline import degrade as dg
from workers.pipeline.robustness import evaluate_robustness, robustness_caption, robustness_markdown

SR = 16000


def _voice(f0: float, seconds: float = 2.0, seed: int = 0) -> np.ndarray:
    """A harmonic, amplitude-modulated test 'voice' with pauses ``[time]``."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    phase = 2 * np.pi * np.cumsum(f0 * (1 + 0.03 * np.sin(2 * np.pi * 5 * t))) / SR
    x = sum(np.sin(k * phase + rng.uniform(0, 6)) / k for k in range(1, 12))
    return (0.1 * x * (np.sin(2 * np.pi * 2 * t) > -0.3)).astype(np.float32)


def _snr(x: np.ndarray, y: np.ndarray) -> float:
    x64 = x.astype(np.float64)
    return float(10 * np.log10(np.mean(x64**2) / np.mean((y.astype(np.float64) - x64) ** 2)))


OTHERS = [_voice(f, 1.5, seed=k) for k, f in enumerate((95, 130, 180, 210, 250, 300, 140))]


@pytest.mark.parametrize("name", ["white_20db", "white_10db", "white_5db", "pink_10db", "pink_5db",
                                  "babble_20db", "babble_10db", "babble_5db"])
def test_the_snr_asked_for_is_the_snr_made(name: str) -> None:
    x = _voice(120)
    y = dg.degrade(x, name, seed=3, others=OTHERS)
    assert _snr(x, y) == pytest.approx(float(name.split("_")[1][:-2]), abs=0.01)


@pytest.mark.parametrize("name", [n for n in dg.CONDITIONS if n in dg.available_conditions()])
def test_every_condition_keeps_the_length_and_repeats_with_its_seed(name: str) -> None:
    x = _voice(150, 1.37)  # an odd length
    a = dg.degrade(x, name, seed=1, index=4, others=OTHERS)
    b = dg.degrade(x, name, seed=1, index=4, others=OTHERS)
    assert a.shape == x.shape and a.dtype == np.float32 and np.isfinite(a).all()
    assert np.array_equal(a, b)
    if name.startswith(("white", "pink", "babble", "reverb")):
        assert not np.array_equal(a, dg.degrade(x, name, seed=2, index=4, others=OTHERS))  # the seed matters
        assert not np.array_equal(a, dg.degrade(x, name, seed=1, index=5, others=OTHERS))  # and the clip


def test_pink_noise_falls_3_db_per_octave_and_white_is_flat() -> None:
    rng = np.random.default_rng(0)
    f, p_pink = welch(dg.pink_noise(SR * 8, rng), fs=SR, nperseg=4096)
    _, p_white = welch(dg.white_noise(SR * 8, rng), fs=SR, nperseg=4096)

    def band(p: np.ndarray, lo: float) -> float:
        return float(np.mean(p[(f >= lo) & (f < 2 * lo)]))

    assert 10 * np.log10(band(p_pink, 500) / band(p_pink, 1000)) == pytest.approx(3.0, abs=0.6)
    assert 10 * np.log10(band(p_white, 500) / band(p_white, 1000)) == pytest.approx(0.0, abs=0.6)


def test_telephone_band_removes_what_a_phone_line_does_not_carry() -> None:
    t = np.arange(SR) / SR
    tones = {f: np.sin(2 * np.pi * f * t).astype(np.float32) for f in (100, 1000, 6000)}
    for name in ("telephone", "mulaw_8k"):
        kept = {f: np.sqrt(np.mean(dg.degrade(x, name)[2000:-2000] ** 2)) / np.sqrt(0.5) for f, x in tones.items()}
        assert kept[1000] > 0.9 and kept[100] < 0.2 and kept[6000] < 0.01, (name, kept)


def test_mu_law_is_an_8_bit_codec_not_a_filter() -> None:
    x = _voice(200)
    assert not np.allclose(dg.degrade(x, "mulaw_8k"), dg.degrade(x, "telephone"), atol=1e-4)
    assert 20 < _snr(dg.degrade(x, "telephone"), dg.degrade(x, "mulaw_8k")) < 45  # 8-bit companding noise


def test_level_is_30_db_down_and_quantised_to_16_bits() -> None:
    x = _voice(180)
    y = dg.degrade(x, "level_-30db")
    assert 20 * np.log10(np.std(y) / np.std(x)) == pytest.approx(-30.0, abs=0.1)
    assert np.allclose(y * 32768, np.round(y * 32768))


def test_reverb_smears_a_click_by_an_exponential_tail_and_keeps_the_level() -> None:
    x = np.zeros(SR, dtype=np.float32)
    x[1000] = 1.0
    y = dg.degrade(x, "reverb_0.3s", seed=0)
    assert np.sum(y**2) == pytest.approx(np.sum(x**2), rel=1e-3)
    tail = y[1000 + 40:]
    early, late = np.sum(tail[: SR // 10] ** 2), np.sum(tail[SR // 10: SR // 5] ** 2)
    assert late < early / 5 and late > 0  # decays (about 20 dB per 0.1 s at RT60 0.3 s), but is there


@pytest.mark.skipif(not dg.ffmpeg_codec_available("libmp3lame"), reason="ffmpeg without libmp3lame")
def test_mp3_at_24_kbps_is_aligned_and_lossy() -> None:
    x = _voice(140)
    y = dg.degrade(x, "mp3_24k")
    assert 5 < _snr(x, y) < 60  # aligned (no encoder delay left) but not lossless


def test_babble_needs_other_clips() -> None:
    with pytest.raises(ValueError, match="babble needs other clips"):
        dg.degrade(_voice(100), "babble_10db", others=[])


def test_unknown_conditions_are_named_and_clean_always_comes_first() -> None:
    assert dg.parse_conditions("pink_10db,telephone") == ["clean", "pink_10db", "telephone"]
    assert dg.parse_conditions(None)[0] == "clean" and len(dg.parse_conditions(None)) == len(dg.DEFAULT_CONDITIONS)
    with pytest.raises(ValueError, match="unknown robustness condition"):
        dg.parse_conditions(["pink_11db"])


def test_the_evaluation_reports_each_condition_beside_clean() -> None:
    """A 'classifier' that hears pitch from the spectrum's peak: right on clean and 20 dB copies, and
    it breaks under telephone band (its cue, the fundamental under 300 Hz, is gone)."""
    signals = [_voice(f, 1.0, seed=i) for i, f in enumerate([110, 120, 130, 240, 260, 280])]
    y = ["low", "low", "low", "high", "high", "high"]

    def predict(batch: list[np.ndarray]) -> list[str | None]:
        out = []
        for x in batch:
            spec = np.abs(np.fft.rfft(x))
            peak = np.argmax(spec) * SR / len(x)
            out.append(None if peak > 1000 else ("low" if peak < 180 else "high"))
        return out

    report = evaluate_robustness(predict, signals, y, ["low", "high"], conditions=["white_20db", "telephone"], seed=0)
    rows = {r["name"]: r for r in report["conditions"]}
    assert [r["name"] for r in report["conditions"]] == ["clean", "white_20db", "telephone"]
    assert rows["clean"]["balanced_accuracy"] == 1.0 and rows["white_20db"]["balanced_accuracy"] == 1.0
    assert rows["telephone"]["balanced_accuracy"] < 1.0 and rows["telephone"]["delta"] < 0
    assert set(rows["telephone"]["recall"]) == {"low", "high"} and report["class_counts"] == {"low": 3, "high": 3}
    table = "\n".join(robustness_markdown(report))
    assert "| clean | 1.000 |" in table and "low recall" in table and "8-kHz telephone band" in table
    assert "Measured on 6 validation clips (3 low, 3 high)" in robustness_caption(report, "validation")


def _report(y: list[str], predicted: dict[str, list[str | None]]) -> dict:
    return {"labels": ["native", "non_native"], "y_true": y,
            "conditions": [{"name": name, "predicted": pred} for name, pred in predicted.items()]}


def test_paired_condition_difference_scores_both_models_on_one_draw_of_speakers() -> None:
    from workers.pipeline.robustness import paired_condition_difference

    y = ["native"] * 20 + ["non_native"] * 20
    speakers = [f"s{k}" for k in range(40)]
    good = _report(y, {"pink_10db": list(y), "babble_10db": list(y)})
    # the old model calls half the native speakers non-native under babble, a quarter under pink
    pink = ["non_native" if k < 5 else t for k, t in enumerate(y)]
    babble = ["non_native" if k < 10 else t for k, t in enumerate(y)]
    old = _report(y, {"pink_10db": pink, "babble_10db": babble})
    out = paired_condition_difference(good, old, ["pink_10db", "babble_10db"], speakers=speakers, n_boot=400)
    assert out["a"] == 1.0 and out["b"] == pytest.approx(((0.75 + 1) / 2 + (0.5 + 1) / 2) / 2)
    assert out["difference"] == pytest.approx(1.0 - out["b"]) and 0 < out["low"] <= out["difference"] <= out["high"]
    assert out["share_not_better"] == 0.0 and out["per_condition"]["babble_10db"] == {"a": 1.0, "b": 0.75}
    same = paired_condition_difference(old, old, ["pink_10db", "babble_10db"], speakers=speakers, n_boot=200)
    assert same["difference"] == 0.0 and same["low"] == same["high"] == 0.0 and same["share_not_better"] == 1.0
    # a missed answer (None) counts as wrong; other clips cannot be compared
    none = _report(y, {"pink_10db": [None] + y[1:], "babble_10db": list(y)})
    assert paired_condition_difference(none, good, ["pink_10db"], n_boot=0)["difference"] == pytest.approx(-0.025)
    with pytest.raises(ValueError, match="same clips"):
        paired_condition_difference(good, _report(y[::-1], {"pink_10db": y}), ["pink_10db"])


def test_the_default_threshold_under_degradation_counts_answers_and_uncertain_per_class() -> None:
    """A predictor that returns ``(label, answered)``: clean, it answers all six right; under white noise
    at 5 dB it still gives every clip a class but answers only where its cue stays clear, so coverage
    falls while the accuracy of what it answers stays 1.0 and "answer all" loses."""
    signals = [_voice(f, 1.0, seed=i) for i, f in enumerate([110, 120, 130, 240, 260, 280])]
    y = ["low", "low", "low", "high", "high", "high"]
    clean_power = [float(np.mean(x.astype(np.float64) ** 2)) for x in signals]

    def predict(batch: list[np.ndarray]) -> list[tuple[str | None, bool]]:
        out = []
        for k, x in enumerate(batch):
            noisy = float(np.mean(x.astype(np.float64) ** 2)) > 1.2 * clean_power[k]
            truth = y[k]
            if not noisy:
                out.append((truth, True))
            else:  # the high clips are heard as low, and it knows it is unsure of them
                out.append(("low", truth == "low"))
        return out

    report = evaluate_robustness(predict, signals, y, ["low", "high"], conditions=["white_5db"], seed=0)
    report["threshold"] = 0.7
    clean, noisy = report["conditions"]
    assert clean["at_threshold"] == {"coverage": 1.0, "accuracy_answered": 1.0, "recall": {"low": 1.0, "high": 1.0},
                                     "uncertain": {"low": 0.0, "high": 0.0}}
    assert clean["accuracy"] == 1.0 and noisy["accuracy"] == 0.5 and noisy["balanced_accuracy"] == 0.5
    t = noisy["at_threshold"]
    assert t["coverage"] == 0.5 and t["accuracy_answered"] == 1.0
    assert t["uncertain"] == {"low": 0.0, "high": 1.0} and t["recall"] == {"low": 1.0, "high": 0.0}
    from workers.pipeline.robustness import robustness_threshold_markdown

    table = "\n".join(robustness_threshold_markdown(report))
    assert "at the default threshold 0.7: answered" in table and "high uncertain" in table
    assert "| white noise, 5 dB SNR | 0.500 | 0.500 | 1.000 | 1.000 | 0.000 | 0.000 | 1.000 |" in table


def test_bare_labels_give_no_threshold_table() -> None:
    """A predictor of bare labels (None: no answer) gives the answer-all table only."""
    from workers.pipeline.robustness import robustness_threshold_markdown

    signals = [_voice(f, 1.0, seed=i) for i, f in enumerate([110, 240])]
    report = evaluate_robustness(lambda b: ["low", None], signals, ["low", "high"], ["low", "high"], conditions=["clean"], seed=0)
    assert "at_threshold" not in report["conditions"][0] and report["conditions"][0]["no_answer"] == 1
    assert robustness_threshold_markdown(report) == []
