"""Waveform augmentation for training (numpy / scipy, CPU, per example).

Each function takes ``[time]`` float32 samples at 16 kHz and a ``numpy.random.Generator`` and
returns a new ``[time]`` array (same length unless stated). SpecAugment lives in
``models.frontends.SpecAugment`` because it acts on spectrograms inside the model.

:func:`noisy_copy` is the diverse degradation recipe the ``whisper_probe`` trainer makes its cached
augmented copies with (``augment_copies``): noise of several colours or babble at a random SNR,
channels, codecs, reverberation and levels, built on ``workers.pipeline.degrade``'s primitives but
deliberately not its fixed evaluation conditions.
"""

from __future__ import annotations

import functools
import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.signal import butter, resample_poly, sosfilt

from workers.pipeline import degrade as dg

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


# ---------------------------------------------------------------------------------------------
# The noisy-copy recipe (cached training copies of the whisper_probe trainer)
# ---------------------------------------------------------------------------------------------


def brown_noise(n: int, rng: np.random.Generator) -> np.ndarray:
    """Brown (1/f^2 power) noise ``[n]``, unit RMS: white noise shaped by ``1 / f`` in the frequency
    domain (no DC, so it does not drift)."""
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.arange(len(spec), dtype=np.float64)
    spec[0] = 0.0
    f[0] = 1.0
    y = np.fft.irfft(spec / f, n)
    return (y / (np.std(y) + 1e-12)).astype(np.float32)


@dataclass(frozen=True)
class NoisyRecipe:
    """What :func:`noisy_copy` draws from. Each stage happens with its probability, in this order:
    reverberation (the room), additive noise (white, pink, brown or babble of ``babble_talkers``
    other clips, SNR uniform in ``snr_db``), a channel (telephone band, G.711 mu-law, a random
    band-pass with tilt, MP3 or Opus at a random low bit rate when ffmpeg has the encoder), a level
    change (uniform in ``level_db``, 16-bit PCM)."""

    name: str = "noisy-v1"
    p_reverb: float = 0.25
    rt60_s: tuple[float, float] = (0.2, 0.8)
    p_noise: float = 0.85
    noise_kinds: tuple[str, ...] = ("white", "pink", "brown", "babble")
    snr_db: tuple[float, float] = (0.0, 25.0)
    babble_talkers: tuple[int, int] = (3, 8)
    p_channel: float = 0.4
    channels: tuple[str, ...] = ("telephone", "mulaw", "bandpass", "mp3", "opus")
    mp3_bitrates: tuple[str, ...] = ("16k", "24k", "32k")
    opus_bitrates: tuple[str, ...] = ("8k", "12k", "16k")
    p_level: float = 0.4
    level_db: tuple[float, float] = (-35.0, 6.0)

    @property
    def tag(self) -> str:
        """Short stable id of every setting (feature caches key on it)."""
        return f"{self.name}-" + hashlib.sha1(repr(self).encode()).hexdigest()[:10]


@functools.cache
def _has_encoder(codec: str) -> bool:
    return dg.ffmpeg_codec_available(codec)


def _channel(y: np.ndarray, kind: str, rng: np.random.Generator, recipe: NoisyRecipe) -> tuple[np.ndarray, str]:
    if kind == "telephone":
        return dg.telephone_band(y), kind
    if kind == "mulaw":
        return dg.mu_law_8k(y), kind
    if kind == "mp3":
        rate = str(rng.choice(recipe.mp3_bitrates))
        return dg.ffmpeg_codec(y, "libmp3lame", rate, ".mp3"), f"mp3_{rate}"
    if kind == "opus":
        rate = str(rng.choice(recipe.opus_bitrates))
        return dg.ffmpeg_codec(y, "libopus", rate, ".ogg", 48000), f"opus_{rate}"
    return channel_sim(y, rng), "bandpass"


def noisy_copy(x: np.ndarray, rng: np.random.Generator, others: Sequence[np.ndarray] = (),
               recipe: NoisyRecipe | None = None) -> tuple[np.ndarray, dict[str, Any]]:
    """One degraded copy of ``x`` ``[time]`` (16 kHz) drawn from ``recipe``; same length, float32.

    ``others``: clips babble may mix (other speakers'; without them babble is not drawn). The same
    ``rng`` state gives the same copy (codecs need ffmpeg's encoders: a machine without one draws
    among the other channels). Returns ``(copy, info)``: what was applied, e.g. ``{"noise": "pink",
    "snr_db": 7.3, "channel": "mp3_24k"}``; ``snr_db`` is exact against the signal the noise was
    added to (after any reverberation)."""
    cfg = recipe or NoisyRecipe()
    n = len(x)
    y = np.asarray(x, dtype=np.float32).copy()
    info: dict[str, Any] = {"recipe": cfg.tag}
    if rng.random() < cfg.p_reverb:
        rt60 = float(rng.uniform(*cfg.rt60_s))
        y = dg.reverberate(y, rt60, rng)
        info["rt60_s"] = round(rt60, 3)
    if rng.random() < cfg.p_noise:
        kinds = [k for k in cfg.noise_kinds if k != "babble" or len(others) > 0]
        kind = str(rng.choice(kinds))
        snr = float(rng.uniform(*cfg.snr_db))
        if kind == "babble":
            talkers = int(rng.integers(cfg.babble_talkers[0], cfg.babble_talkers[1] + 1))
            noise = dg.babble_noise(n, others, rng, talkers=talkers)
            info["talkers"] = talkers
        else:
            noise = {"white": dg.white_noise, "pink": dg.pink_noise, "brown": brown_noise}[kind](n, rng)
        y = dg.mix_at_snr(y, noise, snr)
        info.update(noise=kind, snr_db=snr)
    if rng.random() < cfg.p_channel:
        kinds = [k for k in cfg.channels if k not in ("mp3", "opus")
                 or _has_encoder({"mp3": "libmp3lame", "opus": "libopus"}[k])]
        y, info["channel"] = _channel(y, str(rng.choice(kinds)), rng, cfg)
    if rng.random() < cfg.p_level:
        gain = float(rng.uniform(*cfg.level_db))
        y = dg.level(y, gain)
        info["level_db"] = round(gain, 2)
    assert len(y) == n, (info, n, len(y))  # every stage keeps the length
    return np.asarray(y, dtype=np.float32), info
