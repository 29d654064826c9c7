"""Robustness of an embedding model: does a degraded clip still land near its accent, and near itself?

An embedding has no decision of its own, so robustness is measured with two questions, per condition
(``workers.pipeline.degrade``) beside clean:

1. **Accent from the degraded embedding.** Class centroids (the L2-normalised mean of each accent's
   clean embeddings) are fitted on *reference* clips from other speakers (e.g. the train split); each
   evaluation clip, degraded, is given the class of its nearest centroid by cosine. Reported: balanced
   accuracy (mean recall over the classes present) and recall per class, the same columns as a
   classifier's robustness table. A k-NN vote (``k`` nearest reference clips, cosine) is reported
   beside it: it reads the local neighbourhood that the service's ``similar/`` lists show.
2. **Drift.** The cosine between a clip's clean and degraded embedding: mean and 10th percentile
   over the clips (1.0: the condition does not move the clip at all).

The centroids and neighbours are always fitted on clean reference audio: the question is whether a
user's noisy recording still finds the accents of clean ones. Pure numpy: no Django, no torch.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from workers.pipeline.degrade import CONDITIONS, degrade_all, parse_conditions

Embedder = Callable[[list[np.ndarray]], np.ndarray]


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def _recalls(y_true: Sequence[str], y_pred: Sequence[str], labels: Sequence[str]) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for label in labels:
        idx = [i for i, y in enumerate(y_true) if y == label]
        out[label] = float(np.mean([y_pred[i] == label for i in idx])) if idx else None
    return out


def nearest_centroid(reference: np.ndarray, ref_labels: Sequence[str], queries: np.ndarray,
                     labels: Sequence[str]) -> list[str]:
    """Each query's nearest class centroid by cosine. ``reference`` ``[m, d]``, ``queries`` ``[n, d]``;
    a centroid is the unit mean of its class's unit reference vectors (classes without one are skipped)."""
    ref, q = _unit(reference), _unit(queries)
    present = [label for label in labels if any(y == label for y in ref_labels)]
    cents = _unit(np.stack([ref[[y == label for y in ref_labels]].mean(axis=0) for label in present]))
    return [present[int(j)] for j in np.argmax(q @ cents.T, axis=1)]


def knn_vote(reference: np.ndarray, ref_labels: Sequence[str], queries: np.ndarray, *, k: int = 5) -> list[str]:
    """Each query's majority label among its ``k`` most cosine-similar reference vectors (ties to the
    larger summed similarity)."""
    ref, q = _unit(reference), _unit(queries)
    names = sorted(set(ref_labels))
    yi = np.array([names.index(y) for y in ref_labels])
    sim = q @ ref.T
    kk = min(k, len(ref))
    out = []
    for row in sim:
        nn = np.argpartition(-row, kk - 1)[:kk]
        votes = np.bincount(yi[nn], minlength=len(names)) + 1e-6 * np.bincount(yi[nn], weights=row[nn], minlength=len(names))
        out.append(names[int(np.argmax(votes))])
    return out


def evaluate_embedding_robustness(embed: Embedder, signals: Sequence[np.ndarray], y_true: Sequence[str],
                                  reference: np.ndarray, ref_labels: Sequence[str], labels: Sequence[str], *,
                                  conditions: Sequence[str] | str | None = None, seed: int = 0, k: int = 5,
                                  progress: Callable[[str, int, int], None] | None = None) -> dict[str, Any]:
    """Score the embeddings of ``signals`` (``[time]`` each, 16 kHz) clean and under each condition.

    Parameters
    ----------
    embed
        ``embed(signals) -> [n, d]``, one vector per signal.
    reference, ref_labels
        Clean embeddings ``[m, d]`` of other speakers' clips and their labels: the centroids and
        neighbours.

    Returns
    -------
    dict
        ``n``, ``n_reference``, ``seed``, ``k``, ``labels``, ``class_counts``,
        ``reference_class_counts`` and ``conditions``: one row per condition (clean first) with
        ``name``, ``description``, ``balanced_accuracy`` and ``recall`` (nearest centroid),
        ``delta`` (minus clean), ``knn_balanced_accuracy``, ``cosine_to_clean_mean``,
        ``cosine_to_clean_p10`` and ``seconds``.
    """
    names = parse_conditions(conditions)
    present = [label for label in labels if label in set(y_true)]
    reference = np.asarray(reference, dtype=np.float64)
    rows: list[dict[str, Any]] = []
    clean_vecs: np.ndarray | None = None
    for j, name in enumerate(names):
        if progress is not None:
            progress(name, j, len(names))
        t0 = time.time()
        vecs = _unit(np.asarray(embed(degrade_all(signals, name, seed=seed)), dtype=np.float64))
        if clean_vecs is None:
            clean_vecs = vecs
        cos = np.einsum("ij,ij->i", vecs, clean_vecs)
        rec = _recalls(y_true, nearest_centroid(reference, ref_labels, vecs, labels), labels)
        knn = _recalls(y_true, knn_vote(reference, ref_labels, vecs, k=k), labels)
        rows.append({
            "name": name, "description": CONDITIONS[name].description,
            "balanced_accuracy": float(np.mean([rec[c] for c in present])) if present else None, "recall": rec,
            "knn_balanced_accuracy": float(np.mean([knn[c] for c in present])) if present else None,
            "cosine_to_clean_mean": float(cos.mean()), "cosine_to_clean_p10": float(np.percentile(cos, 10)),
            "seconds": round(time.time() - t0, 1)})
    clean = rows[0]["balanced_accuracy"]
    for row in rows:
        row["delta"] = None if clean is None or row["balanced_accuracy"] is None else row["balanced_accuracy"] - clean
    return {"n": len(signals), "n_reference": len(reference), "seed": seed, "k": k, "labels": list(labels),
            "measure": "nearest clean centroid of other speakers (cosine); k-NN beside it; cosine to the clip's clean embedding",
            "class_counts": {c: sum(y == c for y in y_true) for c in labels},
            "reference_class_counts": {c: sum(y == c for y in ref_labels) for c in labels}, "conditions": rows}


def embedding_robustness_markdown(report: dict[str, Any]) -> list[str]:
    """The report as a Markdown table: nearest-centroid balanced accuracy, its change from clean,
    k-NN balanced accuracy, cosine to clean (mean, 10th percentile) and recall per class."""
    labels = report["labels"]

    def f(x: float | None, sign: bool = False) -> str:
        return "-" if x is None else (f"{x:+.3f}" if sign else f"{x:.3f}")

    lines = ["| condition | centroid balanced acc. | change from clean | k-NN balanced acc. | cosine to clean (mean) | "
             "cosine to clean (10th pct.) | " + " | ".join(f"{c} recall" for c in labels) + " |",
             "|---|---|---|---|---|---|" + "---|" * len(labels)]
    for row in report["conditions"]:
        lines.append(f"| {row['description'] if row['name'] != 'clean' else 'clean'} | {f(row['balanced_accuracy'])} | "
                     f"{f(row['delta'], True) if row['name'] != 'clean' else ''} | {f(row['knn_balanced_accuracy'])} | "
                     f"{f(row['cosine_to_clean_mean'])} | {f(row['cosine_to_clean_p10'])} | "
                     + " | ".join(f(row["recall"].get(c)) for c in labels) + " |")
    return lines


def checkpoint_embedder(path: Any, *, engine: str = "auto", threads: int | None = None) -> tuple[Embedder, Any]:
    """``(embed, loaded)`` for the embedding checkpoint at ``path``: ``embed(signals)`` runs the
    service's ``embed_batch`` (VAD off, as an embed job's default) and returns ``[n, d]``."""
    from models.checkpoint import load_served
    from workers.pipeline.inference import embed_batch

    loaded, _ = load_served(path, engine=engine, threads=threads)

    def embed(signals: list[np.ndarray]) -> np.ndarray:
        return np.stack([np.asarray(o.vector, dtype=np.float64) for o in embed_batch(loaded, signals, vad=False, batch_size=16)])

    return embed, loaded
