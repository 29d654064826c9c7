"""Compact CNN over log-mel (or MFCC) windows: the small accent / spoken-digit / language
classifier family.

Input is a waveform batch ``[batch, samples]`` at 16 kHz; the frontend (band limit, log-mel,
SpecAugment while training) runs inside the module.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from models.frontends import MFCC, BandLimit, LogMel, SpecAugment, rms_normalise


class StatsPool(nn.Module):
    """Mean and standard deviation over the last axis: ``[batch, ch, time]`` -> ``[batch, 2 * ch]``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[batch, ch, time]`` -> ``[batch, 2 * ch]``."""
        mean = x.mean(dim=-1)
        std = (x.var(dim=-1, unbiased=False) + 1e-5).sqrt()
        return torch.cat([mean, std], dim=-1)


def conv_block(c_in: int, c_out: int, pool: tuple[int, int] = (2, 2)) -> nn.Sequential:
    """Conv3x3 -> BatchNorm -> ReLU -> Conv3x3 -> BatchNorm -> ReLU -> MaxPool on ``[b, c, f, t]``."""
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
        nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(pool),
    )


class WaveClassifier(nn.Module):
    """Shared wiring for waveform classifiers: frontend -> trunk -> embedding -> logits.

    Subclasses set ``self.frontend`` (``[b, samples]`` -> ``[b, bins, frames]``),
    ``self.trunk`` (``[b, 1, bins, frames]`` -> ``[b, ch, bins', frames']``) and ``trunk_channels``.
    """

    def _init_head(self, trunk_channels: int, embedding_dim: int, n_classes: int, dropout: float) -> None:
        self.pool = StatsPool()
        self.embedding = nn.Sequential(
            nn.Linear(2 * trunk_channels, embedding_dim), nn.BatchNorm1d(embedding_dim), nn.ReLU(inplace=True)
        )
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(embedding_dim, n_classes)

    def features(self, wave: torch.Tensor) -> torch.Tensor:
        """Penultimate-layer vector.

        Parameters
        ----------
        wave : torch.Tensor
            ``[batch, samples]`` at 16 kHz.

        Returns
        -------
        torch.Tensor
            ``[batch, embedding_dim]``.
        """
        wave = rms_normalise(self.band_limit(wave.float()))
        spec = self.specaug(self.frontend(wave))  # [b, bins, t]
        h = self.trunk(spec.unsqueeze(1))  # [b, ch, f', t']
        h = h.mean(dim=2)  # [b, ch, t']
        return self.embedding(self.pool(h))

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        """``[batch, samples]`` -> logits ``[batch, n_classes]``."""
        return self.classifier(self.dropout(self.features(wave)))

    def embed(self, wave: torch.Tensor) -> torch.Tensor:
        """``[batch, samples]`` -> L2-normalised penultimate vectors ``[batch, embedding_dim]``."""
        return nn.functional.normalize(self.features(wave), dim=-1)


class CompactCNN(WaveClassifier):
    """Four conv blocks over a log-mel or MFCC image, stats pooling over time, linear classifier.

    Parameters
    ----------
    n_classes : int
        Number of output classes.
    sample_rate : int
        Input sample rate.
    frontend : str
        ``"logmel"`` or ``"mfcc"``.
    n_mels : int
        Mel bands (log-mel frontend) or DCT inputs (MFCC frontend).
    n_mfcc : int
        MFCC count (MFCC frontend).
    channels : int
        Width of the first block; blocks use ``c, 2c, 4c, 4c``.
    embedding_dim : int
        Size of the penultimate layer.
    band_limit_hz : float or None
        Low-pass applied to the input waveform.
    dropout : float
        Dropout before the classifier.
    specaug : bool
        Apply SpecAugment while training.
    """

    def __init__(
        self,
        n_classes: int,
        sample_rate: int = 16000,
        frontend: str = "logmel",
        n_mels: int = 64,
        n_mfcc: int = 30,
        channels: int = 16,
        embedding_dim: int = 128,
        band_limit_hz: float | None = 4000.0,
        dropout: float = 0.3,
        specaug: bool = True,
    ) -> None:
        super().__init__()
        f_max = float(band_limit_hz) if band_limit_hz else sample_rate / 2
        self.band_limit = BandLimit(sample_rate, band_limit_hz)
        if frontend == "mfcc":
            self.frontend: nn.Module = MFCC(sample_rate, n_mfcc=n_mfcc, n_mels=n_mels, f_max=f_max)
        elif frontend == "logmel":
            self.frontend = LogMel(sample_rate, n_mels=n_mels, f_max=f_max)
        else:
            raise ValueError(f"unknown frontend {frontend!r}")
        self.specaug = SpecAugment() if specaug else nn.Identity()
        c = channels
        self.trunk = nn.Sequential(
            conv_block(1, c), conv_block(c, 2 * c), conv_block(2 * c, 4 * c), conv_block(4 * c, 4 * c, pool=(2, 1))
        )
        self._init_head(4 * c, embedding_dim, n_classes, dropout)


def build_cnn(spec: Any, hparams: dict[str, Any], *, load_pretrained: bool = True) -> CompactCNN:
    """Build a :class:`CompactCNN` from a ModelSpec and hyper-parameters."""
    keys = ("frontend", "n_mels", "n_mfcc", "channels", "embedding_dim", "band_limit_hz", "dropout", "specaug")
    return CompactCNN(spec.n_classes, spec.sample_rate, **{k: hparams[k] for k in keys if k in hparams})
