"""Paired speaker bootstrap of two candidates' CV-SAA balanced accuracy from scripts/lid_cv.py's output
(descriptive only: the rule's choice does not use it).

    .venv/bin/python scripts/lid_cv_compare.py var/exp/lid-cv.json stacked:0.03 probe_2.0.0:0.1

``--conditions pink_10db,babble_10db`` (a run of lid_cv.py with ``--conditions``): the statistic is the mean over
those conditions of the CV-SAA balanced accuracy on the degraded clips (``clean`` names the clean SAA clips); every
draw resamples the same speakers for every condition, so the difference stays paired.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from workers.pipeline.evaluation import balanced_accuracy  # noqa: E402


def saa_predictions(data: dict, ref: str, condition: str) -> np.ndarray:
    """Predicted classes of the SAA clips (meta's order) of candidate ``name:C`` under ``condition``."""
    name, C = ref.split(":")
    sel = np.array([c == "SAA" for c in data["meta"]["corpus"]])
    row = next(r for r in data["table"] if r["candidate"] == name and r["C"] == float(C)
               and r.get("condition", "clean") == condition)
    proba = np.array(row["oof_proba"])
    return (proba if row.get("slice") == "SAA" else proba[sel]).argmax(1)


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("result")
    p.add_argument("a")
    p.add_argument("b")
    p.add_argument("--conditions", default="clean")
    args = p.parse_args(argv)
    data = json.loads(Path(args.result).read_text())
    meta = data["meta"]
    sel = np.array([c == "SAA" for c in meta["corpus"]])
    y = np.array(meta["label"])[sel]
    spk = np.array(meta["speaker"])[sel]
    conditions = [c.strip() for c in args.conditions.split(",") if c.strip()]
    preds = [[saa_predictions(data, ref, cond) for cond in conditions] for ref in (args.a, args.b)]
    n = len(meta["labels"])

    def stat(rows: np.ndarray) -> float:
        means = [np.mean([balanced_accuracy(y[rows], pc[rows], n) for pc in per]) for per in preds]
        return float(means[0] - means[1])

    speakers = np.unique(spk)
    rows_of = {s: np.flatnonzero(spk == s) for s in speakers}
    rng = np.random.default_rng(0)
    diffs = [stat(np.concatenate([rows_of[s] for s in rng.choice(speakers, len(speakers))])) for _ in range(2000)]
    lo, hi = np.percentile(diffs, [2.5, 97.5])
    print(json.dumps({"a": args.a, "b": args.b, "conditions": conditions, "saa_clips": int(sel.sum()),
                      "saa_speakers": len(speakers), "difference": round(stat(np.arange(len(y))), 4),
                      "ci95": [round(float(lo), 4), round(float(hi), 4)], "draws": 2000, "seed": 0}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
