"""The ``cnn`` family learns an accent from a user-sized label set: two espeak-ng accents (US and
Scottish English), 6 training voices per class after validation is carved out (72 training clips), scored on 4 held-out
voices per class that no training clip used. Before the floor on batches per epoch
(``TrainConfig.min_steps_per_epoch``), such a run took 3 optimiser steps per epoch and stayed at
chance (balanced accuracy 0.50 on held-out voices after 8 epochs with 8 sentences per voice;
docs/models/small-data.md)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import espeak_accents
from workers.pipeline.train_config import TrainConfig
from workers.pipeline.trainers import train_model

pytestmark = pytest.mark.skipif(not espeak_accents.available(), reason="espeak-ng not installed")


def test_cnn_beats_chance_on_held_out_voices_from_a_small_label_set(tmp_path: Path) -> None:
    items = espeak_accents.make_items(tmp_path / "espeak", n_train=8, n_test=4, n_sentences=6)
    test_speakers = {it.speaker for it in items if it.split == "test"}
    assert len(test_speakers) == 8 and not test_speakers & {it.speaker for it in items if it.split == "train"}
    config = TrainConfig(name="espeak", family="cnn", items=items, labels=["us", "scottish"], epochs=6, val_fraction=0.25,
                         n_boot=0, references=False, num_threads=1, cache_dir=str(tmp_path / "cache"))
    assert config.steps_per_epoch is None  # the default loop, as a train job runs it
    result = train_model(config)
    test = result.metrics["test"]
    assert test["n"] == 48
    assert test["balanced_accuracy"] >= 0.7, result.history  # chance is 0.5
    assert result.history[-1]["train_acc"] > 0.8  # it fits its training voices
