"""Spectral shape descriptors (librosa) from one STFT."""

from __future__ import annotations

from dataclasses import dataclass

import librosa
import numpy as np

from workers.pipeline.features.base import FeatureExtractor, FeatureResult, as_mono, describe, register_extractor


@register_extractor
class Spectral(FeatureExtractor):
    """Centroid, bandwidth, roll-off, flatness and octave-band contrast per frame.

    Arrays (float32, one value per frame unless noted): ``centroid``, ``bandwidth`` and ``rolloff``
    in Hz, ``flatness`` (0 tonal .. 1 white), ``contrast`` in dB ``[contrast_bands + 1, frames]``,
    ``rms_db`` (dBFS). Summary: mean and std of each (``contrast_{k}_mean`` ...) over the frames
    louder than ``silence_dbfs``, so pauses do not drag the statistics towards those of silence;
    None when no frame is that loud; ``loud_fraction`` is the share of such frames. The defaults
    need a sample rate of at least 16 kHz (the top contrast band starts at
    ``contrast_fmin * 2**(contrast_bands - 1)`` Hz, which must lie below Nyquist).
    """

    name = "spectral"
    version = "1"

    @dataclass(frozen=True)
    class Config:
        n_fft: int = 512  # 32 ms at 16 kHz
        hop_length: int = 160  # 10 ms at 16 kHz
        rolloff_percent: float = 0.85
        contrast_fmin: float = 200.0
        contrast_bands: int = 6
        silence_dbfs: float = -60.0

    def extract(self, samples: np.ndarray, sample_rate: int) -> FeatureResult:
        c = self.config
        x = as_mono(samples)
        long_enough = x.size >= c.n_fft
        if long_enough:
            s = np.abs(librosa.stft(x, n_fft=c.n_fft, hop_length=c.hop_length))  # [1 + n_fft // 2, frames]
            kw = {"S": s, "sr": sample_rate, "n_fft": c.n_fft, "hop_length": c.hop_length}
            tracks = {
                "centroid": librosa.feature.spectral_centroid(**kw)[0],
                "bandwidth": librosa.feature.spectral_bandwidth(**kw)[0],
                "rolloff": librosa.feature.spectral_rolloff(**kw, roll_percent=c.rolloff_percent)[0],
                "flatness": librosa.feature.spectral_flatness(S=s)[0],
                "contrast": librosa.feature.spectral_contrast(**kw, fmin=c.contrast_fmin, n_bands=c.contrast_bands),
                # From the samples, not S (whose Hann window lowers the level by ~4 dB): true dBFS.
                "rms_db": librosa.amplitude_to_db(
                    librosa.feature.rms(y=x, frame_length=c.n_fft, hop_length=c.hop_length)[0], amin=1e-10, top_db=None
                ),
            }
        else:
            tracks = {k: np.zeros(0) for k in ("centroid", "bandwidth", "rolloff", "flatness", "rms_db")}
            tracks["contrast"] = np.zeros((c.contrast_bands + 1, 0))
        arrays = {k: v.astype(np.float32) for k, v in tracks.items()}
        loud = arrays["rms_db"] > c.silence_dbfs
        summary: dict[str, float | None] = {}
        for key in ("centroid", "bandwidth", "rolloff", "flatness"):
            summary |= describe(arrays[key][loud], key)
        for k, band in enumerate(arrays["contrast"]):
            summary |= describe(band[loud], f"contrast_{k}")
        summary["loud_fraction"] = float(loud.mean()) if long_enough else None
        return self.result(summary, arrays, sample_rate / c.hop_length)
