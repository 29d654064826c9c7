"""Paired speaker bootstrap of two candidates' CV-SAA balanced accuracy from scripts/lid_cv.py's output
(descriptive only: the rule's choice does not use it).

    .venv/bin/python scripts/lid_cv_compare.py var/exp/lid-cv.json stacked:0.03 probe_2.0.0:0.1
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from workers.pipeline.evaluation import balanced_accuracy  # noqa: E402


def main(argv: list[str]) -> int:
    data = json.loads(Path(argv[0]).read_text())
    meta = data["meta"]
    sel = np.array([c == "SAA" for c in meta["corpus"]])
    y = np.array(meta["label"])[sel]
    spk = np.array(meta["speaker"])[sel]
    preds = []
    for ref in argv[1:3]:
        name, C = ref.split(":")
        row = next(r for r in data["table"] if r["candidate"] == name and r["C"] == float(C))
        preds.append(np.array(row["oof_proba"])[sel].argmax(1))
    n = len(meta["labels"])
    speakers = np.unique(spk)
    rows_of = {s: np.flatnonzero(spk == s) for s in speakers}
    rng = np.random.default_rng(0)
    diffs = []
    for _ in range(2000):
        rows = np.concatenate([rows_of[s] for s in rng.choice(speakers, len(speakers))])
        diffs.append(balanced_accuracy(y[rows], preds[0][rows], n) - balanced_accuracy(y[rows], preds[1][rows], n))
    point = balanced_accuracy(y, preds[0], n) - balanced_accuracy(y, preds[1], n)
    lo, hi = np.percentile(diffs, [2.5, 97.5])
    print(json.dumps({"a": argv[1], "b": argv[2], "saa_clips": int(sel.sum()), "saa_speakers": len(speakers),
                      "difference": round(float(point), 4), "ci95": [round(float(lo), 4), round(float(hi), 4)],
                      "draws": 2000, "seed": 0}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
