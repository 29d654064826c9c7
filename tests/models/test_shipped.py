"""The shipped default classifier as it is committed: its card matches the file, and it uses a
recording's transcript only when that is the passage it was trained on."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.pipeline.test_vad import espeak, needs_espeak

ROOT = Path(__file__).resolve().parents[2]
CHECKPOINT = ROOT / "models" / "checkpoints" / "accent-native.pt"


def test_the_card_describes_the_committed_checkpoint() -> None:
    side = json.loads(CHECKPOINT.with_suffix(".json").read_text())
    card = (ROOT / "docs" / "models" / "accent-native.md").read_text()
    assert f"Checkpoint sha256: `{side['sha256']}`" in card
    assert f"# Model card: accent-native ({side['spec']['version']})" in card
    assert CHECKPOINT.stat().st_size < 25 * 2**20


@needs_espeak
def test_the_default_reads_the_stella_passage_and_leaves_other_audio_to_its_window_model() -> None:
    from models.checkpoint import load_checkpoint
    from workers.pipeline.inference import classify_batch

    loaded = load_checkpoint(CHECKPOINT)
    assert loaded.spec.family == "reading_fusion" and loaded.model.passage[:3] == ["please", "call", "stella"]
    passage = (ROOT / "docs" / "models" / "saa_reading_passage.txt").read_text()
    x = espeak("Please call Stella. Ask her to bring these things with her from the store.")
    plain, read, other = classify_batch(loaded, [x, x, x], vad=False,
                                        transcripts=[None, passage, "The north wind and the sun were disputing."])
    assert plain["reading"] is None and not plain["fused"]
    assert read["fused"] and read["reading"]["words_read"] >= 7 and read["probabilities"] != plain["probabilities"]
    assert not other["fused"] and other["probabilities"] == plain["probabilities"] and "passage" in other["reading"]["note"]
    assert sum(read["probabilities"].values()) == pytest.approx(1.0)
