"""Training of the ``whisper_probe`` family (models/whisper_probe.py): cached encoder features, a
configuration chosen by speaker-grouped cross-validation, a logistic-regression probe.

1. Every recording is cut into the model's windows (``window_s``, at most 30 s; clips shorter than
   a window are one window, never padded to 30 s) and run once through the frozen Whisper encoder;
   the mean and standard deviation over time of **every** hidden state are cached per recording
   (``cache_dir/whisper/<tag>/<key>.npy``, ``[windows, states, 2, d_model]`` float16), so trying a
   configuration costs a logistic regression, not an encoder pass.
2. **Selection rule (fixed before any test number is read):** over the train + validation speakers,
   speaker-grouped k-fold cross-validation (``cv_folds``, stratified by label and corpus) scores
   each candidate -- every single state, and all states concatenated -- for each L2 strength in
   ``C_grid``, by the balanced accuracy of out-of-fold recording predictions on ``select_corpus``
   (all corpora when unset). The best wins; ties go to fewer states, then the smaller C. The test
   split takes no part.
3. The chosen probe is refitted on all train + validation windows (samples weighted so classes
   count equally and, within a class, speakers equally). Temperature and confidence threshold are
   fitted on the out-of-fold logits of step 2 (honest held-out predictions, no separate split).
4. With ``evaluate``: the test split is scored once, with the run's two reference baselines.

Augmentation and a selection that sees noise (``workers.pipeline.whisper_augment``; off by default, so
a run without these hparams is the run it always was): ``augment_copies`` K gives every train /
validation utterance K cached noisy copies (``augment.noisy_copy``) that carry its speaker and label; a
CV fold trains on its training speakers' copies only and the final fit on all. ``augment_grid`` lists
the K values CV compares. ``select_conditions`` (degrade.py names) also scores each held-out fold on
degraded copies of its selection-slice clips; the rule then maximises the mean of the clean and
degraded CV scores among candidates whose clean score is at least ``select_min_clean``.

With ``hold_out_val`` (a fold of :func:`workers.pipeline.train_loop.cross_validate`), steps 2-3 use
the train split alone and the validation split is scored like a test split: the fold's speakers
take no part in choosing or fitting the probe it is scored by.

Embedding models (``task="embed"``) use the same cached features: the chosen states, standardised,
projected by shrinkage LDA onto at most ``embedding_dim`` axes, each scaled to unit within-class
spread. Which labels the axes separate is chosen by the rule of :func:`select_axes` (speaker-grouped
CV k-NN accuracy, test untouched): the training labels (``classes - 1`` axes), a finer manifest
column such as the speaker's L1 (``axes_column``; more axes), or both side by side.
"""

from __future__ import annotations

import hashlib
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from workers.pipeline.batching import window_spans
from workers.pipeline.data import balanced_sample_weights, load_utterances, speaker_folds

logger = logging.getLogger(__name__)

DEFAULTS: dict[str, Any] = {
    "band_limit_hz": 4000.0,
    "pooling": "mean",
    "states": "cv",  # or a list of state indices
    "C": "cv",  # or a float
    "C_grid": [0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0],
    "cv_folds": 5,
    "batch_size": 8,
    "embedding_dim": 64,
    # embed task: what the LDA axes separate -- "cv" (chosen below), "labels" (the training labels),
    # a manifest column such as "l1", or "labels+l1" (both projections side by side)
    "axes": "cv",
    "axes_column": "l1",
    "axes_map": {"english(presumed)": "english"},
    "axes_min_speakers": 5,
    # augmentation (workers.pipeline.whisper_augment): K cached noisy copies of every train/validation
    # utterance; ``augment_grid`` lists the K values CV compares (the first K copies; default [K])
    "augment_copies": 0,
    "augment_grid": None,
    "augment_seed": 0,
    # selection that sees noise: held-out folds are also scored under these degrade.py conditions
    # (on the selection slice); with any, the score is the mean of clean and these, among candidates
    # whose clean CV score is at least ``select_min_clean`` (when set)
    "select_conditions": [],
    "select_conditions_seed": 0,
    "select_min_clean": None,
}
WINDOW_S, HOP_S = 20.0, 10.0


def _emit(progress: Any, stage: str, done: int, total: int, info: dict[str, Any] | None = None) -> None:
    if progress is not None:
        progress(stage, done, total, info or {})


def encode_windows(probe: Any, signals: list[np.ndarray], window_s: float, hop_s: float, *, batch_size: int = 8,
                   progress: Any = None) -> list[np.ndarray]:
    """Pooled statistics of every state for every window of every signal.

    Parameters
    ----------
    probe : WhisperProbe
        Any probe (its band limit and encoder are used; its head is not).
    signals : list of np.ndarray
        float32 ``[time]`` at 16 kHz.

    Returns
    -------
    list of np.ndarray
        Per signal ``[n_windows, n_states, 2, d_model]`` float32.
    """
    import torch

    sr = 16000
    win = int(round(window_s * sr))
    rows = []
    for k, x in enumerate(signals):
        for a, b in window_spans(len(x), sr, window_s, hop_s):
            rows.append((k, int(a), int(b)))
    order = sorted(range(len(rows)), key=lambda r: -(rows[r][2] - rows[r][1]))
    out: list[np.ndarray | None] = [None] * len(rows)
    device = probe.feat_mean.device
    with torch.inference_mode():
        for i in range(0, len(order), batch_size):
            idx = order[i : i + batch_size]
            longest = max(rows[r][2] - rows[r][1] for r in idx)
            batch = np.zeros((len(idx), min(win, longest)), dtype=np.float32)
            for j, r in enumerate(idx):
                k, a, b = rows[r]
                batch[j, : b - a] = signals[k][a:b]
            pooled = probe.pooled_states(probe.prepare_inputs(batch, device)).float().cpu().numpy()
            for j, r in enumerate(idx):
                out[r] = pooled[j]
            _emit(progress, "encode", min(i + batch_size, len(order)), len(order))
    per: list[list[np.ndarray]] = [[] for _ in signals]
    for (k, _, _), arr in zip(rows, out, strict=True):
        per[k].append(arr)  # rows were built in time order per signal
    return [np.stack(p) for p in per]


def cached_features(probe: Any, utts: list[Any], window_s: float, hop_s: float, cache_dir: str | Path, tag: str, *,
                    batch_size: int = 8, progress: Any = None) -> list[np.ndarray]:
    """:func:`encode_windows` for utterances, cached per utterance key under ``cache_dir``."""
    folder = Path(cache_dir) / "whisper" / tag
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / (hashlib.sha1(u.key.encode()).hexdigest()[:20] + ".npy") for u in utts]
    missing = [i for i, p in enumerate(paths) if not p.exists()]
    logger.info("whisper features: %d cached, %d to encode", len(utts) - len(missing), len(missing))
    for start in range(0, len(missing), 64):
        part = missing[start : start + 64]
        feats = encode_windows(probe, [utts[i].samples for i in part], window_s, hop_s, batch_size=batch_size)
        for i, f in zip(part, feats, strict=True):
            tmp = paths[i].with_suffix(".tmp.npy")
            np.save(tmp, f.astype(np.float16))
            tmp.replace(paths[i])
        _emit(progress, "encode", min(start + 64, len(missing)), len(missing))
    return [np.load(p).astype(np.float32) for p in paths]


def _design(feats: list[np.ndarray], idx: list[int], states: tuple[int, ...], pooling: str) -> tuple[np.ndarray, np.ndarray]:
    """Window rows of the chosen states: ``X [windows, D]`` and the utterance of each row."""
    blocks, owner = [], []
    for i in idx:
        f = feats[i][:, list(states)]
        if pooling == "mean":
            f = f[:, :, :1]
        blocks.append(f.reshape(f.shape[0], -1))
        owner += [i] * f.shape[0]
    return np.concatenate(blocks), np.asarray(owner)


def _fit(X: np.ndarray, y: np.ndarray, w: np.ndarray, C: float, n_classes: int,
         seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Standardise + L2 logistic regression. Returns ``mean, scale, weight [C, D], bias [C]``
    (binary models get the symmetric two-logit form, so softmax equals the sigmoid)."""
    from sklearn.linear_model import LogisticRegression

    mean = X.mean(axis=0)
    scale = X.std(axis=0)
    scale = np.where(scale > 1e-6, scale, 1.0)
    Z = (X - mean) / scale
    clf = LogisticRegression(C=C, max_iter=3000, random_state=seed)
    clf.fit(Z, y, sample_weight=w * len(w))
    coef, icpt = clf.coef_, clf.intercept_
    if n_classes == 2 and coef.shape[0] == 1:
        coef = np.concatenate([-coef / 2, coef / 2])
        icpt = np.concatenate([-icpt / 2, icpt / 2])
    return mean, scale, coef, icpt


def _logits(X: np.ndarray, params: tuple[np.ndarray, ...]) -> np.ndarray:
    mean, scale, coef, icpt = params
    return ((X - mean) / scale) @ coef.T + icpt


def _utt_proba(win_logits: np.ndarray, owner: np.ndarray, idx: list[int], calibration: dict[str, Any] | None) -> np.ndarray:
    from workers.pipeline.calibration import calibrate

    p = calibrate(win_logits, calibration)
    return np.stack([p[owner == i].mean(axis=0) for i in idx])


def _bacc(y: np.ndarray, pred: np.ndarray, n_classes: int) -> float:
    from workers.pipeline.evaluation import balanced_accuracy

    return float(balanced_accuracy(y, pred, n_classes))


def _copy_design(copies: dict[int, list[np.ndarray]], idx: list[int], k: int, states: tuple[int, ...],
                 pooling: str) -> tuple[np.ndarray, np.ndarray]:
    """Window rows of the first ``k`` copies of each utterance of ``idx`` (owner: the utterance)."""
    feats = [c for i in idx for c in copies[i][:k]]
    X, pos = _design(feats, list(range(len(feats))), states, pooling)
    return X, np.repeat(np.asarray(idx), k)[pos]


def _recalls(y: np.ndarray, pred: np.ndarray, n_classes: int) -> list[float | None]:
    return [float(np.mean(pred[y == c] == c)) if np.any(y == c) else None for c in range(n_classes)]


def select_probe(feats: list[np.ndarray], utts: list[Any], items: list[Any], pool: list[int], n_classes: int,
                 hp: dict[str, Any], *, select_corpus: str | None, seed: int, progress: Any = None,
                 copies: dict[int, list[np.ndarray]] | None = None,
                 noisy: dict[str, dict[int, np.ndarray]] | None = None) -> dict[str, Any]:
    """Step 2 of the module docstring: the CV table, the chosen ``states`` / ``C`` (and number of
    augmented copies) and the chosen configuration's clean out-of-fold window logits (for calibration).

    ``copies``: augmented copies per pool utterance (a fold trains on its training speakers' copies
    only); ``noisy``: per condition, degraded copies of the selection slice's utterances, scored
    out-of-fold beside clean (``hp["select_conditions"]``, ``hp["select_min_clean"]``)."""
    n_states = feats[pool[0]].shape[1]
    if hp["states"] == "cv":
        candidates = [(s,) for s in range(n_states)] + [tuple(range(n_states))]
    else:
        candidates = [tuple(int(s) for s in hp["states"])]
    grid = [float(c) for c in hp["C_grid"]] if hp["C"] == "cv" else [float(hp["C"])]
    k_grid = [int(k) for k in (hp.get("augment_grid") or [hp.get("augment_copies") or 0])] if copies else [0]
    noisy = noisy or {}
    floor = hp.get("select_min_clean")
    folds = speaker_folds(items, pool, int(hp["cv_folds"]), seed=seed)
    y_utt = np.array([utts[i].label for i in pool])
    sel = np.array([select_corpus is None or utts[i].corpus == select_corpus for i in pool])
    if not sel.any():
        raise ValueError(f"no train/validation items from corpus {select_corpus!r}")
    table: list[dict[str, Any]] = []
    best: tuple | None = None
    total, done = len(k_grid) * len(candidates) * len(grid), 0
    for k in k_grid:
        for states in candidates:
            X, owner = _design(feats, pool, states, hp["pooling"])
            y_win = np.array([utts[i].label for i in owner])
            spk = [utts[i].speaker for i in owner]
            if k:
                Xa, owner_a = _copy_design(copies, pool, k, states, hp["pooling"])
                y_a = np.array([utts[i].label for i in owner_a])
                spk_a = [utts[i].speaker for i in owner_a]
            cond_rows = {}
            for cond, per in noisy.items():
                idx_c = [i for i in pool if i in per]
                Xc, owner_c = _design(per, idx_c, states, hp["pooling"])
                cond_rows[cond] = (Xc, owner_c, idx_c)
            for C in grid:
                oof = np.zeros((len(X), n_classes))
                oof_c = {cond: np.zeros((len(r[0]), n_classes)) for cond, r in cond_rows.items()}
                for held in folds:
                    test_rows = np.isin(owner, held)
                    Xtr, ytr, spk_tr = X[~test_rows], y_win[~test_rows], [spk[r] for r in np.flatnonzero(~test_rows)]
                    if k:  # the training speakers' copies; a held-out speaker's copies never train
                        keep_a = ~np.isin(owner_a, held)
                        Xtr = np.concatenate([Xtr, Xa[keep_a]])
                        ytr = np.concatenate([ytr, y_a[keep_a]])
                        spk_tr = spk_tr + [spk_a[r] for r in np.flatnonzero(keep_a)]
                    w = balanced_sample_weights(ytr, spk_tr)
                    params = _fit(Xtr, ytr, w, C, n_classes, seed)
                    oof[test_rows] = _logits(X[test_rows], params)
                    for cond, (Xc, owner_c, _) in cond_rows.items():
                        rows = np.isin(owner_c, held)
                        oof_c[cond][rows] = _logits(Xc[rows], params)
                proba = _utt_proba(oof, owner, pool, None)
                score = _bacc(y_utt[sel], proba[sel].argmax(1), n_classes)
                score_all = _bacc(y_utt, proba.argmax(1), n_classes)
                row: dict[str, Any] = {"states": list(states), "C": C, "cv_balanced_accuracy": score,
                                       "cv_all_balanced_accuracy": score_all}
                if copies:
                    row["augment_copies"] = k
                if cond_rows:
                    row["cv_recall"] = _recalls(y_utt[sel], proba[sel].argmax(1), n_classes)
                    row["cv_conditions"] = {}
                    for cond, (_, owner_c, idx_c) in cond_rows.items():
                        y_c = np.array([utts[i].label for i in idx_c])
                        pred_c = _utt_proba(oof_c[cond], owner_c, idx_c, None).argmax(1)
                        row["cv_conditions"][cond] = {"balanced_accuracy": _bacc(y_c, pred_c, n_classes),
                                                      "recall": _recalls(y_c, pred_c, n_classes), "n": len(idx_c)}
                    scores = [score] + [v["balanced_accuracy"] for v in row["cv_conditions"].values()]
                    row["cv_selection_score"] = float(np.mean(scores))
                eligible = floor is None or score >= float(floor)
                if floor is not None:
                    row["meets_clean_floor"] = bool(eligible)
                table.append(row)
                key = (eligible, round(row.get("cv_selection_score", score), 6), -len(states), -k, -C)
                if best is None or key > best[0]:
                    best = (key, states, C, oof, owner, k)
                done += 1
                _emit(progress, "select", done, total, row)
                logger.info("cv %s", row)
    assert best is not None
    key, states, C, oof, owner, k = best
    out = {"table": table, "states": list(states), "C": C, "oof_logits": oof, "oof_owner": owner, "folds": len(folds)}
    if copies:
        out["augment_copies"] = k
    if floor is not None:
        out["meets_clean_floor"] = bool(key[0])
    return out


def _lda_axes(X: np.ndarray, y: np.ndarray, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """Shrinkage LDA on standardised window rows ``X``; returns ``weight [d, D]`` and ``bias [d]``
    such that ``X @ weight.T + bias`` is centred and has unit within-class spread on every axis
    (so no axis outweighs another under the cosine)."""
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

    d = max(1, min(int(dim), len(np.unique(y)) - 1))
    lda = LinearDiscriminantAnalysis(solver="eigen", shrinkage="auto", n_components=d).fit(X, y)
    weight = lda.scalings_[:, :d].T
    Z = X @ weight.T
    within = np.sqrt(np.mean([(Z[y == c] - Z[y == c].mean(axis=0)).var(axis=0) for c in np.unique(y)], axis=0))
    within = np.where(within > 1e-9, within, 1.0)
    weight = weight / within[:, None]
    return weight, -(Z.mean(axis=0) / within)


def axis_targets(items: list[Any], utts: list[Any], hp: dict[str, Any], pool: list[int]) -> dict[str, np.ndarray]:
    """Window-free per-recording targets of each embedding candidate: ``{"labels": ..., column: ...}``;
    ``-1`` marks a recording left out of that candidate's fit (a value with under ``axes_min_speakers``
    speakers among the train/validation speakers, or none). The column candidate exists only when the
    items carry that manifest column (a manifest run; a batch trained through the API has only its labels)."""
    out = {"labels": np.array([u.label for u in utts])}
    col = hp.get("axes_column")
    raw = [items[i].column(col, "") if col else "" for i in range(len(items))]
    if col and any(raw):
        mapped = [(hp.get("axes_map") or {}).get(v, v) for v in raw]
        speakers: dict[str, set] = {}
        for i in pool:
            if mapped[i]:
                speakers.setdefault(mapped[i], set()).add(utts[i].speaker)
        kept = sorted(v for v, spk in speakers.items() if len(spk) >= int(hp["axes_min_speakers"]))
        if len(kept) >= 3:
            code = {v: k for k, v in enumerate(kept)}
            out[col] = np.array([code.get(v, -1) for v in mapped])
    return out


def _embed_fit(X: np.ndarray, owner: np.ndarray, targets: dict[str, np.ndarray], candidate: str,
               dim: int) -> tuple[np.ndarray, np.ndarray]:
    """The linear embedding head of one candidate (``labels``, a column, or ``labels+<column>``) on
    standardised rows ``X``."""
    weights, biases = [], []
    for part in candidate.split("+"):
        y = targets[part][owner]
        keep = y >= 0
        w, b = _lda_axes(X[keep], y[keep], dim)
        weights.append(w)
        biases.append(b)
    return np.concatenate(weights), np.concatenate(biases)


def _embedding_per_corpus(emb: np.ndarray, labels: list[str], speakers: list[str], corpora: list[str],
                          min_speakers: int = 10) -> dict[str, dict[str, Any]]:
    """:func:`embedding_report` of each corpus with at least ``min_speakers`` speakers and two labels,
    neighbours drawn from that corpus only (SAA is the honest slice: one archive for every class)."""
    from workers.pipeline.embedding_evaluation import embedding_report

    out = {}
    for corpus in sorted(set(corpora)):
        idx = [k for k, c in enumerate(corpora) if c == corpus]
        if len({speakers[k] for k in idx}) >= min_speakers and len({labels[k] for k in idx}) >= 2:
            out[corpus] = embedding_report(emb[idx], [labels[k] for k in idx], [speakers[k] for k in idx])
    return out


def _pooled_embeddings(Z: np.ndarray, owner: np.ndarray, idx: list[int]) -> np.ndarray:
    emb = np.stack([Z[owner == i].mean(axis=0) for i in idx])
    return emb / (np.linalg.norm(emb, axis=1, keepdims=True) + 1e-12)


def select_axes(feats: list[np.ndarray], utts: list[Any], items: list[Any], pool: list[int], states: tuple[int, ...],
                hp: dict[str, Any], targets: dict[str, np.ndarray], *, select_corpus: str | None,
                seed: int) -> dict[str, Any]:
    """Which LDA axes an embedding model gets, **chosen before any test number is read**: over the
    train + validation speakers, speaker-grouped k-fold CV; in each fold the candidate is fitted on
    the other folds and the held-out recordings are embedded; the score is the k-NN (k = 5, other
    speakers only) balanced accuracy on the training labels among the held-out recordings of
    ``select_corpus`` (all corpora when unset), averaged over folds. Ties go to fewer axes."""
    from workers.pipeline.embedding_evaluation import embedding_report

    col = hp.get("axes_column")
    candidates = ["labels"] + ([col, f"labels+{col}"] if col in targets else [])
    if hp["axes"] != "cv":
        candidates = [str(hp["axes"])]
    X, owner = _design(feats, pool, states, hp["pooling"])
    folds = speaker_folds(items, pool, int(hp["cv_folds"]), seed=seed)
    table = []
    for cand in candidates:
        scores, scores_all, dims = [], [], 0
        for held in folds:
            test_rows = np.isin(owner, held)
            mean = X[~test_rows].mean(axis=0)
            scale = np.where(X[~test_rows].std(axis=0) > 1e-6, X[~test_rows].std(axis=0), 1.0)
            weight, bias = _embed_fit((X[~test_rows] - mean) / scale, owner[~test_rows], targets, cand, hp["embedding_dim"])
            dims = weight.shape[0]
            held_set = set(held)
            held_list = [i for i in pool if i in held_set]
            emb = _pooled_embeddings(((X[test_rows] - mean) / scale) @ weight.T + bias, owner[test_rows], held_list)
            labels = [str(utts[i].label) for i in held_list]
            speakers = [utts[i].speaker for i in held_list]
            scores_all.append(embedding_report(emb, labels, speakers)["knn_balanced_accuracy"])
            sel = [k for k, i in enumerate(held_list) if select_corpus is None or utts[i].corpus == select_corpus]
            if len({speakers[k] for k in sel}) > 5:
                scores.append(embedding_report(emb[sel], [labels[k] for k in sel], [speakers[k] for k in sel])["knn_balanced_accuracy"])
        row = {"axes": cand, "dims": dims, "cv_knn_balanced_accuracy": float(np.mean(scores)) if scores else float("nan"),
               "cv_all_knn_balanced_accuracy": float(np.mean(scores_all))}
        table.append(row)
        logger.info("embed cv %s", row)
    best = max(table, key=lambda r: (round(r["cv_knn_balanced_accuracy"], 6), -r["dims"]))
    return {"table": table, "axes": best["axes"], "folds": len(folds)}


def _degraded_features(reader: Any, utts: list[Any], items: list[Any], pool: list[int], hp: dict[str, Any], config: Any,
                       window_s: float, hop_s: float, tag: str, task: str,
                       progress: Any) -> tuple[dict[int, list[np.ndarray]] | None, dict[str, dict[int, np.ndarray]] | None]:
    """The augmented copies (``augment_copies``) and the selection's degraded held-out copies
    (``select_conditions``) of the pool, encoded and cached (``workers.pipeline.whisper_augment``)."""
    k = int(hp.get("augment_copies") or 0)
    conditions = list(hp.get("select_conditions") or [])
    if not k and not conditions:
        return None, None
    if task != "classify":
        raise ValueError("augment_copies and select_conditions apply to classify whisper_probe models")
    if k and max(int(g) for g in (hp.get("augment_grid") or [k])) > k:
        raise ValueError(f"augment_grid {hp['augment_grid']} asks for more copies than augment_copies={k}")
    from workers.pipeline.whisper_augment import condition_features, copy_features

    folds = speaker_folds(items, pool, int(hp["cv_folds"]), seed=config.seed)

    def encode(lazies: list[Any]) -> list[np.ndarray]:
        return cached_features(reader, lazies, window_s, hop_s, config.cache_dir, tag,
                               batch_size=int(hp["batch_size"]), progress=progress)

    copies = copy_features(utts, folds, k, int(hp["augment_seed"]), encode=encode) if k else None
    noisy = None
    if conditions:
        def keep(i: int) -> bool:
            return config.select_corpus is None or utts[i].corpus == config.select_corpus

        noisy = condition_features(utts, folds, conditions, int(hp["select_conditions_seed"]), keep=keep, encode=encode)
    return copies, noisy


def train_whisper_probe(config: Any, *, progress: Any = None) -> Any:
    """Train one ``whisper_probe`` model as :func:`workers.pipeline.training.train_model` does for
    the other families; returns a ``TrainResult``."""
    import torch

    from models.checkpoint import save_checkpoint
    from models.specs import ModelSpec
    from models.whisper_probe import NORMALISATION, WhisperProbe, build_whisper_probe, find_encoder_dir
    from workers.pipeline.calibration import default_threshold, fit_calibration
    from workers.pipeline.train_config import TrainResult
    from workers.pipeline.train_data import load_items, make_splits
    from workers.pipeline.train_report import evaluation_rows, reference_reports, report_for, training_data_summary

    t_start = time.time()
    if config.num_threads:
        torch.set_num_threads(int(config.num_threads))
    hp = {**DEFAULTS, **(config.hparams or {})}
    window_s = min(float(config.window_s or WINDOW_S), 30.0)
    hop_s = float(config.hop_s or HOP_S)
    task = config.task or "classify"

    from models.whisper_encoder import file_sha256, load_encoder

    folder = find_encoder_dir(hp.get("encoder_sha256"))
    encoder_sha = hp.get("encoder_sha256") or file_sha256(folder / "model.bin")
    device = torch.device(config.device or "cpu")
    encoder, info = load_encoder(folder, device=device, expected_sha256=encoder_sha)

    items = load_items(config)
    labels = list(config.labels) if config.labels else sorted({it.label for it in items})
    items = [it for it in items if it.label in labels]
    splits = make_splits(items, config)
    # a cross-validation fold (``hold_out_val``) fits on its train split alone and scores its held-out speakers
    held_val = sorted(splits["val"]) if config.hold_out_val else []
    if held_val and task != "classify":
        raise ValueError("hold_out_val (cross-validation) applies to classify whisper_probe models")
    pool = sorted(splits["train"] + ([] if config.hold_out_val else splits["val"]))
    test_idx = splits["test"]
    if len({items[i].speaker for i in pool}) < int(hp["cv_folds"]):
        raise ValueError(f"not enough speakers for {hp['cv_folds']}-fold cross-validation: {len(pool)} recordings")
    n_classes = len(labels)

    _emit(progress, "load", 0, len(items))
    utts = load_utterances(items, labels, max_seconds=config.max_seconds, progress=lambda d, t: _emit(progress, "load", d, t))
    reader = WhisperProbe(1, (0,), d_model=info.d_model, band_limit_hz=hp["band_limit_hz"], encoder_sha256=encoder_sha).to(device)
    reader.attach_encoder(encoder)
    tag = hashlib.sha1(repr((encoder_sha, hp["band_limit_hz"], window_s, hop_s, config.max_seconds, "v1")).encode()).hexdigest()[:12]
    need = sorted(set(pool) | set(held_val) | set(test_idx if config.evaluate else []))
    cached = cached_features(reader, [utts[i] for i in need], window_s, hop_s, config.cache_dir, tag,
                             batch_size=int(hp["batch_size"]), progress=progress)
    feats: list[Any] = [None] * len(utts)
    for i, f in zip(need, cached, strict=True):
        feats[i] = f

    copies, noisy = _degraded_features(reader, utts, items, pool, hp, config, window_s, hop_s, tag, task, progress)
    chosen = select_probe(feats, utts, items, pool, n_classes, hp, select_corpus=config.select_corpus,
                          seed=config.seed, progress=progress, copies=copies, noisy=noisy)
    states = tuple(chosen["states"])
    X, owner = _design(feats, pool, states, hp["pooling"])
    y_oof = np.array([utts[i].label for i in owner])  # the clean rows: what the out-of-fold logits score
    k_chosen = int(chosen.get("augment_copies") or 0)
    if k_chosen:  # the final fit trains on the chosen number of copies too
        Xa, owner_a = _copy_design(copies, pool, k_chosen, states, hp["pooling"])
        X, owner = np.concatenate([X, Xa]), np.concatenate([owner, owner_a])
    y_win = np.array([utts[i].label for i in owner])
    w = balanced_sample_weights(y_win, [utts[i].speaker for i in owner])
    deploy_prior = config.deploy_prior or [1.0 / n_classes] * n_classes
    train_prior = [1.0 / n_classes] * n_classes  # balanced weights: the effective training prior
    y_pool = np.array([utts[i].label for i in pool])

    hparams = {"states": list(states), "pooling": hp["pooling"], "d_model": info.d_model, "band_limit_hz": hp["band_limit_hz"],
               "encoder_sha256": encoder_sha, "encoder": Path(info.model_dir).name, "C": chosen["C"],
               "selection": {"rule": "max CV balanced accuracy" + (f" on {config.select_corpus}" if config.select_corpus else ""),
                             "folds": chosen["folds"], "table": chosen["table"]}}
    if copies:
        from workers.pipeline.augment import NoisyRecipe

        hparams["augment"] = {"copies": k_chosen, "made": int(hp["augment_copies"]), "seed": int(hp["augment_seed"]),
                              "recipe": NoisyRecipe().tag, "grid": [int(k) for k in (hp["augment_grid"] or [hp["augment_copies"]])]}
    if noisy:
        hparams["selection"].update(conditions=list(noisy), conditions_seed=int(hp["select_conditions_seed"]),
                                    min_clean=hp["select_min_clean"], meets_clean_floor=chosen.get("meets_clean_floor"))
        hparams["selection"]["rule"] = (f"max mean CV balanced accuracy (clean, {', '.join(noisy)})"
                                        + (f" on {config.select_corpus}" if config.select_corpus else "")
                                        + (f" among candidates with clean >= {hp['select_min_clean']}"
                                           if hp["select_min_clean"] is not None else ""))
    if task == "classify":
        params = _fit(X, y_win, w, chosen["C"], n_classes, config.seed)
        calibration = fit_calibration(chosen["oof_logits"], y_oof, train_prior=train_prior, deploy_prior=deploy_prior,
                                      speakers=[utts[i].speaker for i in chosen["oof_owner"]])
        oof_proba = _utt_proba(chosen["oof_logits"], chosen["oof_owner"], pool, calibration)
        calibration.update(default_threshold(oof_proba, y_pool))
        calibration["fitted_on"] = "out-of-fold predictions of the selection cross-validation (train + validation speakers)"
        spec = ModelSpec(name=config.name, version=config.version, family="whisper_probe", task="classify",
                         labels=tuple(labels), sample_rate=16000, window_s=window_s, hop_s=hop_s,
                         embedding_dim=n_classes,
                         extra={"band_limit_hz": hp["band_limit_hz"], "label_column": config.label_column,
                                "label_map": config.label_map, "encoder": hparams["encoder"],
                                "normalisation": NORMALISATION})
        model = build_whisper_probe(spec, hparams)
        model.set_head(*params)
    else:
        targets = axis_targets(items, utts, hp, pool)
        axes = select_axes(feats, utts, items, pool, states, hp, targets, select_corpus=config.select_corpus, seed=config.seed)
        mean, scale = X.mean(axis=0), np.where(X.std(axis=0) > 1e-6, X.std(axis=0), 1.0)
        weight, bias = _embed_fit((X - mean) / scale, owner, targets, axes["axes"], hp["embedding_dim"])
        dim = weight.shape[0]
        hparams["axes"] = axes["axes"]
        hparams["axes_selection"] = {"rule": "max CV k-NN balanced accuracy" + (f" on {config.select_corpus}" if config.select_corpus else ""),
                                     "folds": axes["folds"], "table": axes["table"]}
        if axes["axes"] != "labels":
            hparams["axes_column"], hparams["axes_map"] = hp["axes_column"], hp["axes_map"]
        calibration = {}
        spec = ModelSpec(name=config.name, version=config.version, family="whisper_probe", task="embed", labels=(),
                         sample_rate=16000, window_s=window_s, hop_s=hop_s, embedding_dim=dim,
                         extra={"band_limit_hz": hp["band_limit_hz"], "label_column": config.label_column,
                                "label_map": config.label_map, "encoder": hparams["encoder"], "trained_labels": labels,
                                "normalisation": NORMALISATION})
        hparams["embedding_dim"] = dim
        model = build_whisper_probe(spec, hparams)
        model.set_head(mean, scale, weight, bias)
    model.attach_encoder(encoder)
    model.eval()

    metrics: dict[str, Any] = {"selection": hparams["selection"], "chosen": {"states": list(states), "C": chosen["C"]}}
    if copies:
        metrics["chosen"]["augment_copies"] = k_chosen
        metrics["augment"] = hparams["augment"]
    if task != "classify":
        metrics["chosen"]["axes"] = hparams["axes"]
        metrics["axes_selection"] = hparams["axes_selection"]
    if task == "classify" and not held_val:
        metrics["val"] = report_for([labels[k] for k in y_pool], oof_proba, labels, [utts[i] for i in pool], n_boot=0)
        metrics["val_balanced_accuracy"] = max(r["cv_balanced_accuracy"] for r in chosen["table"]
                                               if r["states"] == list(states) and r["C"] == chosen["C"]
                                               and r.get("augment_copies", 0) == k_chosen)
        metrics["val_note"] = "out-of-fold predictions of the chosen configuration over train + validation speakers"
    elif held_val:  # the held-out speakers, scored by the probe fitted without them
        Xv, owner_v = _design(feats, held_val, states, hp["pooling"])
        val_proba = _utt_proba(_logits(Xv, params), owner_v, held_val, calibration)
        metrics["val"] = report_for([labels[utts[i].label] for i in held_val], val_proba, labels,
                                    [utts[i] for i in held_val], n_boot=0)
        metrics["val_balanced_accuracy"] = metrics["val"]["balanced_accuracy"]
        metrics["val_predictions"] = evaluation_rows(items, utts, held_val, val_proba, labels)
        metrics["val_note"] = "held-out validation speakers (hold_out_val): the probe was fitted without them"
    if config.evaluate and test_idx:
        _emit(progress, "evaluate", 0, len(test_idx))
        Xt, owner_t = _design(feats, test_idx, states, hp["pooling"])
        if task == "classify":
            test_proba = _utt_proba(_logits(Xt, params), owner_t, test_idx, calibration)
            metrics["test"] = report_for([labels[utts[i].label] for i in test_idx], test_proba, labels,
                                         [utts[i] for i in test_idx], n_boot=config.n_boot, seed=config.seed)
            metrics["test_predictions"] = evaluation_rows(items, utts, test_idx, test_proba, labels)
            if config.references:
                _emit(progress, "references", 0, 1)
                metrics["references"] = reference_reports([utts[i] for i in pool], [utts[i] for i in test_idx],
                                                          test_proba, labels, config)
        else:
            from workers.pipeline.embedding_evaluation import embedding_report

            with torch.inference_mode():
                z = model.head((torch.from_numpy(Xt).float() - model.feat_mean.cpu()) / model.feat_scale.cpu()).numpy()
            emb = np.stack([z[owner_t == i].mean(axis=0) for i in test_idx])
            emb /= np.linalg.norm(emb, axis=1, keepdims=True) + 1e-12
            y_test = [labels[utts[i].label] for i in test_idx]
            spk_test = [utts[i].speaker for i in test_idx]
            corpus_test = [utts[i].corpus for i in test_idx]
            metrics["test_embedding"] = embedding_report(emb, y_test, spk_test)
            metrics["test_embedding_per_corpus"] = _embedding_per_corpus(emb, y_test, spk_test, corpus_test)
            if config.references:  # the d-vector on the same clips, scored the same way (k-NN, other speakers only)
                from workers.pipeline.baselines import speaker_encoder_embeddings

                _emit(progress, "references", 0, 1)
                dvec = speaker_encoder_embeddings([utts[i].samples for i in test_idx], bandlimit_hz=hp["band_limit_hz"])
                metrics["references"] = {"speaker_encoder_dvector": {
                    "baseline": "resemblyzer GE2E d-vector of each test clip (same band limit), no training",
                    "test_embedding": embedding_report(dvec, y_test, spk_test),
                    "test_embedding_per_corpus": _embedding_per_corpus(dvec, y_test, spk_test, corpus_test)}}
    training_data = training_data_summary(config, items, splits, labels, seconds=time.time() - t_start)
    sha = None
    if config.out:
        sha = save_checkpoint(config.out, model=model.cpu(), spec=spec, calibration=calibration, hparams=hparams,
                              metrics=metrics, training_data=training_data)
        model.to(device)
    _emit(progress, "done", 1, 1, {"checkpoint": config.out, "sha256": sha})
    return TrainResult(config.out, sha, spec, calibration, metrics, [], -1, model)
