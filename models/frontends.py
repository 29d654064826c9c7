"""Differentiable audio frontends (torchaudio) that live inside the models, so they run on the
same device as the network.

Every frontend takes a waveform batch ``[batch, samples]`` (float32, 16 kHz) and returns a
feature tensor. Nothing here runs torch code at import time.
"""

from __future__ import annotations

import math

import torch
import torchaudio
from torch import nn


def rms_normalise(wave: torch.Tensor, target_dbfs: float = -25.0, eps: float = 1e-8) -> torch.Tensor:
    """Scale every waveform in the batch to the same RMS level.

    Parameters
    ----------
    wave : torch.Tensor
        ``[batch, samples]``.
    target_dbfs : float
        Target RMS level in dB relative to full scale.

    Returns
    -------
    torch.Tensor
        ``[batch, samples]``, same dtype.
    """
    rms = wave.pow(2).mean(dim=-1, keepdim=True).clamp_min(eps).sqrt()
    return wave * (10.0 ** (target_dbfs / 20.0) / rms)


class BandLimit(nn.Module):
    """Low-pass a 16 kHz waveform to ``cutoff_hz`` by resampling down to ``2 * cutoff_hz`` and back.

    This mimics 8 kHz-sourced recordings (telephone-band archives), so a model cannot tell a
    band-limited clip from a full-band one by its bandwidth.

    Parameters
    ----------
    sample_rate : int
        Input sample rate (Hz).
    cutoff_hz : float or None
        Band limit; ``None`` or ``>= sample_rate / 2`` makes the module an identity.
    """

    def __init__(self, sample_rate: int = 16000, cutoff_hz: float | None = 4000.0) -> None:
        super().__init__()
        self.sample_rate = int(sample_rate)
        self.cutoff_hz = cutoff_hz
        self.active = cutoff_hz is not None and 2 * cutoff_hz < sample_rate

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        """``[batch, samples]`` -> ``[batch, samples]`` (same length)."""
        if not self.active:
            return wave
        low_sr = int(2 * self.cutoff_hz)
        n = wave.shape[-1]
        down = torchaudio.functional.resample(wave, self.sample_rate, low_sr)
        up = torchaudio.functional.resample(down, low_sr, self.sample_rate)
        if up.shape[-1] >= n:
            return up[..., :n]
        return nn.functional.pad(up, (0, n - up.shape[-1]))


class LogMel(nn.Module):
    """Log-mel spectrogram with per-window normalisation.

    Parameters
    ----------
    sample_rate : int
        Input sample rate (Hz).
    n_mels : int
        Number of mel bands.
    n_fft, win_length, hop_length : int
        STFT parameters in samples (defaults: 25 ms window, 10 ms hop at 16 kHz).
    f_min, f_max : float
        Mel filterbank range (Hz). ``f_max=4000`` keeps the model inside the telephone band.
    normalise : str
        ``"cmvn"``: subtract each band's mean over time and divide by the window's overall std;
        ``"none"``: raw log-mel.

    Notes
    -----
    Input ``[batch, samples]`` -> output ``[batch, n_mels, frames]`` with
    ``frames = samples // hop_length + 1``.
    """

    def __init__(
        self,
        sample_rate: int = 16000,
        n_mels: int = 80,
        n_fft: int = 512,
        win_length: int = 400,
        hop_length: int = 160,
        f_min: float = 20.0,
        f_max: float = 4000.0,
        normalise: str = "cmvn",
    ) -> None:
        super().__init__()
        self.n_mels = n_mels
        self.hop_length = hop_length
        self.normalise = normalise
        self.mel = torchaudio.transforms.MelSpectrogram(
            sample_rate=sample_rate,
            n_fft=n_fft,
            win_length=win_length,
            hop_length=hop_length,
            f_min=f_min,
            f_max=f_max,
            n_mels=n_mels,
            power=2.0,
            norm="slaney",
            mel_scale="slaney",
        )

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        """``[batch, samples]`` -> ``[batch, n_mels, frames]``."""
        with torch.autocast(device_type=wave.device.type, enabled=False):
            spec = self.mel(wave.float())
            logmel = torch.log(spec + 1e-6)
        if self.normalise == "cmvn":
            logmel = logmel - logmel.mean(dim=-1, keepdim=True)
            logmel = logmel / logmel.flatten(1).std(dim=1).clamp_min(1e-3)[:, None, None]
        return logmel


class MFCC(nn.Module):
    """MFCCs computed as a DCT-II of a (non-normalised) log-mel spectrogram, then CMVN per window.

    Input ``[batch, samples]`` -> output ``[batch, n_mfcc, frames]``.
    """

    def __init__(
        self,
        sample_rate: int = 16000,
        n_mfcc: int = 20,
        n_mels: int = 40,
        f_max: float = 4000.0,
        hop_length: int = 160,
    ) -> None:
        super().__init__()
        self.logmel = LogMel(
            sample_rate=sample_rate, n_mels=n_mels, f_max=f_max, hop_length=hop_length, normalise="none"
        )
        self.register_buffer("dct", torchaudio.functional.create_dct(n_mfcc, n_mels, "ortho"), persistent=False)

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        """``[batch, samples]`` -> ``[batch, n_mfcc, frames]``."""
        logmel = self.logmel(wave)  # [b, n_mels, t]
        mfcc = torch.einsum("bmt,mk->bkt", logmel, self.dct)
        mfcc = mfcc - mfcc.mean(dim=-1, keepdim=True)
        return mfcc / mfcc.std(dim=-1, keepdim=True).clamp_min(1e-3)


class ResemblyzerMel(nn.Module):
    """Torch re-implementation of ``resemblyzer.audio.wav_to_mel_spectrogram``.

    librosa's ``melspectrogram(sr=16000, n_fft=400, hop_length=160, n_mels=40)``: Hann window,
    centred frames with zero padding, power 2, Slaney mel scale and Slaney area normalisation.
    Optionally applies resemblyzer's ``normalize_volume(-30 dBFS, increase_only=True)`` per window.

    Input ``[batch, samples]`` -> output ``[batch, frames, 40]`` (mel *power*, not log).
    """

    def __init__(self, sample_rate: int = 16000, normalise_volume: bool = True) -> None:
        super().__init__()
        self.normalise_volume = normalise_volume
        self.mel = torchaudio.transforms.MelSpectrogram(
            sample_rate=sample_rate,
            n_fft=400,
            win_length=400,
            hop_length=160,
            n_mels=40,
            power=2.0,
            center=True,
            pad_mode="constant",
            norm="slaney",
            mel_scale="slaney",
        )

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        """``[batch, samples]`` -> ``[batch, frames, 40]``."""
        wave = wave.float()
        if self.normalise_volume:
            int16_max = 2**15 - 1
            rms = (wave * int16_max).pow(2).mean(dim=-1, keepdim=True).clamp_min(1e-10).sqrt()
            dbfs = 20 * torch.log10(rms / int16_max)
            change = (-30.0 - dbfs).clamp_min(0.0)  # increase only
            wave = wave * torch.pow(10.0, change / 20.0)
        with torch.autocast(device_type=wave.device.type, enabled=False):
            return self.mel(wave).transpose(1, 2)


class SpecAugment(nn.Module):
    """Random time and frequency masking on ``[batch, bins, frames]`` features (training only).

    Parameters
    ----------
    freq_mask : int
        Maximum width of each frequency mask (bins).
    time_mask : int
        Maximum width of each time mask (frames).
    n_freq, n_time : int
        Number of masks of each kind.
    """

    def __init__(self, freq_mask: int = 8, time_mask: int = 20, n_freq: int = 2, n_time: int = 2) -> None:
        super().__init__()
        self.freq_mask, self.time_mask, self.n_freq, self.n_time = freq_mask, time_mask, n_freq, n_time

    def forward(self, spec: torch.Tensor) -> torch.Tensor:
        """``[batch, bins, frames]`` -> same shape; identity in eval mode."""
        if not self.training:
            return spec
        b, f, t = spec.shape
        out = spec.clone()
        dev = spec.device
        for _ in range(self.n_freq):
            w = torch.randint(0, self.freq_mask + 1, (b, 1), device=dev)
            s = (torch.rand(b, 1, device=dev) * (f - w).clamp_min(1)).long()
            idx = torch.arange(f, device=dev)[None, :]
            mask = (idx >= s) & (idx < s + w)
            out = out.masked_fill(mask[:, :, None], 0.0)
        for _ in range(self.n_time):
            w = torch.randint(0, self.time_mask + 1, (b, 1), device=dev)
            s = (torch.rand(b, 1, device=dev) * (t - w).clamp_min(1)).long()
            idx = torch.arange(t, device=dev)[None, :]
            mask = (idx >= s) & (idx < s + w)
            out = out.masked_fill(mask[:, None, :], 0.0)
        return out


def n_frames(n_samples: int, hop_length: int = 160) -> int:
    """Frames produced by a centred STFT for ``n_samples`` samples."""
    return int(math.floor(n_samples / hop_length)) + 1
