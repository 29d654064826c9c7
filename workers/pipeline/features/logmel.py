"""Log-mel spectrogram (torchaudio), so the same code runs on CPU or GPU."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from workers.pipeline.features import spectrogram_shared
from workers.pipeline.features.base import FeatureExtractor, FeatureResult, as_mono, register_extractor


@register_extractor
class LogMel(FeatureExtractor):
    """Power mel spectrogram in dB, ``10 * log10(max(mel, log_floor))``.

    Arrays: ``logmel`` float32 ``[n_mels, frames]`` with ``frames = len // hop_length + 1`` (centred
    frames). Summary: ``mean_db`` and ``std_db`` over all cells, ``temporal_std_db`` (each bin's std
    over time, averaged over bins: how much the spectrum moves) and ``n_frames``. A signal shorter
    than one FFT window gives zero frames and None statistics.
    """

    name = "logmel"
    version = "1"
    uses_torch = True

    @dataclass(frozen=True)
    class Config:
        n_mels: int = 80
        n_fft: int = 400  # 25 ms at 16 kHz
        hop_length: int = 160  # 10 ms at 16 kHz
        f_min: float = 0.0
        f_max: float | None = None  # Nyquist
        log_floor: float = 1e-10  # -100 dB
        device: str = "cpu"

    def extract(self, samples: np.ndarray, sample_rate: int) -> FeatureResult:
        c = self.config
        x = as_mono(samples)
        if x.size < c.n_fft:
            db = np.zeros((c.n_mels, 0), dtype=np.float32)
        else:
            mel = spectrogram_shared.mel_spectrogram(sample_rate, c.n_fft, c.hop_length, c.f_min, c.f_max, c.n_mels, c.device)
            with torch.inference_mode():
                spec = spectrogram_shared.power_spectrogram(x, sample_rate, mel.spectrogram)  # shared with mfcc
                power = mel.mel_scale(spec)  # [n_mels, frames]
                db = (10.0 * torch.log10(power.clamp_min(c.log_floor))).cpu().numpy()
        empty = db.shape[1] == 0
        summary = {
            "mean_db": None if empty else float(db.mean(dtype=np.float64)),
            "std_db": None if empty else float(db.std(dtype=np.float64)),
            "temporal_std_db": None if empty else float(db.std(axis=1, dtype=np.float64).mean()),
            "n_frames": db.shape[1],
        }
        return self.result(summary, {"logmel": db}, sample_rate / c.hop_length)
