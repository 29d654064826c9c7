"""Multi-feature accent embedding network.

Feature-specific encoders (log-mel, MFCC, prosody = F0 + intensity contours, formants = F1-F3
contours, voice quality = HNR + voicing) -> a transformer encoder over time -> attentive pooling
-> a fusion layer -> an L2-normalised embedding (128-d by default), with a cosine classifier on
top. Trained with classification + supervised contrastive + batch-hard triplet losses and an
auxiliary reconstruction of the frame-level features.

Frame-level prosody / formant / voice-quality inputs come from parselmouth (Praat), not torch:
:func:`frame_features` (pure numpy / parselmouth) computes them on a 10 ms grid aligned with the
log-mel frames, and :meth:`AccentEmbedNet.prepare_inputs` calls it for inference windows.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from models.frontends import BandLimit, LogMel, SpecAugment, rms_normalise

HOP = 160  # samples per frame at 16 kHz (10 ms), same as the log-mel frontend
FRAME_FEATURES = ("f0_st", "voiced", "intensity_db", "f1_khz", "f2_khz", "f3_khz", "hnr_db")
N_FRAME_FEATURES = len(FRAME_FEATURES)


def frame_features(
    samples: np.ndarray, sample_rate: int = 16000, *, band_limit_hz: float | None = 4000.0
) -> np.ndarray:
    """Frame-level prosody, formant and voice-quality contours with parselmouth.

    Parameters
    ----------
    samples : np.ndarray
        ``[time]`` mono waveform.
    sample_rate : int
        Its sample rate (16000 expected).
    band_limit_hz : float or None
        Low-pass before analysis (the same band as the network sees).

    Returns
    -------
    np.ndarray
        ``[frames, 7]`` float32 with ``frames = len(samples) // 160 + 1`` (10 ms grid), columns
        :data:`FRAME_FEATURES`: F0 in semitones re 100 Hz (0 when unvoiced), voicing flag,
        intensity (dB), F1-F3 (kHz, 0 when undefined), HNR (dB, clipped to [-10, 40]; 0 when
        undefined). Raw values: the network normalises them per window.
    """
    import parselmouth

    n_frames = len(samples) // HOP + 1
    out = np.zeros((n_frames, N_FRAME_FEATURES), dtype=np.float32)
    x = np.asarray(samples, dtype=np.float64)
    if len(x) < int(0.1 * sample_rate) or not np.any(np.abs(x) > 1e-6):
        return out
    snd = parselmouth.Sound(x, sampling_frequency=sample_rate)
    if band_limit_hz and 2 * band_limit_hz < sample_rate:
        snd = snd.resample(2 * band_limit_hz)  # Praat's resample low-passes; analysis is cheaper too
    times = np.arange(n_frames) * (HOP / sample_rate)

    def interp(t: np.ndarray, v: np.ndarray, fill: float = 0.0) -> np.ndarray:
        v = np.where(np.isfinite(v), v, np.nan)
        ok = ~np.isnan(v)
        if ok.sum() < 2:
            return np.full(n_frames, fill, dtype=np.float64)
        res = np.interp(times, t[ok], v[ok], left=fill, right=fill)
        return res

    pitch = snd.to_pitch(time_step=0.01, pitch_floor=75.0, pitch_ceiling=500.0)
    f0 = pitch.selected_array["frequency"]
    pt = pitch.xs()
    voiced_src = (f0 > 0).astype(np.float64)
    if len(pt):
        idx = np.clip(np.searchsorted(pt, times), 0, len(pt) - 1)
        voiced = voiced_src[idx] * (np.abs(pt[idx] - times) < 0.02)
        f0_at = f0[idx]
        out[:, 0] = np.where(voiced > 0, 12 * np.log2(np.maximum(f0_at, 1.0) / 100.0), 0.0)
        out[:, 1] = voiced
    intensity = snd.to_intensity(minimum_pitch=75.0, time_step=0.01)
    out[:, 2] = interp(intensity.xs(), intensity.values[0], fill=float(np.nanmin(intensity.values[0])) if intensity.values.size else 0.0)
    max_formant = min(5500.0, float(band_limit_hz)) if band_limit_hz else 5500.0
    formant = snd.to_formant_burg(time_step=0.01, max_number_of_formants=5, maximum_formant=max_formant)
    ft = np.asarray(formant.xs())
    from parselmouth.praat import call

    for k in range(3):
        vals = np.asarray(call(formant, "To Matrix", k + 1).values[0], dtype=np.float64)
        vals = np.where(vals > 0, vals, np.nan)
        out[:, 3 + k] = interp(ft, vals / 1000.0) * out[:, 1]
    harm = snd.to_harmonicity_cc(time_step=0.01, minimum_pitch=75.0)
    hv = harm.values[0].astype(np.float64)
    hv = np.where(hv < -100, np.nan, hv)
    out[:, 6] = np.clip(interp(harm.xs(), hv), -10, 40) * out[:, 1]
    return np.nan_to_num(out, nan=0.0, posinf=0.0, neginf=0.0)


def normalise_frame_features(frames: torch.Tensor) -> torch.Tensor:
    """Per-window normalisation of raw :func:`frame_features` values.

    F0 minus the window's voiced mean (semitones / 6), intensity minus its mean (/ 10), formants
    centred on typical values, HNR / 20. ``[b, T, 7]`` -> ``[b, T, 7]``.
    """
    voiced = frames[..., 1:2]
    nv = voiced.sum(dim=1, keepdim=True).clamp_min(1.0)
    f0 = frames[..., 0:1]
    f0_mean = (f0 * voiced).sum(dim=1, keepdim=True) / nv
    f0n = (f0 - f0_mean) * voiced / 6.0
    inten = frames[..., 2:3]
    intn = (inten - inten.mean(dim=1, keepdim=True)) / 10.0
    centres = torch.tensor([0.5, 1.5, 2.5], device=frames.device, dtype=frames.dtype)
    fmt = (frames[..., 3:6] - centres) * voiced / torch.tensor([0.3, 0.6, 0.6], device=frames.device, dtype=frames.dtype)
    hnr = frames[..., 6:7] / 20.0
    return torch.cat([f0n, voiced, intn, fmt, hnr], dim=-1)


class ConvEncoder(nn.Module):
    """1-D conv encoder: ``[b, c_in, T]`` -> ``[b, c_out, T / 4]`` (two stride-2 stages)."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv1d(c_in, c_out, 5, padding=2),
            nn.BatchNorm1d(c_out),
            nn.GELU(),
            nn.Conv1d(c_out, c_out, 5, stride=2, padding=2),
            nn.BatchNorm1d(c_out),
            nn.GELU(),
            nn.Conv1d(c_out, c_out, 5, stride=2, padding=2),
            nn.BatchNorm1d(c_out),
            nn.GELU(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[b, c_in, T]`` -> ``[b, c_out, ceil(T / 4)]``."""
        return self.net(x)


class AttentivePool(nn.Module):
    """Attentive statistics pooling: ``[b, T, d]`` -> ``[b, 2d]`` (weighted mean and std)."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.att = nn.Sequential(nn.Linear(d, d // 2), nn.Tanh(), nn.Linear(d // 2, 1))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """``[b, T, d]`` -> ``[b, 2d]``."""
        w = torch.softmax(self.att(h), dim=1)  # [b, T, 1]
        mean = (w * h).sum(dim=1)
        var = (w * (h - mean[:, None]) ** 2).sum(dim=1)
        return torch.cat([mean, (var + 1e-5).sqrt()], dim=-1)


class AccentEmbedNet(nn.Module):
    """Multi-feature accent embedding network.

    Parameters
    ----------
    n_classes : int
        Classes of the auxiliary (cosine) classifier; 0 disables it.
    sample_rate : int
        Input sample rate.
    n_mels, n_mfcc : int
        Log-mel bands and MFCC count.
    d_model : int
        Transformer width.
    n_layers, n_heads : int
        Transformer depth and heads.
    embedding_dim : int
        Size of the L2-normalised embedding.
    band_limit_hz : float or None
        Low-pass of the waveform (and parselmouth analysis).
    dropout : float
        Dropout in the transformer and fusion layer.
    scale : float
        Cosine-classifier logit scale.

    Notes
    -----
    Input is a dict: ``"wave" [b, samples]`` and ``"frames" [b, samples // 160 + 1, 7]`` (raw
    :func:`frame_features`). ``forward`` -> logits ``[b, n_classes]``; ``embed`` -> ``[b, embedding_dim]``.
    """

    def __init__(
        self,
        n_classes: int,
        sample_rate: int = 16000,
        n_mels: int = 64,
        n_mfcc: int = 20,
        d_model: int = 128,
        n_layers: int = 2,
        n_heads: int = 4,
        embedding_dim: int = 128,
        band_limit_hz: float | None = 4000.0,
        dropout: float = 0.1,
        scale: float = 10.0,
        specaug: bool = True,
    ) -> None:
        super().__init__()
        f_max = float(band_limit_hz) if band_limit_hz else sample_rate / 2
        self.sample_rate = sample_rate
        self.band_limit_hz = band_limit_hz
        self.band_limit = BandLimit(sample_rate, band_limit_hz)
        self.logmel = LogMel(sample_rate, n_mels=n_mels, f_max=f_max, normalise="none")
        self.register_buffer("dct", _dct(n_mfcc, n_mels), persistent=False)
        self.specaug = SpecAugment(freq_mask=8, time_mask=20) if specaug else nn.Identity()
        q = d_model // 4
        self.enc_mel = ConvEncoder(n_mels, d_model)
        self.enc_mfcc = ConvEncoder(n_mfcc, d_model // 2)
        self.enc_prosody = ConvEncoder(3, q)  # f0, voiced, intensity
        self.enc_formant = ConvEncoder(4, q)  # F1-F3, voiced
        self.enc_vq = ConvEncoder(2, q // 2)  # HNR, voiced
        cat = d_model + d_model // 2 + q + q + q // 2
        self.proj = nn.Linear(cat, d_model)
        self.pos_scale = nn.Parameter(torch.tensor(0.1))
        layer = nn.TransformerEncoderLayer(d_model, n_heads, 2 * d_model, dropout, batch_first=True, norm_first=True)
        self.transformer = nn.TransformerEncoder(layer, n_layers, enable_nested_tensor=False)
        self.pool = AttentivePool(d_model)
        self.fusion = nn.Sequential(
            nn.Linear(2 * d_model + cat, 256), nn.LayerNorm(256), nn.GELU(), nn.Dropout(dropout), nn.Linear(256, embedding_dim)
        )
        self.recon = nn.Linear(d_model, N_FRAME_FEATURES + n_mels)
        self.n_classes = n_classes
        self.scale = scale
        self.embedding_dim = embedding_dim
        if n_classes > 0:
            self.class_weight = nn.Parameter(torch.randn(n_classes, embedding_dim) * 0.1)

    # ---- inputs -------------------------------------------------------------------------
    def prepare_inputs(self, windows: np.ndarray, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
        """Waveform windows ``[n, samples]`` -> ``{"wave": [n, samples], "frames": [n, T, 7]}`` on ``device``."""
        frames = np.stack([frame_features(w, self.sample_rate, band_limit_hz=self.band_limit_hz) for w in windows])
        return {
            "wave": torch.from_numpy(np.ascontiguousarray(windows, dtype=np.float32)).to(device),
            "frames": torch.from_numpy(frames).to(device),
        }

    # ---- network ------------------------------------------------------------------------
    def encode(self, inputs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Run encoders and transformer.

        Returns
        -------
        embedding : torch.Tensor
            ``[b, embedding_dim]`` L2-normalised.
        hidden : torch.Tensor
            ``[b, T / 4, d_model]`` transformer outputs.
        target : torch.Tensor
            ``[b, T / 4, 7 + n_mels]`` downsampled normalised inputs (reconstruction target).
        """
        wave = rms_normalise(self.band_limit(inputs["wave"].float()))
        logmel = self.logmel(wave)  # [b, M, T]
        logmel = logmel - logmel.mean(dim=-1, keepdim=True)
        mfcc = torch.einsum("bmt,mk->bkt", logmel, self.dct)
        mfcc = mfcc / mfcc.std(dim=-1, keepdim=True).clamp_min(1e-3)
        logmel = logmel / logmel.flatten(1).std(dim=1).clamp_min(1e-3)[:, None, None]
        T = logmel.shape[-1]
        frames = inputs["frames"].float()
        if frames.shape[1] != T:  # tolerate off-by-one framing
            frames = nn.functional.interpolate(frames.transpose(1, 2), size=T, mode="nearest").transpose(1, 2)
        fr = normalise_frame_features(frames).transpose(1, 2)  # [b, 7, T]
        voiced = fr[:, 1:2]
        branches = [
            self.enc_mel(self.specaug(logmel)),
            self.enc_mfcc(mfcc),
            self.enc_prosody(torch.cat([fr[:, 0:1], voiced, fr[:, 2:3]], dim=1)),
            self.enc_formant(torch.cat([fr[:, 3:6], voiced], dim=1)),
            self.enc_vq(torch.cat([fr[:, 6:7], voiced], dim=1)),
        ]
        x = torch.cat(branches, dim=1).transpose(1, 2)  # [b, T4, cat]
        t4 = x.shape[1]
        h = self.proj(x) + self.pos_scale * _sinusoid(t4, self.proj.out_features, x.device)
        h = self.transformer(h)
        fused = torch.cat([self.pool(h), x.mean(dim=1)], dim=-1)
        emb = nn.functional.normalize(self.fusion(fused), dim=-1)
        target = torch.cat([fr, logmel], dim=1)
        target = nn.functional.adaptive_avg_pool1d(target, t4).transpose(1, 2)
        return emb, h, target

    def classify_embedding(self, emb: torch.Tensor) -> torch.Tensor:
        """Cosine classifier: ``[b, embedding_dim]`` -> ``[b, n_classes]``."""
        return self.scale * emb @ nn.functional.normalize(self.class_weight, dim=-1).T

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """Inputs dict -> logits ``[b, n_classes]``."""
        return self.classify_embedding(self.encode(inputs)[0])

    def embed(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """Inputs dict -> ``[b, embedding_dim]`` L2-normalised embedding."""
        return self.encode(inputs)[0]

    #: the training loop feeds this family cached frame features with the waveform
    train_source = "frames"

    def train_loss(self, inputs: dict[str, torch.Tensor], y: torch.Tensor, *, class_weight: torch.Tensor | None = None,
                   hp: dict[str, Any] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(loss, logits)`` for the training loop: :meth:`training_losses` with ``hp``'s weights."""
        hp = hp or {}
        loss, logits, _ = self.training_losses(inputs, y, class_weight=class_weight, w_supcon=hp.get("w_supcon", 0.5),
                                               w_triplet=hp.get("w_triplet", 0.5), w_recon=hp.get("w_recon", 0.1))
        return loss, logits

    def training_losses(
        self,
        inputs: dict[str, torch.Tensor],
        y: torch.Tensor,
        *,
        class_weight: torch.Tensor | None = None,
        w_supcon: float = 0.5,
        w_triplet: float = 0.5,
        w_recon: float = 0.1,
        temperature: float = 0.1,
        margin: float = 0.3,
    ) -> tuple[torch.Tensor, torch.Tensor, dict[str, float]]:
        """Total loss, logits ``[b, n_classes]`` and the loss parts for logging.

        CE + ``w_supcon`` * SupCon + ``w_triplet`` * batch-hard triplet + ``w_recon`` * MSE(feature
        reconstruction).
        """
        emb, h, target = self.encode(inputs)
        logits = self.classify_embedding(emb)
        ce = nn.functional.cross_entropy(logits, y, weight=class_weight)
        sc = supcon_loss(emb, y, temperature)
        tr = batch_hard_triplet_loss(emb, y, margin)
        rec = nn.functional.mse_loss(self.recon(h), target)
        total = ce + w_supcon * sc + w_triplet * tr + w_recon * rec
        parts = {"ce": ce.item(), "supcon": sc.item(), "triplet": tr.item(), "recon": rec.item()}
        return total, logits, parts


def supcon_loss(emb: torch.Tensor, y: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """Supervised contrastive loss (Khosla et al. 2020) on L2-normalised ``emb [b, d]``, labels ``[b]``."""
    b = emb.shape[0]
    sim = emb @ emb.T / temperature
    eye = torch.eye(b, dtype=torch.bool, device=emb.device)
    sim = sim.masked_fill(eye, -1e9)
    logprob = sim - torch.logsumexp(sim, dim=1, keepdim=True)
    pos = (y[:, None] == y[None, :]) & ~eye
    npos = pos.sum(dim=1)
    valid = npos > 0
    if not valid.any():
        return emb.sum() * 0.0
    loss = -(logprob * pos).sum(dim=1)[valid] / npos[valid]
    return loss.mean()


def batch_hard_triplet_loss(emb: torch.Tensor, y: torch.Tensor, margin: float = 0.3) -> torch.Tensor:
    """Batch-hard triplet loss (Hermans et al. 2017) with Euclidean distance on ``emb [b, d]``."""
    d = torch.cdist(emb, emb)
    same = y[:, None] == y[None, :]
    eye = torch.eye(len(y), dtype=torch.bool, device=emb.device)
    pos = same & ~eye
    neg = ~same
    valid = pos.any(dim=1) & neg.any(dim=1)
    if not valid.any():
        return emb.sum() * 0.0
    hardest_pos = (d * pos).max(dim=1).values
    hardest_neg = d.masked_fill(~neg, float("inf")).min(dim=1).values
    return torch.relu(hardest_pos - hardest_neg + margin)[valid].mean()


def _dct(n_mfcc: int, n_mels: int) -> torch.Tensor:
    import torchaudio

    return torchaudio.functional.create_dct(n_mfcc, n_mels, "ortho")


def _sinusoid(length: int, dim: int, device: torch.device) -> torch.Tensor:
    """Sinusoidal positional encoding ``[1, length, dim]``."""
    pos = torch.arange(length, device=device, dtype=torch.float32)[:, None]
    i = torch.arange(0, dim, 2, device=device, dtype=torch.float32)
    ang = pos / torch.pow(10000.0, i / dim)
    pe = torch.zeros(length, dim, device=device)
    pe[:, 0::2] = torch.sin(ang)
    pe[:, 1::2] = torch.cos(ang[:, : pe[:, 1::2].shape[1]])
    return pe[None]


def build_accent_embed(spec: Any, hparams: dict[str, Any], *, load_pretrained: bool = True) -> AccentEmbedNet:
    """Build an :class:`AccentEmbedNet` from a ModelSpec and hyper-parameters."""
    keys = ("n_mels", "n_mfcc", "d_model", "n_layers", "n_heads", "band_limit_hz", "dropout", "scale", "specaug")
    kw = {k: hparams[k] for k in keys if k in hparams}
    return AccentEmbedNet(len(spec.labels), spec.sample_rate, embedding_dim=spec.embedding_dim or 128, **kw)
