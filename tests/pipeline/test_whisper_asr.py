"""Tests for workers.pipeline.whisper_asr.transcribe on the bundled Whisper base: no text from
silence, a language per speech piece, a candidate list, no invented text on a lone word.

Audio is made here (numpy, espeak-ng); espeak's en, es and it voices are heard as those languages
by Whisper base (its fr-fr at espeak's default speed is heard as Thai, its de / pt / nl as
English or German), so only those are used.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from tests.pipeline.test_whisper_lang import espeak  # the same espeak-ng helper
from workers.pipeline.whisper_asr import _choices, _Piece, transcribe

SR = 16000
MODEL_DIR = Path(__file__).resolve().parents[2] / "var" / "models" / "whisper-base"
EN = "The quick brown fox jumps over the lazy dog. Please call Stella and ask her to bring these things with her."
ES = "El rápido zorro marrón salta sobre el perro perezoso. Por favor, llama a Estela y pídele que traiga estas cosas."
IT = "La volpe marrone veloce salta sopra il cane pigro. Per favore chiama Stella e chiedile di portare queste cose."


def silence(seconds: float) -> np.ndarray:
    return np.zeros(int(seconds * SR), dtype=np.float32)


def words(text: str) -> list[str]:
    return re.sub(r"[^\w\s']", " ", text.lower()).split()


@pytest.fixture(scope="module")
def engine():
    if not (MODEL_DIR / "model.bin").is_file():
        pytest.skip("the bundled Whisper base is not assembled (make setup)")
    from workers.pipeline.whisper_lang import load_engine

    return load_engine(MODEL_DIR, device="cpu", compute_type="int8", cpu_threads=1)


# --- pure helpers --------------------------------------------------------------------------------

def test_a_sure_piece_is_decoded_in_its_language_an_unsure_one_in_several() -> None:
    piece = _Piece(0, SR, np.zeros((80, 101), np.float32))
    piece.probs = {"en": 0.9, "de": 0.05, "fr": 0.05}
    assert _choices(piece, "en") == ["en"]
    assert _choices(piece, "es") == ["en"]  # sure enough to switch away from the main language
    piece.probs = {"de": 0.6, "en": 0.3, "fr": 0.1}
    assert _choices(piece, "en") == ["de", "en"]  # another language, not sure: the main one competes
    piece.probs = {"ar": 0.27, "de": 0.2, "en": 0.1}
    assert _choices(piece, "ar") == ["ar", "de"]
    assert _choices(piece, "fr") == ["ar", "de", "fr"]


# --- on the model ----------------------------------------------------------------------------------

@pytest.mark.parametrize("vad_filter", [True, False])
def test_silence_noise_and_a_tone_give_no_text(engine, vad_filter: bool) -> None:
    rng = np.random.default_rng(0)
    t = np.arange(5 * SR) / SR
    for x in (silence(5), (0.05 * rng.standard_normal(5 * SR)).astype(np.float32),
              (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)):
        out = transcribe(engine, x, vad_filter=vad_filter)
        assert out["text"] == "" and out["segments"] == [], out["text"]
        assert out["languages"] == {} and out["language"] is None


def test_a_recording_that_switches_language_is_transcribed_piece_by_piece(engine) -> None:
    en, es = espeak(EN), espeak(ES, "es")
    x = np.concatenate([en, silence(2.5), es])
    out = transcribe(engine, x)
    langs = [s["language"] for s in out["segments"]]
    assert langs[0] == "en" and langs[-1] == "es", [(s["language"], s["text"]) for s in out["segments"]]
    assert set(out["languages"]) == {"en", "es"}
    switch_s = len(en) / SR
    before = " ".join(s["text"] for s in out["segments"] if s["end_s"] <= switch_s + 0.5)
    after = " ".join(s["text"] for s in out["segments"] if s["start_s"] >= switch_s)
    assert {"quick", "brown", "fox", "lazy", "dog"} <= set(words(before)), before
    assert {"salta", "sobre", "perro", "favor", "cosas"} <= set(words(after)), after
    assert all(s["start_s"] >= switch_s for s in out["segments"] if s["language"] == "es")
    stamps = [w["start_s"] for s in out["segments"] for w in s["words"]]
    assert stamps == sorted(stamps) and stamps[-1] <= out["duration_s"]


def test_languages_restrict_what_a_piece_is_heard_as(engine) -> None:
    x = np.concatenate([espeak(EN), silence(2.5), espeak(ES, "es")])
    out = transcribe(engine, x, languages=["EN"])
    assert out["params"]["languages"] == ["en"]
    assert {s["language"] for s in out["segments"]} == {"en"} and set(out["languages"]) == {"en"}
    it = transcribe(engine, espeak(IT, "it"), languages=["es", "fr"])
    assert it["language"] in ("es", "fr") and {s["language"] for s in it["segments"]} <= {"es", "fr"}
    with pytest.raises(ValueError, match="xx"):
        transcribe(engine, x, languages=["en", "xx"])


def test_a_lone_spoken_digit_gets_no_invented_text(engine) -> None:
    """espeak's British "nine" alone: Whisper base's language head says Arabic (p 0.27) and decoding
    in Arabic invents a word in Arabic script; an unsure piece is decoded in its likeliest languages
    and the best-scored reading is kept."""
    x = np.concatenate([silence(1), espeak("nine", "en-gb-x-rp"), silence(1)])
    out = transcribe(engine, x)
    assert len(words(out["text"])) <= 1 and out["text"].isascii(), out["text"]
    assert out["language"] == "en"


def test_the_encoder_runs_once_per_piece(engine, monkeypatch) -> None:
    """Language detection reads the same encoding the decoder uses (faster-whisper's own
    transcribe encodes the first 30 s twice)."""
    calls = []
    real = engine.model.encode
    monkeypatch.setattr(engine.model, "encode", lambda features: calls.append(features.shape) or real(features))
    out = transcribe(engine, espeak(EN), beam_size=1)
    assert len(calls) == 1 and calls[0] == (80, 3000), calls
    assert words(out["text"])[:3] == ["the", "quick", "brown"]
