"""Tests for workers.pipeline.vad (silero-vad, offline)."""

from __future__ import annotations

import io
import shutil
import subprocess

import numpy as np
import pytest

from workers.pipeline.vad import speech_duration, speech_fraction, speech_timestamps

SR = 16000


def espeak(text: str, voice: str = "en-us") -> np.ndarray:
    """Speech made by espeak-ng, resampled to 16 kHz mono float32 ``[time]``."""
    import soundfile as sf
    from scipy.signal import resample_poly

    wav = subprocess.run(["espeak-ng", "-v", voice, "--stdout", text], check=True, capture_output=True).stdout
    x, sr = sf.read(io.BytesIO(wav), dtype="float32")
    if x.ndim > 1:
        x = x.mean(axis=1)
    from math import gcd

    g = gcd(SR, sr)
    return resample_poly(x, SR // g, sr // g).astype(np.float32)


needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not installed")


def test_silence_has_no_speech() -> None:
    assert speech_timestamps(np.zeros(3 * SR, dtype=np.float32)) == []
    assert speech_timestamps(np.zeros(0, dtype=np.float32)) == []


def test_white_noise_has_little_speech() -> None:
    noise = (0.1 * np.random.default_rng(0).standard_normal(4 * SR)).astype(np.float32)
    assert speech_duration(speech_timestamps(noise)) < 0.5


@needs_espeak
def test_espeak_speech_is_found() -> None:
    speech = espeak("Please call Stella. Ask her to bring these things with her from the store.")
    pad = np.zeros(SR, dtype=np.float32)
    x = np.concatenate([pad, speech, pad])
    ts = speech_timestamps(x)
    assert ts, "no speech found in synthetic speech"
    total = speech_duration(ts)
    assert total > 0.5 * len(speech) / SR
    # the leading second of silence is (almost) not speech
    assert ts[0][0] > 0.7
    assert ts[-1][1] < len(x) / SR - 0.5
    assert all(a < b for a, b in ts) and all(ts[i][1] <= ts[i + 1][0] for i in range(len(ts) - 1))


def test_vad_restores_torch_threads() -> None:
    import torch

    before = torch.get_num_threads()
    speech_timestamps(np.zeros(SR, dtype=np.float32), num_threads=1)
    assert torch.get_num_threads() == before


def test_speech_fraction() -> None:
    spans = [(0.0, 2.0), (1.0, 3.0), (4.0, 6.0), (5.0, 5.0)]
    ts = [(0.5, 1.5), (2.5, 4.5)]
    frac = speech_fraction(spans, ts)
    np.testing.assert_allclose(frac, [0.5, 0.5, 0.25, 0.0])
    np.testing.assert_allclose(speech_fraction(spans, []), [0, 0, 0, 0])
    assert speech_fraction([], ts).shape == (0,)
