"""Waveform augmentation for training (numpy / scipy, CPU, per example).

Each function takes ``[time]`` float32 samples at 16 kHz and a ``numpy.random.Generator`` and
returns a new ``[time]`` array (same length unless stated). SpecAugment lives in
``models.frontends.SpecAugment`` because it acts on spectrograms inside the model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.signal import butter, resample_poly, sosfilt

SR = 16000


def add_noise(x: np.ndarray, rng: np.random.Generator, snr_db: tuple[float, float] = (5.0, 30.0)) -> np.ndarray:
    """Add white or brown-ish noise at a random SNR (dB) drawn uniformly from ``snr_db``."""
    snr = rng.uniform(*snr_db)
    noise = rng.standard_normal(len(x)).astype(np.float32)
    if rng.random() < 0.5:  # coloured: integrate and high-pass to keep it bounded
        noise = np.cumsum(noise)
        noise = noise - np.convolve(noise, np.ones(64) / 64, mode="same")
    p_sig = float(np.mean(x**2)) + 1e-10
    p_noise = float(np.mean(noise**2)) + 1e-10
    return (x + noise * math.sqrt(p_sig / (p_noise * 10 ** (snr / 10)))).astype(np.float32)


def random_gain(x: np.ndarray, rng: np.random.Generator, db: tuple[float, float] = (-12.0, 6.0)) -> np.ndarray:
    """Scale by a random gain in dB, then clip to [-1, 1]."""
    return np.clip(x * 10 ** (rng.uniform(*db) / 20), -1.0, 1.0).astype(np.float32)


def speed_perturb(x: np.ndarray, rng: np.random.Generator, factors: tuple[float, ...] = (0.9, 0.95, 1.05, 1.1)) -> np.ndarray:
    """Change speed (tempo and pitch together) by resampling; output length changes by ``1 / factor``."""
    f = float(rng.choice(factors))
    up, down = int(round(100 / f)), 100
    g = math.gcd(up, down)
    return resample_poly(x, up // g, down // g).astype(np.float32)


def pitch_shift(x: np.ndarray, rng: np.random.Generator, semitones: tuple[float, float] = (-2.0, 2.0)) -> np.ndarray:
    """Shift pitch by a random number of semitones, keeping the length (resample + crude
    overlap-add time stretch back to the original duration)."""
    n = rng.uniform(*semitones)
    ratio = 2 ** (n / 12)
    up, down = 100, int(round(100 * ratio))
    g = math.gcd(up, down)
    y = resample_poly(x, up // g, down // g).astype(np.float32)  # pitch up by ratio, shorter
    return time_stretch(y, len(x))


def time_stretch(x: np.ndarray, length: int, frame: int = 640, hop_out: int = 320) -> np.ndarray:
    """Overlap-add time stretch of ``x`` to exactly ``length`` samples (keeps pitch)."""
    if len(x) < frame or length < frame:
        y = np.zeros(length, dtype=np.float32)
        y[: min(length, len(x))] = x[:length]
        return y
    n_out = max(1, (length - frame) // hop_out + 1)
    hop_in = (len(x) - frame) / max(n_out - 1, 1)
    win = np.hanning(frame).astype(np.float32)
    y = np.zeros(length + frame, dtype=np.float32)
    norm = np.zeros(length + frame, dtype=np.float32)
    for k in range(n_out):
        s = int(round(k * hop_in))
        y[k * hop_out : k * hop_out + frame] += x[s : s + frame] * win
        norm[k * hop_out : k * hop_out + frame] += win
    return (y / np.maximum(norm, 1e-3))[:length]


def band_limit(x: np.ndarray, cutoff_hz: float = 4000.0) -> np.ndarray:
    """Low-pass to ``cutoff_hz`` by resampling to ``2 * cutoff_hz`` and back (telephone band)."""
    low = int(2 * cutoff_hz)
    g = math.gcd(low, SR)
    y = resample_poly(resample_poly(x, low // g, SR // g), SR // g, low // g)[: len(x)]
    return np.pad(y, (0, len(x) - len(y))).astype(np.float32)


def channel_sim(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Simulate a recording channel: random band-pass (low cut 50-300 Hz, high cut 3-4 kHz),
    a codec-like peaking EQ tilt, and optional resampling through 8 kHz."""
    lo = rng.uniform(50, 300)
    hi = rng.uniform(3000, 3900)
    sos = butter(4, [lo, hi], btype="band", fs=SR, output="sos")
    y = sosfilt(sos, x).astype(np.float32)
    if rng.random() < 0.5:  # spectral tilt (first-order pre/de-emphasis)
        a = rng.uniform(-0.6, 0.6)
        y = (y - a * np.concatenate([[0.0], y[:-1]])).astype(np.float32)
    if rng.random() < 0.3:
        y = band_limit(y, 4000.0)
    return y


@dataclass(frozen=True)
class AugmentConfig:
    """Probabilities of each waveform augmentation (0 disables one)."""

    p_noise: float = 0.4
    p_gain: float = 0.5
    p_speed: float = 0.2
    p_pitch: float = 0.2
    p_channel: float = 0.3
    snr_db: tuple[float, float] = (5.0, 30.0)


def augment(x: np.ndarray, rng: np.random.Generator, config: AugmentConfig | None = None) -> np.ndarray:
    """Apply a random chain of augmentations; output has the input's length. ``[time]`` -> ``[time]``."""
    cfg = config or AugmentConfig()
    n = len(x)
    y = x.astype(np.float32)
    if rng.random() < cfg.p_speed:
        y = speed_perturb(y, rng)
        y = y[:n] if len(y) >= n else np.pad(y, (0, n - len(y)))
    if rng.random() < cfg.p_pitch:
        y = pitch_shift(y, rng)
    if rng.random() < cfg.p_channel:
        y = channel_sim(y, rng)
    if rng.random() < cfg.p_noise:
        y = add_noise(y, rng, cfg.snr_db)
    if rng.random() < cfg.p_gain:
        y = random_gain(y, rng)
    return y.astype(np.float32)
