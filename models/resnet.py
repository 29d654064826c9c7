"""ResNet18-style classifier (BasicBlock, layers [2, 2, 2, 2]) over 80-bin log-mel, from scratch.

The base width is configurable so a checkpoint stays under the 25 MB limit
(``base_channels=32`` is about 2.8 M parameters, 11 MB in float32).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from models.cnn import WaveClassifier
from models.frontends import BandLimit, LogMel, SpecAugment


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a residual connection on ``[b, c, f, t]``."""

    #: convolution -> batch norm pairs that :func:`models.fold.fold_batchnorm` may merge
    conv_bn_pairs = (("conv1", "bn1"), ("conv2", "bn2"))

    def __init__(self, c_in: int, c_out: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[b, c_in, f, t]`` -> ``[b, c_out, f / stride, t / stride]``."""
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class ResNetTrunk(nn.Module):
    """Stem conv + four stages of BasicBlocks: ``[b, 1, f, t]`` -> ``[b, 8c, f/8, t/8]``."""

    def __init__(self, base_channels: int = 32, layers: tuple[int, ...] = (2, 2, 2, 2)) -> None:
        super().__init__()
        c = base_channels
        self.stem = nn.Sequential(nn.Conv2d(1, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU(inplace=True))
        stages = []
        c_in = c
        for i, n in enumerate(layers):
            c_out = c * (2**i)
            blocks = [BasicBlock(c_in, c_out, stride=1 if i == 0 else 2)]
            blocks += [BasicBlock(c_out, c_out) for _ in range(n - 1)]
            stages.append(nn.Sequential(*blocks))
            c_in = c_out
        self.stages = nn.Sequential(*stages)
        self.out_channels = c_in

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[b, 1, f, t]`` -> ``[b, out_channels, f', t']``."""
        return self.stages(self.stem(x))


class ResNetClassifier(WaveClassifier):
    """ResNet18-style accent classifier.

    Parameters
    ----------
    n_classes : int
        Number of classes.
    sample_rate : int
        Input sample rate.
    n_mels : int
        Log-mel bands (80).
    base_channels : int
        Width of the first stage (64 in the original ResNet18).
    layers : tuple of int
        Blocks per stage.
    embedding_dim : int
        Size of the penultimate layer.
    band_limit_hz : float or None
        Low-pass applied to the waveform, and the top of the mel filterbank.
    dropout : float
        Dropout before the classifier.
    specaug : bool
        SpecAugment while training.

    Notes
    -----
    ``forward``: ``[batch, samples]`` -> ``[batch, n_classes]``.
    """

    def __init__(
        self,
        n_classes: int,
        sample_rate: int = 16000,
        n_mels: int = 80,
        base_channels: int = 32,
        layers: tuple[int, ...] = (2, 2, 2, 2),
        embedding_dim: int = 256,
        band_limit_hz: float | None = 4000.0,
        dropout: float = 0.3,
        specaug: bool = True,
    ) -> None:
        super().__init__()
        f_max = float(band_limit_hz) if band_limit_hz else sample_rate / 2
        self.band_limit = BandLimit(sample_rate, band_limit_hz)
        self.frontend = LogMel(sample_rate, n_mels=n_mels, f_max=f_max)
        self.specaug = SpecAugment(freq_mask=10, time_mask=25) if specaug else nn.Identity()
        self.trunk = ResNetTrunk(base_channels, tuple(layers))
        self._init_head(self.trunk.out_channels, embedding_dim, n_classes, dropout)


def build_resnet(spec: Any, hparams: dict[str, Any], *, load_pretrained: bool = True) -> ResNetClassifier:
    """Build a :class:`ResNetClassifier` from a ModelSpec and hyper-parameters."""
    keys = ("n_mels", "base_channels", "layers", "embedding_dim", "band_limit_hz", "dropout", "specaug")
    kw = {k: hparams[k] for k in keys if k in hparams}
    if "layers" in kw:
        kw["layers"] = tuple(kw["layers"])
    return ResNetClassifier(spec.n_classes, spec.sample_rate, **kw)
