"""Cross-validation of accent-group with Whisper's language-ID posteriors (issue 26; the rule and its outcome:
docs/models/rules/accent-group-3.0.0.md, "Third candidate"). Train + validation speakers only: no test clip is loaded.

    ACCENTSITE_CACHE=/work/cache nice .venv/bin/python scripts/lid_cv.py \
        --manifest ../shared/data/accent-mini/manifest.csv --threads 2 --out var/exp/lid-cv.json

Uses 2.0.0's cached probe features (all seven states, 20-s windows, hop 10, 4 kHz: run 2.0.0's line of
scripts/train_defaults.sh once first) and caches the LID log-posteriors (workers.pipeline.lid_features) beside
them. Prints and writes, per candidate (early, stacked, LID alone, 2.0.0's probe) and C: CV-SAA and CV-all
balanced accuracy and the per-class recalls on SAA and on all corpora (the file also holds every
clip's out-of-fold probabilities).

``--conditions pink_10db,babble_10db`` (the rule's "Noisy CV check") also scores, in each outer fold, the held-out
SAA clips degraded by workers.pipeline.degrade (``--conditions-seed``; babble donors = the other SAA clips of the
same held-out fold, as the trainer's noisy CV: workers.pipeline.whisper_augment.condition_features) with the models
trained on the clean training folds; the degraded clips' probe features and LID log-posteriors are cached under the
cache folder, keyed by condition, seed, position and fold. ``--candidates`` and ``--grid`` restrict what is fitted:

    ACCENTSITE_CACHE=/work/cache nice .venv/bin/python scripts/lid_cv.py --manifest ... --threads 2 \
        --candidates stacked,probe_2.0.0 --grid 0.03 --conditions pink_10db,babble_10db --out var/exp/lid-cv-noisy.json

``--copies 1`` (the rule's "Fourth candidate") also makes the trainer's noisy training copies of every train + validation
clip (workers.pipeline.whisper_augment.copy_features: recipe noisy-v1, ``--copies-seed``, babble donors from the same
fold), caches their probe features and LID log-posteriors, and fits the stackers ``stacked_copies`` (clean rows and copy
rows) and ``stacked_copies_only`` (copy rows): each inner fold's clean probe also scores its held-out clips' copies, so
the copies' rows carry out-of-fold probe log-probabilities as the clean rows do. The probe itself trains on clean windows.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from workers.pipeline.data import balanced_sample_weights, load_utterances, speaker_folds  # noqa: E402
from workers.pipeline.degrade import parse_conditions  # noqa: E402
from workers.pipeline.whisper_training import DEFAULTS, _bacc, _design, _fit, _logits, _recalls, _utt_proba  # noqa: E402

LABELS = ["mandarin_l1", "native_english", "other_l1"]
PROBE_C = 0.1  # 2.0.0's chosen C
STATES = (0, 1, 2, 3, 4, 5, 6)


CANDIDATES = ("early", "stacked", "lid_alone", "probe_2.0.0", "stacked_copies", "stacked_copies_only")
#: the stackers fitted with noisy copies (``--copies``): name -> whether the clean rows train too
COPY_STACKERS = {"stacked_copies": True, "stacked_copies_only": False}


def fit(X: np.ndarray, y: np.ndarray, groups: list, rows_tr: np.ndarray, C: float) -> tuple[np.ndarray, ...]:
    """The trainer's standardised, balanced L2 logistic regression fitted on the rows ``rows_tr`` of ``X``."""
    w = balanced_sample_weights(y[rows_tr], [groups[r] for r in np.flatnonzero(rows_tr)])
    return _fit(X[rows_tr], y[rows_tr], w, C, len(LABELS), 0)


def fit_predict(X: np.ndarray, y: np.ndarray, groups: list, rows_tr: np.ndarray, X_out: np.ndarray, C: float) -> np.ndarray:
    """Logits of ``X_out`` from :func:`fit` on ``rows_tr``."""
    return _logits(X_out, fit(X, y, groups, rows_tr, C))


def clip_logp(win_logits: np.ndarray, owner: np.ndarray, idx: list[int]) -> np.ndarray:
    """Log of the clips' mean window probabilities ``[len(idx), classes]``."""
    return np.log(np.maximum(_utt_proba(win_logits, owner, idx, None), 1e-6))


def probe_logp(X: np.ndarray, y_win: np.ndarray, spk_win: list, owner: np.ndarray, train: list[int], out: list[int],
               degraded: dict[str, tuple[np.ndarray, np.ndarray]] | None = None) -> np.ndarray | tuple[np.ndarray, dict]:
    """2.0.0's probe (C = 0.1) fitted on the windows of ``train``; the clip log-probabilities of ``out``.

    With ``degraded`` (per condition, window rows ``X_c`` and their clips ``owner_c``), also the same fitted probe's
    log-probabilities of the degraded copies of the clips of ``out`` that have one: ``(clean, {condition: [clips, 3]})``,
    those clips in ``out``'s order."""
    params = fit(X, y_win, spk_win, np.isin(owner, train), PROBE_C)
    rows_out = np.isin(owner, out)
    clean = clip_logp(_logits(X[rows_out], params), owner[rows_out], out)
    if degraded is None:
        return clean
    noisy = {}
    for cond, (Xc, owner_c) in degraded.items():
        rows, out_c = np.isin(owner_c, out), [i for i in out if i in set(owner_c.tolist())]
        noisy[cond] = clip_logp(_logits(Xc[rows], params), owner_c[rows], out_c)
    return clean, noisy


def row(name: str, C: float, proba: np.ndarray, y: np.ndarray, sel: np.ndarray) -> dict:
    n = len(LABELS)
    return {"candidate": name, "C": C, "cv_saa": _bacc(y[sel], proba[sel].argmax(1), n),
            "cv_all": _bacc(y, proba.argmax(1), n), "recall_saa": _recalls(y[sel], proba[sel].argmax(1), n),
            "recall_all": _recalls(y, proba.argmax(1), n)}


def noisy_row(name: str, C: float, condition: str, proba: np.ndarray, y_saa: np.ndarray) -> dict:
    """A row of degraded SAA clips only (``proba`` ``[SAA clips, 3]`` in the pool's order): no all-corpora figures."""
    n = len(LABELS)
    return {"candidate": name, "C": C, "condition": condition, "slice": "SAA",
            "cv_saa": _bacc(y_saa, proba.argmax(1), n), "recall_saa": _recalls(y_saa, proba.argmax(1), n)}


def degraded_inputs(utts: list, folds: list[list[int]], conditions: list[str], seed: int, encode_probe, encode_lid) -> dict:
    """Per condition, the probe features and LID log-posteriors of every fold's SAA clips degraded as the trainer's
    noisy CV degrades them: ``{condition: ({clip: [windows, states, 2, d]}, {clip: [languages]})}``. One condition
    at a time, so the first is complete before the second starts."""
    from workers.pipeline.whisper_augment import condition_features

    def keep(i: int) -> bool:
        return utts[i].corpus == "SAA"

    out = {}
    for cond in conditions:
        feats = condition_features(utts, folds, [cond], seed, keep=keep, encode=encode_probe)[cond]
        lid = condition_features(utts, folds, [cond], seed, keep=keep, encode=encode_lid)[cond]
        out[cond] = (feats, lid)
        logging.info("degraded inputs of %s ready (%d clips)", cond, len(feats))
    return out


def copy_inputs(utts: list, folds: list[list[int]], copies: int, seed: int, encode_probe, encode_lid) -> tuple:
    """The noisy training copies (the trainer's: whisper_augment.copy_features) of every clip, as the probe's window
    rows and the LID log-posteriors: ``({"copy": (X [windows, D], owner [windows])}, lid [clips, languages])``, the
    copy of every clip, in clip order (``probe_logp``'s ``degraded`` form)."""
    from workers.pipeline.whisper_augment import copy_features

    feats = copy_features(utts, folds, copies, seed, encode=encode_probe)
    logging.info("copies' probe features ready (%d clips)", len(feats))
    lid = copy_features(utts, folds, copies, seed, encode=encode_lid)
    logging.info("copies' LID ready (%d clips)", len(lid))
    idx = list(range(len(utts)))
    return {"copy": _design({i: feats[i][0] for i in idx}, idx, STATES, "mean")}, np.stack([lid[i][0] for i in idx])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--manifest", required=True)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--cache-dir", default=os.environ.get("ACCENTSITE_CACHE", "/tmp/accentsite-cache"))
    p.add_argument("--out", default=None)
    p.add_argument("--candidates", default=",".join(CANDIDATES), help="comma-separated, of " + ", ".join(CANDIDATES))
    p.add_argument("--grid", default=None, help="comma-separated C values (default: the trainer's C grid)")
    p.add_argument("--conditions", default="", help="degrade.py conditions scored on held-out SAA clips")
    p.add_argument("--conditions-seed", type=int, default=0)
    p.add_argument("--copies", type=int, default=0, choices=(0, 1), help="1: a noisy training copy per clip, for the copy stackers")
    p.add_argument("--copies-seed", type=int, default=0)
    args = p.parse_args(argv)
    wanted = [c.strip() for c in args.candidates.split(",") if c.strip()]
    if set(wanted) - set(CANDIDATES):
        p.error(f"unknown candidates {sorted(set(wanted) - set(CANDIDATES))}")
    if bool(set(wanted) & set(COPY_STACKERS)) != (args.copies > 0):
        p.error("the copy stackers need --copies >= 1, and --copies needs one of them")
    conditions = [c for c in parse_conditions(args.conditions) if c != "clean"] if args.conditions else []
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    import torch

    from models.whisper_encoder import file_sha256, load_encoder
    from models.whisper_probe import WhisperProbe, find_encoder_dir
    from workers.pipeline.lid_features import cached_lid, language_order
    from workers.pipeline.train_config import TrainConfig
    from workers.pipeline.train_data import load_items, make_splits
    from workers.pipeline.whisper_lang import load_engine
    from workers.pipeline.whisper_training import HOP_S, WINDOW_S, cached_features

    torch.set_num_threads(args.threads)
    config = TrainConfig(name="accent-group", family="whisper_probe", manifest=args.manifest, label_column="accent_group",
                         select_corpus="SAA", seed=0, cache_dir=args.cache_dir, evaluate=False)
    items = [it for it in load_items(config) if it.label in LABELS]
    splits = make_splits(items, config)
    pool = sorted(splits["train"] + splits["val"])
    pool_items = [items[i] for i in pool]
    utts = load_utterances(pool_items, LABELS, max_seconds=config.max_seconds)  # only train + validation clips are decoded
    folder = find_encoder_dir(None)
    sha = file_sha256(folder / "model.bin")
    encoder, info = load_encoder(folder, device=torch.device("cpu"), expected_sha256=sha)
    reader = WhisperProbe(1, (0,), d_model=info.d_model, band_limit_hz=DEFAULTS["band_limit_hz"], encoder_sha256=sha)
    reader.attach_encoder(encoder)
    tag = hashlib.sha1(repr((sha, DEFAULTS["band_limit_hz"], WINDOW_S, HOP_S, config.max_seconds, "v1")).encode()).hexdigest()[:12]
    feats = cached_features(reader, utts, WINDOW_S, HOP_S, args.cache_dir, tag)
    engine = load_engine(folder, device="cpu", compute_type="int8", cpu_threads=args.threads)
    codes = language_order(engine)
    lid = cached_lid(engine, utts, codes, args.cache_dir, band_limit_hz=DEFAULTS["band_limit_hz"],
                     progress=lambda d, t: logging.info("lid %d/%d", d, t))

    idx = list(range(len(utts)))  # positions within the pool
    folds = speaker_folds(pool_items, idx, 5, seed=0)
    def encode_probe(lazies: list) -> list[np.ndarray]:
        return cached_features(reader, lazies, WINDOW_S, HOP_S, args.cache_dir, tag)

    def encode_lid(lazies: list) -> list[np.ndarray]:
        return list(cached_lid(engine, lazies, codes, args.cache_dir, band_limit_hz=DEFAULTS["band_limit_hz"],
                               progress=lambda d, t: logging.info("degraded / copy lid %d/%d", d, t)))

    degraded = degraded_inputs(utts, folds, conditions, args.conditions_seed, encode_probe, encode_lid)
    copy_in = copy_inputs(utts, folds, args.copies, args.copies_seed, encode_probe, encode_lid) if args.copies else None
    y = np.array([u.label for u in utts])
    spk = [u.speaker for u in utts]
    sel = np.array([u.corpus == "SAA" for u in utts])
    X, owner = _design(feats, idx, STATES, "mean")
    y_win, spk_win = y[owner], [spk[i] for i in owner]
    X_early = np.concatenate([X, lid[owner]], axis=1)
    grid = [float(c) for c in args.grid.split(",")] if args.grid else [float(c) for c in DEFAULTS["C_grid"]]
    n = len(LABELS)
    oof = {("early", C): np.zeros((len(X), n)) for C in grid if "early" in wanted}
    oof |= {(name, C): np.zeros((len(idx), n)) for name in ("stacked", "lid_alone", *COPY_STACKERS) if name in wanted
            for C in grid}
    if "probe_2.0.0" in wanted or "stacked" in wanted:
        oof[("probe_2.0.0", PROBE_C)] = np.zeros((len(idx), n))
    saa = [i for i in idx if utts[i].corpus == "SAA"]
    design_c = {cond: _design(feats_c, saa, STATES, "mean") for cond, (feats_c, _) in degraded.items()}
    lid_c = {cond: np.stack([per[i] for i in saa]) for cond, (_, per) in degraded.items()}
    noisy = {(name, C, cond): np.zeros((len(saa), n)) for (name, C) in oof
             if name in ("stacked", "probe_2.0.0", *COPY_STACKERS) for cond in degraded}
    for f, held in enumerate(folds):
        train = sorted(set(idx) - set(held))
        rows_tr, rows_te = ~np.isin(owner, held), np.isin(owner, held)
        for C in grid:
            if "early" in wanted:
                oof[("early", C)][rows_te] = fit_predict(X_early, y_win, spk_win, rows_tr, X_early[rows_te], C)
            if "lid_alone" in wanted:
                oof[("lid_alone", C)][held] = fit_predict(lid, y, spk, np.isin(idx, train), lid[held], C)
        if ("probe_2.0.0", PROBE_C) not in oof:
            continue
        # stacked: inner out-of-fold probe log-probs of the training speakers, the outer probe's for the held-out
        outer, outer_c = probe_logp(X, y_win, spk_win, owner, train, held, design_c)
        oof[("probe_2.0.0", PROBE_C)][held] = outer
        at = np.searchsorted(saa, [i for i in held if i in set(saa)])  # the held-out SAA clips' rows of ``saa``
        for cond in degraded:
            noisy[("probe_2.0.0", PROBE_C, cond)][at] = outer_c[cond]
        if not {"stacked", *COPY_STACKERS} & set(wanted):
            continue
        inner = np.zeros((len(idx), n))
        inner_copy = np.zeros((len(idx), n))
        for inner_held in speaker_folds(pool_items, train, 5, seed=0):
            inner_train = sorted(set(train) - set(inner_held))
            if copy_in is None:
                inner[inner_held] = probe_logp(X, y_win, spk_win, owner, inner_train, inner_held)
            else:  # the same clean probe also scores the inner held-out clips' copies
                inner[inner_held], by = probe_logp(X, y_win, spk_win, owner, inner_train, inner_held, copy_in[0])
                inner_copy[inner_held] = by["copy"]
        S = np.concatenate([inner, lid], axis=1)
        S_held = np.concatenate([outer, lid[held]], axis=1)
        in_train = np.isin(idx, train)
        for C in grid:
            fits = {"stacked": fit(S, y, spk, in_train, C)} if "stacked" in wanted else {}
            if copy_in is not None:  # rows: the clean clips, then their copies (a copy keeps its clip's speaker, label)
                S2, y2, spk2 = np.concatenate([S, np.concatenate([inner_copy, copy_in[1]], axis=1)]), np.r_[y, y], spk + spk
                fits |= {name: fit(S2, y2, spk2, np.r_[in_train & clean, in_train], C)
                         for name, clean in COPY_STACKERS.items() if name in wanted}
            for name, params in fits.items():
                oof[(name, C)][held] = _logits(S_held, params)
                for cond in degraded:
                    noisy[(name, C, cond)][at] = _logits(np.concatenate([outer_c[cond], lid_c[cond][at]], axis=1), params)
        logging.info("fold %d/%d done", f + 1, len(folds))
    table = []
    for (name, C), logits in oof.items():
        proba = _utt_proba(logits, owner, idx, None) if name == "early" else np.exp(logits) if name == "probe_2.0.0" \
            else _utt_proba(logits, np.asarray(idx), idx, None)
        table.append(row(name, C, proba, y, sel))
        print(json.dumps(table[-1]))
        table[-1]["oof_proba"] = np.round(proba, 6).tolist()  # in the file only: clip order of ``meta``
    for (name, C, cond), logits in noisy.items():
        proba = np.exp(logits) if name == "probe_2.0.0" else _utt_proba(logits, np.arange(len(saa)), list(range(len(saa))), None)
        table.append(noisy_row(name, C, cond, proba, y[saa]))
        print(json.dumps(table[-1]))
        table[-1]["oof_proba"] = np.round(proba, 6).tolist()  # meta's SAA clips, in meta's order
    meta = {"languages": codes, "clips": len(idx), "saa_clips": int(sel.sum()), "folds": len(folds), "labels": LABELS,
            "label": y.tolist(), "speaker": spk, "corpus": [u.corpus for u in utts], "conditions": conditions,
            "conditions_seed": args.conditions_seed, "copies": args.copies, "copies_seed": args.copies_seed}
    if args.out:
        Path(args.out).write_text(json.dumps({"meta": meta, "table": table}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
