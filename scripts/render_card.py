"""Re-render a shipped model's card from its sidecar (``models/checkpoints/<stem>.json``), its
leave-one-corpus-out reports (``<stem>.loco.json``, when present) and hand-written notes.

    .venv/bin/python scripts/render_card.py accent-native            # re-render docs/models/accent-native.md in place
    .venv/bin/python scripts/render_card.py --check                  # every card in CARDS: does a re-render change it?
    .venv/bin/python scripts/render_card.py accent-embed --command "python -m workers.pipeline.training ..." \\
        --notes docs/models/notes/accent-embed.md --out /tmp/card.md

The command defaults to the one in the card's own "Reproduce" block, the notes to
``docs/models/notes/<stem>.md``. A notes file holds, in this order:

- optional ``> `` lines: a banner kept verbatim under the card's title (e.g. "Superseded by ...");
- Markdown bullets (``- ...``, indented lines nested under them): the card's Notes section;
- from its first ``## `` heading on, whole sections kept verbatim after the Notes (and before Known
  confounds): the tables measured after training (robustness, per native variety, per L1), so a
  re-render keeps them. A file whose notes need more than bullets (a table), or a section before them
  (Baselines), starts at its first section and holds its own ``## Notes``;
- anywhere, a section headed exactly ``## Header``, not kept as a section: its bullets join the card's
  header list after the default threshold's line (e.g. why a threshold predates the rule).

(``workers.pipeline.train_report.parse_card_notes`` reads it; ``scripts/spoken_words_checkpoint.py``
reads its card's notes file the same way.)

Every card in :data:`CARDS` is reproduced byte for byte by this script from those inputs
(``tests/ops/test_render_card.py`` checks it): edit the notes file, not the card, then re-render.
Cards of retrained models come from the trainer itself (``--card``); this script is for a card whose
checkpoint was trained elsewhere (e.g. to a scratch path) and then committed, or whose notes changed.
"""
from __future__ import annotations

import argparse
import difflib
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CARD_DIR = ROOT / "docs" / "models"
NOTES_DIR = CARD_DIR / "notes"
CHECKPOINT_DIR = ROOT / "models" / "checkpoints"

#: The cards this script renders: ``docs/models/<stem>.md`` from ``models/checkpoints/<stem>.json``
#: (+ ``.loco.json``), ``docs/models/notes/<stem>.md`` and the command in the card's Reproduce block.
CARDS = ("accent-native", "accent-native-3.0.0", "accent-native-2.1.0", "accent-native-2.0.0", "accent-native-1.1.0", "accent-group",
         "accent-embed", "accent-embed-1.1.0")

#: Shipped checkpoints whose card this script does not render, and why.
OTHER_CARDS = {
    "spoken-words": "not trained: written by scripts/spoken_words_checkpoint.py --card from the benchmark's --metrics, "
                    "or with --card-only from the stored sidecar, and the same kind of notes file "
                    "(docs/models/notes/spoken-words.md); tests/ops/test_spoken_words_card.py checks the round trip",
}


def reproduce_command(card: str) -> str:
    """The command in a card's ``## Reproduce`` block."""
    return card.split("## Reproduce", 1)[1].split("```")[1].strip()


def render(stem: str, *, command: str, notes_path: Path | None, out: Path) -> str:
    """Write the card of ``stem`` to ``out`` and return it."""
    from models.specs import ModelSpec
    from workers.pipeline.train_report import CardNotes, parse_card_notes, write_model_card

    side_path = CHECKPOINT_DIR / f"{stem}.json"
    side = json.loads(side_path.read_text())
    loco_path = side_path.with_suffix(".loco.json")
    loco = json.loads(loco_path.read_text()) if loco_path.exists() else None
    hand = parse_card_notes(notes_path.read_text()) if notes_path else CardNotes()
    return write_model_card(side["metrics"], spec=ModelSpec.from_dict(side["spec"]), path=out, command=command,
                            calibration=side.get("calibration"), sha256=side["sha256"], loco=loco,
                            training_data=side.get("training_data"), hparams=side.get("hparams"), notes=hand.notes,
                            sections=hand.sections, banner=hand.banner, header=hand.header)


def render_shipped(stem: str, out: Path) -> str:
    """Render a card of :data:`CARDS` from its committed inputs (its own Reproduce command, its notes file)."""
    command = reproduce_command((CARD_DIR / f"{stem}.md").read_text())
    return render(stem, command=command, notes_path=NOTES_DIR / f"{stem}.md", out=out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("stem", nargs="?")
    ap.add_argument("--command", help="the one command that reproduces the checkpoint (default: the card's own)")
    ap.add_argument("--notes", help="the notes file (default docs/models/notes/<stem>.md when it exists)")
    ap.add_argument("--out", help="default docs/models/<stem>.md")
    ap.add_argument("--check", action="store_true", help="render into a temporary file and print the difference "
                    "from the committed card (every card in CARDS without a stem); exit 1 if any differs")
    args = ap.parse_args()
    if args.check:
        import tempfile

        differ = False
        for stem in [args.stem] if args.stem else CARDS:
            committed = (CARD_DIR / f"{stem}.md").read_text()
            with tempfile.TemporaryDirectory() as tmp:
                text = render_shipped(stem, Path(tmp) / f"{stem}.md")
            diff = list(difflib.unified_diff(committed.splitlines(True), text.splitlines(True),
                                             f"docs/models/{stem}.md", "re-rendered"))
            sys.stdout.writelines(diff)
            print(f"{stem}: {'differs' if diff else 'reproduced'}")
            differ |= bool(diff)
        sys.exit(1 if differ else 0)
    if not args.stem:
        ap.error("a stem is needed (or --check)")
    card = CARD_DIR / f"{args.stem}.md"
    command = args.command or (reproduce_command(card.read_text()) if card.exists() else None)
    if not command:
        ap.error(f"--command is needed: {card} does not exist yet")
    default_notes = NOTES_DIR / f"{args.stem}.md"
    notes = Path(args.notes) if args.notes else (default_notes if default_notes.exists() else None)
    render(args.stem, command=command, notes_path=notes, out=Path(args.out) if args.out else card)


if __name__ == "__main__":
    main()
