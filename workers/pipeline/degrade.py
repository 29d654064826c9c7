"""Degraded copies of a recording for robustness evaluation (numpy / scipy, CPU; ffmpeg for codecs).

Every condition takes ``[time]`` float32 samples at 16 kHz and returns a ``[time]`` array of the
**same length**. Conditions are named (:data:`CONDITIONS`) so reports and cards read the same names;
:func:`degrade` applies one, deterministically: the noise, babble talkers and impulse response are
drawn from ``numpy.random.default_rng([seed, crc32(name), index])``, so the same clip under the same
condition and seed is always the same array.

SNR is the ratio of the clean clip's mean power to the added noise's mean power over the whole
clip (silences included), in dB. Training augmentation lives in ``workers.pipeline.augment``; this
module is for measuring, not for training. No Django.
"""

from __future__ import annotations

import math
import shutil
import subprocess
import tempfile
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy.signal import butter, fftconvolve, resample_poly, sosfiltfilt

SR = 16000


def _power(x: np.ndarray) -> float:
    return float(np.mean(np.asarray(x, dtype=np.float64) ** 2))


def _fit_length(y: np.ndarray, n: int) -> np.ndarray:
    """Crop or zero-pad ``y`` to ``n`` samples."""
    y = np.asarray(y, dtype=np.float32)[:n]
    return np.pad(y, (0, n - len(y))) if len(y) < n else y


def mix_at_snr(x: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """``x + g * noise`` with ``g`` such that ``power(x) / power(g * noise) = 10 ** (snr_db / 10)``.

    ``x`` ``[time]``; ``noise`` is tiled or cropped to ``len(x)``. A silent ``x`` or ``noise`` is returned as is.
    """
    x = np.asarray(x, dtype=np.float32)
    noise = np.resize(np.asarray(noise, dtype=np.float32), len(x))  # tiles a short noise
    p_x, p_n = _power(x), _power(noise)
    if p_x <= 0 or p_n <= 0:
        return x.copy()
    gain = math.sqrt(p_x / (p_n * 10 ** (snr_db / 10)))
    return (x + gain * noise).astype(np.float32)


def white_noise(n: int, rng: np.random.Generator) -> np.ndarray:
    """Gaussian white noise ``[n]``."""
    return rng.standard_normal(n).astype(np.float32)


def pink_noise(n: int, rng: np.random.Generator) -> np.ndarray:
    """1/f (pink) noise ``[n]``: white noise shaped by ``1 / sqrt(f)`` in the frequency domain."""
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.arange(len(spec), dtype=np.float64)
    f[0] = 1.0
    y = np.fft.irfft(spec / np.sqrt(f), n)
    return (y / (np.std(y) + 1e-12)).astype(np.float32)


def babble_noise(n: int, others: Sequence[np.ndarray], rng: np.random.Generator, talkers: int = 6) -> np.ndarray:
    """Babble ``[n]``: ``talkers`` clips drawn from ``others`` (without replacement when enough), each
    brought to unit RMS, started at a random offset, tiled to ``n`` samples and summed."""
    pool = [np.asarray(o, dtype=np.float32) for o in others if len(o) and _power(o) > 0]
    if not pool:
        raise ValueError("babble needs other clips with sound in them")
    pick = rng.choice(len(pool), size=talkers, replace=len(pool) < talkers)
    out = np.zeros(n, dtype=np.float64)
    for k in pick:
        o = pool[int(k)]
        o = np.roll(o, int(rng.integers(len(o))))
        out += np.resize(o, n) / math.sqrt(_power(o))
    return out.astype(np.float32)


def telephone_band(x: np.ndarray, low_hz: float = 300.0, high_hz: float = 3400.0) -> np.ndarray:
    """Narrow-band telephone channel: resample to 8 kHz, band-pass ``low_hz``-``high_hz`` (4th-order
    Butterworth, zero phase), resample back to 16 kHz."""
    n = len(x)
    y = resample_poly(np.asarray(x, dtype=np.float64), 1, 2)
    sos = butter(4, [low_hz, high_hz], btype="band", fs=SR // 2, output="sos")
    y = sosfiltfilt(sos, y)
    return _fit_length(resample_poly(y, 2, 1), n)


def mu_law_8k(x: np.ndarray, mu: int = 255) -> np.ndarray:
    """G.711-like telephone codec: telephone band at 8 kHz, then 8-bit mu-law quantisation."""
    n = len(x)
    y = resample_poly(telephone_band(x), 1, 2)
    peak = float(np.max(np.abs(y))) or 1.0
    y = np.clip(y / peak, -1, 1)
    comp = np.sign(y) * np.log1p(mu * np.abs(y)) / math.log1p(mu)
    q = np.round((comp + 1) / 2 * 255) / 255 * 2 - 1  # 256 levels
    expanded = np.sign(q) * ((1 + mu) ** np.abs(q) - 1) / mu
    return _fit_length(resample_poly(expanded * peak, 2, 1), n)


def level(x: np.ndarray, gain_db: float, bits: int = 16) -> np.ndarray:
    """Scale by ``gain_db`` and quantise to ``bits``-bit PCM (what a quiet recording keeps)."""
    q = 2 ** (bits - 1)
    return (np.round(np.clip(np.asarray(x, dtype=np.float64) * 10 ** (gain_db / 20), -1, 1) * q) / q).astype(np.float32)


def exponential_ir(rt60_s: float, rng: np.random.Generator, direct_to_reverb_db: float = 0.0) -> np.ndarray:
    """Synthetic room impulse response ``[taps]``: a unit direct path followed by Gaussian noise with
    an exponential decay reaching -60 dB after ``rt60_s``, its energy ``direct_to_reverb_db`` below
    the direct path's, from 2.5 ms on."""
    taps = int(rt60_s * SR)
    t = np.arange(taps) / SR
    tail = rng.standard_normal(taps) * np.exp(-6.9078 * t / rt60_s)  # ln(1000) = 6.9078: -60 dB at rt60
    tail[: int(0.0025 * SR)] = 0.0
    tail *= math.sqrt(10 ** (-direct_to_reverb_db / 10) / max(float(np.sum(tail**2)), 1e-12))
    tail[0] = 1.0
    return tail.astype(np.float32)


def reverberate(x: np.ndarray, rt60_s: float, rng: np.random.Generator) -> np.ndarray:
    """Convolve with :func:`exponential_ir`, keep the first ``len(x)`` samples, restore the input's RMS."""
    y = fftconvolve(np.asarray(x, dtype=np.float64), exponential_ir(rt60_s, rng))[: len(x)]
    p_x, p_y = _power(x), _power(y)
    return (y * math.sqrt(p_x / p_y) if p_y > 0 else y).astype(np.float32)


def ffmpeg_codec_available(codec: str) -> bool:
    """Whether the ffmpeg on PATH can encode with ``codec`` (e.g. ``libmp3lame``, ``libopus``)."""
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        return False
    out = subprocess.run([ffmpeg, "-hide_banner", "-encoders"], capture_output=True, text=True, check=False).stdout
    return any(line.split()[1:2] == [codec] for line in out.splitlines() if line.strip())


def ffmpeg_codec(x: np.ndarray, codec: str, bitrate: str, suffix: str, sample_rate: int = SR) -> np.ndarray:
    """Encode with ffmpeg (``codec`` at ``bitrate``, e.g. ``libmp3lame`` ``24k``) and decode back to 16 kHz
    mono float32 of the input's length; the encoder's start delay is removed by aligning on the
    cross-correlation peak (within 100 ms)."""
    n = len(x)
    with tempfile.TemporaryDirectory() as tmp:
        src, enc = Path(tmp) / "in.f32", Path(tmp) / f"enc{suffix}"
        np.asarray(x, dtype="<f4").tofile(src)
        common = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y"]
        subprocess.run([*common, "-f", "f32le", "-ar", str(SR), "-ac", "1", "-i", str(src), "-c:a", codec,
                        "-b:a", bitrate, "-ar", str(sample_rate), str(enc)], check=True, capture_output=True)
        dec = subprocess.run([*common, "-i", str(enc), "-f", "f32le", "-ac", "1", "-ar", str(SR), "-"],
                             check=True, capture_output=True).stdout
    y = np.frombuffer(dec, dtype="<f4").astype(np.float32)
    lag_max = min(int(0.1 * SR), max(len(y) - 1, 0))
    if lag_max > 0 and _power(x) > 0:
        head = np.asarray(x[: min(n, 4 * SR)], dtype=np.float64)
        corr = [float(np.dot(head[: len(y) - lag], y[lag: lag + len(head)])) if len(y) - lag > 0 else 0.0
                for lag in range(lag_max)]
        y = y[int(np.argmax(corr)):]
    return _fit_length(y, n)


@dataclass(frozen=True)
class Condition:
    """A named degradation: ``apply(x, rng, others)`` -> ``[time]`` of ``len(x)``."""

    name: str
    description: str
    apply: Callable[[np.ndarray, np.random.Generator, Sequence[np.ndarray]], np.ndarray] = field(compare=False)
    needs_others: bool = False  # babble: mixes in other clips of the same split
    requires: str | None = None  # an ffmpeg encoder it needs (``ffmpeg_codec_available``)


def _noise_condition(kind: str, snr: int) -> Condition:
    make = white_noise if kind == "white" else pink_noise
    return Condition(f"{kind}_{snr}db", f"{kind} noise, {snr} dB SNR",
                     lambda x, rng, others: mix_at_snr(x, make(len(x), rng), snr))


def _babble_condition(snr: int) -> Condition:
    return Condition(f"babble_{snr}db", f"babble of 6 other clips of the same split, {snr} dB SNR",
                     lambda x, rng, others: mix_at_snr(x, babble_noise(len(x), others, rng), snr), needs_others=True)


#: every condition by name; ``clean`` is the identity
CONDITIONS: dict[str, Condition] = {c.name: c for c in (
    Condition("clean", "the clip as it is", lambda x, rng, others: np.asarray(x, dtype=np.float32).copy()),
    *(_noise_condition(kind, snr) for kind in ("white", "pink") for snr in (20, 10, 5)),
    *(_babble_condition(snr) for snr in (20, 10, 5)),
    Condition("telephone", "8-kHz telephone band (300-3400 Hz)", lambda x, rng, others: telephone_band(x)),
    Condition("mulaw_8k", "G.711-like: telephone band, 8 kHz, 8-bit mu-law", lambda x, rng, others: mu_law_8k(x)),
    Condition("mp3_24k", "MP3 (LAME) at 24 kbit/s", lambda x, rng, others: ffmpeg_codec(x, "libmp3lame", "24k", ".mp3"),
              requires="libmp3lame"),
    Condition("opus_12k", "Opus at 12 kbit/s", lambda x, rng, others: ffmpeg_codec(x, "libopus", "12k", ".ogg", 48000),
              requires="libopus"),
    Condition("level_-30db", "30 dB quieter, 16-bit PCM", lambda x, rng, others: level(x, -30.0)),
    Condition("reverb_0.3s", "synthetic room, RT60 0.3 s (exponential-decay noise tail)",
              lambda x, rng, others: reverberate(x, 0.3, rng)),
)}

#: what ``manage.py train --robustness`` and ``evaluate_robustness`` run when not told otherwise
DEFAULT_CONDITIONS: tuple[str, ...] = ("clean", "pink_10db", "babble_10db", "telephone", "level_-30db", "reverb_0.3s")


def available_conditions() -> list[str]:
    """Names of the conditions this machine can run (codec ones need their ffmpeg encoder)."""
    return [name for name, c in CONDITIONS.items() if c.requires is None or ffmpeg_codec_available(c.requires)]


def parse_conditions(names: Sequence[str] | str | None) -> list[str]:
    """Condition names from a list or a comma-separated string; ``clean`` always first; ``ValueError``
    naming the known ones for an unknown name. None or empty: :data:`DEFAULT_CONDITIONS`."""
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
    names = list(names or DEFAULT_CONDITIONS)
    unknown = [n for n in names if n not in CONDITIONS]
    if unknown:
        raise ValueError(f"unknown robustness condition(s) {unknown}; expected some of {sorted(CONDITIONS)}")
    return ["clean", *[n for n in dict.fromkeys(names) if n != "clean"]]


def degrade(x: np.ndarray, condition: str, *, seed: int = 0, index: int = 0,
            others: Sequence[np.ndarray] = ()) -> np.ndarray:
    """The clip ``x`` ``[time]`` (16 kHz) under ``condition``, same length, deterministic in
    ``(seed, condition, index)``. ``others``: the clips babble draws from (the clip itself excluded
    by the caller)."""
    cond = CONDITIONS[condition]
    rng = np.random.default_rng([int(seed), zlib.crc32(condition.encode()), int(index)])
    y = cond.apply(np.asarray(x, dtype=np.float32), rng, others)
    assert len(y) == len(x), (condition, len(x), len(y))
    return np.asarray(y, dtype=np.float32)


def degrade_all(signals: Sequence[np.ndarray], condition: str, *, seed: int = 0) -> list[np.ndarray]:
    """Every clip of ``signals`` under ``condition``; babble for clip ``i`` draws from the others."""
    needs = CONDITIONS[condition].needs_others
    return [degrade(x, condition, seed=seed, index=i,
                    others=[o for j, o in enumerate(signals) if j != i] if needs else ())
            for i, x in enumerate(signals)]


def condition_table() -> list[dict[str, Any]]:
    """``[{"name", "description"}]`` of every condition (help texts and docs)."""
    return [{"name": c.name, "description": c.description} for c in CONDITIONS.values()]
