"""Evaluation reports for accent classifiers (embeddings: :mod:`workers.pipeline.embedding_evaluation`).

(Over 500 lines on purpose: the report, its speaker bootstrap, the paired comparison and the
selective-prediction curve share one vectorised confusion-matrix core; they are one API.)

Everything here is numpy (plus scikit-learn for ROC AUC) and returns plain JSON-able dicts:
Python floats, ints, strings, lists and ``None`` (never NaN), so a report can be stored in a
``JSONField`` or written with :func:`json.dumps` as is.

Conventions
-----------
- ``labels`` fixes the class order: column ``j`` of ``proba`` is the probability of ``labels[j]``,
  and every per-class list or matrix follows the same order.
- The predicted class is the arg-max of ``proba`` (ties go to the first label).
- A metric that is undefined for the data (recall of a class absent from ``y_true``, ROC AUC
  with a single class present, ...) is ``None``, never 0 and never an exception.
- Macro averages run over the classes that occur in ``y_true`` or in the predictions (what
  scikit-learn does when it is not given ``labels``); balanced accuracy is the mean recall over
  the classes present in ``y_true``. A class absent from both does not dilute the averages.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np

__all__ = [
    "ECE_BINS",
    "compare_predictions",
    "confusion_matrix",
    "evaluation_report",
    "selective_report",
]

#: Number of equal-width confidence bins for the expected calibration error.
ECE_BINS = 15


def _num(x: Any) -> float | None:
    """Python float, or None for None/NaN/inf (JSON has no NaN)."""
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


# ---------------------------------------------------------------------------------------------
# Confusion-matrix arithmetic (vectorised so the bootstrap is cheap)
# ---------------------------------------------------------------------------------------------


def confusion_matrix(y_true_idx: np.ndarray, y_pred_idx: np.ndarray, n_classes: int) -> np.ndarray:
    """Confusion matrix with rows = true class and columns = predicted class.

    Parameters
    ----------
    y_true_idx, y_pred_idx : np.ndarray
        Integer class indices, shape ``[n]``.
    n_classes : int
        Number of classes ``C``.

    Returns
    -------
    np.ndarray
        Counts, int64, shape ``[C, C]``.
    """
    flat = np.asarray(y_true_idx, dtype=np.int64) * n_classes + np.asarray(y_pred_idx, dtype=np.int64)
    return np.bincount(flat, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def _core_from_cm(cm: np.ndarray) -> dict[str, np.ndarray]:
    """Accuracy, balanced accuracy and macro-F1 from (a stack of) confusion matrices.

    Parameters
    ----------
    cm : np.ndarray
        Counts, shape ``[..., C, C]`` (rows = true).

    Returns
    -------
    dict
        ``accuracy``, ``balanced_accuracy``, ``macro_f1``, each shape ``[...]`` (NaN where the
        matrix is empty).
    """
    cm = np.asarray(cm, dtype=np.float64)
    tp = np.diagonal(cm, axis1=-2, axis2=-1)
    support = cm.sum(axis=-1)  # [..., C] true counts
    predicted = cm.sum(axis=-2)  # [..., C] predicted counts
    total = support.sum(axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        accuracy = tp.sum(axis=-1) / total
        present = support > 0
        recall = np.where(present, tp / np.where(present, support, 1.0), 0.0)
        balanced = (recall * present).sum(axis=-1) / present.sum(axis=-1)
        precision = np.where(predicted > 0, tp / np.where(predicted > 0, predicted, 1.0), 0.0)
        denom = precision + recall
        f1 = np.where(denom > 0, 2 * precision * recall / np.where(denom > 0, denom, 1.0), 0.0)
        active = present | (predicted > 0)
        macro_f1 = (f1 * active).sum(axis=-1) / active.sum(axis=-1)
    return {"accuracy": accuracy, "balanced_accuracy": balanced, "macro_f1": macro_f1}


def balanced_accuracy(y_true_idx: np.ndarray, y_pred_idx: np.ndarray, n_classes: int) -> float:
    """Mean recall over the classes present in ``y_true_idx`` (integer indices ``[n]``); 0.0 when empty.

    The one balanced-accuracy implementation: training, model selection and the reports use it.
    """
    if len(y_true_idx) == 0:
        return 0.0
    return float(_core_from_cm(confusion_matrix(y_true_idx, y_pred_idx, n_classes))["balanced_accuracy"])


def _per_class(cm: np.ndarray, labels: Sequence[str]) -> dict[str, dict[str, float | int | None]]:
    """Precision/recall/F1/support per class from a ``[C, C]`` confusion matrix."""
    out: dict[str, dict[str, float | int | None]] = {}
    for j, label in enumerate(labels):
        tp = float(cm[j, j])
        support = int(cm[j, :].sum())
        predicted = int(cm[:, j].sum())
        precision = tp / predicted if predicted else None
        recall = tp / support if support else None
        if precision is None and recall is None:
            f1 = None
        else:
            p, r = precision or 0.0, recall or 0.0
            f1 = 2 * p * r / (p + r) if p + r > 0 else 0.0
        out[label] = {
            "precision": _num(precision),
            "recall": _num(recall),
            "f1": _num(f1),
            "support": support,
            "predicted": predicted,
        }
    return out


# ---------------------------------------------------------------------------------------------
# ROC AUC, calibration
# ---------------------------------------------------------------------------------------------


def _roc_auc(y_idx: np.ndarray, proba: np.ndarray, labels: Sequence[str]) -> dict[str, Any]:
    """ROC AUC: binary (positive = ``labels[1]``) or macro one-vs-rest with per-class values.

    Parameters
    ----------
    y_idx : np.ndarray
        True class indices, shape ``[n]``.
    proba : np.ndarray
        Scores, shape ``[n, C]``.

    Returns
    -------
    dict
        ``{"value", "kind", "positive" (binary only), "per_class": {label: auc | None}}``;
        ``value`` is None when no class has both positives and negatives.
    """
    from sklearn.metrics import roc_auc_score

    per_class: dict[str, float | None] = {}
    for j, label in enumerate(labels):
        target = y_idx == j
        if target.all() or not target.any():
            per_class[label] = None
        else:
            per_class[label] = _num(roc_auc_score(target, proba[:, j]))
    if len(labels) == 2:
        # One-vs-rest AUC of labels[1] scored by proba[:, 1]; equals that of labels[0] by proba[:, 0]
        # when rows sum to one.
        return {"value": per_class[labels[1]], "kind": "binary", "positive": labels[1], "per_class": per_class}
    defined = [v for v in per_class.values() if v is not None]
    value = float(np.mean(defined)) if defined else None
    return {"value": value, "kind": "macro_ovr", "per_class": per_class}


def _calibration(y_idx: np.ndarray, proba: np.ndarray, n_bins: int = ECE_BINS) -> dict[str, Any]:
    """Top-label expected calibration error and reliability-diagram bins.

    Confidence is ``max_j proba[i, j]``; bins are equal-width on ``[0, 1]``, right-closed
    (``(lo, hi]``, the first also takes 0). ``ece = sum_b n_b / n * |acc_b - conf_b|``.

    Parameters
    ----------
    y_idx : np.ndarray
        True class indices, shape ``[n]``.
    proba : np.ndarray
        Probabilities, shape ``[n, C]``.

    Returns
    -------
    dict
        ``ece``, ``max_calibration_error`` and ``reliability`` ``{"edges" [B+1], "confidence" [B],
        "accuracy" [B], "count" [B]}`` (None for empty bins).
    """
    conf = proba.max(axis=1)
    correct = (proba.argmax(axis=1) == y_idx).astype(np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    b = np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, n_bins - 1)
    count = np.bincount(b, minlength=n_bins)
    conf_sum = np.bincount(b, weights=conf, minlength=n_bins)
    acc_sum = np.bincount(b, weights=correct, minlength=n_bins)
    nonempty = count > 0
    mean_conf = np.where(nonempty, conf_sum / np.maximum(count, 1), np.nan)
    mean_acc = np.where(nonempty, acc_sum / np.maximum(count, 1), np.nan)
    gaps = np.abs(mean_acc - mean_conf)
    n = len(conf)
    ece = float(np.nansum(gaps * count) / n) if n else None
    mce = float(np.nanmax(gaps)) if nonempty.any() else None
    return {
        "ece": _num(ece),
        "max_calibration_error": _num(mce),
        "reliability": {
            "edges": [float(e) for e in edges],
            "confidence": [_num(v) for v in mean_conf],
            "accuracy": [_num(v) for v in mean_acc],
            "count": [int(c) for c in count],
        },
    }


# ---------------------------------------------------------------------------------------------
# Bootstrap grouped by speaker
# ---------------------------------------------------------------------------------------------


def _group_confusions(y_idx: np.ndarray, pred_idx: np.ndarray, n_classes: int, g_idx: np.ndarray,
                      n_groups: int) -> np.ndarray:
    """``[G, C*C]``: each group's confusion matrix, flattened."""
    flat = y_idx.astype(np.int64) * n_classes + pred_idx.astype(np.int64)
    group_cm = np.zeros((n_groups, n_classes * n_classes), dtype=np.float64)
    np.add.at(group_cm, (g_idx, flat), 1.0)
    return group_cm


def _replicate_counts(n_groups: int, n_boot: int, seed: int):
    """Bootstrap replicates as ``[B, G]`` counts of how often each group was drawn (in chunks that
    bound the matrix); the same seed gives the same replicates."""
    rng = np.random.default_rng(seed)
    chunk = max(1, int(2e7 // max(n_groups, 1)))
    for start in range(0, n_boot, chunk):
        b = min(chunk, n_boot - start)
        draws = rng.integers(0, n_groups, size=(b, n_groups))
        offsets = (np.arange(b, dtype=np.int64) * n_groups)[:, None]
        counts = np.bincount((draws + offsets).ravel(), minlength=b * n_groups)
        yield counts.reshape(b, n_groups).astype(np.float64)


def _no_ci_reason(n_groups: int, unit: str, n_boot: int) -> str | None:
    """Why no interval can be estimated, or None: resampling fewer than two units cannot vary."""
    if n_boot <= 0:
        return "bootstrap disabled (n_boot = 0)"
    if n_groups < 2:
        return f"fewer than 2 {unit}s ({n_groups}): resampling them cannot vary, so no interval can be estimated"
    return None


def _bootstrap(
    y_idx: np.ndarray,
    pred_idx: np.ndarray,
    n_classes: int,
    groups: Sequence[Hashable] | None,
    n_boot: int,
    seed: int,
) -> dict[str, Any]:
    """Percentile 95 % CIs of accuracy, balanced accuracy and macro-F1, resampling groups.

    Each replicate draws as many groups (speakers) as there are, with replacement, and keeps all
    items of every drawn group, so items of one speaker move together. With ``groups=None`` each
    item is its own group.

    Returns
    -------
    dict
        ``{"unit", "n_units", "n_boot", "level", "reason", metric: {"low", "high", "std"}}``;
        with fewer than two units (or ``n_boot=0``) every bound is None and ``reason`` says why
        (None otherwise).
    """
    n = len(y_idx)
    if groups is None:
        unit, g_idx = "item", np.arange(n)
    else:
        unit = "speaker"
        _, g_idx = np.unique(np.asarray([str(g) for g in groups]), return_inverse=True)
    n_groups = int(g_idx.max()) + 1 if n else 0
    out: dict[str, Any] = {"unit": unit, "n_units": n_groups, "n_boot": int(n_boot), "level": 0.95, "reason": None}
    metrics = ("accuracy", "balanced_accuracy", "macro_f1")
    reason = _no_ci_reason(n_groups, unit, n_boot)
    if reason:
        out.update({m: {"low": None, "high": None, "std": None} for m in metrics}, reason=reason)
        return out
    # Per-group confusion matrices [G, C*C]; a replicate's matrix is counts [B, G] @ that.
    group_cm = _group_confusions(y_idx, pred_idx, n_classes, g_idx, n_groups)
    stats = {m: [] for m in metrics}
    for counts in _replicate_counts(n_groups, n_boot, seed):
        cms = (counts @ group_cm).reshape(len(counts), n_classes, n_classes)
        core = _core_from_cm(cms)
        for m in metrics:
            stats[m].append(core[m])
    for m in metrics:
        values = np.concatenate(stats[m])
        values = values[np.isfinite(values)]
        if len(values) == 0:
            out[m] = {"low": None, "high": None, "std": None}
        else:
            low, high = np.percentile(values, [2.5, 97.5])
            out[m] = {"low": _num(low), "high": _num(high), "std": _num(values.std())}
    return out


# ---------------------------------------------------------------------------------------------
# Public reports
# ---------------------------------------------------------------------------------------------


def _encode_labels(y_true: Sequence[str], labels: Sequence[str]) -> np.ndarray:
    index = {label: j for j, label in enumerate(labels)}
    unknown = sorted({str(y) for y in y_true if y not in index})
    if unknown:
        raise ValueError(f"y_true holds labels not in `labels`: {unknown[:5]}")
    return np.fromiter((index[y] for y in y_true), dtype=np.int64, count=len(y_true))


def _core_report(
    y_idx: np.ndarray,
    proba: np.ndarray,
    labels: Sequence[str],
    groups: Sequence[Hashable] | None,
    n_boot: int,
    seed: int,
) -> dict[str, Any]:
    """The numbers shared by the whole report and each per-corpus slice."""
    pred_idx = proba.argmax(axis=1)
    cm = confusion_matrix(y_idx, pred_idx, len(labels))
    core = {k: _num(v) for k, v in _core_from_cm(cm).items()}
    roc = _roc_auc(y_idx, proba, labels)
    return {
        "n": int(len(y_idx)),
        "n_speakers": len({str(g) for g in groups}) if groups is not None else None,
        **core,
        "roc_auc": roc["value"],
        "support": {label: int(cm[j].sum()) for j, label in enumerate(labels)},
        "recall": {label: _num(cm[j, j] / cm[j].sum()) if cm[j].sum() else None for j, label in enumerate(labels)},
        "ci": _bootstrap(y_idx, pred_idx, len(labels), groups, n_boot, seed),
    }


def evaluation_report(
    y_true: Sequence[str],
    proba: np.ndarray,
    labels: Sequence[str],
    *,
    speakers: Sequence[Hashable] | None = None,
    corpora: Sequence[str] | None = None,
    n_boot: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """Full evaluation of class probabilities against true labels, as a JSON-able dict.

    Parameters
    ----------
    y_true : sequence of str
        True label of each item, length ``n``; every value must be in ``labels``.
    proba : np.ndarray
        Predicted probabilities, shape ``[n, C]``, column ``j`` for ``labels[j]``. Rows should sum
        to one (used as given for ROC AUC and calibration).
    labels : sequence of str
        The ``C`` class names in column order.
    speakers : sequence, optional
        Speaker id per item; the bootstrap resamples speakers (all of a speaker's items together).
        When None, items are resampled independently.
    corpora : sequence of str, optional
        Corpus per item; adds a ``per_corpus`` breakdown.
    n_boot : int
        Bootstrap replicates (0 disables the CIs).
    seed : int
        Seed of the bootstrap generator (the report is deterministic).

    Returns
    -------
    dict
        ``n``, ``labels``, ``accuracy``, ``balanced_accuracy``, ``macro_f1``, ``per_class``
        ``{label: {precision, recall, f1, support, predicted}}``, ``confusion_matrix``
        ``{labels, matrix}`` (rows = true, columns = predicted), ``roc_auc`` ``{value, kind,
        positive?, per_class}`` (binary: positive class is ``labels[1]`` scored by
        ``proba[:, 1]``; otherwise macro one-vs-rest over the classes for which it is defined),
        ``ece``, ``max_calibration_error``, ``reliability`` (15 bins: edges, confidence, accuracy,
        count), ``nll`` and ``brier`` (multi-class Brier score, sum over classes), ``ci``
        ``{unit, n_units, n_boot, level, accuracy: {low, high, std}, ...}``, ``per_corpus``
        ``{corpus: {n, n_speakers, accuracy, balanced_accuracy, macro_f1, roc_auc, support,
        recall, ci}}`` (empty when ``corpora`` is None).
    """
    labels = [str(label) for label in labels]
    proba = np.asarray(proba, dtype=np.float64)
    n = len(y_true)
    if proba.ndim != 2 or proba.shape != (n, len(labels)):
        raise ValueError(f"proba must have shape [n={n}, C={len(labels)}], got {proba.shape}")
    if not np.isfinite(proba).all():
        raise ValueError("proba holds non-finite values")
    for name, seq in (("speakers", speakers), ("corpora", corpora)):
        if seq is not None and len(seq) != n:
            raise ValueError(f"{name} has {len(seq)} entries for {n} items")
    y_idx = _encode_labels(y_true, labels)

    report: dict[str, Any] = {"n": n, "labels": labels}
    if n == 0:
        report.update(
            {
                "accuracy": None,
                "balanced_accuracy": None,
                "macro_f1": None,
                "per_class": {},
                "confusion_matrix": {"labels": labels, "matrix": [[0] * len(labels) for _ in labels]},
                "roc_auc": {"value": None, "kind": None, "per_class": {}},
                "ece": None,
                "max_calibration_error": None,
                "reliability": None,
                "nll": None,
                "brier": None,
                "ci": None,
                "per_corpus": {},
            }
        )
        return report

    pred_idx = proba.argmax(axis=1)
    cm = confusion_matrix(y_idx, pred_idx, len(labels))
    core = _core_from_cm(cm)
    report.update({k: _num(v) for k, v in core.items()})
    report["per_class"] = _per_class(cm, labels)
    report["confusion_matrix"] = {"labels": labels, "matrix": cm.astype(int).tolist()}
    report["roc_auc"] = _roc_auc(y_idx, proba, labels)
    report.update(_calibration(y_idx, proba))
    p_true = np.clip(proba[np.arange(n), y_idx], 1e-12, 1.0)
    report["nll"] = _num(-np.mean(np.log(p_true)))
    onehot = np.eye(len(labels))[y_idx]
    report["brier"] = _num(np.mean(np.sum((proba - onehot) ** 2, axis=1)))
    report["ci"] = _bootstrap(y_idx, pred_idx, len(labels), speakers, n_boot, seed)

    per_corpus: dict[str, Any] = {}
    if corpora is not None:
        corpora_arr = np.asarray([str(c) for c in corpora])
        for corpus in sorted(set(corpora_arr.tolist())):
            mask = corpora_arr == corpus
            groups = [speakers[i] for i in np.flatnonzero(mask)] if speakers is not None else None
            per_corpus[corpus] = _core_report(y_idx[mask], proba[mask], labels, groups, n_boot, seed)
    report["per_corpus"] = per_corpus
    return report


def selective_report(
    correct: Sequence[bool],
    confidence: Sequence[float],
    accepted: Sequence[bool],
    *,
    max_points: int = 101,
) -> dict[str, Any]:
    """Selective prediction: how accuracy trades against coverage when unsure answers are withheld.

    Parameters
    ----------
    correct : sequence of bool
        Whether each item's top class is its true label, length ``n``.
    confidence : sequence of float
        The score answers are accepted by (the top calibrated probability), length ``n``.
    accepted : sequence of bool
        Whether the service gave the answer (outcome ``ok``) rather than withholding it
        (``uncertain``: confidence under the job's threshold), length ``n``.
    max_points : int
        Points kept on the risk-coverage curve (evenly spaced in coverage, the last one at 1).

    Returns
    -------
    dict
        ``n``, ``n_accepted``, ``coverage`` (share accepted), ``accuracy_accepted`` (on the
        answers given; None when none was), ``accuracy_all`` (on every answer, as if none had been
        withheld), ``risk_accepted`` (1 - accuracy_accepted), ``aurc`` (area under the
        risk-coverage curve: mean risk over every coverage level; lower is better) and ``curve``
        ``{coverage, risk, accuracy, confidence}``: answering only the ``k`` most confident
        items, for ``k`` from 1 to ``n``, gives coverage ``k / n`` at risk = error rate of those
        ``k``; ``confidence`` is the threshold that keeps them.
    """
    ok = np.asarray(correct, dtype=bool)
    conf = np.asarray(confidence, dtype=np.float64)
    acc = np.asarray(accepted, dtype=bool)
    n = len(ok)
    if not (len(conf) == len(acc) == n):
        raise ValueError("correct, confidence and accepted need one entry per item")
    if n == 0:
        return {"n": 0, "n_accepted": 0, "coverage": None, "accuracy_accepted": None, "accuracy_all": None,
                "risk_accepted": None, "aurc": None, "curve": {"coverage": [], "risk": [], "accuracy": [], "confidence": []}}
    order = np.argsort(-conf, kind="stable")
    k = np.arange(1, n + 1)
    risk = 1.0 - np.cumsum(ok[order]) / k
    keep = np.unique(np.rint(np.linspace(0, n - 1, min(n, max(2, max_points)))).astype(int))
    n_acc = int(acc.sum())
    accuracy_accepted = _num(ok[acc].mean()) if n_acc else None
    return {
        "n": n,
        "n_accepted": n_acc,
        "coverage": _num(n_acc / n),
        "accuracy_accepted": accuracy_accepted,
        "accuracy_all": _num(ok.mean()),
        "risk_accepted": None if accuracy_accepted is None else _num(1.0 - accuracy_accepted),
        "aurc": _num(risk.mean()),
        "curve": {
            "coverage": [_num(c) for c in (k[keep] / n)],
            "risk": [_num(r) for r in risk[keep]],
            "accuracy": [_num(1.0 - r) for r in risk[keep]],
            "confidence": [_num(c) for c in conf[order][keep]],
        },
    }


def paired_difference(
    y_true: Sequence[str],
    proba_a: np.ndarray,
    proba_b: np.ndarray,
    labels: Sequence[str],
    *,
    speakers: Sequence[Hashable] | None = None,
    n_boot: int = 2000,
    seed: int = 0,
) -> dict[str, Any]:
    """Balanced accuracy of system ``a`` minus that of ``b`` on the same items, with a paired
    bootstrap: every replicate draws speakers (all of a speaker's items together) once and scores
    both systems on that draw, so what the two share (easy and hard speakers) cancels. This is the
    honest test of "a beats b by a clear margin": the separate CIs of each overlap far more than the
    CI of their difference does.

    Returns
    -------
    dict
        ``a``, ``b`` and ``difference`` (point values), ``low`` / ``high`` (95 % percentile interval of
        the difference), ``share_not_better`` (fraction of replicates where ``a`` does not beat
        ``b``: a one-sided bootstrap p-value), ``n``, ``n_units``, ``n_boot``.
    """
    y_idx = _encode_labels(y_true, labels)
    pa = np.asarray(proba_a, dtype=np.float64).argmax(axis=1)
    pb = np.asarray(proba_b, dtype=np.float64).argmax(axis=1)
    if not (len(y_idx) == len(pa) == len(pb)):
        raise ValueError("paired_difference needs the same items for both systems")
    n_classes = len(labels)
    groups = np.arange(len(y_idx)) if speakers is None else np.asarray([str(g) for g in speakers])
    _, g_idx = np.unique(groups, return_inverse=True)
    n_groups = int(g_idx.max()) + 1 if len(y_idx) else 0
    cm_a = _group_confusions(y_idx, pa, n_classes, g_idx, n_groups)
    cm_b = _group_confusions(y_idx, pb, n_classes, g_idx, n_groups)
    point = [float(_core_from_cm(cm.sum(axis=0).reshape(1, n_classes, n_classes))["balanced_accuracy"][0])
             for cm in (cm_a, cm_b)]
    diffs = []
    for counts in _replicate_counts(n_groups, n_boot, seed):
        ba = [_core_from_cm((counts @ cm).reshape(len(counts), n_classes, n_classes))["balanced_accuracy"]
              for cm in (cm_a, cm_b)]
        diffs.append(ba[0] - ba[1])
    d = np.concatenate(diffs) if diffs else np.array([])
    d = d[np.isfinite(d)]
    reason = _no_ci_reason(n_groups, "item" if speakers is None else "speaker", n_boot)
    if reason:
        d = np.array([])
    low, high = (np.percentile(d, [2.5, 97.5]) if len(d) else (None, None))
    return {"a": _num(point[0]), "b": _num(point[1]), "difference": _num(point[0] - point[1]),
            "low": _num(low), "high": _num(high), "share_not_better": _num(np.mean(d <= 0)) if len(d) else None,
            "n": int(len(y_idx)), "n_units": n_groups, "n_boot": int(n_boot), "reason": reason}


def paired_by_corpus(
    y_true: Sequence[str],
    proba_a: np.ndarray,
    proba_b: np.ndarray,
    labels: Sequence[str],
    *,
    speakers: Sequence[Hashable],
    corpora: Sequence[str],
    n_boot: int = 2000,
    seed: int = 0,
) -> dict[str, Any]:
    """:func:`paired_difference` over all items (``"all"``) and per corpus (``"per_corpus"``)."""
    y, spk, corp = np.asarray(list(y_true)), np.asarray([str(s) for s in speakers]), np.asarray(list(corpora))
    proba_a, proba_b = np.asarray(proba_a, dtype=np.float64), np.asarray(proba_b, dtype=np.float64)

    def one(mask: np.ndarray) -> dict[str, Any]:
        return paired_difference(list(y[mask]), proba_a[mask], proba_b[mask], labels, speakers=list(spk[mask]),
                                 n_boot=n_boot, seed=seed)

    return {"all": one(np.ones(len(y), dtype=bool)), "per_corpus": {c: one(corp == c) for c in sorted(set(corp))}}


def compare_predictions(a: Mapping[Hashable, Any], b: Mapping[Hashable, Any]) -> dict[str, Any]:
    """Which items changed their predicted label between two model versions.

    Parameters
    ----------
    a, b : mapping
        ``{item_id: predicted_label}`` from the old (``a``) and new (``b``) model. A ``None``
        label (e.g. insufficient speech) is a label like any other.

    Returns
    -------
    dict
        ``n_common``, ``n_changed``, ``agreement`` (fraction of common ids unchanged, None when
        there are none), ``changed`` (sorted ``[{"id", "a", "b"}]``), ``transitions``
        (``{"a_label -> b_label": count}``), ``only_in_a`` and ``only_in_b`` (sorted ids).
    """
    common = [i for i in a if i in b]
    changed = [i for i in common if a[i] != b[i]]
    key = lambda i: (str(type(i)), str(i))  # noqa: E731  (sort mixed id types stably)
    transitions = Counter(f"{a[i]} -> {b[i]}" for i in changed)
    return {
        "n_common": len(common),
        "n_changed": len(changed),
        "agreement": (1.0 - len(changed) / len(common)) if common else None,
        "changed": [{"id": i, "a": a[i], "b": b[i]} for i in sorted(changed, key=key)],
        "transitions": dict(sorted(transitions.items())),
        "only_in_a": sorted((i for i in a if i not in b), key=key),
        "only_in_b": sorted((i for i in b if i not in a), key=key),
    }
