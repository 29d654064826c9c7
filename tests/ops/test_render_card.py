"""scripts/render_card.py: a notes file's ``> `` banner goes under the title, its bullets become the Notes section
and its ``## `` sections are kept verbatim after them, so the tables measured after training (robustness, per
variety, per L1) survive a re-render; and every card it owns is reproduced byte for byte from its committed inputs."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.factories import script_module

ROOT = Path(__file__).resolve().parents[2]


render_card = script_module("render_card")


def test_sections_after_the_bullets_are_kept_verbatim_before_the_confounds(tmp_path) -> None:
    notes = tmp_path / "notes.md"
    notes.write_text("- a note\n  continued\n\n## Per first language\n\nIntro.\n\n| L1 | share |\n|---|---|\n| korean | 0.800 |\n")
    command = render_card.reproduce_command((ROOT / "docs" / "models" / "accent-native.md").read_text())
    text = render_card.render("accent-native", command=command, notes_path=notes, out=tmp_path / "card.md")
    assert "## Notes\n\n- a note\n  continued\n\n## Per first language\n\nIntro.\n\n| L1 | share |\n|---|---|\n" in text
    assert text.index("| korean | 0.800 |") < text.index("## Known confounds")


def test_a_banner_goes_under_the_title_and_not_into_the_notes(tmp_path) -> None:
    notes = tmp_path / "notes.md"
    notes.write_text("> Superseded by 9.0.0.\n> Kept as `x@1`.\n\n- a note\n")
    text = render_card.render("accent-native-3.0.0", command="python -m x", notes_path=notes, out=tmp_path / "card.md")
    assert text.startswith("# Model card: accent-native (3.0.0)\n\n> Superseded by 9.0.0.\n> Kept as `x@1`.\n\n- Family:")
    assert "## Notes\n\n- a note\n\n## Known confounds" in text


def test_the_command_and_notes_default_to_the_cards_own(tmp_path, monkeypatch) -> None:
    out = tmp_path / "card.md"
    monkeypatch.setattr(sys, "argv", ["render_card.py", "accent-group", "--out", str(out)])
    render_card.main()
    assert out.read_text() == (ROOT / "docs" / "models" / "accent-group.md").read_text()


def test_a_header_section_joins_the_header_list_and_is_not_kept_as_a_section() -> None:
    from workers.pipeline.train_report import parse_card_notes

    hand = parse_card_notes("> Banner.\n\n- a note\n\n## Baselines\n\nA table.\n\n## Header\n\n- Default threshold: why.\n"
                            "  continued\n\n## Robustness\n\nRows.\n")
    assert hand.banner == "> Banner."
    assert hand.notes == ("a note",)
    assert hand.header == ("Default threshold: why.\n  continued",)
    assert hand.sections == "## Baselines\n\nA table.\n\n## Robustness\n\nRows."


def test_a_passage_fusion_says_which_recordings_it_fuses(tmp_path) -> None:
    """A reading fusion fitted on one passage (hparams ``passage``) fuses only recordings that begin with it;
    one without a passage fuses any known transcript."""
    import json

    from models.specs import ModelSpec
    from workers.pipeline.train_report import write_model_card

    side = json.loads((ROOT / "models" / "checkpoints" / "accent-native-1.1.0.json").read_text())
    kwargs = {"spec": ModelSpec.from_dict(side["spec"]), "path": tmp_path / "card.md", "command": "python -m x",
              "calibration": side["calibration"], "training_data": side["training_data"]}
    passage = write_model_card(side["metrics"], hparams=side["hparams"], **kwargs)
    assert ("for a recording whose transcript begins with the passage its training speakers read (its first 14 words: "
            "'please call stella ask her to bring these things with her from the store'), fused") in passage
    assert "per-word features of those 14 words" in passage
    assert "Any other recording gets the window model's (1.0.0's) output." in passage
    anything = write_model_card(side["metrics"], hparams={**side["hparams"], "passage": []}, **kwargs)
    assert "for a recording whose transcript is known, fused" in anything
    assert "Without a transcript the window model's output stands." in anything
    for card in (passage, anything):  # the calibration line says which threshold is the window model's
        assert "- Calibration (window temperature fitted on validation speakers, window threshold on validation)" in card


@pytest.mark.parametrize("stem", render_card.CARDS)
def test_a_re_render_reproduces_the_committed_card(stem, tmp_path) -> None:
    """Fails when a card was edited by hand: put the change in docs/models/notes/<stem>.md and re-render
    (``scripts/render_card.py <stem>``); ``scripts/render_card.py --check`` prints the difference."""
    committed = (ROOT / "docs" / "models" / f"{stem}.md").read_text()
    assert render_card.render_shipped(stem, tmp_path / f"{stem}.md") == committed


def test_every_shipped_checkpoints_card_is_rendered_here_or_says_by_what() -> None:
    stems = {p.stem for p in (ROOT / "models" / "checkpoints").glob("*.pt")}
    assert stems == set(render_card.CARDS) | set(render_card.OTHER_CARDS)
    assert not set(render_card.CARDS) & set(render_card.OTHER_CARDS)
    for stem in render_card.CARDS:
        assert (ROOT / "docs" / "models" / "notes" / f"{stem}.md").exists()
