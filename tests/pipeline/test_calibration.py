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
    # all right: sharper is better, fit hits the lower bound
    assert fit_temperature(z, [1, 1]) < 0.1


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
