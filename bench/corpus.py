"""The recordings the benchmark uploads: generated clips (espeak-ng speech or a speech-like
synthetic voice, 2-20 s, wav / flac / mp3) and a stratified subset of accent-mini."""

from __future__ import annotations

import csv
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

ACCENT_MINI = Path("/work/shared/data/accent-mini")
FORMATS = ("wav", "flac", "mp3")
_TEXT = (
    "Please call Stella. Ask her to bring these things with her from the store: six spoons of fresh snow peas, "
    "five thick slabs of blue cheese, and maybe a snack for her brother Bob. We also need a small plastic snake "
    "and a big toy frog for the kids. She can scoop these things into three red bags, and we will go meet her "
    "Wednesday at the train station. "
)
_VOICES = ("en-us", "en-gb", "en-gb-scotland", "en-029", "en-us-nyc", "en-gb-x-rp")


@dataclass(frozen=True)
class Clip:
    path: Path
    label: str  # the classify model's label space: native / non_native ("" when unknown)
    speaker: str
    source: str  # espeak | synthetic | accent-mini
    duration_s: float


def _speechlike(duration_s: float, sr: int, rng: np.random.Generator) -> np.ndarray:
    """A voiced/unvoiced 'syllable' train: harmonics on a wandering F0, formant-ish AM, pauses, noise."""
    n = int(duration_s * sr)
    t = np.arange(n) / sr
    f0 = rng.uniform(90, 220) * (1 + 0.08 * np.sin(2 * np.pi * rng.uniform(0.2, 0.6) * t))
    phase = 2 * np.pi * np.cumsum(f0) / sr
    voice = sum((0.6 / k) * np.sin(k * phase) for k in range(1, 12))
    syll = 0.5 * (1 + np.sin(2 * np.pi * rng.uniform(3, 5) * t)) ** 2
    gate = (np.sin(2 * np.pi * 0.25 * t + rng.uniform(0, 6)) > -0.6).astype(float)
    x = 0.25 * voice * syll * gate + 0.005 * rng.standard_normal(n)
    return (x / np.max(np.abs(x)) * 0.5).astype(np.float32)


def _espeak(text: str, voice: str, out: Path) -> bool:
    if shutil.which("espeak-ng") is None:
        return False
    proc = subprocess.run(["espeak-ng", "-v", voice, "-s", "150", "-w", str(out), text], capture_output=True, timeout=60)
    return proc.returncode == 0 and out.exists()


def _write(x: np.ndarray, sr: int, path: Path) -> None:
    fmt = path.suffix.lstrip(".")
    try:
        sf.write(path, x, sr, format=fmt.upper())
    except Exception:  # an older libsndfile without MP3: let FFmpeg encode it
        tmp = path.with_suffix(".tmp.wav")
        sf.write(tmp, x, sr)
        subprocess.run(["ffmpeg", "-y", "-loglevel", "error", "-i", str(tmp), str(path)], check=True)
        tmp.unlink()


def generated(n: int, folder: Path, seed: int = 0) -> list[Clip]:
    """``n`` clips, 2-20 s, half espeak-ng speech (when installed) and half synthetic, formats cycling."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    clips = []
    for i in range(n):
        target = float(rng.uniform(2.0, 20.0))
        fmt = FORMATS[i % len(FORMATS)]
        path = folder / f"gen{i:03d}.{fmt}"
        source = "synthetic"
        x, sr = None, 16000
        if i % 2 == 0:
            raw = folder / f"gen{i:03d}.espeak.wav"
            words = _TEXT.split()
            start = int(rng.integers(0, len(words)))
            text = " ".join((words * 4)[start : start + int(target * 2.6)])  # ~2.6 words/s at 150 wpm
            if _espeak(text, _VOICES[i % len(_VOICES)], raw):
                x, sr = sf.read(raw, dtype="float32")
                raw.unlink()
                x = x[: int(20.0 * sr)]
                source = "espeak"
        if x is None:
            sr = (16000, 22050, 44100)[i % 3]
            x = _speechlike(target, sr, rng)
        _write(x, sr, path)
        clips.append(Clip(path, "", f"gen-{source}-{i % 6}", source, len(x) / sr))
    return clips


def accent_mini(n: int, root: Path = ACCENT_MINI) -> list[Clip]:
    """``n`` test-split clips (all when ``n`` is None or larger), alternating native / non-native."""
    manifest = root / "manifest.csv"
    if not manifest.exists():
        return []
    rows = [r for r in csv.DictReader(open(manifest, newline="")) if r["split"] == "test"]
    native = [r for r in rows if r["accent_group"] == "native_english"]
    other = [r for r in rows if r["accent_group"] != "native_english"]
    rng = np.random.default_rng(0)
    rng.shuffle(native)
    rng.shuffle(other)
    picked = []
    for a, b in zip(native, other, strict=False):
        picked += [a, b]
    picked += native[len(other) :] + other[len(native) :]
    picked = picked[:n] if n is not None else picked
    return [
        Clip(
            root / r["path"],
            "native" if r["accent_group"] == "native_english" else "non_native",
            r["speaker_id"],
            "accent-mini",
            float(r["duration_s"]),
        )
        for r in picked
    ]
