"""Tests for workers.pipeline.whisper_lang and whisper_asr on the bundled Whisper base and espeak-ng speech.

espeak-ng's en, fr, es, it and pl voices are heard as those languages by Whisper base; its de, pt
and nl voices are not (docs: ENVIRONMENT notes), so no test relies on them.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from workers.pipeline.whisper_lang import (
    WhisperError,
    _renormalise,
    identify_languages,
    load_engine,
    validate_languages,
    window_spans,
)

SR = 16000
ROOT = Path(__file__).resolve().parents[2]
MODEL_DIR = ROOT / "var" / "models" / "whisper-base"
TINY_EN = ROOT / "var" / "models" / "whisper-tiny.en"

SENTENCES = {
    "en": "The quick brown fox jumps over the lazy dog. Please call Stella and ask her to bring these things with her.",
    "fr": "Le renard brun rapide saute par-dessus le chien paresseux. Veuillez appeler Stella et lui demander d'apporter ces choses.",
    "es": "El rápido zorro marrón salta sobre el perro perezoso. Por favor, llama a Estela y pídele que traiga estas cosas.",
    "it": "La volpe marrone veloce salta sopra il cane pigro. Per favore chiama Stella e chiedile di portare queste cose.",
    # (espeak's Polish "quick brown fox" sentence is heard as Latin; this one as Polish, 0.77 over 4-s windows)
    "pl": "W Szczebrzeszynie chrząszcz brzmi w trzcinie. Jutro pojedziemy pociągiem do Krakowa na wycieczkę.",
}
VOICES = {"en": "en-us", "fr": "fr-fr", "es": "es", "it": "it", "pl": "pl"}


def espeak(text: str, voice: str = "en-us") -> np.ndarray:
    """espeak-ng speech as 16-kHz mono float32 ``[time]``."""
    import io
    from math import gcd

    import soundfile as sf
    from scipy.signal import resample_poly

    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng not installed")
    wav = subprocess.run(["espeak-ng", "-v", voice, "--stdout", text], check=True, capture_output=True).stdout
    x, sr = sf.read(io.BytesIO(wav), dtype="float32")
    g = gcd(SR, sr)
    return resample_poly(x, SR // g, sr // g).astype(np.float32)


@pytest.fixture(scope="module")
def engine():
    if not (MODEL_DIR / "model.bin").is_file():
        pytest.skip("the bundled Whisper base is not assembled (make setup)")
    return load_engine(MODEL_DIR, device="cpu", compute_type="int8", cpu_threads=1)


def words(text: str) -> list[str]:
    return re.sub(r"[^\w\s']", " ", text.lower()).split()


# --- pure helpers --------------------------------------------------------------------------------

def test_window_spans_touch_and_drop_a_short_tail() -> None:
    assert window_spans(10.5, 4.0) == [(0.0, 4.0), (4.0, 8.0), (8.0, 10.5)]
    assert window_spans(8.4, 4.0) == [(0.0, 4.0), (4.0, 8.0)]  # 0.4-s tail dropped
    assert window_spans(0.6, 4.0) == [(0.0, 0.6)]  # shorter than a window: the whole recording
    assert window_spans(0.0, 4.0) == []


def test_restriction_renormalises_over_the_list() -> None:
    p = {"en": 0.6, "de": 0.2, "fr": 0.1, "es": 0.1}
    assert _renormalise(p, ["fr", "es"]) == pytest.approx({"fr": 0.5, "es": 0.5})
    assert _renormalise(p, None) is p
    assert _renormalise({"en": 1.0}, ["fr", "es"]) == {"fr": 0.5, "es": 0.5}


def test_unknown_languages_are_refused_by_name() -> None:
    assert validate_languages(["EN", "fr", "en"]) == ["en", "fr"]
    with pytest.raises(ValueError, match="xx"):
        validate_languages(["en", "xx"])
    with pytest.raises(ValueError):
        validate_languages([])


def test_a_missing_or_replaced_model_is_refused(tmp_path) -> None:
    with pytest.raises(WhisperError, match="does not exist"):
        load_engine(tmp_path / "nothing")
    if MODEL_DIR.is_dir():
        with pytest.raises(WhisperError, match="sha256"):
            load_engine(MODEL_DIR, expected_sha256="0" * 64, cpu_threads=2)  # another key: not the cached engine


# --- language identification -----------------------------------------------------------------

@pytest.mark.parametrize("code", sorted(SENTENCES))
def test_five_languages_are_identified(engine, code: str) -> None:
    out = identify_languages(engine, espeak(SENTENCES[code], VOICES[code]))
    assert out["outcome"] == "ok" and out["language"] == code, out
    assert out["shares"][code] >= 0.5
    assert sum(out["shares"].values()) == pytest.approx(1.0, abs=1e-5)
    assert max(out["mean_probabilities"], key=out["mean_probabilities"].get) == code
    speech = [w for w in out["windows"] if w["speech"]]
    assert len(speech) == out["speech_windows"] >= 1
    for w in speech:
        assert 0 <= w["start_s"] < w["end_s"] <= out["duration_s"] + 1e-6
        assert w["language"] == max(w["top"], key=w["top"].get) and w["probability"] == w["top"][w["language"]]
        assert len(w["top"]) == 5


def test_a_recording_that_switches_from_english_to_spanish(engine) -> None:
    en = espeak(SENTENCES["en"] + " " + SENTENCES["en"], "en-us")
    es = espeak(SENTENCES["es"] + " " + SENTENCES["es"], "es")
    assert len(en) > 8 * SR and len(es) > 8 * SR
    switch_s = len(en) / SR
    out = identify_languages(engine, np.concatenate([en, es]), window_s=4.0)
    assert out["shares"].get("en", 0) >= 0.3 and out["shares"].get("es", 0) >= 0.3, out["shares"]
    spoken = [w for w in out["windows"] if w["speech"]]
    before = [w["language"] for w in spoken if w["end_s"] <= switch_s]
    after = [w["language"] for w in spoken if w["start_s"] >= switch_s]
    assert before and after
    assert before.count("en") >= 0.75 * len(before) and after.count("es") >= 0.75 * len(after), (before, after)
    assert spoken[0]["language"] == "en" and spoken[-1]["language"] == "es"


def test_languages_can_be_restricted(engine) -> None:
    x = espeak(SENTENCES["it"], "it")
    out = identify_languages(engine, x, languages=["es", "it", "fr"], window_s=3.0)
    assert out["language"] == "it" and out["languages"] == ["es", "it", "fr"]
    assert set(out["mean_probabilities"]) == {"es", "it", "fr"}
    for w in out["windows"]:
        if w["speech"]:
            assert set(w["top"]) == {"es", "it", "fr"} and sum(w["top"].values()) == pytest.approx(1.0, abs=1e-4)
    # English speech, asked which of French / Spanish: still answers within the list
    forced = identify_languages(engine, espeak(SENTENCES["en"]), languages=["fr", "es"])
    assert forced["language"] in ("fr", "es") and set(forced["shares"]) <= {"fr", "es"}


def test_silence_and_noise_windows_are_skipped(engine) -> None:
    rng = np.random.default_rng(0)
    silent = identify_languages(engine, (0.001 * rng.standard_normal(6 * SR)).astype(np.float32))
    assert silent["outcome"] == "insufficient_speech" and silent["language"] is None
    assert silent["speech_windows"] == 0 and all(not w["speech"] for w in silent["windows"])
    x = np.concatenate([np.zeros(5 * SR, dtype=np.float32), espeak(SENTENCES["fr"], "fr-fr")])
    out = identify_languages(engine, x)
    assert out["windows"][0]["speech"] is False and out["language"] == "fr"
    assert identify_languages(engine, x, vad=False)["windows"][0]["speech"] is True


def test_window_length_is_checked(engine) -> None:
    with pytest.raises(ValueError, match="window_s"):
        identify_languages(engine, np.zeros(SR, dtype=np.float32), window_s=31)


def test_an_english_only_model_refuses_language_identification() -> None:
    if not (TINY_EN / "model.bin").is_file():
        pytest.skip("whisper-tiny.en not assembled")
    tiny = load_engine(TINY_EN, cpu_threads=1)
    with pytest.raises(WhisperError, match="English-only"):
        identify_languages(tiny, np.zeros(2 * SR, dtype=np.float32))


# --- transcription ---------------------------------------------------------------------------

def test_english_speech_is_transcribed_word_perfect_with_word_times(engine) -> None:
    from workers.pipeline.whisper_asr import transcribe

    text = "Please call Stella. Ask her to bring these things with her from the store."
    x = espeak(text)
    out = transcribe(engine, x)
    assert words(out["text"]) == words(text), out["text"]
    assert out["language"] == "en" and out["language_probability"] > 0.5
    stamps = [w for s in out["segments"] for w in s["words"]]
    assert [words(w["word"])[0] for w in stamps if words(w["word"])] == words(text)
    starts = [w["start_s"] for w in stamps]
    assert starts == sorted(starts)
    assert all(0 <= w["start_s"] <= w["end_s"] <= out["duration_s"] + 0.05 for w in stamps)
    assert all(0 <= w["probability"] <= 1 for w in stamps)
    assert out["params"] == {"language": None, "languages": None, "beam_size": 5, "vad_filter": True, "temperature_fallback": True,
                             "context_s": 30.0}
    assert {s["language"] for s in out["segments"]} == {"en"} and out["languages"] == {"en": out["speech_s"]}


def test_transcription_in_a_forced_language(engine) -> None:
    from workers.pipeline.whisper_asr import transcribe

    out = transcribe(engine, espeak(SENTENCES["es"], "es"), language="es", vad_filter=False)
    assert out["language"] == "es" and out["params"]["language"] == "es"
    assert {"salta", "sobre", "perro", "favor", "cosas"} <= set(words(out["text"])), out["text"]
