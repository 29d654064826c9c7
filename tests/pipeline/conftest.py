"""Signal makers for the audio and feature tests: tiny synthetic audio, no data files.

Exposed as the ``synth`` fixture (a namespace of functions) because test modules cannot import
from a conftest; ``ffmpeg`` skips a test when FFmpeg is not installed.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf
from scipy.signal import lfilter

SR = 16000


def tone(freq: float, duration: float, sr: int = SR, amp: float = 0.5) -> np.ndarray:
    """Sine ``[time]`` float32."""
    t = np.arange(round(duration * sr)) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def harmonics(f0: float | np.ndarray, duration: float, sr: int = SR, amp: float = 0.3) -> np.ndarray:
    """Periodic voice-like signal ``[time]``: harmonics of ``f0`` (Hz, scalar or per sample) at 1/k amplitude."""
    f = np.broadcast_to(np.asarray(f0, dtype=np.float64), (round(duration * sr),))
    phase = 2 * np.pi * np.cumsum(f) / sr
    top = int(sr / 2 / f.max())
    return (amp * sum(np.sin(k * phase) / k for k in range(1, top + 1))).astype(np.float32)


def perturbed(f0: float, duration: float, *, jitter: float, shimmer: float, seed: int = 0, sr: int = SR) -> np.ndarray:
    """Harmonics whose every cycle has its own period (relative sd ``jitter``) and amplitude (``shimmer``).

    Each cycle's phase runs linearly from 0 to 2 pi, so the cycle lengths are exact (not rounded to samples).
    """
    rng = np.random.default_rng(seed)
    n_cycles = int(duration * f0 * 1.5) + 10
    freqs = f0 / (1 + jitter * rng.standard_normal(n_cycles))
    amps = 1 + shimmer * rng.standard_normal(n_cycles)
    starts = np.concatenate([[0.0], np.cumsum(1 / freqs)])
    t = np.arange(round(duration * sr)) / sr
    k = np.searchsorted(starts, t, side="right") - 1
    phase = 2 * np.pi * (t - starts[k]) * freqs[k]
    top = int(sr / 2 / freqs.max())
    return (0.3 * amps[k] * sum(np.sin(h * phase) / h for h in range(1, top + 1))).astype(np.float32)


def vowel(formants: tuple[float, ...], duration: float = 1.0, f0: float = 120.0, sr: int = SR) -> np.ndarray:
    """Impulse train at ``f0`` through a -6 dB/octave tilt and a cascade of 2nd-order resonators ``[time]``."""
    x = np.zeros(round(duration * sr))
    x[:: round(sr / f0)] = 1.0
    x = lfilter([1.0], [1.0, -0.97], x)
    for freq, bandwidth in zip(formants, (80, 90, 120, 150, 200), strict=False):
        r, theta = np.exp(-np.pi * bandwidth / sr), 2 * np.pi * freq / sr
        a = [1.0, -2 * r * np.cos(theta), r * r]
        x = lfilter([sum(a)], a, x)
    return (0.5 * x / np.abs(x).max()).astype(np.float32)


def syllables(rate_hz: float, duration: float, sr: int = SR) -> np.ndarray:
    """150 Hz harmonics amplitude-modulated into ``rate_hz`` syllable-like bursts per second ``[time]``."""
    t = np.arange(round(duration * sr)) / sr
    envelope = (0.5 - 0.5 * np.cos(2 * np.pi * rate_hz * t)) ** 2
    return (envelope * harmonics(150.0, duration, sr)).astype(np.float32)


def write(path: Path, samples: np.ndarray, sr: int, fmt: str = "WAV", subtype: str = "FLOAT") -> Path:
    """Write ``samples`` (``[time]`` or ``[time, channels]``) with soundfile; returns ``path``."""
    sf.write(path, samples, sr, format=fmt, subtype=subtype)
    return path


def encode(src: Path, dst: Path, *args: str) -> Path:
    """Transcode ``src`` to ``dst`` with FFmpeg (codec from ``args`` or the extension)."""
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-i", str(src), *args, str(dst)], check=True, timeout=60)
    return dst


def fft_peak_hz(x: np.ndarray, sr: int) -> float:
    """Frequency (Hz) of the largest peak of the windowed spectrum of ``x`` ``[time]``."""
    spectrum = np.abs(np.fft.rfft(x * np.hanning(x.size)))
    return float(np.argmax(spectrum) * sr / x.size)


@pytest.fixture
def synth() -> SimpleNamespace:
    return SimpleNamespace(
        SR=SR,
        tone=tone,
        harmonics=harmonics,
        perturbed=perturbed,
        vowel=vowel,
        syllables=syllables,
        write=write,
        encode=encode,
        fft_peak_hz=fft_peak_hz,
    )


@pytest.fixture
def ffmpeg() -> None:
    if shutil.which("ffmpeg") is None:
        pytest.skip("FFmpeg is not installed")
