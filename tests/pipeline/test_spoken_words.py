"""The zero-shot ``spoken-words`` model: class lists, pause cutting, and the shipped checkpoint on
espeak-ng words through the service's inference path (``classify_batch``), with the bundled Whisper base."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from models.word_classes import DIGITS, check_classes, spellings
from tests.pipeline.test_vad import espeak, needs_espeak
from workers.pipeline.spoken_words import bind_classes, split_at_pauses

ROOT = Path(__file__).resolve().parents[2]
CHECKPOINT = ROOT / "models" / "checkpoints" / "spoken-words.pt"
SR = 16000


def test_spellings_give_the_word_and_its_digit() -> None:
    assert spellings("zero") == (" Zero.", " 0.")
    assert spellings("7") == (" 7.", " Seven.")
    assert spellings("  turn   left ") == (" Turn left.",)
    assert spellings("Nine") == (" Nine.", " 9.")


@pytest.mark.parametrize("bad, why", [(["zero"], "between 2"), (["zero", "Zero"], "twice"), (["a", ""], "empty"),
                                      (["a", "b" * 41], "40 characters"), ([1, 2], "list of words"),
                                      ([f"w{i}" for i in range(65)], "between 2")])
def test_check_classes_refuses_bad_lists(bad, why) -> None:
    with pytest.raises(ValueError, match=why):
        check_classes(bad)


def test_check_classes_takes_a_list_or_a_comma_separated_string() -> None:
    assert check_classes("zero, two ,six") == ["zero", "two", "six"]
    assert check_classes(["yes", "no"]) == ["yes", "no"]


def test_split_at_pauses_cuts_words_apart_and_drops_clicks() -> None:
    rng = np.random.default_rng(0)
    word = lambda s: (0.2 * rng.standard_normal(int(s * SR))).astype(np.float32)  # noqa: E731 - three one-liners
    gap = lambda s: np.zeros(int(s * SR), dtype=np.float32)  # noqa: E731
    click = np.full(160, 0.3, dtype=np.float32)  # 10 ms: under min_word_s
    x = np.concatenate([gap(0.2), word(0.4), gap(0.15), word(0.3), gap(0.05), word(0.2), gap(0.3), click, gap(0.2)])
    spans = split_at_pauses(x, SR)
    assert len(spans) == 2  # the 50-ms gap is inside a word, not a pause; the click is dropped
    assert spans[0][0] == pytest.approx(0.2 * SR, abs=160) and spans[0][1] == pytest.approx(0.6 * SR, abs=160)
    assert spans[1][1] - spans[1][0] == pytest.approx(0.55 * SR, abs=320)
    assert split_at_pauses(np.zeros(SR, dtype=np.float32)) == []


def test_bind_classes_refuses_a_model_with_trained_classes() -> None:
    from types import SimpleNamespace

    loaded = SimpleNamespace(model=object(), spec=SimpleNamespace(name="accent-native", labels=("native", "non_native")))
    assert bind_classes(loaded, None) is loaded
    with pytest.raises(ValueError, match="fixed classes"):
        bind_classes(loaded, ["yes", "no"])


def test_the_shipped_checkpoint_is_zero_shot_on_the_bundled_whisper() -> None:
    from models.whisper_encoder import file_sha256
    from models.whisper_probe import find_encoder_dir

    side = json.loads(CHECKPOINT.with_suffix(".json").read_text())
    assert side["spec"]["family"] == "spoken_words" and tuple(side["spec"]["labels"]) == DIGITS
    assert side["hparams"]["encoder_sha256"] == file_sha256(find_encoder_dir() / "model.bin")
    assert side["calibration"]["threshold"] == 0.8 and side["calibration"]["temperature"] == 1.0
    import torch

    assert torch.load(CHECKPOINT, weights_only=True)["state_dict"] == {}  # no weights of its own
    assert side["metrics"]["test"]["n"] == 300 and side["metrics"]["test"]["per_corpus"]["FSDD"]  # the card's figures


@pytest.fixture(scope="module")
def loaded():
    from models.checkpoint import load_checkpoint

    if not (ROOT / "var" / "models" / "whisper-base" / "model.bin").is_file():
        pytest.fail("the bundled Whisper base is not assembled (make setup)")
    model = load_checkpoint(CHECKPOINT)
    model.model.attach_encoder(threads=1)
    return model


@needs_espeak
def test_espeak_digits_are_heard_with_every_class_probability(loaded) -> None:
    """Digits said alone by two espeak-ng voices, default classes (the ten digits), seed 003's 0.8 threshold.

    (Not espeak's "nine": Whisper hears it as "Hi." from 7 of the 8 English voices; the card counts it.)"""
    from workers.pipeline.inference import classify_batch

    said = [("en-us", "two"), ("en-us", "six"), ("en-gb", "seven"), ("en-gb", "zero"), ("en-us", "four")]
    outcomes = classify_batch(loaded, [espeak(word, voice) for voice, word in said], vad=False)
    for (_, word), o in zip(said, outcomes, strict=True):
        assert list(o.probabilities) == list(DIGITS) and sum(o.probabilities.values()) == pytest.approx(1, abs=1e-6)
        assert o.predicted_class == word, (word, o.probabilities)
        assert o.threshold == 0.8 and o.outcome == ("ok" if o.confidence >= 0.8 else "uncertain")
        assert o.probabilities == pytest.approx(o.probabilities_raw)  # zero-shot: nothing calibrated on top


@needs_espeak
def test_classes_given_per_request_and_the_threshold_refuses(loaded) -> None:
    from workers.pipeline.inference import classify_batch

    words = bind_classes(loaded, ["yes", "no", "stop", "go"])
    assert words.spec.labels == ("yes", "no", "stop", "go") and loaded.spec.labels == DIGITS  # the shared model is untouched
    assert words.model._decoder is loaded.model._decoder
    stop, yes = classify_batch(words, [espeak("stop"), espeak("yes", "en-gb")], vad=False)
    assert stop.predicted_class == "stop" and yes.predicted_class == "yes"
    assert set(stop.probabilities) == {"yes", "no", "stop", "go"}
    digits = bind_classes(loaded, "zero,two,six")
    (six,) = classify_batch(digits, [espeak("six")], vad=False, threshold=0.8)
    assert list(six.probabilities) == ["zero", "two", "six"] and six.predicted_class == "six"
    (strict,) = classify_batch(digits, [espeak("six")], vad=False, threshold=1.0)
    assert strict.outcome == "uncertain" and strict.predicted_class == "six"


@needs_espeak
def test_a_recording_of_several_words_cut_at_its_pauses(loaded) -> None:
    """A digit string read with pauses, cut at them, each piece heard as its digit."""
    from workers.pipeline.inference import classify_batch

    gap = np.zeros(int(0.3 * SR), dtype=np.float32)
    digits = ["three", "eight", "one"]
    x = np.concatenate([p for d in digits for p in (espeak(d, "en-gb-x-rp"), gap)])
    spans = split_at_pauses(x, SR)
    assert len(spans) == 3
    outcomes = classify_batch(loaded, [x[a:b] for a, b in spans], vad=False)
    assert [o.predicted_class for o in outcomes] == digits
