"""scripts/spoken_words_checkpoint.py writes the spoken-words card from the benchmark's figures and a notes file
read as render_card reads one (``## Header`` bullets under the calibration line, sections kept verbatim before
Limits); the committed card equals its re-render from the stored sidecar and notes, byte for byte."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from tests.factories import script_module

ROOT = Path(__file__).resolve().parents[2]
CARD = ROOT / "docs" / "models" / "spoken-words.md"
SIDECAR = ROOT / "models" / "checkpoints" / "spoken-words.json"


script = script_module("spoken_words_checkpoint")


def test_the_committed_card_is_its_re_render_from_the_stored_sidecar_and_notes() -> None:
    """Fails when the card was edited by hand: put the change in docs/models/notes/spoken-words.md and re-render
    (``scripts/spoken_words_checkpoint.py --card-only --card docs/models/spoken-words.md``)."""
    assert script.card_from_sidecar(SIDECAR, script.NOTES) == CARD.read_text()


def test_card_only_writes_it_without_measuring_anything(tmp_path, monkeypatch) -> None:
    out = tmp_path / "card.md"
    monkeypatch.setattr(sys, "argv", ["spoken_words_checkpoint.py", "--card-only", "--card", str(out)])
    script.main()
    assert out.read_text() == CARD.read_text()
    assert not (tmp_path / "spoken-words.pt").exists()


def test_notes_parts_land_where_the_renderer_puts_them(tmp_path) -> None:
    notes = tmp_path / "notes.md"
    notes.write_text("> Superseded by 9.0.0.\n\n- a note\n\n## Header\n\n- Default threshold: why.\n\n"
                     "## Robustness\n\n| condition | accuracy |\n|---|---|\n| clean | 0.912 |\n")
    text = script.card_from_sidecar(SIDECAR, notes)
    assert text.startswith("# Model card: spoken-words (1.0.0)\n\n> Superseded by 9.0.0.\n\n- Family:")
    assert "(nothing is fitted).\n- Default threshold: why.\n\n## Reproduce" in text
    assert ("upper bounds).\n\n## Notes\n\n- a note\n\n## Robustness\n\n| condition | accuracy |\n|---|---|\n"
            "| clean | 0.912 |\n\n## Limits\n") in text
    assert "## Header" not in text


def test_every_notes_section_is_in_the_committed_card_verbatim() -> None:
    from workers.pipeline.train_report import parse_card_notes

    hand = parse_card_notes(script.NOTES.read_text())
    card = CARD.read_text()
    assert hand.sections.strip() and hand.sections.strip() in card
    assert all(f"\n- {h}\n" in card for h in hand.header)


def test_confusion_ties_do_not_depend_on_the_benchmarks_key_order() -> None:
    """A card written from the benchmark's own output (any key order) equals the one from the sidecar (keys sorted)."""
    from models.specs import ModelSpec

    side = json.loads(SIDECAR.read_text())
    metrics = side["metrics"]
    for key in ("fsdd_train", "fsdd_test"):
        conf = metrics["benchmark"][key]["confusions"]
        metrics["benchmark"][key]["confusions"] = dict(reversed(list(conf.items())))
    hand = script._notes(script.NOTES)
    text = script.card(ModelSpec.from_dict(side["spec"]), side["hparams"], side["calibration"], metrics, side["sha256"],
                       hand=hand)
    assert text == CARD.read_text()
