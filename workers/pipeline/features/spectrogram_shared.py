"""The torchaudio transforms of ``logmel`` and ``mfcc``, built once per process, and the power
spectrogram they share (through ``shared``).

Both extractors' defaults take the same STFT (400-sample Hann window, 160-sample hop, centred,
power 2); ``torchaudio.transforms.MFCC`` runs its own ``MelSpectrogram`` on it. Computing that
spectrogram once per recording and applying each extractor's mel filterbank to it gives the same
arrays, bit for bit, as calling the two transforms on the samples (``tests/pipeline/
test_features_shared.py``). A transform (its mel filterbank, its DCT matrix) is built once per
process and settings instead of on every recording.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
import torchaudio

from workers.pipeline.features import shared

__all__ = ["forget", "mel_spectrogram", "mfcc", "power_spectrogram"]


@functools.lru_cache(maxsize=16)
def mel_spectrogram(sample_rate: int, n_fft: int, hop_length: int, f_min: float, f_max: float | None, n_mels: int,
                    device: str) -> torchaudio.transforms.MelSpectrogram:
    """``torchaudio.transforms.MelSpectrogram`` with these settings (one per process; do not modify it)."""
    return torchaudio.transforms.MelSpectrogram(
        sample_rate=sample_rate, n_fft=n_fft, hop_length=hop_length, f_min=f_min, f_max=f_max, n_mels=n_mels
    ).to(device)


@functools.lru_cache(maxsize=16)
def mfcc(sample_rate: int, n_mfcc: int, n_fft: int, hop_length: int, f_min: float, f_max: float | None, n_mels: int,
         device: str) -> torchaudio.transforms.MFCC:
    """``torchaudio.transforms.MFCC`` with these settings (one per process; do not modify it)."""
    return torchaudio.transforms.MFCC(
        sample_rate=sample_rate,
        n_mfcc=n_mfcc,
        melkwargs={"n_fft": n_fft, "hop_length": hop_length, "n_mels": n_mels, "f_min": f_min, "f_max": f_max},
    ).to(device)


def power_spectrogram(x: np.ndarray, sample_rate: int, transform: torchaudio.transforms.Spectrogram) -> torch.Tensor:
    """``transform(x)``, ``[1 + n_fft // 2, frames]``, computed once per recording and STFT settings.

    Call it under ``torch.inference_mode()``; the tensor is shared, do not modify it.
    """
    t = transform
    device = str(t.window.device)
    what = ("spectrogram", t.n_fft, t.win_length, t.hop_length, t.pad, t.power, t.normalized, t.center, t.pad_mode,
            t.onesided, device, t.window.dtype, float(t.window.sum()))
    return shared.cached(x, sample_rate, what, lambda: t(torch.from_numpy(x).to(device)))


def forget() -> None:
    """Drop the shared spectrograms (``bench/features.py`` times the path without them)."""
    shared.forget("spectrogram")
