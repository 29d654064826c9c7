"""Audio and rows the tests make themselves (no shared data needed)."""
from __future__ import annotations

import io

import numpy as np
import soundfile as sf
from django.core.files.uploadedfile import SimpleUploadedFile

SR = 16000


def pulse_train(f0: float = 150.0, seconds: float = 2.0, sr: int = SR, seed: int = 0) -> np.ndarray:
    """A voiced, speech-like signal: harmonics of ``f0`` through a vowel-ish spectral tilt, with light noise."""
    t = np.arange(int(seconds * sr)) / sr
    rng = np.random.default_rng(seed)
    harmonics = sum((0.6 / k) * np.sin(2 * np.pi * f0 * k * t) for k in range(1, 25) if f0 * k < sr / 2)
    envelope = 0.5 * (1 - np.cos(2 * np.pi * np.minimum(t, 0.05) / 0.1))
    return (0.3 * envelope * harmonics + 0.001 * rng.standard_normal(t.size)).astype(np.float32)


def audio_bytes(samples: np.ndarray, sr: int = SR, fmt: str = "WAV", subtype: str | None = None) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, samples, sr, format=fmt, subtype=subtype)
    return buffer.getvalue()


def upload(name: str, data: bytes, content_type: str = "application/octet-stream") -> SimpleUploadedFile:
    return SimpleUploadedFile(name, data, content_type=content_type)


def truncated_wav(seconds: float = 2.0) -> bytes:
    """A wav whose header promises ``seconds`` of audio but whose data stops at a third of it."""
    data = audio_bytes(pulse_train(seconds=seconds))
    return data[: 44 + (len(data) - 44) // 3]


def script_module(name: str):
    """``scripts/<name>.py`` loaded as a module (the scripts folder is not a package)."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location(name, Path(__file__).resolve().parents[1] / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
