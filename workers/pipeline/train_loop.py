"""The generic training loop for the window-model families (cnn, resnet, speaker_head,
accent_embed): class-balanced sampling, early stopping on validation balanced accuracy,
calibration on validation, evaluation on the test split; and speaker-grouped cross-validation.
Families with their own trainer (fusion, whisper_probe) are dispatched by
:func:`workers.pipeline.trainers.train_model`, which passes itself to :func:`cross_validate`; this
module imports no other trainer.
Pure Python / numpy / torch: no Django."""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from models.hooks import model_hook
from workers.pipeline.data import (
    balanced_sample_weights,
    hierarchical_sample_weights,
    load_utterances,
)
from workers.pipeline.train_config import (
    DEFAULT_HPARAMS,
    DEFAULT_TASK,
    DEFAULT_WINDOW,
    ProgressFn,
    TrainConfig,
    TrainResult,
)
from workers.pipeline.train_config import emit_progress as _emit
from workers.pipeline.train_data import CachedSource, FrameSource, WaveSource, hash_config, load_items, make_splits
from workers.pipeline.train_report import evaluation_rows, reference_reports, report_for, training_data_summary

logger = logging.getLogger(__name__)


def _set_seed(seed: int) -> None:
    import random

    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _pick_device(name: str | None) -> Any:
    import torch

    if name:
        return torch.device(name)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")



def _balanced_accuracy(y: np.ndarray, pred: np.ndarray, n_classes: int) -> float:
    from workers.pipeline.evaluation import balanced_accuracy

    return balanced_accuracy(y, pred, n_classes)


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)



def _forward_train(model: Any, inputs: Any, y: Any, class_weight: Any, hp: dict[str, Any]) -> tuple[Any, Any]:
    """``(loss, logits)`` of one training batch: the family's own ``train_loss`` hook when its module
    has one (accent_embed's joint losses, speaker_head's head ensemble on cached features), else
    label-smoothed cross-entropy on ``model(inputs)``."""
    import torch

    hook = model_hook(model, "train_loss")
    if hook is not None:
        return hook(inputs, y, class_weight=class_weight, hp=hp)
    logits = model(inputs)
    return torch.nn.functional.cross_entropy(logits, y, weight=class_weight, label_smoothing=0.05), logits


def _eval_logits(model: Any, source: Any, idx: Sequence[int], hop: int, device: Any,
                 batch_windows: int = 64) -> list[np.ndarray]:
    """Window logits ``[n_windows, C]`` per utterance in ``idx`` (a family whose source yields cached
    features scores them with its ``eval_logits`` hook)."""
    import torch

    model.eval()
    score = model_hook(model, "eval_logits") or model
    out = []
    with torch.inference_mode():
        for i in idx:
            out.append(score(source.eval_inputs(i, hop, device)).float().cpu().numpy())
    return out


def _eval_embeddings(model: Any, source: Any, idx: Sequence[int], hop: int, device: Any) -> np.ndarray:
    """Utterance embeddings ``[n, d]`` (mean of window embeddings, re-normalised)."""
    import torch

    model.eval()
    out = []
    with torch.inference_mode():
        for i in idx:
            e = model.embed(source.eval_inputs(i, hop, device)).float().cpu().numpy().mean(axis=0)
            out.append(e / max(np.linalg.norm(e), 1e-12))
    return np.stack(out)


def _utterance_proba(window_logits: list[np.ndarray], calibration: dict[str, Any] | None) -> np.ndarray:
    """Mean of calibrated window probabilities per utterance ``[n, C]`` (what inference does)."""
    from workers.pipeline.calibration import calibrate

    return np.stack([calibrate(wl, calibration).mean(axis=0) for wl in window_logits])



def train_window_model(config: TrainConfig, *, progress: ProgressFn | None = None) -> TrainResult:
    """Train, calibrate, evaluate and (optionally) save one model of a window family (the registry's
    ``trainer="window"``; :func:`workers.pipeline.trainers.train_model` picks the trainer).

    Parameters
    ----------
    config : TrainConfig
        The run's settings.
    progress : callable, optional
        ``progress(stage, done, total, info)``.

    Returns
    -------
    TrainResult
        Checkpoint path and sha256 (when ``config.out`` is set), spec, calibration, metrics
        (``val``, ``test`` evaluation reports, ``history``) and the trained model.
    """
    import torch

    from models.checkpoint import build_model, save_checkpoint
    from models.specs import ModelSpec
    from workers.pipeline.calibration import fit_calibration

    t_start = time.time()
    if config.num_threads:
        torch.set_num_threads(int(config.num_threads))
    _set_seed(config.seed)
    device = _pick_device(config.device)
    family = config.family
    if family not in DEFAULT_HPARAMS:
        raise ValueError(f"unknown family {family!r}; expected one of {sorted(DEFAULT_HPARAMS)}")
    hp = {**DEFAULT_HPARAMS[family], **(config.hparams or {})}
    if not config.augment and "specaug" in hp:
        hp["specaug"] = False
    window_s, hop_s = DEFAULT_WINDOW[family]
    window_s = float(config.window_s or window_s)
    hop_s = float(config.hop_s or hop_s)
    W, H = int(round(window_s * 16000)), int(round(hop_s * 16000))

    items = load_items(config)
    labels = list(config.labels) if config.labels else sorted({it.label for it in items})
    items = [it for it in items if it.label in labels]
    splits = make_splits(items, config)
    if not splits["train"] or not splits["val"]:
        sizes = {k: len(v) for k, v in splits.items()}
        raise ValueError(f"not enough speakers to train and validate: {sizes}")
    n_classes = len(labels)
    task = config.task or DEFAULT_TASK.get(family, "classify")

    _emit(progress, "load", 0, len(items))
    utts = load_utterances(items, labels, max_seconds=config.max_seconds,
                           progress=lambda d, t: _emit(progress, "load", d, t))
    spec = ModelSpec(
        name=config.name, version=config.version, family=family, task=task, labels=tuple(labels),
        sample_rate=16000, window_s=window_s, hop_s=hop_s,
        embedding_dim=int(hp.get("hidden") or hp.get("embedding_dim") or 0) or None,
        extra={"band_limit_hz": hp.get("band_limit_hz"), "label_column": config.label_column,
               "label_map": config.label_map, "normalisation": "per-utterance RMS -25 dBFS, per-window RMS + CMVN"},
    )
    model = build_model(spec, hp).to(device)
    if model_hook(model, "embedding_dim") and model_hook(model, "train_source") == "frames":
        spec = ModelSpec(**{**spec.__dict__, "embedding_dim": model.embedding_dim})  # the size the network chose

    train_idx, val_idx, test_idx = splits["train"], splits["val"], splits["test"]
    # how the family sees its data (the module's ``train_source``): waveform windows, cached frame
    # features, or cached frozen-encoder features (see workers/pipeline/train_data.py)
    kind = model_hook(model, "train_source")
    if kind == "cached":
        tag = hash_config([hp.get("band_limit_hz"), hp.get("pool_layers"), hp.get("use_embedding"), W, H, config.seed, "v1"])
        source: Any = CachedSource(utts, model, W, H, set(train_idx), config.n_aug_copies, config.augment,
                                    config.seed, config.cache_dir, tag, device, progress)
    elif kind == "frames":
        source = FrameSource(utts, W, config.augment, config.seed, config.cache_dir, hp.get("band_limit_hz"), progress)
    else:
        source = WaveSource(utts, W, config.augment, config.seed)

    unit_labels, unit_groups = source.train_units(train_idx)
    if config.balance == "corpus":
        spk_corpus = {u.speaker: u.corpus for u in utts}
        weights = hierarchical_sample_weights(unit_labels, [spk_corpus[g] for g in unit_groups], unit_groups)
    else:
        weights = balanced_sample_weights(unit_labels, unit_groups)
    units = np.arange(len(unit_labels))
    steps = config.steps_per_epoch or max(config.min_steps_per_epoch, int(np.ceil(len(unit_labels) / config.batch_size)))
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    total_steps = steps * config.epochs
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=config.lr, total_steps=total_steps, pct_start=0.15)
    rng = np.random.default_rng(config.seed)
    y_val = np.array([utts[i].label for i in val_idx])
    sel = np.array([config.select_corpus is None or utts[i].corpus == config.select_corpus for i in val_idx])
    if not sel.any():
        raise ValueError(f"no validation items from corpus {config.select_corpus!r}")

    history: list[dict[str, Any]] = []
    best = (-1.0, float("inf"))
    best_state: dict[str, Any] | None = None
    best_epoch, bad = -1, 0
    for epoch in range(config.epochs):
        model.train()
        t0 = time.time()
        losses, correct, seen = [], 0, 0
        for _ in range(steps):
            pick = rng.choice(units, size=config.batch_size, replace=True, p=weights)
            inputs = source.batch(pick, device)
            y = torch.as_tensor(unit_labels[pick], device=device, dtype=torch.long)
            loss, logits = _forward_train(model, inputs, y, None, hp)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 5.0)
            opt.step()
            sched.step()
            losses.append(loss.item())
            correct += int((logits.argmax(1) == y).sum())
            seen += len(pick)
        val_logits = _eval_logits(model, source, val_idx, H, device)
        val_proba = _utterance_proba(val_logits, None)
        val_bacc = _balanced_accuracy(y_val[sel], val_proba[sel].argmax(1), n_classes)
        val_nll = float(-np.mean(np.log(np.clip(val_proba[np.arange(len(y_val)), y_val][sel], 1e-9, 1))))
        rec = {"epoch": epoch, "loss": float(np.mean(losses)), "train_acc": correct / max(seen, 1),
               "val_balanced_accuracy": val_bacc, "val_nll": val_nll, "seconds": time.time() - t0}
        history.append(rec)
        logger.info("epoch %d %s", epoch, rec)
        _emit(progress, "train", epoch + 1, config.epochs, rec)
        if (val_bacc, -val_nll) > (best[0], -best[1]):
            best, best_epoch, bad = (val_bacc, val_nll), epoch, 0
            best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        else:
            bad += 1
            if bad >= config.patience:
                break
    assert best_state is not None
    model.load_state_dict(best_state)
    model.eval()

    # calibration on validation (window-level temperature; confidence threshold on utterances)
    val_logits = _eval_logits(model, source, val_idx, H, device)
    win_logits = np.concatenate(val_logits)
    win_y = np.concatenate([[utts[i].label] * len(wl) for i, wl in zip(val_idx, val_logits, strict=True)])
    train_prior = [1.0 / n_classes] * n_classes  # balanced sampling: the effective training prior
    deploy_prior = config.deploy_prior or [1.0 / n_classes] * n_classes
    win_speakers = [utts[i].speaker for i, wl in zip(val_idx, val_logits, strict=True) for _ in range(len(wl))]
    calibration = fit_calibration(win_logits, win_y, train_prior=train_prior, deploy_prior=deploy_prior, speakers=win_speakers)
    from workers.pipeline.calibration import default_threshold

    val_proba = _utterance_proba(val_logits, calibration)
    calibration.update(default_threshold(val_proba, y_val))
    calibration["fitted_on"] = "validation speakers"

    metrics: dict[str, Any] = {
        "best_epoch": best_epoch,
        "val_balanced_accuracy": best[0],
        "val": report_for([labels[k] for k in y_val], val_proba, labels, [utts[i] for i in val_idx], n_boot=0),
        "history": history,
        "val_predictions": evaluation_rows(items, utts, val_idx, val_proba, labels),
    }
    if config.evaluate and test_idx:
        _emit(progress, "evaluate", 0, len(test_idx))
        test_logits = _eval_logits(model, source, test_idx, H, device)
        test_proba = _utterance_proba(test_logits, calibration)
        metrics["test"] = report_for([labels[utts[i].label] for i in test_idx], test_proba, labels,
                                  [utts[i] for i in test_idx], n_boot=config.n_boot, seed=config.seed)
        if task == "embed" or DEFAULT_TASK.get(family) == "embed":
            from workers.pipeline.embedding_evaluation import embedding_report

            emb = _eval_embeddings(model, source, test_idx, H, device)
            metrics["test_embedding"] = embedding_report(emb, [labels[utts[i].label] for i in test_idx],
                                                         [utts[i].speaker for i in test_idx])
        metrics["test_predictions"] = evaluation_rows(items, utts, test_idx, test_proba, labels)
        if config.references:
            _emit(progress, "references", 0, 1)
            metrics["references"] = reference_reports([utts[i] for i in train_idx + val_idx],
                                                      [utts[i] for i in test_idx], test_proba, labels, config)
            _emit(progress, "references", 1, 1)
    training_data = training_data_summary(
        config, items, splits, labels, seconds=time.time() - t_start,
        data_prior=[float(np.mean([utts[i].label == c for i in train_idx])) for c in range(n_classes)])
    sha = None
    if config.out:
        sha = save_checkpoint(config.out, model=model.cpu(), spec=spec, calibration=calibration, hparams=hp,
                              metrics=metrics, training_data=training_data)
        model.to(device)
    _emit(progress, "done", 1, 1, {"checkpoint": config.out, "sha256": sha})
    return TrainResult(config.out, sha, spec, calibration, metrics, history, best_epoch, model)


def cross_validate(config: TrainConfig, k: int = 5, *, train: Callable[..., TrainResult],
                   progress: ProgressFn | None = None) -> dict[str, Any]:
    """Speaker-grouped k-fold cross-validation over the train + validation speakers, for choosing
    between configurations without touching the test split (which is left out entirely).

    Each fold trains ``config`` on the other folds and early-stops on this one, as a normal run
    early-stops on its validation split (so every fold score carries the same small optimism, and
    candidates compare fairly). With ~500 pooled speakers, a fold holds ~100, and the mean over
    folds rests on all of them instead of one validation slice.

    ``train(config, progress=...)`` trains one fold: the family's trainer
    (:func:`workers.pipeline.trainers.cross_validate` passes :func:`~workers.pipeline.trainers.train_model`).

    Returns
    -------
    dict
        ``folds``: per fold ``{"speakers", "items", "balanced_accuracy", "per_corpus", "best_epoch"}``;
        ``mean`` / ``std`` of the balanced accuracy, ``per_corpus_mean``, ``k``; ``predictions``: the
        out-of-fold prediction of every pooled utterance (for stacking or error analysis).
    """

    from workers.pipeline.data import speaker_folds

    items = load_items(config)
    labels = list(config.labels) if config.labels else sorted({it.label for it in items})
    items = [it for it in items if it.label in labels]
    splits = make_splits(items, config)
    pool = sorted(splits["train"] + splits["val"])
    folds = speaker_folds(items, pool, k, seed=config.seed)
    out: list[dict[str, Any]] = []
    oof: list[dict[str, Any]] = []  # out-of-fold predictions: every pooled utterance, scored by the fold that held it out
    for j, held in enumerate(folds):
        held_set = set(held)
        fold_items = [replace(items[i], split="val" if i in held_set else "train") for i in pool]
        c = copy.copy(config)
        c.items, c.manifest, c.label_map, c.corpora, c.labels = fold_items, None, None, None, labels
        c.out, c.evaluate, c.test_corpora, c.hold_out_val = None, False, None, True
        result = train(c, progress=progress)
        val = result.metrics.get("val") or {}
        oof.extend({**row, "fold": j} for row in result.metrics.get("val_predictions") or [])
        out.append({
            "fold": j, "items": len(held), "speakers": len({items[i].speaker for i in held}),
            "balanced_accuracy": result.metrics.get("val_balanced_accuracy"), "best_epoch": result.best_epoch,
            "per_corpus": {name: r.get("balanced_accuracy") for name, r in (val.get("per_corpus") or {}).items()},
        })
        logger.info("fold %d/%d: %s", j + 1, k, out[-1])
    scores = np.array([f["balanced_accuracy"] for f in out], dtype=float)
    corpora = sorted({name for f in out for name in f["per_corpus"]})
    per_corpus = {
        name: float(np.nanmean([np.nan if f["per_corpus"].get(name) is None else f["per_corpus"][name] for f in out]))
        for name in corpora
    }
    return {"k": k, "folds": out, "mean": float(scores.mean()), "std": float(scores.std(ddof=1)) if k > 1 else 0.0,
            "per_corpus_mean": per_corpus, "predictions": oof}
