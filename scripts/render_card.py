"""Re-render a shipped model's card from its sidecar (``models/checkpoints/<stem>.json``), its
leave-one-corpus-out reports (``<stem>.loco.json``, when present) and hand-written notes.

    .venv/bin/python scripts/render_card.py accent-embed --command "python -m workers.pipeline.training ..." \\
        --notes docs/models/notes/accent-embed.md

The notes file holds Markdown bullets (``- ...``, indented lines nested under them); they become the
card's Notes section. From its first ``## `` heading on, the file is whole sections kept verbatim after the
Notes (and before Known confounds): the tables measured after training (robustness, per native variety,
per L1) live there, so a re-render keeps them.
Cards of retrained models come from the trainer itself (``--card``); this script is for a card whose
checkpoint was trained elsewhere (e.g. to a scratch path) and then committed.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("stem")
    ap.add_argument("--command", required=True, help="the one command that reproduces the checkpoint")
    ap.add_argument("--notes", help="a file of '- ' bullets")
    ap.add_argument("--out", help="default docs/models/<stem>.md")
    args = ap.parse_args()

    from models.specs import ModelSpec
    from workers.pipeline.train_report import write_model_card

    side_path = ROOT / "models" / "checkpoints" / f"{args.stem}.json"
    side = json.loads(side_path.read_text())
    loco_path = side_path.with_suffix(".loco.json")
    loco = json.loads(loco_path.read_text()) if loco_path.exists() else None
    notes: list[str] = []
    text = Path(args.notes).read_text().splitlines() if args.notes else []
    cut = next((i for i, line in enumerate(text) if line.startswith("## ")), len(text))
    for line in text[:cut]:
        if line.startswith("- "):
            notes.append(line[2:].strip())
        elif line.startswith(" ") and line.strip() and notes:  # a nested list or continuation: kept under its bullet
            notes[-1] += "\n" + line.rstrip()
    spec = ModelSpec.from_dict(side["spec"])
    write_model_card(side["metrics"], spec=spec, path=args.out or ROOT / "docs" / "models" / f"{args.stem}.md",
                     command=args.command, calibration=side.get("calibration"), sha256=side["sha256"], loco=loco,
                     training_data=side.get("training_data"), notes=notes, sections="\n".join(text[cut:]))


if __name__ == "__main__":
    main()
