"""Robustness of the zero-shot ``spoken-words`` model on espeak-ng digits (no data folder needed).

    .venv/bin/python scripts/spoken_words_robustness.py [--checkpoint models/checkpoints/spoken-words.pt] \\
        [--conditions all] [--out models/checkpoints/spoken-words.robustness.json]

Each digit word said alone by each of ``bench.spoken_words.VOICES`` (8 English espeak-ng voices, 80 clips),
clean and degraded (``workers.pipeline.degrade``, seed 0; babble mixes 6 other clips of the same 80), through
the service's path (``workers.pipeline.robustness.checkpoint_predictor``: ``classify_batch``, VAD off, the ten
digits as classes, the checkpoint's threshold 0.8 for the second table). Nothing is fitted on these clips
(the model is zero-shot), so they are an honest test of it; accent-mini is not read. Prints Markdown.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main(argv: list[str] | None = None) -> int:
    import torch

    from bench.spoken_words import VOICES, espeak_pieces
    from workers.pipeline.degrade import CONDITIONS
    from workers.pipeline.robustness import (
        checkpoint_predictor,
        default_threshold,
        evaluate_robustness,
        robustness_caption,
        robustness_markdown,
        robustness_threshold_markdown,
    )

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", default=str(ROOT / "models" / "checkpoints" / "spoken-words.pt"))
    p.add_argument("--conditions", default="all", help="comma-separated condition names, or all")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    pieces = espeak_pieces()
    if not pieces:
        raise SystemExit("espeak-ng is not installed")
    predict, loaded = checkpoint_predictor(args.checkpoint, threads=1)
    names = list(CONDITIONS) if args.conditions == "all" else args.conditions
    labels = [str(label) for label in loaded.spec.labels]
    load = os.getloadavg()
    report = evaluate_robustness(predict, [x for *_, x in pieces], [w for _, w, _ in pieces], labels, conditions=names,
                                 seed=0, progress=lambda name, k, n: print(f"[{k + 1}/{n}] {name}", file=sys.stderr))
    report.update(model=f"{loaded.spec.name}@{loaded.spec.version}", sha256=loaded.sha256, split="espeak-ng digits",
                  voices=list(VOICES), threshold=default_threshold(loaded), load_before=load, load_after=os.getloadavg())
    print(robustness_caption(report, f"espeak-ng digit ({len(VOICES)} voices)"))
    print("\n".join(robustness_markdown(report)))
    print()
    print("\n".join(robustness_threshold_markdown(report)))
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
