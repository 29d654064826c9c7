"""scripts/render_card.py: a notes file's bullets become the Notes section and its ``## `` sections are kept
verbatim after them, so the tables measured after training (robustness, per variety, per L1) survive a re-render."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _render(stem: str, notes: Path, out: Path, monkeypatch) -> str:
    spec = importlib.util.spec_from_file_location("render_card", ROOT / "scripts" / "render_card.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    card = (ROOT / "docs" / "models" / f"{stem}.md").read_text()
    command = card.split("## Reproduce", 1)[1].split("```")[1].strip()
    monkeypatch.setattr(sys, "argv", ["render_card.py", stem, "--command", command, "--notes", str(notes),
                                      "--out", str(out)])
    script.main()
    return out.read_text()


def test_sections_after_the_bullets_are_kept_verbatim_before_the_confounds(tmp_path, monkeypatch) -> None:
    notes = tmp_path / "notes.md"
    notes.write_text("- a note\n  continued\n\n## Per first language\n\nIntro.\n\n| L1 | share |\n|---|---|\n| korean | 0.800 |\n")
    text = _render("accent-native", notes, tmp_path / "card.md", monkeypatch)
    assert "## Notes\n\n- a note\n  continued\n\n## Per first language\n\nIntro.\n\n| L1 | share |\n|---|---|\n" in text
    assert text.index("| korean | 0.800 |") < text.index("## Known confounds")


@pytest.mark.parametrize("stem", ["accent-native", "accent-group"])
def test_a_re_render_keeps_every_section_of_the_committed_card(stem, tmp_path, monkeypatch) -> None:
    text = _render(stem, ROOT / "docs" / "models" / "notes" / f"{stem}.md", tmp_path / "card.md", monkeypatch)
    committed = (ROOT / "docs" / "models" / f"{stem}.md").read_text()
    assert re.findall(r"^## .*$", text, re.M) == re.findall(r"^## .*$", committed, re.M)
    assert "## Per first language (stored test predictions)" in text
