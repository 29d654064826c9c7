"""Tests for workers.pipeline.lid_features on the bundled Whisper base and espeak-ng speech."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from tests.pipeline.test_whisper_lang import espeak
from workers.pipeline.lid_features import FLOOR, cached_lid, language_order, lid_log_posteriors
from workers.pipeline.whisper_lang import load_engine

SR = 16000
MODEL_DIR = Path(__file__).resolve().parents[2] / "var" / "models" / "whisper-base"


@pytest.fixture(scope="module")
def engine():
    if not (MODEL_DIR / "model.bin").exists():
        pytest.skip("the bundled Whisper base is not assembled (make setup)")
    return load_engine(MODEL_DIR, device="cpu", compute_type="int8")


def speech(text: str, voice: str) -> np.ndarray:
    """espeak-ng speech at a 0.1 peak, 16 kHz mono float32 ``[time]``."""
    x = espeak(text, voice)
    return (0.1 * x / (np.abs(x).max() + 1e-9)).astype(np.float32)


def test_log_posteriors_name_the_language_and_are_floored(engine) -> None:
    codes = language_order(engine)
    assert len(codes) == 99 and codes.index("en") >= 0 and "zh" in codes
    en = speech("Please call Stella and ask her to bring these things with her from the store.", "en-us")
    fr = speech("Veuillez appeler Stella et lui demander d'apporter ces choses du magasin.", "fr-fr")
    out = lid_log_posteriors(engine, [en, fr], codes)
    assert out.shape == (2, 99) and out.dtype == np.float32
    assert codes[int(out[0].argmax())] == "en" and codes[int(out[1].argmax())] == "fr"
    assert out.min() >= np.log(FLOOR) - 1e-6 and np.exp(out).sum(axis=1).max() <= 1.0 + 1e-3


def test_long_clip_is_the_mean_over_30s_windows_and_cached(engine, tmp_path) -> None:
    codes = language_order(engine)
    en = speech("Please call Stella and ask her to bring these things with her from the store.", "en-us")
    long = np.concatenate([en] * int(np.ceil(40 * SR / len(en))))[: 40 * SR]  # two windows: 30 s and 10 s
    first, second = lid_log_posteriors(engine, [long[: 30 * SR]], codes)[0], lid_log_posteriors(engine, [long[30 * SR :]], codes)[0]
    whole = lid_log_posteriors(engine, [long], codes)[0]
    # probabilities compared (a log of ~0 is all noise); the band limit sees the seam, hence the tolerance
    assert np.allclose(np.exp(whole), (np.exp(first) + np.exp(second)) / 2, atol=0.02)
    utts = [SimpleNamespace(samples=en, key="a"), SimpleNamespace(samples=long, key="b")]
    cached = cached_lid(engine, utts, codes, tmp_path)
    assert len(list((tmp_path / "lid").rglob("*.npy"))) == 2
    again = cached_lid(engine, [SimpleNamespace(samples=np.zeros(SR, dtype=np.float32), key="b")], codes, tmp_path)
    assert np.array_equal(again[0], cached[1])  # read back from the cache, not recomputed
