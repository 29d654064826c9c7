"""The whisper_probe family end to end on speech made here: cached features, CV selection, a
checkpoint without the encoder's weights, inference through the service's classify/embed path."""
from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pytest

from models.checkpoint import load_checkpoint
from workers.pipeline.data import TrainItem
from workers.pipeline.inference import classify_batch, embed_batch
from workers.pipeline.training import TrainConfig, train_model

SENTENCES = ["Please call Stella.", "Ask her to bring these things.", "We also need a small plastic snake.",
             "She can scoop these things into three red bags."]


def _espeak(text: str, voice: str, pitch: int, speed: int) -> np.ndarray:
    import librosa
    import soundfile as sf

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "s.wav"
        subprocess.run(["espeak-ng", "-v", voice, "-p", str(pitch), "-s", str(speed), "-w", str(path), text],
                       check=True, capture_output=True)
        x, sr = sf.read(path, dtype="float32")
    return librosa.resample(x, orig_sr=sr, target_sr=16000)


@pytest.fixture(scope="module")
def items() -> list[TrainItem]:
    """Two 'accents' (espeak's US and Scottish English voices), 10 'speakers' each (pitch/speed), 2 clips each."""
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng not installed")
    out = []
    for label, voice in (("us", "en-us"), ("scot", "en-gb-scotland")):
        for s in range(10):
            for j in range(2):
                x = _espeak(SENTENCES[(s + j) % 4], voice, 30 + 4 * s, 140 + 6 * s)
                out.append(TrainItem(lambda x=x: x, label, f"{label}-{s}", corpus="espeak",
                                     split="test" if s >= 8 else "train", key=f"{label}-{s}-{j}"))
    return out


def test_train_selects_by_cv_and_ships_only_the_head(items, tmp_path):
    out = tmp_path / "probe.pt"
    config = TrainConfig(name="probe", family="whisper_probe", items=items, out=str(out), cache_dir=str(tmp_path / "c"),
                         labels=["scot", "us"], val_fraction=0.2, references=False, n_boot=20,
                         hparams={"cv_folds": 3, "C_grid": [0.01, 0.1]})
    result = train_model(config)
    table = result.metrics["selection"]["table"]
    assert len(table) == 8 * 2  # 7 single states + all states, each C
    chosen = result.metrics["chosen"]
    best = max(row["cv_balanced_accuracy"] for row in table)
    assert any(row["states"] == chosen["states"] and row["C"] == chosen["C"] and row["cv_balanced_accuracy"] == best
               for row in table)
    assert result.metrics["test"]["balanced_accuracy"] >= 0.75  # two espeak voices are easy for Whisper
    assert out.stat().st_size < 200_000  # the encoder (~40 MB) is not in the checkpoint
    cached = list((tmp_path / "c" / "whisper").rglob("*.npy"))
    assert len(cached) == len(items)

    # a second run reuses the cached encoder features
    again = train_model(TrainConfig(**{**config.__dict__, "out": None, "hparams": {"states": chosen["states"],
                                                                                   "C": chosen["C"], "cv_folds": 3}}))
    assert again.metrics["selection"]["table"][0]["cv_balanced_accuracy"] == pytest.approx(best)

    loaded = load_checkpoint(out)
    loaded.model.attach_encoder()
    signals = [it.path_or_loader() for it in items if it.split == "test"]
    res = classify_batch(loaded, signals, vad=False)
    assert all(r.outcome in ("ok", "uncertain") and set(r.probabilities) == {"scot", "us"} for r in res)
    truth = [it.label for it in items if it.split == "test"]
    assert np.mean([r.predicted_class == t for r, t in zip(res, truth, strict=True)]) >= 0.75
    # a long recording is windowed (20-s windows), never cut, and its windows aggregated
    long = np.concatenate(signals * 5)
    (r,) = classify_batch(loaded, [long], vad=False)
    assert r.n_windows >= 2 and r.windows[-1]["end_s"] == pytest.approx(len(long) / 16000, abs=0.01)
    vectors = embed_batch(loaded, signals[:2], vad=False)
    assert np.linalg.norm(np.asarray(vectors[0].vector)) == pytest.approx(1.0, abs=1e-4)


@pytest.mark.parametrize("pooling", ["mean", "mean_std"])
def test_ctranslate2_engine_agrees_with_the_torch_encoder_for_a_last_state_probe(items, tmp_path, pooling):
    """A probe over the last state alone may run on CTranslate2's int8 encoder (the CPU default), with
    mean or statistics (mean and spread) pooling; its probabilities stay close to the torch fp32 encoder
    the probe was fitted on, and a probe over other states refuses that engine."""
    out = tmp_path / "last.pt"
    train_model(TrainConfig(name="probe-last", family="whisper_probe", items=items, out=str(out),
                            cache_dir=str(tmp_path / "c"), labels=["scot", "us"], val_fraction=0.2, references=False,
                            evaluate=False, hparams={"cv_folds": 3, "C_grid": [0.1], "states": [6], "pooling": pooling}))
    loaded = load_checkpoint(out)
    assert loaded.model.pooling == pooling and loaded.model.feature_dim == 512 * (2 if pooling == "mean_std" else 1)
    loaded.model.attach_encoder()
    signals = [it.path_or_loader() for it in items if it.split == "test"] + [np.concatenate([items[0].path_or_loader()] * 4)]
    assert loaded.model.use_engine("torch") == "torch"
    ref = classify_batch(loaded, signals, vad=False)
    assert loaded.model.use_engine("auto") == "ctranslate2"  # on a CPU, for a last-state probe
    got = classify_batch(loaded, signals, vad=False)
    for a, b in zip(ref, got, strict=True):
        assert a.n_windows == b.n_windows
        assert abs(a.probabilities["us"] - b.probabilities["us"]) < 0.1
    assert np.mean([a.predicted_class == b.predicted_class for a, b in zip(ref, got, strict=True)]) >= 0.9

    from models.whisper_probe import WhisperProbe

    several = WhisperProbe(2, (4, 6))
    several.attach_encoder()
    assert several.use_engine("auto") == "torch"
    with pytest.raises(ValueError, match="only the last state"):
        several.use_engine("ctranslate2")


def test_embedding_axes_are_chosen_by_cv_among_labels_and_a_manifest_column(items, tmp_path):
    """With a finer manifest column (here a made-up 'voice' column splitting each label in two), the
    embedding's axes are chosen by speaker-grouped CV k-NN accuracy among: the labels alone, the
    column, both side by side; a column value with too few speakers stays out of the fit."""
    from dataclasses import replace

    tagged = [replace(it, meta=(("voice", f"{it.label}-{'lo' if int(it.speaker.split('-')[1]) % 2 else 'hi'}"),))
              for it in items]
    config = TrainConfig(name="probe-axes", family="whisper_probe", task="embed", items=tagged, out=None,
                         cache_dir=str(tmp_path / "c"), labels=["scot", "us"], val_fraction=0.2, references=False,
                         hparams={"cv_folds": 3, "C_grid": [0.1], "states": [4], "axes_column": "voice",
                                  "axes_min_speakers": 2})
    result = train_model(config)
    table = result.metrics["axes_selection"]["table"]
    assert [row["axes"] for row in table] == ["labels", "voice", "labels+voice"]
    assert [row["dims"] for row in table] == [1, 3, 4]
    best = max(table, key=lambda r: (round(r["cv_knn_balanced_accuracy"], 6), -r["dims"]))
    assert result.metrics["chosen"]["axes"] == best["axes"]
    assert result.spec.embedding_dim == best["dims"]


def test_an_embedding_probe_trains_and_embeds(items, tmp_path):
    out = tmp_path / "embed.pt"
    config = TrainConfig(name="probe-embed", family="whisper_probe", task="embed", items=items, out=str(out),
                         cache_dir=str(tmp_path / "c"), labels=["scot", "us"], val_fraction=0.2, references=False,
                         hparams={"cv_folds": 3, "C_grid": [0.1], "states": [4]})
    result = train_model(config)
    assert result.spec.task == "embed" and result.spec.embedding_dim == 1  # LDA: at most classes - 1 axes
    assert result.metrics["test_embedding"]["n"] == sum(it.split == "test" for it in items)
    loaded = load_checkpoint(out)
    vectors = embed_batch(loaded, [it.path_or_loader() for it in items[:2]], vad=False)
    assert abs(abs(vectors[0].vector[0]) - 1.0) < 1e-4


def test_refuses_an_encoder_it_was_not_fitted_on(items, tmp_path):
    from models.whisper_encoder import WhisperModelError
    from models.whisper_probe import WhisperProbe

    probe = WhisperProbe(2, (6,), encoder_sha256="0" * 64)
    with pytest.raises(WhisperModelError, match="no Whisper encoder with sha256 0000"):
        probe.attach_encoder()


def test_cross_validation_folds_fit_without_their_held_out_speakers(items, tmp_path):
    """``cross_validate`` over whisper_probe: each fold's probe is chosen and fitted on the other
    folds' speakers alone, and the out-of-fold rows are that fold's held-out recordings, each once.
    (A probe that fitted on its held-out fold would score a label-shuffled fold well.)"""
    from workers.pipeline.training import cross_validate

    pooled = [it for it in items if it.split == "train"]
    config = TrainConfig(name="probe", family="whisper_probe", items=items, cache_dir=str(tmp_path / "c"),
                         labels=["scot", "us"], references=False, n_boot=0,
                         hparams={"cv_folds": 3, "states": [6], "C": 0.1})
    cv = cross_validate(config, 3)
    keys = sorted(r["key"] for r in cv["predictions"])
    assert keys == sorted(it.key for it in pooled)  # every pooled recording once; no test recording
    for fold in cv["folds"]:
        held = {r["speaker"] for r in cv["predictions"] if r["fold"] == fold["fold"]}
        assert fold["speakers"] == len(held)
    assert cv["mean"] >= 0.75

    # shuffle the labels of the speakers: a fold scored by a probe that saw it would still score high
    # (every other speaker of each voice: both labels keep 8 speakers, and a label no longer names a voice)
    flipped = {f"{label}-{s}" for label in ("us", "scot") for s in range(0, 8, 2)}
    noisy = [it if it.speaker not in flipped else
             TrainItem(it.path_or_loader, "us" if it.label == "scot" else "scot", it.speaker, corpus=it.corpus,
                       split=it.split, key=it.key) for it in pooled]
    shuffled = cross_validate(TrainConfig(**{**config.__dict__, "items": noisy}), 3)
    assert shuffled["mean"] < 0.75


def test_augmented_copies_and_a_noisy_selection_train_a_last_state_probe(items, tmp_path):
    """``augment_copies`` caches K noisy copies of every pooled clip, CV compares K = 0 and K = 1 and
    scores each held-out fold under a degrade.py condition too; the chosen K trains the final probe."""
    out = tmp_path / "aug.pt"
    config = TrainConfig(name="probe", family="whisper_probe", items=items, out=str(out), cache_dir=str(tmp_path / "c"),
                         labels=["scot", "us"], references=False, n_boot=0, evaluate=False,
                         hparams={"cv_folds": 3, "states": [6], "C_grid": [0.1], "augment_copies": 1,
                                  "augment_grid": [0, 1], "select_conditions": ["pink_10db"], "select_min_clean": 0.5})
    result = train_model(config)
    table = result.metrics["selection"]["table"]
    assert [row["augment_copies"] for row in table] == [0, 1]
    assert all(set(row["cv_conditions"]) == {"pink_10db"} and row["cv_conditions"]["pink_10db"]["n"] == 32
               for row in table)
    best = max(table, key=lambda r: (r["cv_selection_score"], -r["augment_copies"]))
    assert result.metrics["chosen"]["augment_copies"] == best["augment_copies"]
    pooled = sum(it.split == "train" for it in items)
    cached = list((tmp_path / "c" / "whisper").rglob("*.npy"))
    assert len(cached) == pooled * 3  # clean, one copy, one pink copy of each pooled clip (the test split unread)
    loaded = load_checkpoint(out)
    assert loaded.meta["hparams"]["augment"]["made"] == 1 and loaded.meta["hparams"]["states"] == [6]
    assert "pink_10db" in loaded.meta["hparams"]["selection"]["rule"]
    from workers.pipeline.training import write_model_card

    card = write_model_card(result.metrics, spec=result.spec, path=tmp_path / "card.md", command="python -m x")
    assert "| copies | C | CV clean | CV pink_10db | mean | scot recall clean | scot recall pink_10db |" in card
    assert card.count("| 0 | 0.1 |") == 1 and card.count("| 1 | 0.1 |") == 1
