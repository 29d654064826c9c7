"""MFCCs with deltas and delta-deltas (torchaudio)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torchaudio

from workers.pipeline.features import spectrogram_shared
from workers.pipeline.features.base import FeatureExtractor, FeatureResult, as_mono, describe, register_extractor


@register_extractor
class MFCC(FeatureExtractor):
    """``n_mfcc`` cepstral coefficients of a dB mel spectrogram (orthonormal DCT), with their deltas.

    Arrays: ``mfcc`` float32 ``[3 * n_mfcc, frames]``: rows ``0..n-1`` the coefficients, then their
    deltas, then delta-deltas (regression over ``delta_win`` frames). Summary: ``mfcc_{i}_mean`` and
    ``mfcc_{i}_std`` of each coefficient, ``delta_{i}_std`` and ``delta2_{i}_std`` (the means of
    deltas are ~0 by construction, so they are left out).
    """

    name = "mfcc"
    version = "1"
    uses_torch = True

    @dataclass(frozen=True)
    class Config:
        n_mfcc: int = 13
        n_mels: int = 40
        n_fft: int = 400  # 25 ms at 16 kHz
        hop_length: int = 160  # 10 ms at 16 kHz
        f_min: float = 20.0
        f_max: float | None = None  # Nyquist
        delta_win: int = 5
        device: str = "cpu"

    def extract(self, samples: np.ndarray, sample_rate: int) -> FeatureResult:
        c = self.config
        x = as_mono(samples)
        if x.size < c.n_fft:
            feats = np.zeros((3 * c.n_mfcc, 0), dtype=np.float32)
        else:
            mfcc = spectrogram_shared.mfcc(sample_rate, c.n_mfcc, c.n_fft, c.hop_length, c.f_min, c.f_max, c.n_mels, c.device)
            with torch.inference_mode():
                # MFCC.forward on the power spectrogram shared with logmel: mel, dB (top 80 dB), DCT.
                spec = spectrogram_shared.power_spectrogram(x, sample_rate, mfcc.MelSpectrogram.spectrogram)
                mel_db = mfcc.amplitude_to_DB(mfcc.MelSpectrogram.mel_scale(spec))  # [n_mels, frames]
                coeffs = torch.matmul(mel_db.transpose(-1, -2), mfcc.dct_mat).transpose(-1, -2)  # [n_mfcc, frames]
                delta = torchaudio.functional.compute_deltas(coeffs, win_length=c.delta_win)
                delta2 = torchaudio.functional.compute_deltas(delta, win_length=c.delta_win)
                feats = torch.cat([coeffs, delta, delta2]).cpu().numpy()
        n = c.n_mfcc
        summary: dict[str, float | None] = {}
        for i in range(n):
            summary |= describe(feats[i], f"mfcc_{i}")
            summary |= describe(feats[n + i], f"delta_{i}", ("std",))
            summary |= describe(feats[2 * n + i], f"delta2_{i}", ("std",))
        return self.result(summary, {"mfcc": feats}, sample_rate / c.hop_length)
