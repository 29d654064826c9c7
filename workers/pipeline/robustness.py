"""Robustness of a classifier: balanced accuracy and per-class recall on degraded copies of the same
clips (``workers.pipeline.degrade``), beside clean.

:func:`evaluate_robustness` takes any ``predict(signals) -> [predicted label or None]`` (None: no
answer, e.g. too little speech; counted as a miss); a predictor may instead return ``(label,
answered)`` pairs, ``answered`` saying whether the model would answer at its default threshold
(False: ``uncertain``), and the report then also says, per condition, how many clips are answered
at that threshold and how many of those are right (:func:`robustness_threshold_markdown`).
:func:`checkpoint_predictor` makes such a predictor from a checkpoint through the service's own
inference path (``classify_batch``, VAD off as a job's default; the class is the top one whatever its
confidence, ``answered`` is the outcome at the checkpoint's default threshold), and
:func:`split_clips` reads the clips of a split a checkpoint's training run made. Pure Python /
numpy / torch: no Django.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from workers.pipeline.degrade import CONDITIONS, degrade_all, parse_conditions

Answer = str | None | tuple[str | None, bool]
Predictor = Callable[[list[np.ndarray]], list[Answer]]


def _recalls(y_true: Sequence[str], y_pred: Sequence[str | None], labels: Sequence[str]) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for label in labels:
        idx = [i for i, y in enumerate(y_true) if y == label]
        out[label] = float(np.mean([y_pred[i] == label for i in idx])) if idx else None
    return out


def _split_answers(answers: Sequence[Answer]) -> tuple[list[str | None], list[bool] | None]:
    """``(labels, answered)``; ``answered`` is None when the predictor gave bare labels."""
    if not any(isinstance(a, tuple) for a in answers):
        return list(answers), None  # type: ignore[arg-type]
    pairs = [a if isinstance(a, tuple) else (a, a is not None) for a in answers]
    return [p[0] for p in pairs], [bool(p[1]) and p[0] is not None for p in pairs]


def _at_threshold(y_true: Sequence[str], pred: Sequence[str | None], answered: Sequence[bool],
                  labels: Sequence[str]) -> dict[str, Any]:
    """Coverage, accuracy among the answered and, per class, the share answered right and the share
    ``uncertain`` (or without an answer)."""
    n = len(y_true)
    kept = [i for i in range(n) if answered[i]]
    by_class = {label: [i for i, y in enumerate(y_true) if y == label] for label in labels}
    return {
        "coverage": len(kept) / n if n else None,
        "accuracy_answered": float(np.mean([pred[i] == y_true[i] for i in kept])) if kept else None,
        "recall": {label: float(np.mean([answered[i] and pred[i] == label for i in idx])) if idx else None
                   for label, idx in by_class.items()},
        "uncertain": {label: float(np.mean([not answered[i] for i in idx])) if idx else None
                      for label, idx in by_class.items()},
    }


def evaluate_robustness(predict: Predictor, signals: Sequence[np.ndarray], y_true: Sequence[str],
                        labels: Sequence[str], *, conditions: Sequence[str] | str | None = None, seed: int = 0,
                        progress: Callable[[str, int, int], None] | None = None) -> dict[str, Any]:
    """Score ``signals`` (``[time]`` each, 16 kHz) clean and under each condition.

    Returns
    -------
    dict
        ``n``, ``seed``, ``labels``, ``class_counts`` and ``conditions``: one row per condition (clean
        first) with ``name``, ``description``, ``balanced_accuracy`` (mean recall over the classes
        present), ``delta`` (minus clean), ``recall`` ``{label: recall}``, ``accuracy`` (every clip
        given its top class), ``no_answer`` (clips without a prediction), ``seconds`` and ``predicted``
        (each clip's label or None, in order); ``y_true``. When ``predict`` returns ``(label, answered)``
        pairs, each row also has ``at_threshold``: ``coverage`` (share answered), ``accuracy_answered``,
        ``recall`` (per class: share of the class's clips answered and right) and ``uncertain`` (per
        class: share not answered).
    """
    names = parse_conditions(conditions)
    present = [label for label in labels if label in set(y_true)]
    rows = []
    for k, name in enumerate(names):
        if progress is not None:
            progress(name, k, len(names))
        t0 = time.time()
        pred, answered = _split_answers(list(predict(degrade_all(signals, name, seed=seed))))
        rec = _recalls(y_true, pred, labels)
        bacc = float(np.mean([rec[label] for label in present])) if present else None
        row = {"name": name, "description": CONDITIONS[name].description, "balanced_accuracy": bacc,
               "recall": rec, "accuracy": float(np.mean([p == y for p, y in zip(pred, y_true, strict=True)])) if pred else None,
               "no_answer": sum(p is None for p in pred)}
        if answered is not None:
            row["at_threshold"] = _at_threshold(y_true, pred, answered, labels)
        rows.append({**row, "seconds": round(time.time() - t0, 1), "predicted": pred})
    clean = rows[0]["balanced_accuracy"]
    for row in rows:
        row["delta"] = None if clean is None or row["balanced_accuracy"] is None else row["balanced_accuracy"] - clean
    return {"n": len(signals), "seed": seed, "labels": list(labels), "y_true": list(y_true),
            "class_counts": {label: sum(y == label for y in y_true) for label in labels}, "conditions": rows}


def paired_condition_difference(report_a: dict[str, Any], report_b: dict[str, Any], conditions: Sequence[str], *,
                                speakers: Sequence[str] | None = None, n_boot: int = 2000,
                                seed: int = 0) -> dict[str, Any]:
    """Model ``a`` minus model ``b``: the mean over ``conditions`` of balanced accuracy, on the same clips
    (two :func:`evaluate_robustness` reports with per-clip ``predicted``), with a paired speaker
    bootstrap: each replicate draws speakers with replacement (``speakers``: one per clip, in order;
    each clip its own speaker when None) and scores both models under every condition on that draw.

    Returns ``a``, ``b``, ``difference`` (point values), ``low`` / ``high`` (95 % percentile interval),
    ``share_not_better`` (replicates where ``a`` does not beat ``b``), ``per_condition`` (``{name:
    {"a", "b"}}``), ``n``, ``n_units``, ``n_boot``."""
    y = list(report_a["y_true"])
    if list(report_b["y_true"]) != y:
        raise ValueError("the two reports are not on the same clips")
    labels = list(report_a["labels"])
    present = [k for k, label in enumerate(labels) if label in set(y)]
    y_idx = np.array([labels.index(v) for v in y])
    groups = np.asarray([str(g) for g in (speakers if speakers is not None else range(len(y)))])
    _, g_idx = np.unique(groups, return_inverse=True)
    n_groups = int(g_idx.max()) + 1
    total = np.stack([np.bincount(g_idx[y_idx == c], minlength=n_groups) for c in present]).astype(float)  # [C, G]

    def correct(report: dict[str, Any], name: str) -> np.ndarray:
        row = next(r for r in report["conditions"] if r["name"] == name)
        hit = np.array([p == t for p, t in zip(row["predicted"], y, strict=True)])
        return np.stack([np.bincount(g_idx[(y_idx == c) & hit], minlength=n_groups) for c in present]).astype(float)

    hits = {(m, c): correct(r, c) for m, r in (("a", report_a), ("b", report_b)) for c in conditions}

    def score(counts: np.ndarray, model: str) -> np.ndarray:  # counts [B, G] -> mean balanced accuracy [B]
        return np.mean([np.mean((counts @ hits[model, c].T) / np.maximum(counts @ total.T, 1e-12), axis=1)
                        for c in conditions], axis=0)

    ones = np.ones((1, n_groups))
    point = {m: float(score(ones, m)[0]) for m in ("a", "b")}
    rng = np.random.default_rng(seed)
    diffs = []
    for start in range(0, n_boot, 500):
        b = min(500, n_boot - start)
        draws = rng.integers(0, n_groups, size=(b, n_groups))
        counts = np.stack([np.bincount(d, minlength=n_groups) for d in draws]).astype(float)
        diffs.append(score(counts, "a") - score(counts, "b"))
    d = np.concatenate(diffs) if diffs else np.array([])
    low, high = np.percentile(d, [2.5, 97.5]) if len(d) else (None, None)
    per = {c: {m: float(np.mean(hits[m, c].sum(axis=1) / total.sum(axis=1))) for m in ("a", "b")} for c in conditions}
    return {"conditions": list(conditions), "a": point["a"], "b": point["b"], "difference": point["a"] - point["b"],
            "low": None if low is None else float(low), "high": None if high is None else float(high),
            "share_not_better": float(np.mean(d <= 0)) if len(d) else None, "per_condition": per,
            "n": len(y), "n_units": n_groups, "n_boot": int(n_boot), "seed": seed}


def robustness_markdown(report: dict[str, Any]) -> list[str]:
    """The report as a Markdown table (condition, balanced accuracy, change from clean, recall per class)."""
    labels = report["labels"]

    def f(x: float | None, sign: bool = False) -> str:
        return "-" if x is None else (f"{x:+.3f}" if sign else f"{x:.3f}")

    lines = ["| condition | balanced acc. | change from clean | " + " | ".join(f"{label} recall" for label in labels) + " |",
             "|---|---|---|" + "---|" * len(labels)]
    for row in report["conditions"]:
        lines.append(f"| {row['description'] if row['name'] != 'clean' else 'clean'} | {f(row['balanced_accuracy'])} | "
                     f"{f(row['delta'], True) if row['name'] != 'clean' else ''} | "
                     + " | ".join(f(row["recall"].get(label)) for label in labels) + " |")
    return lines


def robustness_threshold_markdown(report: dict[str, Any]) -> list[str]:
    """The default threshold under degradation, as a Markdown table: per condition, accuracy when every
    clip is answered beside the share answered at the threshold, the accuracy of those answers, each
    class's recall at the threshold (answered and right) and each class's ``uncertain`` share. Empty
    when the report has no ``at_threshold`` rows."""
    rows = [row for row in report["conditions"] if "at_threshold" in row]
    if not rows:
        return []
    labels = report["labels"]
    cut = report.get("threshold")
    at = "at the default threshold" + (f" {cut:g}" if isinstance(cut, (int, float)) else "")

    def f(x: float | None) -> str:
        return "-" if x is None else f"{x:.3f}"

    lines = [f"| condition | answer all: accuracy | {at}: answered | accuracy of the answered | "
             + " | ".join(f"{label} recall" for label in labels) + " | "
             + " | ".join(f"{label} uncertain" for label in labels) + " |",
             "|---|---|---|---|" + "---|" * (2 * len(labels))]
    for row in rows:
        t = row["at_threshold"]
        lines.append(f"| {row['description'] if row['name'] != 'clean' else 'clean'} | {f(row.get('accuracy'))} | "
                     f"{f(t['coverage'])} | {f(t['accuracy_answered'])} | "
                     + " | ".join(f(t["recall"].get(label)) for label in labels) + " | "
                     + " | ".join(f(t["uncertain"].get(label)) for label in labels) + " |")
    return lines


def robustness_caption(report: dict[str, Any], split: str) -> str:
    """One sentence: on how many clips of which split, per class, with which seed; warns when small."""
    counts = ", ".join(f"{n} {label}" for label, n in report["class_counts"].items())
    small = " Few clips: differences under about 0.05 are within noise." if report["n"] < 200 else ""
    return (f"Measured on {report['n']} {split} clips ({counts}); degraded copies made with seed {report['seed']} "
            f"(`workers/pipeline/degrade.py`).{small}")


def checkpoint_predictor(path: str | Path, *, engine: str = "auto", threads: int | None = None) -> tuple[Predictor, Any]:
    """``(predict, loaded)`` for the checkpoint at ``path``: ``predict(signals)`` runs
    ``classify_batch`` as a job does by default (VAD off, the checkpoint's default threshold) and
    returns each clip's ``(top class, answered)``: the class whatever its confidence (so "answer all"
    gives every clip a class), ``answered`` False where the outcome is ``uncertain``. Whisper probes
    attach their encoder and run on ``engine`` (``auto``: CTranslate2 int8 on a CPU where the probe
    allows it). ``predict(signals, transcripts)`` hands a transcript per clip to a model that reads one
    (a reading fusion fuses where it can follow it, with its ``fused_threshold``)."""
    from models.checkpoint import load_served
    from workers.pipeline.inference import classify_batch

    loaded, _ = load_served(path, engine=engine, threads=threads)

    def predict(signals: list[np.ndarray], transcripts: Sequence[str | None] | None = None) -> list[Answer]:
        out: list[Answer] = []
        for start in range(0, len(signals), 16):
            said = None if transcripts is None else list(transcripts[start:start + 16])
            outcomes = classify_batch(loaded, signals[start:start + 16], vad=False, transcripts=said)
            out.extend((o.predicted_class, o.outcome == "ok") for o in outcomes)
        return out

    return predict, loaded


def default_threshold(loaded: Any) -> float:
    """The threshold a job applies to ``loaded`` when it names none (the calibration's; 0 when absent)."""
    from models.hooks import model_hook

    return float((model_hook(loaded, "calibration") or {}).get("threshold") or 0.0)


def split_clips(training_data: dict[str, Any], split: str, *, limit: int | None = None, corpus: str | None = None,
                seed: int = 0) -> tuple[list[np.ndarray], list[str], list[Any]]:
    """The clips of ``split`` (``train``, ``val`` or ``test``) as the checkpoint's training run made it
    (its stored ``training_data["config"]``: the same manifest, label map and seed give the same
    speaker-disjoint split); see :func:`config_split_clips`."""
    from workers.pipeline.train_config import TrainConfig

    stored = dict(training_data.get("config") or {})
    if not stored.get("manifest"):
        raise ValueError("the checkpoint's training run did not read a manifest; its split cannot be rebuilt here")
    fields = set(TrainConfig.__dataclass_fields__)
    config = TrainConfig(**{k: v for k, v in stored.items() if k in fields and k != "items"})
    return config_split_clips(config, split, limit=limit, corpus=corpus, seed=seed)


def config_split_clips(config: Any, split: str, *, limit: int | None = None, corpus: str | None = None,
                       seed: int = 0) -> tuple[list[np.ndarray], list[str], list[Any]]:
    """The clips of ``split`` of the training run ``config`` (a ``TrainConfig``), optionally only
    ``corpus``'s, at most ``limit`` of them (a seeded draw, stratified by label). Returns
    ``(signals [time] each at 16 kHz, labels, items)``."""
    from workers.pipeline.data import load_item_audio
    from workers.pipeline.train_data import load_items, make_splits

    items = load_items(config)
    labels = list(config.labels) if config.labels else sorted({it.label for it in items})
    items = [it for it in items if it.label in labels]
    idx = [i for i in make_splits(items, config)[split] if corpus is None or items[i].corpus == corpus]
    if limit is not None and len(idx) > limit:
        rng = np.random.default_rng(seed)
        by_label = {label: [i for i in idx if items[i].label == label] for label in labels}
        share = {label: round(limit * len(v) / len(idx)) for label, v in by_label.items()}
        idx = sorted(int(i) for label, v in by_label.items() if v
                     for i in rng.choice(v, size=min(len(v), share[label]), replace=False))
    chosen = [items[i] for i in idx]
    return [load_item_audio(it) for it in chosen], [it.label for it in chosen], chosen


def training_robustness(config: Any, checkpoint: str | Path, *,
                        progress: Callable[[str, int, int], None] | None = None) -> dict[str, Any] | None:
    """A training run's robustness report (``config.robustness``: condition names) on its test split
    (at most ``config.robustness_limit`` clips), scored with the checkpoint it just wrote; None when the
    run asked for none or has no test clips. ``split`` says which split was read."""
    if not config.robustness:
        return None
    signals, y, _items = config_split_clips(config, "test", limit=config.robustness_limit, seed=config.seed)
    if not signals:
        return None
    predict, loaded = checkpoint_predictor(checkpoint)
    report = evaluate_robustness(predict, signals, y, [str(label) for label in loaded.spec.labels],
                                 conditions=config.robustness, seed=config.seed, progress=progress)
    report.update(split="test", threshold=default_threshold(loaded))
    return report
