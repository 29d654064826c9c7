"""The shipped models as committed: each card matches its file; the default (accent-native
3.1.0) is a Whisper probe whose encoder is the bundled Whisper folder; 1.1.0, still shipped as
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


SHIPPED = ["accent-native", "accent-native-3.0.0", "accent-native-2.1.0", "accent-native-2.0.0", "accent-native-1.1.0",
           "accent-group", "accent-embed", "accent-embed-1.1.0", "spoken-words"]


@pytest.mark.parametrize("stem", SHIPPED)
def test_the_card_describes_the_committed_checkpoint(stem) -> None:
    path = ROOT / "models" / "checkpoints" / f"{stem}.pt"
    side = json.loads(path.with_suffix(".json").read_text())
    text = (ROOT / "docs" / "models" / f"{stem}.md").read_text()
    assert f"Checkpoint sha256: `{side['sha256']}`" in text
    assert f"# Model card: {side['spec']['name']} ({side['spec']['version']})" in text
    assert path.stat().st_size < 25 * 2**20
    assert "/work/" not in text.split("## Reproduce")[1].split("## ")[0] or stem == "accent-native-1.1.0"
    assert f"--out models/checkpoints/{stem}.pt" in text or stem == "accent-native-1.1.0"  # the command rebuilds this file


def test_the_default_embedding_is_a_whisper_probe_with_accent_and_l1_axes() -> None:
    """accent-embed 2.0.0: LDA axes over the accent labels and the speakers' L1 (chosen by CV), better
    than the speaker encoder's d-vector on its test clips, 10-d unit vectors through the service's embed path."""
    from models.checkpoint import load_checkpoint
    from workers.pipeline.inference import embed_batch

    side = json.loads((ROOT / "models" / "checkpoints" / "accent-embed.json").read_text())
    assert side["default"] and side["spec"]["family"] == "whisper_probe" and side["hparams"]["axes"] == "labels+l1"
    assert side["metrics"]["test_embedding"]["knn_balanced_accuracy"] > \
        side["metrics"]["references"]["speaker_encoder_dvector"]["test_embedding"]["knn_balanced_accuracy"]
    loaded = load_checkpoint(ROOT / "models" / "checkpoints" / "accent-embed.pt")
    loaded.model.attach_encoder()
    assert loaded.spec.embedding_dim == 10  # 2 accent-group axes + 8 L1 axes
    vectors = embed_batch(loaded, [0.1 * np.sin(np.arange(32000, dtype=np.float32) / 7.0)], vad=False)
    assert np.linalg.norm(vectors[0].vector) == pytest.approx(1.0, abs=1e-4) and len(vectors[0].vector) == 10


def test_the_default_is_a_whisper_probe_on_the_bundled_encoder() -> None:
    from models.checkpoint import load_checkpoint
    from models.whisper_encoder import file_sha256
    from models.whisper_probe import find_encoder_dir
    from workers.pipeline.inference import classify_batch

    loaded = load_checkpoint(CHECKPOINT)
    assert loaded.spec.family == "whisper_probe" and loaded.spec.version == "3.1.0" and loaded.spec.window_s == 8.0
    # the last state alone, so the int8 engine serves it; statistics pooling (mean and spread of each dimension)
    assert loaded.meta["hparams"]["states"] == [6] and loaded.meta["hparams"]["pooling"] == "mean_std"
    assert loaded.model.feature_dim == 2 * 512
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


@pytest.mark.parametrize("stem", ["accent-native", "accent-native-3.0.0", "accent-native-2.1.0", "accent-native-2.0.0",
                                  "accent-group"])
def test_each_shipped_classifier_carries_its_default_threshold_by_the_stated_rule(stem) -> None:
    """The threshold is the rule's on the checkpoint's own validation (out-of-fold) reliability bins,
    the card states it, and a request without a threshold gets it: under it the answer is uncertain."""
    from models.checkpoint import load_checkpoint
    from workers.pipeline.calibration import default_threshold_from_reliability

    path = ROOT / "models" / "checkpoints" / f"{stem}.pt"
    loaded = load_checkpoint(path)
    cal = loaded.calibration
    rule = default_threshold_from_reliability(loaded.meta["metrics"]["val"]["reliability"])
    assert cal["threshold"] == rule["threshold"] > 1 / len(loaded.spec.labels) and cal["coverage_at_threshold"] >= 0.9
    card = (ROOT / "docs" / "models" / f"{stem}.md").read_text()
    assert f"- **Default threshold {cal['threshold']}** (used when a request gives none)" in card
    assert "at least 90% of the validation predictions" in card


def test_the_default_answers_uncertain_under_its_threshold_unless_the_request_sets_one() -> None:
    from models.checkpoint import load_checkpoint
    from workers.pipeline.inference import classify_batch

    loaded = load_checkpoint(CHECKPOINT)
    loaded.model.attach_encoder()
    rng = np.random.default_rng(0)
    noise = 0.05 * rng.standard_normal(16000 * 3).astype(np.float32)
    (res,) = classify_batch(loaded, [noise], vad=False)
    assert res.threshold == pytest.approx(0.6)
    assert res.outcome == ("uncertain" if res.confidence < 0.6 else "ok")
    (forced,) = classify_batch(loaded, [noise], vad=False, threshold=0.0)
    assert forced.outcome == "ok" and forced.threshold == 0.0 and forced.confidence == pytest.approx(res.confidence)
