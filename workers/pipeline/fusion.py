"""Training the ``phonetic_fusion`` family: a window model stacked with phone-recogniser features.

1. The window model (``hparams["base_family"]``, default ``speaker_head``) is trained on the train
   split exactly as :func:`workers.pipeline.training.train_model` trains it alone.
2. Speaker-grouped k-fold cross-validation of the same recipe over train + validation gives an
   out-of-fold (OOF) utterance probability for every one of those recordings: what the window
   model says about speakers it never saw.
3. Phone features (``workers.pipeline.phones``) are computed for every recording (cached on disk).
4. A logistic regression over ``[log OOF probability, phone features]`` (standardised; L2 strength
   chosen by speaker-grouped CV on the OOF rows, class-balanced) is fitted on all OOF rows and
   installed in the model. Its own cross-fitted predictions give the confidence threshold and the
   ``fusion_cv`` numbers (fused against window model alone, overall and per corpus), which never
   touch the test split.
5. Validation and test reports apply the fusion to the step-1 model's calibrated window means.
"""
from __future__ import annotations

import contextlib
import copy
import json
import logging
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from workers.pipeline.data import load_utterances
from workers.pipeline.training import (
    ProgressFn,
    TrainConfig,
    TrainResult,
    _balanced_accuracy,
    _emit,
    cross_validate,
    load_items,
    prediction_key,
    train_model,
)

logger = logging.getLogger(__name__)

C_GRID = (0.003, 0.01, 0.03, 0.1, 0.3)
FEATURE_CACHE_VERSION = "phones-v1"


def _phone_features_for(utts: list[Any], cache_dir: str, progress: ProgressFn | None, workers: int = 1) -> np.ndarray:
    """``[n, F]`` phone features of utterances, cached per utterance key."""
    from workers.pipeline.phones import FEATURE_NAMES, phone_features

    folder = Path(cache_dir) / FEATURE_CACHE_VERSION
    folder.mkdir(parents=True, exist_ok=True)
    out = np.zeros((len(utts), len(FEATURE_NAMES)))
    todo = []
    for i, u in enumerate(utts):
        path = folder / f"{u.key}-{len(u.samples)}.npy"
        if path.exists():
            out[i] = np.load(path)
        else:
            todo.append((i, path))
    _emit(progress, "phones", len(utts) - len(todo), len(utts))
    pool: Any = contextlib.nullcontext()
    if len(todo) > 1 and workers > 1:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        # spawn, not fork: this process has started torch's thread pools
        pool = ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn"))
    with pool:
        mapper = map if isinstance(pool, contextlib.nullcontext) else pool.map
        for n, ((i, path), f) in enumerate(zip(todo, mapper(phone_features, [utts[i].samples for i, _ in todo]), strict=True)):
            out[i] = f
            np.save(path, f)
            _emit(progress, "phones", len(utts) - len(todo) + n + 1, len(utts))
    return out


def _lr(c: float, seed: int) -> Any:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=5000, class_weight="balanced",
                                                              random_state=seed))


def _cross_fit(x: np.ndarray, y: np.ndarray, groups: np.ndarray, c: float, seeds: int, k: int) -> list[np.ndarray]:
    """Cross-fitted probabilities of ``_lr(c)``, one ``[n, C]`` array per seed (speaker-grouped folds)."""
    from sklearn.model_selection import StratifiedGroupKFold

    outs = []
    for seed in range(seeds):
        proba = np.zeros((len(y), len(np.unique(y))))
        for tr, te in StratifiedGroupKFold(k, shuffle=True, random_state=seed).split(x, y, groups):
            proba[te] = _lr(c, seed).fit(x[tr], y[tr]).predict_proba(x[te])
        outs.append(proba)
    return outs


def _scores(proba_runs: list[np.ndarray], y: np.ndarray, corpora: np.ndarray, n_classes: int) -> dict[str, Any]:
    """Mean balanced accuracy over runs, overall and per corpus."""
    out: dict[str, Any] = {"overall": float(np.mean([_balanced_accuracy(y, p.argmax(1), n_classes) for p in proba_runs]))}
    out["per_corpus"] = {
        c: float(np.mean([_balanced_accuracy(y[corpora == c], p[corpora == c].argmax(1), n_classes) for p in proba_runs]))
        for c in sorted(set(corpora))
    }
    return out


def train_phonetic_fusion(config: TrainConfig, *, progress: ProgressFn | None = None, folds: int = 5,
                          cv_seeds: int = 3) -> TrainResult:
    """Train a ``phonetic_fusion`` model (see the module docstring); same inputs and outputs as
    :func:`workers.pipeline.training.train_model`."""
    from models.checkpoint import save_checkpoint
    from models.phonetic_fusion import PhoneticFusion, fusion_inputs
    from models.specs import ModelSpec
    from workers.pipeline.calibration import fit_confidence_threshold
    from workers.pipeline.evaluation import evaluation_report
    from workers.pipeline.phones import FEATURE_NAMES
    from workers.pipeline.training import make_splits

    hp_in = dict(config.hparams or {})
    base_family = hp_in.pop("base_family", "speaker_head")
    items = load_items(config)
    labels = list(config.labels) if config.labels else sorted({it.label for it in items})
    items = [it for it in items if it.label in labels]
    n_classes = len(labels)
    splits = make_splits(items, config)
    pool = splits["train"] + splits["val"]
    per_class = [len({items[i].speaker for i in pool if items[i].label == lab}) for lab in labels]
    folds = max(2, min(folds, min(per_class)))  # every fold needs speakers of every class
    base_cfg = copy.copy(config)
    base_cfg.family, base_cfg.hparams, base_cfg.n_boot = base_family, hp_in, 0

    # 1. the window model on the train split (its sidecar gives hparams and the data description)
    with tempfile.TemporaryDirectory() as tmp:
        base_cfg.out = str(Path(tmp) / "base.pt")
        base = train_model(base_cfg, progress=progress)
        side = json.loads(Path(base_cfg.out).with_suffix(".json").read_text())
    base_hp, training_data = side["hparams"], side["training_data"]
    # 2. out-of-fold window-model probabilities over train + validation
    cv_cfg = copy.copy(base_cfg)
    cv_cfg.out = None
    cv = cross_validate(cv_cfg, folds, progress=progress)
    oof = cv["predictions"]

    # 3. phone features of every recording the reports need
    by_key = {prediction_key(it): it for it in items}
    wanted = {r["key"] for r in oof} | {r["key"] for r in base.metrics.get("val_predictions", [])}
    wanted |= {r["key"] for r in base.metrics.get("test_predictions", [])}
    keyed = [by_key[k] for k in sorted(wanted)]
    utts = load_utterances(keyed, labels, max_seconds=config.max_seconds)
    feats = _phone_features_for(utts, config.cache_dir, progress, workers=max(1, int(config.num_threads or 1)))
    feat_of = {prediction_key(it): f for it, f in zip(keyed, feats, strict=True)}

    def design(rows: list[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Fusion input, labels, speakers, corpora and the window model's probabilities of ``rows``."""
        p = np.array([r["proba"] for r in rows], dtype=np.float64)
        x = fusion_inputs(p, np.array([feat_of[r["key"]] for r in rows]))
        y = np.array([labels.index(r["label"]) for r in rows])
        return x, y, np.array([r["speaker"] for r in rows]), np.array([r["corpus"] for r in rows]), p

    # 4. the fusion layer: C by speaker-grouped CV on the OOF rows, then fitted on all of them
    x, y, groups, corpora, p_oof = design(oof)
    _emit(progress, "fusion", 0, len(C_GRID))
    by_c = {}
    for n, c in enumerate(C_GRID):
        by_c[c] = _cross_fit(x, y, groups, c, cv_seeds, folds)
        _emit(progress, "fusion", n + 1, len(C_GRID))
    c_scores = {c: float(np.mean([_balanced_accuracy(y, p.argmax(1), n_classes) for p in runs])) for c, runs in by_c.items()}
    best_c = max(C_GRID, key=c_scores.get)
    fused_cv = _scores(by_c[best_c], y, corpora, n_classes)
    alone_cv = _scores([p_oof], y, corpora, n_classes)
    threshold, coverage = fit_confidence_threshold(by_c[best_c][0], y)
    lr = _lr(best_c, config.seed).fit(x, y)
    scaler, logreg = lr.named_steps["standardscaler"], lr.named_steps["logisticregression"]

    spec = ModelSpec(**{**base.spec.__dict__, "family": "phonetic_fusion",
                        "extra": {**base.spec.extra, "phone_features": "pocketsphinx en-us allphone, 3.8 kHz low-pass"}})
    model = PhoneticFusion(base.model.cpu(), n_classes, len(FEATURE_NAMES))
    model.set_fusion(scaler.mean_, scaler.scale_, logreg.coef_, logreg.intercept_)
    model.eval()
    calibration = {**base.calibration, "threshold": threshold, "coverage_at_threshold": coverage,
                   "fusion": {"C": best_c, "fitted_on": f"out-of-fold window-model probabilities, {folds}-fold "
                                                       "speaker-grouped CV over train + validation"}}

    # 5. reports: the fusion applied to the step-1 window model's calibrated means
    def report(rows: list[dict[str, Any]], n_boot: int) -> tuple[dict[str, Any], np.ndarray]:
        _, y_r, spk, corp, p = design(rows)
        fused = model.fuse(p, np.array([feat_of[r["key"]] for r in rows]))
        return evaluation_report([labels[k] for k in y_r], fused, labels, speakers=list(spk), corpora=list(corp),
                                 n_boot=n_boot, seed=config.seed), fused

    val_rep, _ = report(base.metrics["val_predictions"], 0)
    metrics: dict[str, Any] = {
        "best_epoch": base.best_epoch,
        "val_balanced_accuracy": val_rep.get("balanced_accuracy"),
        "val": val_rep,
        "history": base.history,
        "fusion_cv": {"folds": folds, "seeds": cv_seeds, "C": best_c, "fused": fused_cv, "window_model_alone": alone_cv,
                      "c_grid": {str(c): v for c, v in c_scores.items()}},
        "window_model": {"val": base.metrics.get("val", {}).get("balanced_accuracy"),
                         "test": (base.metrics.get("test") or {}).get("balanced_accuracy"),
                         "test_per_corpus": {k: v.get("balanced_accuracy") for k, v in
                                             ((base.metrics.get("test") or {}).get("per_corpus") or {}).items()}},
    }
    if config.evaluate and base.metrics.get("test_predictions"):
        rows = base.metrics["test_predictions"]
        metrics["test"], fused = report(rows, config.n_boot)
        metrics["test_predictions"] = [{**r, "proba": [round(float(v), 5) for v in f]} for r, f in zip(rows, fused, strict=True)]
    hparams = {"base_family": base_family, "base": base_hp, "n_features": len(FEATURE_NAMES),
               "feature_names": list(FEATURE_NAMES), "C": best_c}
    training_data = {**training_data, "config": config.to_dict()}
    sha = None
    if config.out:
        sha = save_checkpoint(config.out, model=model, spec=spec, calibration=calibration, hparams=hparams,
                              metrics=metrics, training_data=training_data)
    _emit(progress, "done", 1, 1, {"checkpoint": config.out, "sha256": sha})
    return TrainResult(config.out, sha, spec, calibration, metrics, base.history, base.best_epoch, model)

