"""Calibration math against hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest

from workers.pipeline.calibration import (
    calibrate,
    class_prior,
    decide,
    fit_calibration,
    fit_confidence_threshold,
    fit_temperature,
    fit_threshold,
    nll,
    prior_correct,
    softmax,
)


def test_softmax_and_nll_by_hand() -> None:
    z = np.array([[0.0, np.log(3.0)]])  # softmax = [1/4, 3/4]
    np.testing.assert_allclose(softmax(z), [[0.25, 0.75]])
    assert nll(z, [1]) == pytest.approx(-np.log(0.75))
    # temperature 2 halves the logits: softmax([0, ln3/2]) = [1/(1+sqrt3), sqrt3/(1+sqrt3)]
    assert nll(z, [0], temperature=2.0) == pytest.approx(np.log(1 + np.sqrt(3)))


def test_temperature_recovers_known_scale() -> None:
    rng = np.random.default_rng(0)
    n = 4000
    true = rng.normal(size=(n, 3)) * 2.0
    p = softmax(true)
    y = np.array([rng.choice(3, p=row) for row in p])
    fitted = fit_temperature(true * 3.0, y)  # logits over-confident by 3x
    assert fitted == pytest.approx(3.0, rel=0.1)


def test_temperature_closed_form_two_points() -> None:
    # binary logits [0, a], labels: one right, one wrong with the same margin: NLL minimised as T -> inf
    z = np.array([[0.0, 2.0], [0.0, 2.0]])
    assert fit_temperature(z, [1, 0]) > 15.0
    # all right: sharper would lower the NLL, but two right answers are no evidence for it: never sharper than raw
    assert fit_temperature(z, [1, 1]) == pytest.approx(1.0, abs=1e-4)
    # the plain fit (no evidence asked for) runs to the lower bound, as it did before
    assert fit_temperature(z, [1, 1], min_errors=0) < 0.1


def test_temperature_sharpens_an_underconfident_model_given_enough_errors() -> None:
    rng = np.random.default_rng(2)
    true = rng.normal(size=(4000, 3)) * 2.0
    y = np.array([rng.choice(3, p=row) for row in softmax(true)])
    assert fit_temperature(true / 3.0, y) == pytest.approx(1 / 3.0, rel=0.1)  # thousands of errors: sharpening allowed


def test_calibration_on_all_right_out_of_fold_predictions_keeps_new_speakers_uncertain() -> None:
    """A model that got every one of its few training speakers right must not answer 0.99 for a new one.

    The old fit drove the temperature to its 0.05 floor here, and the ambiguous new clip came out at
    0.9999 (over any threshold); bounded at 1, it keeps the raw model's 0.6 and is refused at 0.8."""
    rng = np.random.default_rng(3)
    y = np.repeat(np.arange(10), 7)  # 10 classes x 7 speakers, every out-of-fold prediction right
    z = rng.normal(size=(70, 10))
    z[np.arange(70), y] += 6.0
    speakers = [f"voice{k % 7}" for k in range(70)]
    cal = fit_calibration(z, y, train_prior=[0.1] * 10, deploy_prior=None, speakers=speakers)
    assert cal["errors"] == 0 and cal["n"] == 70 and cal["speakers"] == 7
    assert cal["temperature"] >= 1.0 and cal["temperature_floor"] == 1.0
    unseen = np.zeros((1, 10))
    unseen[0, 8] = np.log(0.6 * 9 / 0.4)  # the raw model: 0.6 for "eight", the rest spread
    conf = calibrate(unseen, cal).max()
    assert conf == pytest.approx(softmax(unseen / cal["temperature"]).max())
    assert conf < 0.8


def test_prior_correction_by_hand() -> None:
    p = np.array([[0.5, 0.5], [0.8, 0.2]])
    out = prior_correct(p, train_prior=[0.5, 0.5], deploy_prior=[0.9, 0.1])
    # [0.5*1.8, 0.5*0.2] = [0.9, 0.1]; [0.8*1.8, 0.2*0.2] = [1.44, 0.04] -> [0.97297, 0.02703]
    np.testing.assert_allclose(out, [[0.9, 0.1], [1.44 / 1.48, 0.04 / 1.48]])
    np.testing.assert_allclose(prior_correct(p, [0.3, 0.7], None), p)


def test_calibrate_applies_temperature_then_prior() -> None:
    z = np.array([[0.0, np.log(9.0)]])
    cal = {"temperature": 2.0, "train_prior": [0.75, 0.25], "deploy_prior": [0.5, 0.5], "threshold": 0.5}
    # T=2: softmax([0, ln3]) = [0.25, 0.75]; x [1/0.75*0.5, 1/0.25*0.5] = [0.1667, 1.5] -> [0.1, 0.9]
    np.testing.assert_allclose(calibrate(z, cal), [[0.1, 0.9]], atol=1e-12)
    np.testing.assert_allclose(calibrate(z, None), [[0.1, 0.9]])


def test_thresholds() -> None:
    proba = np.array([[0.9, 0.1], [0.6, 0.4], [0.45, 0.55], [0.2, 0.8]])
    y = [0, 1, 1, 1]
    t = fit_threshold(proba, y)
    assert 0.1 < t <= 0.4  # cut between 0.1 and 0.4 separates perfectly
    assert (decide(proba, {"decision_threshold": t}) == np.array(y)).all()
    # confidences 0.9 (right), 0.6 (wrong), 0.55 (right), 0.8 (right): the first grid step above
    # 0.6 (0.61) keeps 0.9 and 0.8, both right
    thr, cov = fit_confidence_threshold(proba, y, target_accuracy=0.99)
    assert thr == pytest.approx(0.61) and cov == pytest.approx(0.5)
    assert class_prior([0, 1, 1, 1], 2) == [0.25, 0.75]


def test_fit_calibration_dict() -> None:
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 300)
    z = np.stack([np.zeros(300), (2 * y - 1) * 3.0 + rng.normal(size=300) * 2.0], axis=1)
    cal = fit_calibration(z, y, train_prior=[0.5, 0.5], deploy_prior=None)
    assert set(cal) >= {"temperature", "train_prior", "deploy_prior", "threshold"}
    assert cal["deploy_prior"] is None and cal["temperature"] > 0
    assert nll(z, y, cal["temperature"]) <= nll(z, y, 1.0) + 1e-9


def test_the_default_threshold_is_the_highest_that_still_answers_90_percent() -> None:
    """The stated rule: of 20 validation predictions with confidences 0.51, 0.53, ..., 0.89, the
    highest 0.01-grid threshold answering at least 18 of them is 0.55 (0.56 would answer 17)."""
    from workers.pipeline.calibration import default_threshold

    conf = 0.51 + 0.02 * np.arange(20)
    proba = np.stack([conf, 1 - conf], axis=1)
    y = np.array([1, 1, 1] + [0] * 17)  # the three least confident answers are wrong: one of them is answered
    chosen = default_threshold(proba, y)
    assert chosen["threshold"] == pytest.approx(0.55) and chosen["coverage_at_threshold"] == pytest.approx(0.9)
    assert chosen["accuracy_at_threshold"] == pytest.approx(17 / 18)
    assert "at least 90% of the validation predictions" in chosen["threshold_rule"]
    assert default_threshold(proba, y, min_coverage=1.0)["threshold"] == pytest.approx(0.51)
    three = default_threshold(np.full((4, 3), 1 / 3), [0, 1, 2, 0])  # all at chance: the floor 1/C answers all
    assert three["threshold"] == pytest.approx(0.33) and three["coverage_at_threshold"] == 1.0
    cal = fit_calibration(np.log(proba), y, train_prior=[0.5, 0.5])
    assert cal["threshold_min_coverage"] == 0.9 and cal["coverage_at_threshold"] >= 0.9


def test_the_default_threshold_from_reliability_bins() -> None:
    from workers.pipeline.calibration import default_threshold_from_reliability

    bins = {"edges": [0.0, 0.25, 0.5, 0.75, 1.0], "count": [0, 0, 10, 90], "accuracy": [None, None, 0.5, 1.0]}
    chosen = default_threshold_from_reliability(bins)
    assert chosen["threshold"] == 0.75 and chosen["coverage_at_threshold"] == 0.9 and chosen["accuracy_at_threshold"] == 1.0
    bins["count"] = [0, 0, 11, 89]
    assert default_threshold_from_reliability(bins)["threshold"] == 0.5  # 0.75 would answer 89 %
