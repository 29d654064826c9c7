"""Tests for workers.pipeline.evaluation (pure numpy; no Django, no torch)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from workers.pipeline.embedding_evaluation import embedding_report, equal_error_rate
from workers.pipeline.evaluation import (
    compare_predictions,
    evaluation_report,
    paired_difference,
)

LABELS = ["a", "b", "c"]


def onehot_proba(pred: list[str], labels: list[str], conf: float = 0.9) -> np.ndarray:
    """[n, C] probabilities with `conf` on the predicted label and the rest spread evenly."""
    c = len(labels)
    p = np.full((len(pred), c), (1.0 - conf) / (c - 1))
    for i, label in enumerate(pred):
        p[i, labels.index(label)] = conf
    return p


def test_hand_computed_metrics() -> None:
    y_true = ["a", "a", "a", "b", "b", "c"]
    y_pred = ["a", "a", "b", "b", "c", "c"]
    rep = evaluation_report(y_true, onehot_proba(y_pred, LABELS), LABELS, n_boot=0)
    assert rep["confusion_matrix"]["labels"] == LABELS
    assert rep["confusion_matrix"]["matrix"] == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    assert rep["accuracy"] == pytest.approx(4 / 6)
    # recalls: a 2/3, b 1/2, c 1/1
    assert rep["balanced_accuracy"] == pytest.approx((2 / 3 + 1 / 2 + 1) / 3)
    # precisions: a 2/2, b 1/2, c 1/2
    f1 = [2 * 1 * (2 / 3) / (1 + 2 / 3), 0.5, 2 * 0.5 * 1 / 1.5]
    assert rep["macro_f1"] == pytest.approx(np.mean(f1))
    pc = rep["per_class"]
    assert pc["a"] == pytest.approx({"precision": 1.0, "recall": 2 / 3, "f1": f1[0], "support": 3, "predicted": 2})
    assert pc["c"]["support"] == 1 and pc["c"]["precision"] == pytest.approx(0.5)
    assert rep["roc_auc"]["kind"] == "macro_ovr"
    assert set(rep["roc_auc"]["per_class"]) == set(LABELS)
    # agrees with scikit-learn
    from sklearn.metrics import balanced_accuracy_score, f1_score

    assert rep["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y_true, y_pred))
    assert rep["macro_f1"] == pytest.approx(f1_score(y_true, y_pred, average="macro"))
    json.dumps(rep, allow_nan=False)


def test_perfect_and_random_predictions() -> None:
    rng = np.random.default_rng(0)
    y = [LABELS[i] for i in rng.integers(0, 3, size=600)]
    perfect = evaluation_report(y, onehot_proba(y, LABELS, conf=1.0), LABELS, n_boot=50)
    assert perfect["accuracy"] == perfect["balanced_accuracy"] == perfect["macro_f1"] == 1.0
    assert perfect["roc_auc"]["value"] == 1.0
    assert perfect["ece"] == pytest.approx(0.0)
    assert perfect["ci"]["accuracy"]["low"] == 1.0

    random_p = rng.dirichlet(np.ones(3), size=600)
    rand = evaluation_report(y, random_p, LABELS, n_boot=50)
    assert abs(rand["balanced_accuracy"] - 1 / 3) < 0.08
    assert abs(rand["roc_auc"]["value"] - 0.5) < 0.08


def test_binary_auc_positive_is_second_label() -> None:
    labels = ["native", "non_native"]
    y = ["native", "native", "non_native", "non_native"]
    p1 = np.array([0.1, 0.4, 0.35, 0.8])  # P(non_native)
    rep = evaluation_report(y, np.stack([1 - p1, p1], axis=1), labels, n_boot=0)
    assert rep["roc_auc"]["kind"] == "binary" and rep["roc_auc"]["positive"] == "non_native"
    assert rep["roc_auc"]["value"] == pytest.approx(0.75)
    assert rep["roc_auc"]["per_class"]["native"] == pytest.approx(0.75)


def test_ece_calibrated_vs_overconfident() -> None:
    rng = np.random.default_rng(1)
    n = 20000
    conf = rng.uniform(0.5, 1.0, size=n)
    correct = rng.uniform(size=n) < conf  # accuracy equals confidence: calibrated
    labels = ["x", "y"]
    y = ["x" if c else "y" for c in correct]  # prediction is always "x"
    proba = np.stack([conf, 1 - conf], axis=1)
    good = evaluation_report(y, proba, labels, n_boot=0)
    assert good["ece"] < 0.02
    over = np.stack([np.full(n, 0.99), np.full(n, 0.01)], axis=1)
    bad = evaluation_report(y, over, labels, n_boot=0)
    # accuracy is E[conf] = 0.75 while the model claims 0.99
    assert bad["ece"] == pytest.approx(0.99 - np.mean(correct), abs=1e-9)
    rel = bad["reliability"]
    assert len(rel["edges"]) == 16 and len(rel["count"]) == 15 and sum(rel["count"]) == n
    assert rel["count"][-1] == n and rel["confidence"][0] is None


def test_bootstrap_ci_contains_estimate_and_groups_by_speaker() -> None:
    rng = np.random.default_rng(2)
    n_spk, per = 40, 10
    # each speaker is entirely right or entirely wrong: items are not independent
    spk_ok = rng.uniform(size=n_spk) < 0.7
    labels = ["a", "b"]
    y, pred, speakers = [], [], []
    for s in range(n_spk):
        truth = "a" if s % 2 else "b"
        guess = truth if spk_ok[s] else ("b" if truth == "a" else "a")
        y += [truth] * per
        pred += [guess] * per
        speakers += [f"spk{s}"] * per
    proba = onehot_proba(pred, labels, conf=0.8)
    by_spk = evaluation_report(y, proba, labels, speakers=speakers, n_boot=500)
    by_item = evaluation_report(y, proba, labels, n_boot=500)
    for rep in (by_spk, by_item):
        for m in ("accuracy", "balanced_accuracy", "macro_f1"):
            assert rep["ci"][m]["low"] <= rep[m] <= rep["ci"][m]["high"]
    assert by_spk["ci"]["unit"] == "speaker" and by_spk["ci"]["n_units"] == n_spk
    assert by_item["ci"]["unit"] == "item" and by_item["ci"]["n_units"] == n_spk * per
    width_spk = by_spk["ci"]["accuracy"]["high"] - by_spk["ci"]["accuracy"]["low"]
    width_item = by_item["ci"]["accuracy"]["high"] - by_item["ci"]["accuracy"]["low"]
    # 10 copies per speaker are worth ~1 independent item: the grouped CI is ~sqrt(10) wider
    assert width_spk > 2.0 * width_item
    # deterministic for a seed
    again = evaluation_report(y, proba, labels, speakers=speakers, n_boot=500)
    assert again["ci"] == by_spk["ci"]


def test_per_corpus_breakdown() -> None:
    y = ["a", "b", "a", "b", "a", "b"]
    pred = ["a", "b", "a", "b", "b", "a"]
    corpora = ["X", "X", "X", "X", "Y", "Y"]
    speakers = ["s1", "s2", "s3", "s4", "s5", "s6"]
    rep = evaluation_report(y, onehot_proba(pred, ["a", "b"]), ["a", "b"], corpora=corpora, speakers=speakers, n_boot=20)
    assert set(rep["per_corpus"]) == {"X", "Y"}
    assert rep["per_corpus"]["X"]["accuracy"] == 1.0 and rep["per_corpus"]["X"]["n"] == 4
    assert rep["per_corpus"]["Y"]["accuracy"] == 0.0 and rep["per_corpus"]["Y"]["n_speakers"] == 2
    json.dumps(rep, allow_nan=False)


def test_edge_cases_absent_class_and_single_class() -> None:
    # class "c" never occurs in y_true nor in predictions
    rep = evaluation_report(["a", "b", "a"], onehot_proba(["a", "b", "b"], LABELS), LABELS, n_boot=20)
    assert rep["per_class"]["c"] == {"precision": None, "recall": None, "f1": None, "support": 0, "predicted": 0}
    assert rep["roc_auc"]["per_class"]["c"] is None
    assert rep["balanced_accuracy"] == pytest.approx((0.5 + 1.0) / 2)
    json.dumps(rep, allow_nan=False)

    # a single class in y_true: AUC undefined, no crash, recall defined
    single = evaluation_report(["a"] * 4, onehot_proba(["a", "a", "b", "a"], ["a", "b"]), ["a", "b"], n_boot=20)
    assert single["roc_auc"]["value"] is None
    assert single["balanced_accuracy"] == pytest.approx(0.75)
    assert single["per_class"]["b"]["recall"] is None and single["per_class"]["b"]["precision"] == 0.0
    json.dumps(single, allow_nan=False)

    empty = evaluation_report([], np.zeros((0, 2)), ["a", "b"])
    assert empty["n"] == 0 and empty["accuracy"] is None

    with pytest.raises(ValueError):
        evaluation_report(["zzz"], np.array([[0.5, 0.5]]), ["a", "b"])
    with pytest.raises(ValueError):
        evaluation_report(["a"], np.array([[0.5, 0.5, 0.0]]), ["a", "b"])


def _clustered(n_spk: int, per: int, dim: int, sep: float, seed: int) -> tuple[np.ndarray, list[str], list[str]]:
    rng = np.random.default_rng(seed)
    centres = {"a": np.eye(dim)[0] * sep, "b": np.eye(dim)[1] * sep}
    x, labels, speakers = [], [], []
    for s in range(n_spk):
        lab = "a" if s % 2 else "b"
        spk_offset = rng.normal(scale=0.1, size=dim)
        for _ in range(per):
            x.append(centres[lab] + spk_offset + rng.normal(scale=0.05, size=dim))
            labels.append(lab)
            speakers.append(f"s{s}")
    return np.array(x), labels, speakers


def test_embedding_report_separable_and_random() -> None:
    x, labels, speakers = _clustered(n_spk=20, per=3, dim=8, sep=3.0, seed=0)
    rep = embedding_report(x, labels, speakers, k=5)
    assert rep["eer"] == 0.0
    assert rep["knn_accuracy"] == 1.0 and rep["knn_balanced_accuracy"] == 1.0
    assert rep["n_speakers"] == 20
    # only pairs of different speakers are scored
    assert rep["n_pairs"] == 60 * 59 // 2 - 20 * 3
    json.dumps(rep, allow_nan=False)

    rng = np.random.default_rng(3)
    xr = rng.normal(size=(300, 16))
    lr = [["a", "b"][i % 2] for i in range(300)]
    sr = [f"s{i // 3}" for i in range(300)]
    rand = embedding_report(xr, lr, sr, k=5)
    assert abs(rand["eer"] - 0.5) < 0.05
    assert abs(rand["knn_accuracy"] - 0.5) < 0.12


def test_knn_excludes_own_speaker() -> None:
    # every speaker's items are identical (a perfect speaker cue) but accents are interleaved
    # randomly in space: with leave-one-speaker-out the speaker cue must not help.
    rng = np.random.default_rng(4)
    base = rng.normal(size=(30, 4))
    x = np.repeat(base, 4, axis=0)
    labels = [["a", "b"][rng.integers(0, 2)] for _ in range(30) for _ in range(4)]
    labels = [labels[i - i % 4] for i in range(120)]  # one label per speaker
    speakers = [f"s{i // 4}" for i in range(120)]
    rep = embedding_report(x, labels, speakers, k=1)
    assert rep["knn_accuracy"] < 0.9  # would be 1.0 if own-speaker items were neighbours


def test_equal_error_rate_simple() -> None:
    eer, _ = equal_error_rate(np.array([0.9, 0.8, 0.3, 0.1]), np.array([True, True, False, False]))
    assert eer == 0.0
    eer, _ = equal_error_rate(np.array([0.9, 0.2, 0.8, 0.1]), np.array([True, True, False, False]))
    assert eer == pytest.approx(0.5)
    assert equal_error_rate(np.array([0.1]), np.array([True])) == (None, None)


def test_compare_predictions() -> None:
    a = {1: "x", 2: "y", 3: "x", 4: "z"}
    b = {1: "x", 2: "x", 3: None, 5: "y"}
    cmp = compare_predictions(a, b)
    assert cmp["n_common"] == 3 and cmp["n_changed"] == 2
    assert [c["id"] for c in cmp["changed"]] == [2, 3]
    assert cmp["transitions"] == {"x -> None": 1, "y -> x": 1}
    assert cmp["only_in_a"] == [4] and cmp["only_in_b"] == [5]
    assert cmp["agreement"] == pytest.approx(1 / 3)
    assert compare_predictions({}, {})["agreement"] is None


def _synthetic_two_class(n: int, seed: int) -> tuple[list[np.ndarray], list[str]]:
    """Class "low": a 220 Hz harmonic buzz; class "high": an 880 Hz one; noise and jitter added."""
    rng = np.random.default_rng(seed)
    sr, signals, labels = 16000, [], []
    for i in range(n):
        label = ["low", "high"][i % 2]
        f0 = (220.0 if label == "low" else 880.0) * rng.uniform(0.95, 1.05)
        t = np.arange(int(rng.uniform(1.2, 2.0) * sr)) / sr
        x = sum(np.sin(2 * np.pi * f0 * h * t) / h for h in range(1, 4))
        x = 0.2 * x + 0.02 * rng.standard_normal(len(t))
        signals.append(x.astype(np.float32))
        labels.append(label)
    return signals, labels


def test_paired_difference_of_two_systems_on_the_same_speakers() -> None:
    labels = ["a", "b"]
    rng = np.random.default_rng(5)
    n_spk, per = 60, 3
    y = [("a" if s % 2 else "b") for s in range(n_spk) for _ in range(per)]
    speakers = [f"spk{s}" for s in range(n_spk) for _ in range(per)]
    flip = {"a": "b", "b": "a"}
    # system b is wrong on every speaker that a is wrong on, and on 10 more: a is better on every draw
    wrong_a = set(rng.choice(n_spk, 12, replace=False).tolist())
    wrong_b = wrong_a | set(rng.choice(sorted(set(range(n_spk)) - wrong_a), 10, replace=False).tolist())
    pred_a = [flip[t] if int(sp[3:]) in wrong_a else t for t, sp in zip(y, speakers, strict=True)]
    pred_b = [flip[t] if int(sp[3:]) in wrong_b else t for t, sp in zip(y, speakers, strict=True)]
    pa, pb = onehot_proba(pred_a, labels, 0.8), onehot_proba(pred_b, labels, 0.8)
    d = paired_difference(y, pa, pb, labels, speakers=speakers, n_boot=500)
    ra = evaluation_report(y, pa, labels, speakers=speakers, n_boot=500)
    rb = evaluation_report(y, pb, labels, speakers=speakers, n_boot=500)
    assert d["a"] == pytest.approx(ra["balanced_accuracy"]) and d["b"] == pytest.approx(rb["balanced_accuracy"])
    assert d["difference"] == pytest.approx(d["a"] - d["b"]) and d["low"] <= d["difference"] <= d["high"]
    assert d["low"] > 0 and d["share_not_better"] == 0.0 and d["n_units"] == n_spk and d["n"] == n_spk * per
    # the separate intervals overlap although every paired draw favours a
    assert ra["ci"]["balanced_accuracy"]["low"] < rb["ci"]["balanced_accuracy"]["high"]
    # a system against itself: no difference on any draw; swapping the systems flips the sign
    same = paired_difference(y, pa, pa, labels, speakers=speakers, n_boot=200)
    assert same["difference"] == same["low"] == same["high"] == 0.0 and same["share_not_better"] == 1.0
    swapped = paired_difference(y, pb, pa, labels, speakers=speakers, n_boot=500)
    assert swapped["difference"] == pytest.approx(-d["difference"]) and swapped["high"] < 0
    assert paired_difference(y, pa, pb, labels, speakers=speakers, n_boot=500) == d  # deterministic
    with pytest.raises(ValueError):
        paired_difference(y, pa, pb[:-1], labels, speakers=speakers)


def test_reference_baselines_on_separable_signals(tmp_path) -> None:
    from workers.pipeline.baselines import bandlimit, mfcc_stats, reference_baselines

    train_x, train_y = _synthetic_two_class(16, seed=0)
    test_x, test_y = _synthetic_two_class(8, seed=1)
    speakers = [f"s{i}" for i in range(len(test_x))]
    corpora = ["A", "B"] * (len(test_x) // 2)
    reports = reference_baselines(
        train_x,
        train_y,
        test_x,
        test_y,
        ["low", "high"],
        test_speakers=speakers,
        test_corpora=corpora,
        cache_dir=tmp_path,
        n_boot=50,
        keep_proba=True,
    )
    assert set(reports) == {"mfcc_logreg", "speaker_encoder_logreg"}
    for rep in reports.values():  # per-item probabilities, for a paired comparison with a model
        proba = np.array(rep.pop("test_proba"))
        assert proba.shape == (len(test_x), 2) and np.allclose(proba.sum(axis=1), 1.0)
    for rep in reports.values():
        assert rep["balanced_accuracy"] == 1.0
        assert set(rep["per_corpus"]) == {"A", "B"}
        json.dumps(rep, allow_nan=False)
    assert reports["mfcc_logreg"]["baseline"]["n_features"] == 80
    assert reports["speaker_encoder_logreg"]["baseline"]["n_features"] == 256
    assert len(list(tmp_path.glob("*.npy"))) == 4  # train+test features of both baselines cached

    # precomputed features skip extraction entirely (signals may be None)
    feats = {"mfcc_logreg": (mfcc_stats(train_x), mfcc_stats(test_x))}
    again = reference_baselines(
        None,
        train_y,
        None,
        test_y,
        ["low", "high"],
        test_speakers=speakers,
        test_corpora=corpora,
        features=feats,
        baselines=["mfcc_logreg"],
        n_boot=50,
    )
    assert again["mfcc_logreg"]["accuracy"] == reports["mfcc_logreg"]["accuracy"]

    # band-limiting removes energy above the cut
    rng = np.random.default_rng(0)
    noise = rng.standard_normal(16000).astype(np.float32)
    low = bandlimit(noise, 16000, 4000)
    spec = np.abs(np.fft.rfft(low)) ** 2
    freqs = np.fft.rfftfreq(len(low), 1 / 16000)
    assert spec[freqs > 4400].sum() < 1e-3 * spec[freqs < 3600].sum()
    assert len(low) == len(noise)
