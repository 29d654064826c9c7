"""scripts/spoken_words_robustness.py: the shipped zero-shot model on espeak-ng digits, clean and degraded,
through the service's path; the report says what was measured and how the threshold held."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.factories import script_module

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not installed")
def test_the_script_scores_espeak_digits_clean_and_degraded(tmp_path, monkeypatch, capsys) -> None:
    import bench.spoken_words as sw

    script = script_module("spoken_words_robustness")
    pieces = [p for p in sw.espeak_pieces() if p[0] == "en-us" and p[1] in ("one", "three")]
    monkeypatch.setattr(sw, "espeak_pieces", lambda: pieces)
    out = tmp_path / "rob.json"
    assert script.main(["--conditions", "level_-30db", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["n"] == 2 and report["threshold"] == 0.8 and report["model"].startswith("spoken-words@")
    clean, quiet = report["conditions"]
    assert (clean["name"], quiet["name"]) == ("clean", "level_-30db")
    assert clean["accuracy"] == 1.0 and 0.0 <= clean["at_threshold"]["coverage"] <= 1.0  # espeak's one and three are heard
    text = capsys.readouterr().out
    assert "Measured on 2 espeak-ng digit" in text and "at the default threshold 0.8: answered" in text
