"""A few training steps on audio made here reduce the loss; train_model runs end to end."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from models.checkpoint import build_model, load_checkpoint
from models.specs import ModelSpec
from workers.pipeline.data import TrainItem
from workers.pipeline.training import TrainConfig, train_model, write_model_card

SR = 16000


def _tone(f0: float, seconds: float, rng: np.random.Generator) -> np.ndarray:
    """Harmonic signal with vibrato plus a little noise ``[time]``."""
    t = np.arange(int(seconds * SR)) / SR
    f = f0 * (1 + 0.02 * np.sin(2 * np.pi * 4 * t + rng.uniform(0, 6)))
    phase = 2 * np.pi * np.cumsum(f) / SR
    x = sum(np.sin(k * phase) / k for k in range(1, 6)) * (0.6 + 0.4 * np.sin(2 * np.pi * 2 * t) ** 2)
    return (0.2 * x + 0.01 * rng.standard_normal(len(t))).astype(np.float32)


def _batch(n: int, seconds: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    x = np.stack([_tone(rng.uniform(90, 130) if c == 0 else rng.uniform(260, 340), seconds, rng) for c in y])
    return x, y


TINY = {
    "cnn": {"channels": 4, "embedding_dim": 16, "n_mels": 32, "specaug": False, "dropout": 0.0},
    "resnet": {"base_channels": 4, "embedding_dim": 16, "n_mels": 32, "specaug": False, "dropout": 0.0},
    "speaker_head": {"hidden": 16, "dropout": 0.0, "input_dropout": 0.0},
    "accent_embed": {"d_model": 32, "n_layers": 1, "n_heads": 2, "n_mels": 32, "n_mfcc": 13, "specaug": False,
                     "dropout": 0.0},
}


@pytest.mark.parametrize("family", ["cnn", "resnet", "speaker_head", "accent_embed"])
def test_few_steps_reduce_loss(family: str) -> None:
    torch.manual_seed(0)
    spec = ModelSpec(name="t", version="0", family=family, task="classify", labels=("low", "high"), window_s=1.0,
                     hop_s=0.5)
    model = build_model(spec, TINY[family])
    x, y = _batch(8, 1.0, seed=0)
    inputs = model.prepare_inputs(x) if hasattr(model, "prepare_inputs") else torch.from_numpy(x)
    yt = torch.from_numpy(y)
    if family == "speaker_head":
        inputs = model.encode(inputs)  # frozen encoder: train the head on its features
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=3e-3)
    model.train()

    def loss_fn() -> torch.Tensor:
        if family == "accent_embed":
            return model.training_losses(inputs, yt)[0]
        logits = model.head(inputs) if family == "speaker_head" else model(inputs)
        return torch.nn.functional.cross_entropy(logits, yt)

    first = loss_fn().item()
    for _ in range(8):
        opt.zero_grad()
        loss = loss_fn()
        loss.backward()
        opt.step()
    assert loss_fn().item() < first


def _items(n_speakers: int = 12) -> list[TrainItem]:
    items = []
    for s in range(n_speakers):
        label = "low" if s % 2 == 0 else "high"
        for k in range(2):
            seed = 100 * s + k

            def loader(seed: int = seed, label: str = label) -> np.ndarray:
                rng = np.random.default_rng(seed)
                return _tone(rng.uniform(90, 130) if label == "low" else rng.uniform(260, 340), 2.0, rng)

            items.append(TrainItem(loader, label, f"spk{s}", "synth" if s % 3 else "other",
                                   "test" if s >= 8 else "train", key=f"synth-{seed}"))
    return items


@pytest.mark.parametrize("family", ["cnn", "speaker_head"])
def test_train_model_end_to_end(family: str, tmp_path: Path) -> None:
    config = TrainConfig(
        name="toy", family=family, items=_items(), labels=["low", "high"], out=str(tmp_path / "toy.pt"),
        window_s=1.0, hop_s=0.5, epochs=3, batch_size=8, steps_per_epoch=4, lr=3e-3, hparams=TINY[family],
        n_aug_copies=1, val_fraction=0.25, cache_dir=str(tmp_path / "cache"), n_boot=10, num_threads=1,
    )
    stages = []
    result = train_model(config, progress=lambda stage, d, t, info: stages.append(stage))
    assert {"load", "train", "evaluate", "references", "done"} <= set(stages)
    assert result.sha256 and Path(result.checkpoint).exists()
    cal = result.calibration
    assert cal["temperature"] > 0 and cal["train_prior"] == [0.5, 0.5] and 0 <= cal["threshold"] <= 1
    test = result.metrics["test"]
    assert test["n"] == 8 and set(test["per_corpus"]) == {"synth", "other"}
    loaded = load_checkpoint(result.checkpoint)
    assert loaded.calibration["temperature"] == pytest.approx(cal["temperature"])
    assert loaded.meta["training_data"]["splits"]["test"]["speakers"] == 4
    card = write_model_card(result.metrics, spec=result.spec, path=tmp_path / "card.md", command="python -m x",
                            calibration=cal, sha256=result.sha256)
    assert "python -m x" in card and "non-commercial" in card and "synth" in card
    # the brief's two references, trained in the same run on the same split and paired with the model
    refs = result.metrics["references"]
    assert set(refs) == {"mfcc_logreg", "speaker_encoder_logreg"}
    model_bacc = test["balanced_accuracy"]
    for rep in refs.values():
        splits = loaded.meta["training_data"]["splits"]  # fitted on the model's train + validation recordings
        assert rep["n"] == 8 and rep["baseline"]["n_train"] == splits["train"]["items"] + splits["val"]["items"]
        assert rep["baseline"]["C"] == 0.1
        assert "test_proba" not in rep
        paired = rep["paired"]["all"]
        assert paired["a"] == pytest.approx(model_bacc) and paired["b"] == pytest.approx(rep["balanced_accuracy"])
        assert paired["n_units"] == 4 and set(rep["paired"]["per_corpus"]) == {"synth", "other"}
    assert "## Reference baselines (this run, same split)" in card and "MFCC statistics + logistic regression" in card
    assert f"{model_bacc - refs['mfcc_logreg']['balanced_accuracy']:+.3f}" in card
    config.references, config.out = False, None
    assert "references" not in train_model(config).metrics


def test_wave_source_units_map_to_the_right_utterances() -> None:
    from workers.pipeline.data import Utterance
    from workers.pipeline.train_data import WaveSource as _WaveSource

    utts = [Utterance(np.full(SR, float(k), dtype=np.float32), k % 2, f"s{k}", "c", f"k{k}") for k in range(4)]
    source = _WaveSource(utts, SR // 2, augment=False, seed=0)
    labels, groups = source.train_units([3, 1])
    assert labels.tolist() == [1, 1] and groups == ["s3", "s1"]
    batch = source.batch([0, 1], "cpu")
    assert batch[0, 0].item() == 3.0 and batch[1, 0].item() == 1.0


def test_speaker_head_ensemble_loss_trains_every_head() -> None:
    from workers.pipeline.train_loop import _forward_train

    torch.manual_seed(0)
    spec = ModelSpec(name="t", version="0", family="speaker_head", task="classify", labels=("low", "high"),
                     window_s=1.0, hop_s=0.5)
    model = build_model(spec, {**TINY["speaker_head"], "n_heads": 3}, load_pretrained=False).train()
    feats = torch.randn(8, model.feature_dim)
    y = torch.arange(8) % 2
    loss, logits = _forward_train(model, feats, y, None, {"bag": True})
    assert logits.shape == (8, 2) and torch.isfinite(loss)
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.extra_heads.parameters())


def test_cross_validation_uses_train_speakers_only(tmp_path: Path) -> None:
    """k-fold CV trains k models on the train+val speakers, one fold held out each, and never
    loads a test item (their loaders here raise)."""
    from workers.pipeline.training import cross_validate

    def forbidden() -> np.ndarray:
        raise AssertionError("cross-validation loaded a test item")

    items = [it if it.split != "test" else TrainItem(forbidden, it.label, it.speaker, it.corpus, "test", it.key)
             for it in _items()]
    config = TrainConfig(
        name="toy", family="cnn", items=items, labels=["low", "high"], window_s=1.0, hop_s=0.5, epochs=2,
        batch_size=8, steps_per_epoch=2, lr=3e-3, hparams=TINY["cnn"], cache_dir=str(tmp_path / "cache"),
        n_boot=0, num_threads=1, augment=False,
    )
    cv = cross_validate(config, 2)
    assert cv["k"] == 2 and len(cv["folds"]) == 2
    assert sum(f["speakers"] for f in cv["folds"]) == 8  # speakers 0-7 are the train pool, each in one fold
    assert all(0.0 <= f["balanced_accuracy"] <= 1.0 for f in cv["folds"])
    assert set(cv["per_corpus_mean"]) <= {"synth", "other"} and 0.0 <= cv["mean"] <= 1.0


def test_phonetic_fusion_trains_stacks_and_classifies(tmp_path: Path) -> None:
    """The fusion family: window model + out-of-fold CV + phone features + logistic layer; the
    saved checkpoint classifies through the normal inference path, and the recording's probabilities
    are the fusion of its window mean and its phone features."""
    from workers.pipeline.inference import classify_batch
    from workers.pipeline.phones import phone_features

    config = TrainConfig(
        name="toy", family="phonetic_fusion", items=_items(), labels=["low", "high"], out=str(tmp_path / "fused.pt"),
        window_s=1.0, hop_s=0.5, epochs=2, batch_size=8, steps_per_epoch=3, lr=3e-3,
        hparams={"base_family": "cnn", **TINY["cnn"]}, val_fraction=0.25, cache_dir=str(tmp_path / "cache"),
        n_boot=10, num_threads=1, augment=False,
    )
    stages = []
    result = train_model(config, progress=lambda stage, d, t, info: stages.append(stage))
    assert {"train", "phones", "fusion", "done"} <= set(stages)
    fcv = result.metrics["fusion_cv"]
    assert fcv["folds"] == 4  # clamped to the 4 speakers per class in the train + validation pool
    assert 0.0 <= fcv["fused"]["overall"] <= 1.0 and 0.0 <= fcv["window_model_alone"]["overall"] <= 1.0
    assert result.metrics["test"]["n"] == 8 and 0.0 <= result.calibration["threshold"] <= 1.0
    loaded = load_checkpoint(result.checkpoint)
    assert loaded.spec.family == "phonetic_fusion" and loaded.meta["hparams"]["base_family"] == "cnn"
    rng = np.random.default_rng(7)
    signal = _tone(300.0, 2.0, rng)
    (out,) = classify_batch(loaded, [signal], vad=False)
    assert "phones" in out.timings and out.n_windows >= 2
    mean_window = np.mean([[w["probabilities"]["low"], w["probabilities"]["high"]] for w in out.windows], axis=0)
    expected = loaded.model.fuse(mean_window[None], phone_features(signal)[None])[0]
    assert [out.probabilities["low"], out.probabilities["high"]] == pytest.approx(list(expected), abs=1e-5)
    card = write_model_card(result.metrics, spec=result.spec, path=tmp_path / "card.md", command="python -m x",
                            calibration=result.calibration, sha256=result.sha256)
    assert "fused with phone features" in card and "phone-recogniser features" in card


@pytest.mark.parametrize("passage_words", [0, 3])
def test_reading_fusion_builds_on_a_window_checkpoint_and_leaves_untranscribed_recordings_to_it(
        tmp_path: Path, passage_words: int) -> None:
    """reading_fusion around an existing window model (``base_checkpoint``): the fusion is fitted on
    the recordings with a transcript only; without a transcript the saved model gives exactly the
    window model's output, with one it gives the fusion of the window mean and the reading features
    (and, for a passage model, the passage's word features; another text is left to the window model)."""
    from dataclasses import replace

    from workers.pipeline.inference import classify_batch
    from workers.pipeline.reading import fusion_feature_names, fusion_features

    common = dict(name="toy", labels=["low", "high"], window_s=1.0, hop_s=0.5, epochs=2, batch_size=8,
                  steps_per_epoch=3, lr=3e-3, val_fraction=0.25, cache_dir=str(tmp_path / "cache"), n_boot=10,
                  num_threads=1, augment=False)
    base = train_model(TrainConfig(family="cnn", items=_items(), out=str(tmp_path / "base.pt"), hparams=TINY["cnn"],
                                   **common))
    text = "bring a big toy frog"
    items = [replace(it, transcript=text) if it.corpus == "synth" else it for it in _items()]
    stages = []
    result = train_model(TrainConfig(family="reading_fusion", items=items, out=str(tmp_path / "reading.pt"),
                                     hparams={"base_checkpoint": base.checkpoint, "passage_words": passage_words},
                                     **common),
                         progress=lambda stage, d, t, info: stages.append(stage))
    assert {"reading", "fusion", "done"} <= set(stages) and "train" in stages  # the CV folds still train
    fcv = result.metrics["fusion_cv"]
    pool = [it for it in items if it.split == "train"]
    assert fcv["rows"] == sum(1 for it in pool if it.transcript) < len(pool)
    assert result.metrics["window_model"]["checkpoint"] == base.checkpoint
    refs = result.metrics["references"]  # compared with the fused test predictions, not the window model's
    assert refs["mfcc_logreg"]["paired"]["all"]["a"] == pytest.approx(result.metrics["test"]["balanced_accuracy"])
    assert 0.0 <= result.calibration["fused_threshold"] <= 1.0
    assert result.calibration["threshold"] == base.calibration["threshold"]  # kept for recordings without one

    loaded, window = load_checkpoint(result.checkpoint), load_checkpoint(base.checkpoint)
    assert loaded.spec.family == "reading_fusion" and loaded.meta["hparams"]["base_family"] == "cnn"
    assert loaded.model.passage == text.split()[:passage_words]
    assert loaded.model.n_features == len(fusion_feature_names(passage_words))
    signal = _tone(300.0, 2.0, np.random.default_rng(7))
    (plain,), (ref,) = classify_batch(loaded, [signal], vad=False), classify_batch(window, [signal], vad=False)
    assert plain.probabilities == ref.probabilities and plain.windows == ref.windows
    assert plain.reading is None and plain.fused is False and "reading" in plain.timings
    (read,) = classify_batch(loaded, [signal], vad=False, transcripts=[text])
    assert read.reading["prompt_words"] == 5 and read.windows == ref.windows
    assert len(read.reading["words"]) == read.reading["words_read"]
    mean_window = np.array([ref.probabilities["low"], ref.probabilities["high"]])
    if read.fused:
        feats = fusion_features(signal, 16000, text, loaded.model.passage)[0]
        expected = loaded.model.fuse(mean_window[None], feats[None])[0]
        assert [read.probabilities["low"], read.probabilities["high"]] == pytest.approx(list(expected), abs=1e-5)
    else:  # the aligner heard no word of it in a tone: the window model's answer stands
        assert read.probabilities == ref.probabilities
    if passage_words:  # another text: a passage model leaves it to the window model, and says why
        (other,) = classify_batch(loaded, [signal], vad=False, transcripts=["a big frog"])
        assert other.probabilities == ref.probabilities and other.fused is False
        assert "passage" in other.reading["note"]
    if not passage_words:  # a reading model's file can be the base of the next one: its window model is used
        again = train_model(TrainConfig(family="reading_fusion", items=items, out=str(tmp_path / "again.pt"),
                                        hparams={"base_checkpoint": result.checkpoint}, **common))
        (same,) = classify_batch(load_checkpoint(again.checkpoint), [signal], vad=False)
        assert same.probabilities == ref.probabilities
    # test recordings of the corpus without transcripts keep the window model's probabilities
    window_rows = {r["key"]: r["proba"] for r in base.metrics["test_predictions"]}
    for row in result.metrics["test_predictions"]:
        if row["corpus"] == "other":
            assert row["proba"] == pytest.approx(window_rows[row["key"]], abs=1e-4)


def test_manifest_transcripts_and_corpus_prompts(tmp_path: Path) -> None:
    from workers.pipeline.data import read_manifest

    (tmp_path / "m.csv").write_text("path,accent_group,speaker_id,corpus,split,transcript\n"
                                    "a.flac,x,s1,SAA,train,\nb.flac,x,s2,SAA,train,its own words\nc.flac,y,s3,VCTK,test,\n")
    items = read_manifest(tmp_path / "m.csv", prompts={"SAA": "please call stella"})
    assert [it.transcript for it in items] == ["please call stella", "its own words", ""]


def test_a_run_asked_for_robustness_scores_its_test_clips_degraded_and_says_so_in_its_card(tmp_path: Path) -> None:
    """``robustness``: the saved model is scored on degraded copies of its test clips; the table is in
    the checkpoint's metrics (saved again: the sidecar's sha256 is the file's) and in the card."""
    import json

    config = TrainConfig(
        name="toy", family="cnn", items=_items(), labels=["low", "high"], out=str(tmp_path / "toy.pt"),
        window_s=1.0, hop_s=0.5, epochs=2, batch_size=8, steps_per_epoch=3, lr=3e-3, hparams=TINY["cnn"],
        val_fraction=0.25, cache_dir=str(tmp_path / "cache"), n_boot=0, num_threads=1, references=False,
        robustness=["clean", "white_5db", "telephone"],
    )
    stages = []
    result = train_model(config, progress=lambda stage, d, t, info: stages.append(stage))
    rob = result.metrics["robustness"]
    assert "robustness" in stages and rob["n"] == 8 and rob["split"] == "test"
    assert [row["name"] for row in rob["conditions"]] == ["clean", "white_5db", "telephone"]
    assert all(set(row["recall"]) == {"low", "high"} for row in rob["conditions"])
    side = json.loads((tmp_path / "toy.json").read_text())
    assert side["metrics"]["robustness"] == json.loads(json.dumps(rob)) and side["sha256"] == result.sha256
    assert load_checkpoint(result.checkpoint, expected_sha256=result.sha256).meta["metrics"]["robustness"]["n"] == 8
    card = write_model_card(result.metrics, spec=result.spec, path=tmp_path / "card.md", command="python -m x",
                            calibration=result.calibration, sha256=result.sha256, training_data=side["training_data"])
    assert "## Robustness: degraded copies of the test clips" in card and "Measured on 8 test clips (4 low, 4 high)" in card
    assert "| white noise, 5 dB SNR |" in card and "high recall" in card
    # the default threshold under the same conditions, and the speakers the numbers rest on
    assert rob["threshold"] == result.calibration["threshold"] and "at_threshold" in rob["conditions"][1]
    assert f"at the default threshold {rob['threshold']:g}: answered" in card and "high uncertain" in card
    n_test = side["training_data"]["splits"]["test"]["speakers"]
    assert n_test < 10 and f"{n_test} test speakers. **Warning:** The test result rests on {n_test} speakers" in card


def test_a_card_states_its_speaker_counts_and_warns_under_10() -> None:
    from workers.pipeline.train_report import speaker_count_lines

    few = speaker_count_lines({"splits": {"train": {"speakers": 9}, "val": {"speakers": 3}, "test": {"speakers": 3}}})
    assert few[0].startswith("Speakers: 9 training speakers, 3 validation speakers, 3 test speakers.")
    assert "rests on 3 speakers: too few to trust" in few[0] and "trained on 9 speakers" in few[0]
    many = speaker_count_lines({"splits": {"train": {"speakers": 588}, "val": {"speakers": 103}, "test": {"speakers": 244}}})
    assert many == ["Speakers: 588 training speakers, 103 validation speakers, 244 test speakers.", ""]
    assert speaker_count_lines({}) == []
