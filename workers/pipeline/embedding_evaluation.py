"""Evaluation of accent embeddings: a leave-one-speaker-out k-NN vote and the equal error rate of
same-accent trials between different speakers, so speaker identity is never credited. Same
conventions as :mod:`workers.pipeline.evaluation` (JSON-able dicts, ``None`` for undefined values),
whose confusion-matrix core it shares. numpy and scikit-learn: no Django.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any

import numpy as np

from workers.pipeline.evaluation import _core_from_cm, _num, confusion_matrix

__all__ = ["embedding_report", "equal_error_rate"]


def equal_error_rate(scores: np.ndarray, targets: np.ndarray) -> tuple[float | None, float | None]:
    """Equal error rate of a verification score.

    Parameters
    ----------
    scores : np.ndarray
        Higher means "same", shape ``[m]``.
    targets : np.ndarray
        True for target (same) trials, shape ``[m]``.

    Returns
    -------
    (eer, threshold)
        EER in ``[0, 1]`` (linear interpolation where the miss and false-alarm curves cross) and
        the score threshold there; ``(None, None)`` without both kinds of trial.
    """
    from sklearn.metrics import roc_curve

    targets = np.asarray(targets, dtype=bool)
    if targets.all() or not targets.any():
        return None, None
    fpr, tpr, thr = roc_curve(targets, scores)
    fnr = 1.0 - tpr
    diff = fnr - fpr  # decreasing from 1 to -1 along the curve
    i = int(np.argmax(diff <= 0))
    if i == 0 or diff[i] == 0:
        return float((fpr[i] + fnr[i]) / 2), _num(thr[i])
    # Interpolate between i-1 (diff > 0) and i (diff <= 0).
    w = diff[i - 1] / (diff[i - 1] - diff[i])
    eer = fpr[i - 1] + w * (fpr[i] - fpr[i - 1])
    t0 = thr[i - 1] if np.isfinite(thr[i - 1]) else thr[i]
    return float(eer), _num(t0 + w * (thr[i] - t0))


def embedding_report(
    embeddings: np.ndarray,
    labels: Sequence[str],
    speakers: Sequence[Hashable],
    *,
    k: int = 5,
    max_pairs: int = 2_000_000,
    seed: int = 0,
) -> dict[str, Any]:
    """How well accent is organised in an embedding space, never crediting speaker identity.

    Parameters
    ----------
    embeddings : np.ndarray
        One vector per item, shape ``[n, d]``; compared by cosine similarity.
    labels : sequence of str
        Accent label per item, length ``n``.
    speakers : sequence
        Speaker id per item, length ``n``.
    k : int
        Neighbours for the k-NN vote. Each query's neighbours exclude every item of its own
        speaker (leave-one-speaker-out), so the vote cannot ride on speaker identity. Votes are
        counted and ties broken by summed similarity.
    max_pairs : int
        Cap on verification pairs; above it a uniform random subset (``seed``) is scored.
    seed : int
        Seed for the pair subsampling.

    Returns
    -------
    dict
        ``n``, ``n_speakers``, ``k``, ``knn_accuracy``, ``knn_balanced_accuracy``,
        ``knn_per_class_recall``, ``eer`` (same-accent vs different-accent trials over cosine
        scores of pairs of items from different speakers), ``eer_threshold``, ``n_pairs``,
        ``n_target_pairs``, ``mean_cosine_same``, ``mean_cosine_different``.
    """
    x = np.asarray(embeddings, dtype=np.float64)
    n = len(labels)
    if x.ndim != 2 or x.shape[0] != n or len(speakers) != n:
        raise ValueError("embeddings [n, d], labels [n] and speakers [n] must agree")
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    classes, y = np.unique(np.asarray([str(v) for v in labels]), return_inverse=True)
    _, spk = np.unique(np.asarray([str(s) for s in speakers]), return_inverse=True)
    out: dict[str, Any] = {"n": n, "n_speakers": int(spk.max()) + 1 if n else 0, "k": int(k)}

    # k-NN, leave one speaker out, in row blocks to bound memory ([block, n] similarities).
    preds = np.full(n, -1, dtype=np.int64)
    block = max(1, int(4e6 // max(n, 1)))
    for s in range(0, n, block):
        sim = x[s : s + block] @ x.T
        sim[spk[s : s + block, None] == spk[None, :]] = -np.inf
        kk = min(k, n - 1)
        if kk <= 0:
            break
        nn = np.argpartition(-sim, kk - 1, axis=1)[:, :kk]
        for r, row in enumerate(nn):
            sims = sim[r, row]
            row = row[np.isfinite(sims)]
            if len(row) == 0:
                continue
            votes = np.bincount(y[row], minlength=len(classes)).astype(np.float64)
            votes += 1e-6 * np.bincount(y[row], weights=sim[r, row], minlength=len(classes))
            preds[s + r] = int(np.argmax(votes))
    answered = preds >= 0
    if answered.any():
        cm = confusion_matrix(y[answered], preds[answered], len(classes))
        core = _core_from_cm(cm)
        out["knn_accuracy"] = _num(core["accuracy"])
        out["knn_balanced_accuracy"] = _num(core["balanced_accuracy"])
        out["knn_per_class_recall"] = {str(c): _num(cm[j, j] / cm[j].sum()) if cm[j].sum() else None for j, c in enumerate(classes)}
    else:
        out.update({"knn_accuracy": None, "knn_balanced_accuracy": None, "knn_per_class_recall": {}})

    # Verification: pairs i < j of different speakers; target = same accent.
    iu, ju = np.triu_indices(n, k=1)
    keep = spk[iu] != spk[ju]
    iu, ju = iu[keep], ju[keep]
    if len(iu) > max_pairs:
        pick = np.random.default_rng(seed).choice(len(iu), size=max_pairs, replace=False)
        iu, ju = iu[pick], ju[pick]
    scores = np.einsum("ij,ij->i", x[iu], x[ju]) if len(iu) else np.zeros(0)
    targets = y[iu] == y[ju]
    eer, thr = equal_error_rate(scores, targets)
    out.update(
        {
            "eer": eer,
            "eer_threshold": thr,
            "n_pairs": int(len(iu)),
            "n_target_pairs": int(targets.sum()),
            "mean_cosine_same": _num(scores[targets].mean()) if targets.any() else None,
            "mean_cosine_different": _num(scores[~targets].mean()) if (~targets).any() else None,
        }
    )
    return out
