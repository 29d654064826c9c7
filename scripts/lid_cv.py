"""Cross-validation of accent-group with Whisper's language-ID posteriors (issue 26; the rule and its outcome:
docs/models/rules/accent-group-3.0.0.md, "Third candidate"). Train + validation speakers only: no test clip is loaded.

    ACCENTSITE_CACHE=/work/cache nice .venv/bin/python scripts/lid_cv.py \
        --manifest ../shared/data/accent-mini/manifest.csv --threads 2 --out var/exp/lid-cv.json

Uses 2.0.0's cached probe features (all seven states, 20-s windows, hop 10, 4 kHz: run 2.0.0's line of
scripts/train_defaults.sh once first) and caches the LID log-posteriors (workers.pipeline.lid_features) beside
them. Prints and writes, per candidate (early, stacked, LID alone, 2.0.0's probe) and C: CV-SAA and CV-all
balanced accuracy and the per-class recalls on SAA and on all corpora (the file also holds every
clip's out-of-fold probabilities).
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
from workers.pipeline.whisper_training import DEFAULTS, _bacc, _design, _fit, _logits, _recalls, _utt_proba  # noqa: E402

LABELS = ["mandarin_l1", "native_english", "other_l1"]
PROBE_C = 0.1  # 2.0.0's chosen C
STATES = (0, 1, 2, 3, 4, 5, 6)


def fit_predict(X: np.ndarray, y: np.ndarray, groups: list, rows_tr: np.ndarray, X_out: np.ndarray, C: float) -> np.ndarray:
    """Logits of ``X_out`` from the trainer's standardised, balanced L2 logistic regression fitted on ``rows_tr``."""
    w = balanced_sample_weights(y[rows_tr], [groups[r] for r in np.flatnonzero(rows_tr)])
    return _logits(X_out, _fit(X[rows_tr], y[rows_tr], w, C, len(LABELS), 0))


def clip_logp(win_logits: np.ndarray, owner: np.ndarray, idx: list[int]) -> np.ndarray:
    """Log of the clips' mean window probabilities ``[len(idx), classes]``."""
    return np.log(np.maximum(_utt_proba(win_logits, owner, idx, None), 1e-6))


def probe_logp(X: np.ndarray, y_win: np.ndarray, spk_win: list, owner: np.ndarray, train: list[int], out: list[int]) -> np.ndarray:
    """2.0.0's probe (C = 0.1) fitted on the windows of ``train``; the clip log-probabilities of ``out``."""
    rows_out = np.isin(owner, out)
    return clip_logp(fit_predict(X, y_win, spk_win, np.isin(owner, train), X[rows_out], PROBE_C), owner[rows_out], out)


def row(name: str, C: float, proba: np.ndarray, y: np.ndarray, sel: np.ndarray) -> dict:
    n = len(LABELS)
    return {"candidate": name, "C": C, "cv_saa": _bacc(y[sel], proba[sel].argmax(1), n),
            "cv_all": _bacc(y, proba.argmax(1), n), "recall_saa": _recalls(y[sel], proba[sel].argmax(1), n),
            "recall_all": _recalls(y, proba.argmax(1), n)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--manifest", required=True)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--cache-dir", default=os.environ.get("ACCENTSITE_CACHE", "/tmp/accentsite-cache"))
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
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
    y = np.array([u.label for u in utts])
    spk = [u.speaker for u in utts]
    sel = np.array([u.corpus == "SAA" for u in utts])
    X, owner = _design(feats, idx, STATES, "mean")
    y_win, spk_win = y[owner], [spk[i] for i in owner]
    X_early = np.concatenate([X, lid[owner]], axis=1)
    grid = [float(c) for c in DEFAULTS["C_grid"]]
    n = len(LABELS)
    oof = {("early", C): np.zeros((len(X), n)) for C in grid}
    oof |= {(name, C): np.zeros((len(idx), n)) for name in ("stacked", "lid_alone") for C in grid}
    oof[("probe_2.0.0", PROBE_C)] = np.zeros((len(idx), n))
    for f, held in enumerate(folds):
        train = sorted(set(idx) - set(held))
        rows_tr, rows_te = ~np.isin(owner, held), np.isin(owner, held)
        for C in grid:
            oof[("early", C)][rows_te] = fit_predict(X_early, y_win, spk_win, rows_tr, X_early[rows_te], C)
            oof[("lid_alone", C)][held] = fit_predict(lid, y, spk, np.isin(idx, train), lid[held], C)
        # stacked: inner out-of-fold probe log-probs of the training speakers, the outer probe's for the held-out
        inner = np.zeros((len(idx), n))
        for inner_held in speaker_folds(pool_items, train, 5, seed=0):
            inner[inner_held] = probe_logp(X, y_win, spk_win, owner, sorted(set(train) - set(inner_held)), inner_held)
        outer = probe_logp(X, y_win, spk_win, owner, train, held)
        oof[("probe_2.0.0", PROBE_C)][held] = outer
        S = np.concatenate([inner, lid], axis=1)
        S_held = np.concatenate([outer, lid[held]], axis=1)
        for C in grid:
            oof[("stacked", C)][held] = fit_predict(S, y, spk, np.isin(idx, train), S_held, C)
        logging.info("fold %d/%d done", f + 1, len(folds))
    table = []
    for (name, C), logits in oof.items():
        proba = _utt_proba(logits, owner, idx, None) if name == "early" else np.exp(logits) if name == "probe_2.0.0" \
            else _utt_proba(logits, np.asarray(idx), idx, None)
        table.append(row(name, C, proba, y, sel))
        print(json.dumps(table[-1]))
        table[-1]["oof_proba"] = np.round(proba, 6).tolist()  # in the file only: clip order of ``meta``
    meta = {"languages": codes, "clips": len(idx), "saa_clips": int(sel.sum()), "folds": len(folds), "labels": LABELS,
            "label": y.tolist(), "speaker": spk, "corpus": [u.corpus for u in utts]}
    if args.out:
        Path(args.out).write_text(json.dumps({"meta": meta, "table": table}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
