"""The shipped classifiers as committed: each card matches its file; the default (accent-native
2.0.0) is a Whisper probe whose encoder is the bundled Whisper folder; 1.1.0, still shipped as
accent-native@1.1.0, uses a recording's transcript only when that is the passage it was trained on."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.pipeline.test_vad import espeak, needs_espeak

ROOT = Path(__file__).resolve().parents[2]
CHECKPOINT = ROOT / "models" / "checkpoints" / "accent-native.pt"
READING = ROOT / "models" / "checkpoints" / "accent-native-1.1.0.pt"


@pytest.mark.parametrize(("path", "card"), [(CHECKPOINT, "accent-native.md"), (READING, "accent-native-1.1.0.md")])
def test_the_card_describes_the_committed_checkpoint(path, card) -> None:
    side = json.loads(path.with_suffix(".json").read_text())
    text = (ROOT / "docs" / "models" / card).read_text()
    assert f"Checkpoint sha256: `{side['sha256']}`" in text
    assert f"# Model card: accent-native ({side['spec']['version']})" in text
    assert path.stat().st_size < 25 * 2**20
    assert "/work/" not in text.split("## Reproduce")[1].split("## ")[0] or card.endswith("1.1.0.md")


def test_the_default_is_a_whisper_probe_on_the_bundled_encoder() -> None:
    from models.checkpoint import load_checkpoint
    from models.whisper_encoder import file_sha256
    from models.whisper_probe import find_encoder_dir
    from workers.pipeline.inference import classify_batch

    loaded = load_checkpoint(CHECKPOINT)
    assert loaded.spec.family == "whisper_probe" and loaded.spec.version == "2.0.0"
    assert loaded.meta["hparams"]["encoder_sha256"] == file_sha256(find_encoder_dir() / "model.bin")
    assert CHECKPOINT.stat().st_size < 1_000_000  # the head only
    side = json.loads(CHECKPOINT.with_suffix(".json").read_text())
    assert side["default"] is True  # registered as accent-native's default beside 1.1.0's file
    saa = side["metrics"]["test"]["per_corpus"]["SAA"]["balanced_accuracy"]
    assert saa >= 0.85 and side["metrics"]["references"]["speaker_encoder_logreg"]["paired"]["per_corpus"]["SAA"]["low"] > 0
    rng = np.random.default_rng(0)
    (res,) = classify_batch(loaded, [0.05 * rng.standard_normal(16000 * 3).astype(np.float32)], vad=False)
    assert set(res.probabilities) == {"native", "non_native"} and sum(res.probabilities.values()) == pytest.approx(1)


@needs_espeak
def test_the_default_reads_the_stella_passage_and_leaves_other_audio_to_its_window_model() -> None:
    from models.checkpoint import load_checkpoint
    from workers.pipeline.inference import classify_batch

    loaded = load_checkpoint(READING)
    assert loaded.spec.family == "reading_fusion" and loaded.model.passage[:3] == ["please", "call", "stella"]
    passage = (ROOT / "docs" / "models" / "saa_reading_passage.txt").read_text()
    x = espeak("Please call Stella. Ask her to bring these things with her from the store.")
    plain, read, other = classify_batch(loaded, [x, x, x], vad=False,
                                        transcripts=[None, passage, "The north wind and the sun were disputing."])
    assert plain.reading is None and not plain.fused
    assert read.fused and read.reading["words_read"] >= 7 and read.probabilities != plain.probabilities
    assert not other.fused and other.probabilities == plain.probabilities and "passage" in other.reading["note"]
    assert sum(read.probabilities.values()) == pytest.approx(1.0)
