"""Selective prediction in the evaluation reports, and intervals that cannot be estimated."""

from __future__ import annotations

import json

import numpy as np
import pytest

from workers.pipeline.evaluation import evaluation_report, paired_difference, selective_report


def test_selective_report_by_hand() -> None:
    correct = [True, False, True, True, False]
    confidence = [0.95, 0.9, 0.8, 0.6, 0.55]
    accepted = [True, True, True, False, False]  # threshold 0.7
    rep = selective_report(correct, confidence, accepted)
    assert (rep["n"], rep["n_accepted"], rep["coverage"]) == (5, 3, pytest.approx(0.6))
    assert rep["accuracy_accepted"] == pytest.approx(2 / 3) and rep["accuracy_all"] == pytest.approx(0.6)
    assert rep["risk_accepted"] == pytest.approx(1 / 3)
    # most confident first: risks 0, 1/2, 1/3, 1/4, 2/5
    assert rep["curve"]["coverage"] == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0])
    assert rep["curve"]["risk"] == pytest.approx([0, 1 / 2, 1 / 3, 1 / 4, 2 / 5])
    assert rep["curve"]["confidence"] == pytest.approx(confidence)
    assert rep["aurc"] == pytest.approx(np.mean([0, 1 / 2, 1 / 3, 1 / 4, 2 / 5]))
    json.dumps(rep, allow_nan=False)


def test_selective_report_edges() -> None:
    none_accepted = selective_report([True, False], [0.5, 0.4], [False, False])
    assert none_accepted["coverage"] == 0.0 and none_accepted["accuracy_accepted"] is None
    assert none_accepted["risk_accepted"] is None and none_accepted["accuracy_all"] == 0.5
    assert selective_report([], [], [])["coverage"] is None
    big = selective_report(np.ones(5000, bool), np.linspace(1, 0, 5000), np.ones(5000, bool), max_points=101)
    assert len(big["curve"]["coverage"]) == 101 and big["curve"]["coverage"][-1] == 1.0
    with pytest.raises(ValueError):
        selective_report([True], [0.5, 0.4], [True])


def test_a_confident_model_has_lower_risk_at_low_coverage() -> None:
    rng = np.random.default_rng(0)
    confidence = rng.uniform(0.5, 1.0, 2000)
    correct = rng.uniform(size=2000) < confidence  # calibrated: right as often as it is sure
    curve = selective_report(correct, confidence, confidence >= 0.8)["curve"]
    assert curve["risk"][10] < curve["risk"][-1] - 0.1


def test_intervals_over_fewer_than_two_speakers_are_null_with_a_reason() -> None:
    labels = ["a", "b"]
    y = ["a", "b", "a", "b"]
    proba = np.array([[0.9, 0.1], [0.2, 0.8], [0.7, 0.3], [0.6, 0.4]])
    rep = evaluation_report(y, proba, labels, speakers=["s1"] * 4, corpora=["c1", "c1", "c2", "c2"], n_boot=50)
    assert rep["ci"]["n_units"] == 1 and "fewer than 2 speakers" in rep["ci"]["reason"]
    assert rep["ci"]["accuracy"] == {"low": None, "high": None, "std": None}
    assert rep["per_corpus"]["c1"]["ci"]["reason"] and rep["per_corpus"]["c1"]["ci"]["balanced_accuracy"]["low"] is None
    two = evaluation_report(y, proba, labels, speakers=["s1", "s1", "s2", "s2"], n_boot=50)
    assert two["ci"]["reason"] is None and two["ci"]["accuracy"]["low"] is not None
    assert evaluation_report(y, proba, labels, n_boot=0)["ci"]["reason"].startswith("bootstrap disabled")
    paired = paired_difference(y, proba, proba[:, ::-1], labels, speakers=["s1"] * 4, n_boot=50)
    assert paired["low"] is None and paired["share_not_better"] is None and "fewer than 2" in paired["reason"]
    assert paired["difference"] is not None
