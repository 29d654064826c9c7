"""Frozen pretrained GE2E speaker encoder (shipped inside the ``resemblyzer`` package) with a small
trained classifier head.

The encoder is re-built in torch so that its frontend (40-band mel power spectrogram, librosa
compatible) runs on the model's device. The three LSTM layers are split so the head can pool
intermediate layers too: lower layers keep more phonetic detail than the speaker-invariant top.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from models.frontends import BandLimit, ResemblyzerMel
from models.whisper_encoder import file_sha256  # noqa: F401 - one implementation, used below and re-exported

GE2E_HIDDEN = 256
GE2E_LAYERS = 3
GE2E_MELS = 40


def resemblyzer_weights_path() -> Path:
    """Path of ``pretrained.pt`` inside the installed resemblyzer package (no import of its VAD)."""
    import importlib.util

    spec = importlib.util.find_spec("resemblyzer")
    if spec is None or spec.origin is None:
        raise RuntimeError("the resemblyzer package is not installed (pip install --no-deps resemblyzer==0.1.4)")
    path = Path(spec.origin).resolve().parent / "pretrained.pt"
    if not path.exists():
        raise RuntimeError(f"resemblyzer weights not found at {path}")
    return path


class GE2EEncoder(nn.Module):
    """Resemblyzer's GE2E speaker encoder: mel frontend -> 3 x LSTM(256) -> Linear -> ReLU -> L2 norm.

    Parameters
    ----------
    sample_rate : int
        Input sample rate (must be 16000).
    band_limit_hz : float or None
        Optional low-pass of the waveform before the frontend.
    normalise_volume : bool
        Apply resemblyzer's ``normalize_volume(-30 dBFS, increase_only=True)`` per window.
    """

    def __init__(self, sample_rate: int = 16000, band_limit_hz: float | None = None, normalise_volume: bool = True) -> None:
        super().__init__()
        if sample_rate != 16000:
            raise ValueError("the GE2E encoder takes 16 kHz audio")
        self.band_limit = BandLimit(sample_rate, band_limit_hz)
        self.frontend = ResemblyzerMel(sample_rate, normalise_volume=normalise_volume)
        self.lstms = nn.ModuleList(
            [nn.LSTM(GE2E_MELS if i == 0 else GE2E_HIDDEN, GE2E_HIDDEN, 1, batch_first=True) for i in range(GE2E_LAYERS)]
        )
        self.linear = nn.Linear(GE2E_HIDDEN, GE2E_HIDDEN)
        self.embedding_dim = GE2E_HIDDEN

    def load_pretrained(self, path: str | Path | None = None) -> str:
        """Copy resemblyzer's weights into this module; returns the weights file's sha256."""
        path = Path(path) if path is not None else resemblyzer_weights_path()
        state = torch.load(path, map_location="cpu", weights_only=False)["model_state"]
        with torch.no_grad():
            for i, lstm in enumerate(self.lstms):
                for kind in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                    getattr(lstm, f"{kind}_l0").copy_(state[f"lstm.{kind}_l{i}"])
            self.linear.weight.copy_(state["linear.weight"])
            self.linear.bias.copy_(state["linear.bias"])
        return file_sha256(path)

    def layer_outputs(self, wave: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Run the encoder and keep every LSTM layer's outputs.

        Parameters
        ----------
        wave : torch.Tensor
            ``[batch, samples]`` at 16 kHz.

        Returns
        -------
        layers : list of torch.Tensor
            ``GE2E_LAYERS`` tensors ``[batch, frames, 256]``.
        embedding : torch.Tensor
            ``[batch, 256]``, L2-normalised speaker embedding (as resemblyzer's).
        """
        x = self.frontend(self.band_limit(wave.float()))  # [b, frames, 40]
        outs = []
        for lstm in self.lstms:
            x, _ = lstm(x)
            outs.append(x)
        raw = torch.relu(self.linear(outs[-1][:, -1]))
        return outs, nn.functional.normalize(raw, dim=-1)

    def embed_mels(self, mels: torch.Tensor) -> torch.Tensor:
        """``[batch, frames, 40]`` mel power frames -> ``[batch, 256]`` embedding (resemblyzer's forward)."""
        x = mels
        for lstm in self.lstms:
            x, _ = lstm(x)
        return nn.functional.normalize(torch.relu(self.linear(x[:, -1])), dim=-1)

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        """``[batch, samples]`` -> ``[batch, 256]`` L2-normalised embedding."""
        return self.layer_outputs(wave)[1]

    def embed(self, wave: torch.Tensor) -> torch.Tensor:
        """Same as :meth:`forward`: ``[batch, samples]`` -> ``[batch, 256]``."""
        return self.forward(wave)


class SpeakerHeadClassifier(nn.Module):
    """Frozen GE2E encoder, pooled layer statistics, and a small trained MLP head.

    Parameters
    ----------
    n_classes : int
        Number of classes.
    pool_layers : tuple of int
        Which LSTM layers (0, 1, 2) contribute mean+std statistics over time.
    use_embedding : bool
        Also feed the 256-d speaker embedding to the head.
    hidden : int
        Head hidden size (also the ``embed`` dimension).
    dropout : float
        Dropout in the head.
    band_limit_hz : float or None
        Low-pass of the waveform before the encoder.
    input_dropout : float
        Dropout on the normalised input features.
    n_heads : int
        Size of the head ensemble: independently initialised MLP heads over the shared
        normalised features, trained jointly (each with its own loss, see :meth:`head_all`);
        the model's logits are their mean. ``1`` is the single head of 1.0 checkpoints.

    Notes
    -----
    ``encode``: ``[batch, samples]`` -> ``[batch, feature_dim]`` (frozen, cacheable);
    ``head``: ``[batch, feature_dim]`` -> ``[batch, n_classes]``.
    """

    def __init__(
        self,
        n_classes: int,
        pool_layers: tuple[int, ...] = (0, 1, 2),
        use_embedding: bool = True,
        hidden: int = 128,
        dropout: float = 0.3,
        band_limit_hz: float | None = 4000.0,
        input_dropout: float = 0.1,
        n_heads: int = 1,
    ) -> None:
        super().__init__()
        self.encoder = GE2EEncoder(band_limit_hz=band_limit_hz)
        for p in self.encoder.parameters():
            p.requires_grad_(False)
        self.pool_layers = tuple(int(i) for i in pool_layers)
        self.use_embedding = use_embedding
        self.feature_dim = 2 * GE2E_HIDDEN * len(self.pool_layers) + (GE2E_HIDDEN if use_embedding else 0)
        self.norm = nn.BatchNorm1d(self.feature_dim)
        self.hidden = nn.Sequential(
            nn.Dropout(input_dropout), nn.Linear(self.feature_dim, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout)
        )
        self.classifier = nn.Linear(hidden, n_classes)
        self.n_heads = int(n_heads)
        if self.n_heads < 1:
            raise ValueError("n_heads must be >= 1")
        # heads 1..n-1 (head 0 keeps the 1.0 parameter names so older checkpoints still load)
        self.extra_heads = nn.ModuleList(
            nn.Sequential(nn.Dropout(input_dropout), nn.Linear(self.feature_dim, hidden), nn.ReLU(inplace=True),
                          nn.Dropout(dropout), nn.Linear(hidden, n_classes))
            for _ in range(self.n_heads - 1)
        )

    def train(self, mode: bool = True) -> SpeakerHeadClassifier:
        """Switch the head's mode; the frozen encoder always stays in eval mode."""
        super().train(mode)
        self.encoder.eval()
        return self

    @torch.no_grad()
    def encode(self, wave: torch.Tensor) -> torch.Tensor:
        """Frozen features: ``[batch, samples]`` -> ``[batch, feature_dim]``."""
        layers, emb = self.encoder.layer_outputs(wave)
        parts = []
        for i in self.pool_layers:
            h = layers[i]
            parts += [h.mean(dim=1), h.std(dim=1, unbiased=False)]
        if self.use_embedding:
            parts.append(emb)
        return torch.cat(parts, dim=-1)

    def head_hidden(self, feats: torch.Tensor) -> torch.Tensor:
        """``[batch, feature_dim]`` -> ``[batch, hidden]``."""
        return self.hidden(self.norm(feats))

    def head_all(self, feats: torch.Tensor) -> torch.Tensor:
        """Every ensemble member's logits: ``[batch, feature_dim]`` -> ``[n_heads, batch, n_classes]``."""
        z = self.norm(feats)
        outs = [self.classifier(self.hidden(z))] + [h(z) for h in self.extra_heads]
        return torch.stack(outs)

    def head(self, feats: torch.Tensor) -> torch.Tensor:
        """``[batch, feature_dim]`` -> logits ``[batch, n_classes]`` (mean over the head ensemble)."""
        if self.n_heads == 1:
            return self.classifier(self.head_hidden(feats))
        return self.head_all(feats).mean(dim=0)

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        """``[batch, samples]`` -> logits ``[batch, n_classes]``."""
        return self.head(self.encode(wave))

    #: the training loop feeds this family cached frozen-encoder features (``encode``'s output)
    train_source = "cached"

    def eval_logits(self, feats: torch.Tensor) -> torch.Tensor:
        """Training-time scoring of cached features ``[batch, feature_dim]`` -> ``[batch, n_classes]``."""
        return self.head(feats)

    def train_loss(self, feats: torch.Tensor, y: torch.Tensor, *, class_weight: torch.Tensor | None = None,
                   hp: dict[str, Any] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(loss, logits)`` on cached features: label-smoothed cross-entropy; with a head ensemble
        each member gets its own loss, and with ``hp["bag"]`` its own Poisson(1) bootstrap weighting
        of the batch (bagging), which decorrelates the members."""
        hp = hp or {}
        if self.n_heads == 1:
            logits = self.head(feats)
            return nn.functional.cross_entropy(logits, y, weight=class_weight, label_smoothing=0.05), logits
        all_logits = self.head_all(feats)  # [K, b, C]
        k, b, c = all_logits.shape
        ce = nn.functional.cross_entropy(all_logits.reshape(k * b, c), y.repeat(k), weight=class_weight,
                                         label_smoothing=0.05, reduction="none").reshape(k, b)
        if hp.get("bag", False):
            w = torch.poisson(torch.ones(k, b, device=ce.device))
            loss = ((ce * w).sum(dim=1) / w.sum(dim=1).clamp(min=1.0)).mean()
        else:
            loss = ce.mean()
        return loss, all_logits.mean(dim=0)

    def embed(self, wave: torch.Tensor) -> torch.Tensor:
        """``[batch, samples]`` -> L2-normalised hidden vector of head 0 ``[batch, hidden]``."""
        return nn.functional.normalize(self.head_hidden(self.encode(wave)), dim=-1)


def build_speaker_head(spec: Any, hparams: dict[str, Any], *, load_pretrained: bool = True) -> SpeakerHeadClassifier:
    """Build a :class:`SpeakerHeadClassifier`; copies the pretrained encoder weights when asked."""
    keys = ("hidden", "dropout", "band_limit_hz", "use_embedding", "input_dropout", "n_heads")
    kw = {k: hparams[k] for k in keys if k in hparams}
    if "pool_layers" in hparams:
        kw["pool_layers"] = tuple(hparams["pool_layers"])
    model = SpeakerHeadClassifier(spec.n_classes, **kw)
    if load_pretrained:
        model.encoder.load_pretrained()
    return model


def build_speaker_encoder(spec: Any, hparams: dict[str, Any], *, load_pretrained: bool = True) -> GE2EEncoder:
    """The pretrained encoder itself as an embedding model (family ``speaker_encoder``)."""
    enc = GE2EEncoder(band_limit_hz=hparams.get("band_limit_hz"))
    if load_pretrained:
        enc.load_pretrained()
    return enc
