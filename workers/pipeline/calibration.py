"""Probability calibration fitted on validation data: temperature scaling, class-prior
correction and a decision threshold.

Calibration dict (stored in every classify checkpoint)::

    {"temperature": float, "train_prior": [C floats], "deploy_prior": [C floats] | None,
     "threshold": float, ...}

``threshold`` is the minimum calibrated top-class confidence for an ``ok`` outcome (below it the
inference engine reports ``uncertain``). Training declares a uniform ``deploy_prior`` by default,
so the arg-max of the calibrated probabilities is the balanced decision rule.

``calibrate`` applies ``softmax(logits / T)``, then (if ``deploy_prior`` is set) the prior shift
``p_c * deploy_c / train_c`` renormalised over classes.

Never sharper than the raw model on too little evidence: a temperature under 1 sharpens, and the
NLL of predictions that are all right keeps falling as ``T -> 0``, so a fit on out-of-fold
predictions without errors (a model trained on a few speakers who are easy for it) would drive ``T``
to its floor and make every new speaker's answer 0.99 -- a refusal threshold then refuses nothing.
:func:`fit_temperature` therefore bounds ``T`` at 1 from below unless the fit set holds at least
:data:`MIN_ERRORS_TO_SHARPEN` wrong predictions, and :func:`fit_calibration` records how many
predictions, errors and speakers the fit saw (``n``, ``errors``, ``speakers``), for the model card.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np


def softmax(logits: np.ndarray, axis: int = -1) -> np.ndarray:
    """Numerically stable softmax. ``[n, C]`` -> ``[n, C]``."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=axis, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=axis, keepdims=True)


def nll(logits: np.ndarray, y: Sequence[int], temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of integer labels ``y [n]`` under ``softmax(logits [n, C] / T)``."""
    z = np.asarray(logits, dtype=np.float64) / float(temperature)
    z = z - z.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    y = np.asarray(y, dtype=int)
    return float(-logp[np.arange(len(y)), y].mean())


#: a temperature under 1 (sharper than the raw model) needs at least this many wrong predictions in the
#: fit set: with fewer, the NLL's minimum says little more than "these speakers were easy" (see the module
#: docstring). Ten errors put the sharpening on ten margins, not on one or two outliers.
MIN_ERRORS_TO_SHARPEN = 10


def fit_temperature(
    logits: np.ndarray, y: Sequence[int], *, bounds: tuple[float, float] = (0.05, 20.0), iters: int = 100,
    min_errors: int = MIN_ERRORS_TO_SHARPEN,
) -> float:
    """Temperature ``T`` minimising validation NLL of ``softmax(logits / T)``.

    Golden-section search on ``log T`` within ``bounds`` (the NLL is unimodal in ``T``). With fewer
    than ``min_errors`` wrong arg-max predictions among the rows, the lower bound is 1: the fit may
    soften the raw model but never sharpen it on too little evidence (``min_errors=0`` restores the
    plain fit).

    Parameters
    ----------
    logits : np.ndarray
        ``[n, C]`` uncalibrated logits.
    y : sequence of int
        ``[n]`` true class indices.

    Returns
    -------
    float
        The fitted temperature (1.0 when there is nothing to fit).
    """
    logits = np.asarray(logits, dtype=np.float64)
    if logits.size == 0 or len(y) == 0:
        return 1.0
    if count_errors(logits, y) < min_errors:
        bounds = (max(bounds[0], 1.0), max(bounds[1], 1.0))
    lo, hi = np.log(bounds[0]), np.log(bounds[1])
    phi = (np.sqrt(5) - 1) / 2
    a, b = lo, hi
    c, d = b - phi * (b - a), a + phi * (b - a)
    fc, fd = nll(logits, y, np.exp(c)), nll(logits, y, np.exp(d))
    for _ in range(iters):
        if fc < fd:
            b, d, fd = d, c, fc
            c = b - phi * (b - a)
            fc = nll(logits, y, np.exp(c))
        else:
            a, c, fc = c, d, fd
            d = a + phi * (b - a)
            fd = nll(logits, y, np.exp(d))
        if b - a < 1e-6:
            break
    return float(np.exp((a + b) / 2))


def count_errors(logits: np.ndarray, y: Sequence[int]) -> int:
    """Rows of ``logits [n, C]`` whose arg-max is not the label ``y [n]``."""
    logits = np.atleast_2d(np.asarray(logits, dtype=np.float64))
    return int((logits.argmax(axis=1) != np.asarray(y, dtype=int)).sum()) if logits.size else 0


def prior_correct(proba: np.ndarray, train_prior: Sequence[float], deploy_prior: Sequence[float] | None) -> np.ndarray:
    """Shift posteriors from the training class prior to a deployment prior.

    ``p'_c = p_c * deploy_c / train_c / sum_k(p_k * deploy_k / train_k)``. ``[n, C]`` -> ``[n, C]``.
    """
    proba = np.asarray(proba, dtype=np.float64)
    if deploy_prior is None:
        return proba
    train = np.asarray(train_prior, dtype=np.float64)
    deploy = np.asarray(deploy_prior, dtype=np.float64)
    if train.shape != deploy.shape or train.shape[0] != proba.shape[1]:
        raise ValueError("train_prior, deploy_prior and the class axis must have the same length")
    ratio = deploy / np.clip(train, 1e-12, None)
    out = proba * ratio[None, :]
    return out / out.sum(axis=1, keepdims=True)


def calibrate(logits: np.ndarray, calibration: dict[str, Any] | None) -> np.ndarray:
    """Calibrated probabilities: temperature, then prior correction.

    Parameters
    ----------
    logits : np.ndarray
        ``[n, C]`` raw logits.
    calibration : dict or None
        See the module docstring; ``None`` means plain softmax.

    Returns
    -------
    np.ndarray
        ``[n, C]`` probabilities, rows sum to 1.
    """
    logits = np.atleast_2d(np.asarray(logits, dtype=np.float64))
    if not calibration:
        return softmax(logits)
    proba = softmax(logits / float(calibration.get("temperature", 1.0)))
    train_prior = calibration.get("train_prior")
    deploy_prior = calibration.get("deploy_prior")
    if deploy_prior is not None and train_prior is not None:
        proba = prior_correct(proba, train_prior, deploy_prior)
    return proba


def class_prior(y: Sequence[int], n_classes: int) -> list[float]:
    """Empirical class frequencies ``[n_classes]``."""
    counts = np.bincount(np.asarray(y, dtype=int), minlength=n_classes).astype(float)
    return (counts / max(counts.sum(), 1.0)).tolist()


def fit_threshold(proba: np.ndarray, y: Sequence[int], *, positive: int = 1, grid: int = 199) -> float:
    """Decision threshold on ``proba[:, positive]`` maximising balanced accuracy (binary tasks).

    Ties resolve to the threshold closest to 0.5. Returns 0.5 when ``y`` holds one class only.
    For more than two classes the threshold is a minimum top-class confidence and 0.0 is returned
    (argmax decides).
    """
    proba = np.asarray(proba, dtype=np.float64)
    y = np.asarray(y, dtype=int)
    if proba.shape[1] != 2:
        return 0.0
    pos = y == positive
    if pos.all() or (~pos).all():
        return 0.5
    scores = proba[:, positive]
    best_t, best = 0.5, -1.0
    for t in np.linspace(0.005, 0.995, grid):
        pred = scores >= t
        bacc = 0.5 * (pred[pos].mean() + (~pred[~pos]).mean())
        if bacc > best + 1e-12 or (abs(bacc - best) <= 1e-12 and abs(t - 0.5) < abs(best_t - 0.5)):
            best, best_t = bacc, float(t)
    return best_t


def fit_confidence_threshold(
    proba: np.ndarray, y: Sequence[int], *, target_accuracy: float = 0.9, grid: Sequence[float] | None = None
) -> tuple[float, float]:
    """Smallest top-class confidence ``t`` such that predictions with confidence ``>= t`` are
    right at least ``target_accuracy`` of the time (on validation).

    This is the inference engine's ``threshold``: below it an outcome is ``uncertain``.

    Returns
    -------
    (threshold, coverage)
        Coverage is the share of items at or above the threshold. When no threshold reaches the
        target, the one with the best accuracy among those keeping at least 10 % is returned.
    """
    proba = np.asarray(proba, dtype=np.float64)
    y = np.asarray(y, dtype=int)
    if len(y) == 0:
        return 0.5, 1.0
    conf = proba.max(axis=1)
    right = proba.argmax(axis=1) == y
    grid = np.round(np.arange(1.0 / proba.shape[1], 0.991, 0.01), 4) if grid is None else np.asarray(grid)
    best = (float(grid[-1]), -1.0, 0.0)
    for t in grid:
        keep = conf >= t
        if not keep.any():
            continue
        acc, cov = float(right[keep].mean()), float(keep.mean())
        if acc >= target_accuracy:
            return float(t), cov
        if cov >= 0.1 and acc > best[1]:
            best = (float(t), acc, cov)
    return best[0], best[2]


#: the share of validation predictions a model's default threshold must still answer (the rest are ``uncertain``)
DEFAULT_MIN_COVERAGE = 0.9
#: the rule, as model cards state it
DEFAULT_THRESHOLD_RULE = ("the highest confidence threshold (0.01 grid) that still answers at least {cov:.0%} of the "
                          "validation predictions; answers under it are 'uncertain'")


def default_threshold(proba: np.ndarray, y: Sequence[int], *, min_coverage: float = DEFAULT_MIN_COVERAGE) -> dict[str, Any]:
    """A model's default threshold: the highest top-class confidence ``t`` on a 0.01 grid (from ``1 / C``)
    such that at least ``min_coverage`` of the validation predictions ``proba [n, C]`` have confidence
    ``>= t``. It trades a fixed, stated share of answers for accuracy on the rest.

    Returns
    -------
    dict
        ``threshold``, ``coverage_at_threshold`` and ``accuracy_at_threshold`` (of the answered ones, on
        these predictions; None without labels), ``threshold_rule`` (the sentence) and
        ``threshold_min_coverage``.
    """
    proba = np.asarray(proba, dtype=np.float64)
    y = np.asarray(y, dtype=int)
    rule = {"threshold_rule": DEFAULT_THRESHOLD_RULE.format(cov=min_coverage), "threshold_min_coverage": min_coverage}
    if len(y) == 0:
        return {"threshold": 0.5, "coverage_at_threshold": 1.0, "accuracy_at_threshold": None, **rule}
    conf = proba.max(axis=1)
    right = proba.argmax(axis=1) == y
    best = float(np.floor(100.0 / proba.shape[1]) / 100)
    for t in np.round(np.arange(best, 0.995, 0.01), 4):
        if float(np.mean(conf >= t - 1e-9)) >= min_coverage:
            best = float(t)
    keep = conf >= best - 1e-9
    return {"threshold": best, "coverage_at_threshold": float(keep.mean()),
            "accuracy_at_threshold": float(right[keep].mean()) if keep.any() else None, **rule}


def default_threshold_from_reliability(reliability: dict[str, Any], *,
                                       min_coverage: float = DEFAULT_MIN_COVERAGE) -> dict[str, Any]:
    """:func:`default_threshold` from an evaluation report's ``reliability`` bins (``edges``, ``count``,
    ``accuracy`` over top-class confidence) when the predictions themselves were not kept: the highest
    bin edge that keeps at least ``min_coverage`` of them (coarser than the 0.01 grid)."""
    edges, counts = reliability["edges"], [int(c or 0) for c in reliability["count"]]
    accs = [a or 0.0 for a in reliability["accuracy"]]
    total = sum(counts)
    best = 0
    for k in range(len(counts)):
        if total and sum(counts[k:]) / total >= min_coverage:
            best = k
    kept = sum(counts[best:])
    return {"threshold": math.floor(float(edges[best]) * 1000) / 1000,  # rounded down: every bin counted is answered
            "coverage_at_threshold": kept / total if total else 1.0,
            "accuracy_at_threshold": sum(a * c for a, c in zip(accs[best:], counts[best:], strict=True)) / kept if kept else None,
            "threshold_rule": DEFAULT_THRESHOLD_RULE.format(cov=min_coverage).replace(
                "(0.01 grid)", f"(edges of the {len(counts)} reliability bins)"),
            "threshold_min_coverage": min_coverage}


def fit_calibration(
    logits: np.ndarray,
    y: Sequence[int],
    *,
    train_prior: Sequence[float],
    deploy_prior: Sequence[float] | None = None,
    positive: int = 1,
    target_accuracy: float = 0.9,
    speakers: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Fit the full calibration dict on validation logits ``[n, C]`` and labels ``[n]``.

    ``temperature`` minimises the NLL (bounded at 1 from below without :data:`MIN_ERRORS_TO_SHARPEN`
    errors, :func:`fit_temperature`); ``n``, ``errors`` and ``speakers`` (distinct names in
    ``speakers [n]``, the speaker of each row; None when not given) say what the fit saw; ``threshold``
    (with its coverage, accuracy and rule) is :func:`default_threshold` of the calibrated rows (the
    trainers refit it on utterance probabilities); ``decision_threshold`` (binary only) is the
    balanced-accuracy optimal cut on ``p[:, positive]``, kept for reference. ``target_accuracy`` is
    no longer read (the old rule, :func:`fit_confidence_threshold`, chased an accuracy instead of
    stating a coverage).
    """
    temperature = fit_temperature(logits, y)
    errors = count_errors(logits, y)
    cal: dict[str, Any] = {
        "temperature": temperature,
        "n": int(len(y)),
        "errors": errors,
        "speakers": len(set(speakers)) if speakers is not None else None,
        "temperature_floor": 1.0 if errors < MIN_ERRORS_TO_SHARPEN else None,
        "train_prior": [float(p) for p in train_prior],
        "deploy_prior": [float(p) for p in deploy_prior] if deploy_prior is not None else None,
        "threshold": 0.5,
    }
    proba = calibrate(logits, cal)
    cal.update(default_threshold(proba, y))
    if proba.shape[1] == 2:
        cal["decision_threshold"] = fit_threshold(proba, y, positive=positive)
    return cal


def decide(proba: np.ndarray, calibration: dict[str, Any] | None, *, positive: int = 1) -> np.ndarray:
    """Class decisions ``[n]``: binary models with a ``decision_threshold`` cut ``proba[:, positive]``
    there, everything else takes the argmax."""
    proba = np.atleast_2d(np.asarray(proba))
    if proba.shape[1] == 2 and calibration is not None and calibration.get("decision_threshold") is not None:
        t = float(calibration["decision_threshold"])
        return np.where(proba[:, positive] >= t, positive, 1 - positive)
    return proba.argmax(axis=1)
