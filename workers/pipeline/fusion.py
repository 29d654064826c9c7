"""Training the fusion families: a window model stacked with utterance-level features.

``phonetic_fusion``
    Phone-recogniser features (``workers.pipeline.phones``: a phone loop, no text needed), for
    every recording.
``reading_fusion``
    Reading features (``workers.pipeline.reading``: the recording aligned to the text the speaker
    read, goodness of pronunciation per phone, reading rate), for recordings whose transcript is
    known (a manifest ``transcript`` column, ``--prompt CORPUS=FILE``, or ``Recording.transcript``).
    Recordings without one are scored by the window model alone, so it never does worse than the
    window model where it has no transcript.

1. The window model (``hparams["base_family"]``, default ``speaker_head``) is trained on the train
   split exactly as :func:`workers.pipeline.training.train_model` trains it alone, or, with
   ``hparams["base_checkpoint"]``, an existing checkpoint is used unchanged (its recipe, read from
   the checkpoint, drives step 2).
2. Speaker-grouped k-fold cross-validation of the same recipe over train + validation gives an
   out-of-fold (OOF) utterance probability for every one of those recordings: what the window
   model says about speakers it never saw.
3. The features are computed for every recording that has them (cached on disk).
4. A logistic regression over ``[log OOF probability, features]`` (standardised, missing values at
   the mean; L2 strength chosen by speaker-grouped CV on the OOF rows, class-balanced) is fitted
   on all OOF rows that have features and installed in the model. Its own cross-fitted
   predictions give the confidence threshold and the ``fusion_cv`` numbers (fused against window
   model alone, overall and per corpus, on the same rows), which never touch the test split.
5. Validation and test reports apply the fusion to the step-1 model's calibrated window means.
"""
from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import logging
import tempfile
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from models.registry import FAMILIES
from workers.pipeline.data import load_utterances
from workers.pipeline.evaluation import balanced_accuracy as _balanced_accuracy
from workers.pipeline.train_config import ProgressFn, TrainConfig, TrainResult
from workers.pipeline.train_config import emit_progress as _emit
from workers.pipeline.train_data import load_items
from workers.pipeline.train_loop import cross_validate
from workers.pipeline.train_report import prediction_key, reference_reports

logger = logging.getLogger(__name__)

C_GRID = (0.003, 0.01, 0.03, 0.1, 0.3)
#: what each fusion family stacks on the window model (its registry entry's ``fuses``)
KINDS = {name: family.fuses for name, family in FAMILIES.items() if family.fuses}
FEATURE_CACHE_VERSION = {"phones": "phones-v1", "reading": "reading-v3"}
#: training settings a ``base_checkpoint``'s own recipe supplies to the cross-validation
RECIPE_KEYS = ("window_s", "hop_s", "epochs", "batch_size", "steps_per_epoch", "lr", "weight_decay", "patience",
               "augment", "n_aug_copies", "balance", "select_corpus", "deploy_prior", "max_seconds")


def feature_names(kind: str, passage_words: int = 0) -> list[str]:
    if kind == "phones":
        from workers.pipeline.phones import FEATURE_NAMES

        return list(FEATURE_NAMES)
    from workers.pipeline.reading import fusion_feature_names

    return fusion_feature_names(passage_words)


def _phone_job(samples: np.ndarray) -> np.ndarray:
    from workers.pipeline.phones import phone_features

    return phone_features(samples, 16000)


def _reading_job(args: tuple[np.ndarray, str, list[str]]) -> np.ndarray:
    from workers.pipeline.reading import fusion_features

    return fusion_features(args[0], 16000, args[1], args[2])[0]


def _features_for(kind: str, utts: list[Any], transcripts: list[str], cache_dir: str, progress: ProgressFn | None,
                  workers: int = 1, passage: list[str] | None = None) -> np.ndarray:
    """``[n, F]`` features of utterances, cached per utterance (and transcript, and passage); rows
    that cannot have features (``reading`` without a transcript) are NaN."""
    passage = list(passage or [])
    folder = Path(cache_dir) / FEATURE_CACHE_VERSION[kind]
    folder.mkdir(parents=True, exist_ok=True)
    out = np.full((len(utts), len(feature_names(kind, len(passage)))), np.nan)
    todo = []
    for i, (u, text) in enumerate(zip(utts, transcripts, strict=True)):
        if kind == "reading" and not text:
            continue
        tag = "" if kind == "phones" else "-" + hashlib.sha1(" ".join([text, "|", *passage]).encode()).hexdigest()[:12]
        path = folder / f"{u.key}-{len(u.samples)}{tag}.npy"
        if path.exists():
            out[i] = np.load(path)
        else:
            todo.append((i, path))
    _emit(progress, kind, len(utts) - len(todo), len(utts))
    pool: Any = contextlib.nullcontext()
    if len(todo) > 1 and workers > 1:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        # spawn, not fork: this process has started torch's thread pools
        pool = ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn"))
    job, args = ((_phone_job, [utts[i].samples for i, _ in todo]) if kind == "phones"
                 else (_reading_job, [(utts[i].samples, transcripts[i], passage) for i, _ in todo]))
    with pool:
        mapper = map if isinstance(pool, contextlib.nullcontext) else pool.map
        for n, ((i, path), f) in enumerate(zip(todo, mapper(job, args), strict=True)):
            out[i] = f
            np.save(path, f)
            _emit(progress, kind, len(utts) - len(todo) + n + 1, len(utts))
    return out


def _passage(transcripts: list[str], n_words: int) -> list[str]:
    """The first ``n_words`` dictionary words that every transcript of the training pool begins
    with ([] when ``n_words`` is 0); a passage model needs one passage."""
    if not n_words:
        return []
    from workers.pipeline.reading import dictionary_words

    starts = {tuple(dictionary_words(t)[0][:n_words]) for t in transcripts if t}
    if len(starts) != 1 or len(next(iter(starts))) < n_words:
        raise ValueError(f"passage_words={n_words} needs every transcribed training recording to begin with the same "
                         f"{n_words} words; found {len(starts)} different beginnings")
    return list(next(iter(starts)))


def _lr(c: float, seed: int) -> Any:
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    # the scaler ignores missing values when it fits; they become 0 after it: the training mean (a
    # feature never observed, such as a phone the prompt lacks, stays, at 0, so columns keep their place)
    return make_pipeline(StandardScaler(), SimpleImputer(strategy="constant", fill_value=0.0, keep_empty_features=True),
                         LogisticRegression(C=c, max_iter=5000, class_weight="balanced", random_state=seed))


def _fit(c: float, seed: int, x: np.ndarray, y: np.ndarray) -> Any:
    """``_lr(c)`` fitted; a feature never observed in ``x`` (all NaN) is expected, not warned about."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return _lr(c, seed).fit(x, y)


def _cross_fit(x: np.ndarray, y: np.ndarray, groups: np.ndarray, c: float, seeds: int, k: int) -> list[np.ndarray]:
    """Cross-fitted probabilities of ``_lr(c)``, one ``[n, C]`` array per seed (speaker-grouped folds)."""
    from sklearn.model_selection import StratifiedGroupKFold

    outs = []
    for seed in range(seeds):
        proba = np.zeros((len(y), len(np.unique(y))))
        for tr, te in StratifiedGroupKFold(k, shuffle=True, random_state=seed).split(x, y, groups):
            proba[te] = _fit(c, seed, x[tr], y[tr]).predict_proba(x[te])
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


def _read_base(path: str) -> dict[str, Any]:
    """An existing window-model checkpoint: the model as trained (not inference-optimised) and the
    loaded one, for predictions. A ``reading_fusion`` checkpoint stands for the window model inside
    it (its calibration, hyper-parameters and training recipe are kept beside the fusion's), so a
    fusion can be rebuilt from the file it replaced."""
    from models.checkpoint import LoadedModel, load_checkpoint, read_checkpoint
    from models.specs import ModelSpec

    raw = read_checkpoint(path)
    from models.registry import get_family

    family = raw["spec"].family
    if get_family(family).uses_transcript:  # a reading_fusion file: its window model is the base
        hp, td = raw["hparams"], raw["training_data"]
        spec = ModelSpec(**{**raw["spec"].__dict__, "family": hp["base_family"]})
        calibration = {k: v for k, v in raw["calibration"].items()
                       if k not in ("fused_threshold", "fused_coverage_at_threshold", "fusion")}
        model = raw["model"].base.eval()
        return {"model": model, "spec": spec, "calibration": calibration, "hparams": hp["base"],
                "metrics": {"history": raw["metrics"].get("history", []), "best_epoch": raw["metrics"].get("best_epoch")},
                "training_data": {**td, "config": td.get("base_config") or {}},
                "loaded": LoadedModel(model=model, spec=spec, calibration=calibration)}
    if family in KINDS:
        raise ValueError(f"{path}: base_checkpoint must be a window model or a reading_fusion, not {family}")
    return {**raw, "loaded": load_checkpoint(path)}


def _checkpoint_predictions(loaded: Any, items: list[Any], idx: list[int], labels: list[str],
                            max_seconds: float | None) -> list[dict[str, Any]]:
    """``val_predictions``-style rows of an existing model on ``items[idx]``: the inference path
    (all windows, no VAD), which is what deployment runs."""
    from workers.pipeline.inference import classify_batch

    chosen = [items[i] for i in idx]
    utts = load_utterances(chosen, labels, max_seconds=max_seconds)
    results = classify_batch(loaded, [u.samples for u in utts], vad=False)
    return [{"key": prediction_key(it), "speaker": it.speaker, "corpus": it.corpus, "label": it.label,
             "proba": [round(float(res.probabilities[lab]), 5) for lab in labels]}
            for it, res in zip(chosen, results, strict=True)]


def train_fusion(config: TrainConfig, *, train: Callable[..., TrainResult], progress: ProgressFn | None = None,
                 folds: int = 5, cv_seeds: int = 3) -> TrainResult:
    """Train a ``phonetic_fusion`` or ``reading_fusion`` model (see the module docstring); same
    inputs and outputs as :func:`workers.pipeline.training.train_model`. ``train(config, progress=...)``
    trains the window model (any trainable family): :func:`workers.pipeline.trainers.train_model`
    passes itself, so this module never reaches back for the dispatch."""
    from models.checkpoint import save_checkpoint
    from models.phonetic_fusion import FUSION_CLASSES, fusion_inputs
    from models.specs import ModelSpec
    from workers.pipeline.calibration import default_threshold
    from workers.pipeline.evaluation import evaluation_report
    from workers.pipeline.reading import passage_matches
    from workers.pipeline.train_data import make_splits

    family = config.family
    kind = KINDS[family]
    hp_in = dict(config.hparams or {})
    base_family = hp_in.pop("base_family", "speaker_head")
    base_checkpoint = hp_in.pop("base_checkpoint", None)
    passage_words = int(hp_in.pop("passage_words", 0) or 0)
    if passage_words and kind != "reading":
        raise ValueError("passage_words applies to reading_fusion only")
    items = load_items(config)
    labels = list(config.labels) if config.labels else sorted({it.label for it in items})
    items = [it for it in items if it.label in labels]
    n_classes = len(labels)
    splits = make_splits(items, config)
    pool = splits["train"] + splits["val"]
    base_cfg = copy.copy(config)
    base_cfg.family, base_cfg.hparams, base_cfg.n_boot = base_family, hp_in, 0
    base_cfg.references = False  # the references are compared with the fused model below

    # 1. the window model: trained on the train split, or an existing checkpoint as it is
    if base_checkpoint:
        base = _read_base(str(base_checkpoint))
        if list(base["spec"].labels) != labels:
            raise ValueError(f"base_checkpoint classes {list(base['spec'].labels)} differ from {labels}")
        recipe = (base["training_data"].get("config") or {})
        for key in RECIPE_KEYS:
            if key in recipe:
                setattr(base_cfg, key, recipe[key])
        base_cfg.family, base_cfg.hparams = base["spec"].family, dict(base["hparams"])
        base_cfg.window_s, base_cfg.hop_s = base["spec"].window_s, base["spec"].hop_s
        base_model, base_spec, base_cal, base_hp = base["model"], base["spec"], base["calibration"], base["hparams"]
        base_history, base_best_epoch = base["metrics"].get("history", []), base["metrics"].get("best_epoch")
        training_data = dict(base["training_data"])
        val_rows = _checkpoint_predictions(base["loaded"], items, splits["val"], labels, config.max_seconds)
        test_rows = (_checkpoint_predictions(base["loaded"], items, splits["test"], labels, config.max_seconds)
                     if config.evaluate and splits["test"] else [])
        base_val_bacc = None
    else:
        with tempfile.TemporaryDirectory() as tmp:
            base_cfg.out = str(Path(tmp) / "base.pt")
            trained = train(base_cfg, progress=progress)
            side = json.loads(Path(base_cfg.out).with_suffix(".json").read_text())
        base_model, base_spec, base_cal, base_hp = trained.model.cpu(), trained.spec, trained.calibration, side["hparams"]
        base_history, base_best_epoch, training_data = trained.history, trained.best_epoch, side["training_data"]
        val_rows = trained.metrics.get("val_predictions", [])
        test_rows = trained.metrics.get("test_predictions", []) if config.evaluate else []
        base_val_bacc = trained.metrics.get("val", {}).get("balanced_accuracy")
    # 2. out-of-fold window-model probabilities over train + validation
    per_class = [len({items[i].speaker for i in pool if items[i].label == lab}) for lab in labels]
    folds = max(2, min(folds, min(per_class)))  # every fold needs speakers of every class
    cv_cfg = copy.copy(base_cfg)
    cv_cfg.out = None
    oof = cross_validate(cv_cfg, folds, train=train, progress=progress)["predictions"]

    # 3. features of every recording the reports need
    by_key = {prediction_key(it): it for it in items}
    wanted = {r["key"] for r in oof} | {r["key"] for r in val_rows} | {r["key"] for r in test_rows}
    keyed = [by_key[k] for k in sorted(wanted)]
    passage = _passage([by_key[r["key"]].transcript for r in oof], passage_words)
    if passage:  # a passage model: only recordings of that passage get features
        keyed = [it if passage_matches(it.transcript, passage) else replace(it, transcript="") for it in keyed]
    names = feature_names(kind, len(passage))
    utts = load_utterances(keyed, labels, max_seconds=config.max_seconds)
    feats = _features_for(kind, utts, [it.transcript for it in keyed], config.cache_dir, progress,
                          workers=max(1, int(config.num_threads or 1)), passage=passage)
    feat_of = {prediction_key(it): f for it, f in zip(keyed, feats, strict=True)
               if kind == "phones" or it.transcript}

    def design(rows: list[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Fusion input, labels, speakers, corpora and the window model's probabilities of ``rows``
        (all of them must have features)."""
        p = np.array([r["proba"] for r in rows], dtype=np.float64).reshape(len(rows), n_classes)
        x = fusion_inputs(p, np.array([feat_of[r["key"]] for r in rows]).reshape(len(rows), len(names)))
        y = np.array([labels.index(r["label"]) for r in rows])
        return x, y, np.array([r["speaker"] for r in rows]), np.array([r["corpus"] for r in rows]), p

    # 4. the fusion layer: C by speaker-grouped CV on the OOF rows with features, then fitted on all of them
    fit_rows = [r for r in oof if r["key"] in feat_of]
    fit_speakers = [len({r["speaker"] for r in fit_rows if r["label"] == lab}) for lab in labels]
    fusion_folds = min(folds, min(fit_speakers))
    if fusion_folds < 2:
        raise ValueError(f"{family}: the fusion needs training speakers of every class with "
                         f"{'a transcript' if kind == 'reading' else 'features'}; it has {dict(zip(labels, fit_speakers, strict=True))}")
    x, y, groups, corpora, p_oof = design(fit_rows)
    _emit(progress, "fusion", 0, len(C_GRID))
    by_c = {}
    for n, c in enumerate(C_GRID):
        by_c[c] = _cross_fit(x, y, groups, c, cv_seeds, fusion_folds)
        _emit(progress, "fusion", n + 1, len(C_GRID))
    c_scores = {c: float(np.mean([_balanced_accuracy(y, p.argmax(1), n_classes) for p in runs])) for c, runs in by_c.items()}
    best_c = max(C_GRID, key=c_scores.get)
    fused_cv = _scores(by_c[best_c], y, corpora, n_classes)
    alone_cv = _scores([p_oof], y, corpora, n_classes)
    chosen_threshold = default_threshold(by_c[best_c][0], y)
    threshold, coverage = chosen_threshold["threshold"], chosen_threshold["coverage_at_threshold"]
    lr = _fit(best_c, config.seed, x, y)
    scaler, logreg = lr.named_steps["standardscaler"], lr.named_steps["logisticregression"]

    describe = ("pocketsphinx en-us allphone, 3.8 kHz low-pass" if kind == "phones" else
                "pocketsphinx en-us forced alignment of the transcript, per-phone GOP and durations, 3.8 kHz low-pass")
    spec = ModelSpec(**{**base_spec.__dict__, "name": config.name, "version": config.version, "family": family,
                        "extra": {**base_spec.extra, f"{kind}_features": describe}})
    model = FUSION_CLASSES[family](base_model.cpu(), n_classes, len(names))
    if passage:
        model.passage = passage
    model.set_fusion(scaler.mean_, scaler.scale_, logreg.coef_, logreg.intercept_)
    model.eval()
    fusion_note = {"C": best_c, "fitted_on": f"out-of-fold window-model probabilities, {folds}-fold "
                                             "speaker-grouped CV over train + validation"}
    if kind == "phones":
        calibration = {**base_cal, "threshold": threshold, "coverage_at_threshold": coverage, "fusion": fusion_note}
    else:  # recordings without a transcript keep the window model's threshold
        calibration = {**base_cal, "fused_threshold": threshold, "fused_coverage_at_threshold": coverage,
                       "fusion": {**fusion_note, "rows": len(fit_rows)}}

    # 5. reports: the fusion applied to the step-1 window model's calibrated means (rows without
    # features keep the window model's probabilities)
    def report(rows: list[dict[str, Any]], n_boot: int) -> tuple[dict[str, Any], np.ndarray]:
        out = np.array([r["proba"] for r in rows], dtype=np.float64).reshape(len(rows), n_classes)
        has = np.array([r["key"] in feat_of for r in rows], dtype=bool)
        if has.any():
            sub = [r for r, h in zip(rows, has, strict=True) if h]
            out[has] = model.fuse(out[has], np.array([feat_of[r["key"]] for r in sub]))
        return evaluation_report([r["label"] for r in rows], out, labels, speakers=[r["speaker"] for r in rows],
                                 corpora=[r["corpus"] for r in rows], n_boot=n_boot, seed=config.seed), out

    val_rep, _ = report(val_rows, 0)
    window_test = (evaluation_report([r["label"] for r in test_rows], np.array([r["proba"] for r in test_rows]), labels,
                                     speakers=[r["speaker"] for r in test_rows], corpora=[r["corpus"] for r in test_rows],
                                     n_boot=0) if test_rows else {})
    metrics: dict[str, Any] = {
        "best_epoch": base_best_epoch,
        "val_balanced_accuracy": val_rep.get("balanced_accuracy"),
        "val": val_rep,
        "history": base_history,
        "fusion_cv": {"folds": folds, "fusion_folds": fusion_folds, "seeds": cv_seeds, "C": best_c, "rows": len(fit_rows), "fused": fused_cv,
                      "window_model_alone": alone_cv, "c_grid": {str(c): v for c, v in c_scores.items()}},
        "window_model": {"val": base_val_bacc, "checkpoint": base_checkpoint,
                         "test": window_test.get("balanced_accuracy"),
                         "test_per_corpus": {k: v.get("balanced_accuracy") for k, v in
                                             (window_test.get("per_corpus") or {}).items()}},
    }
    if test_rows:
        metrics["test"], fused = report(test_rows, config.n_boot)
        metrics["test_predictions"] = [{**r, "proba": [round(float(v), 5) for v in f]}
                                       for r, f in zip(test_rows, fused, strict=True)]
        if config.references:  # the brief's references on the same split, paired with the fused predictions
            _emit(progress, "references", 0, 1)
            utt_of = {prediction_key(it): u for it, u in zip(keyed, utts, strict=True)}  # decoded in step 3
            metrics["references"] = reference_reports([utt_of[prediction_key(items[i])] for i in pool],
                                                      [utt_of[r["key"]] for r in test_rows], fused, labels, config)
            _emit(progress, "references", 1, 1)
    hparams = {"base_family": base_spec.family, "base": base_hp, "n_features": len(names), "feature_names": names,
               "C": best_c, "passage": passage}
    # the window model's own recipe stays beside the fusion's: a later fusion can start from this file
    training_data = {**training_data, "config": config.to_dict(),
                     "base_config": training_data.get("base_config") or training_data.get("config")}
    sha = None
    if config.out:
        sha = save_checkpoint(config.out, model=model, spec=spec, calibration=calibration, hparams=hparams,
                              metrics=metrics, training_data=training_data)
    _emit(progress, "done", 1, 1, {"checkpoint": config.out, "sha256": sha})
    return TrainResult(config.out, sha, spec, calibration, metrics, base_history, base_best_epoch, model)
