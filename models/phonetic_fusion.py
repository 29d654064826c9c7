"""A window classifier fused, per utterance, with utterance-level features.

The window model (any classify family; the shipped one is ``speaker_head``) scores windows as
usual. Per recording, the mean of its calibrated window probabilities (as log-probabilities) and
a vector of utterance-level features are standardised (a missing value becomes the training
mean) and combined by a multinomial logistic layer fitted on out-of-fold predictions.
``forward`` is the window model's, so batching, VAD and window timelines work unchanged;
:meth:`fuse` gives the recording's class probabilities.

``PhoneticFusion`` (family ``phonetic_fusion``) takes phone-recogniser features
(``workers.pipeline.phones``) of every recording; ``ReadingFusion`` (``reading_fusion``) takes
reading features (``workers.pipeline.reading``) of recordings whose transcript is known, and
leaves the others to the window model.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from models.hooks import model_hook

if TYPE_CHECKING:  # the registry builds this family (models/registry.py): importing it back would be a circle
    from models.specs import ModelSpec


def fusion_inputs(window_proba: np.ndarray, features: np.ndarray) -> np.ndarray:
    """``[n, C]`` mean window probabilities + ``[n, F]`` features -> ``[n, C + F]`` (unscaled): the
    fusion layer's input, in training and at inference."""
    window_proba = np.atleast_2d(np.asarray(window_proba, dtype=np.float64))
    features = np.atleast_2d(np.asarray(features, dtype=np.float64))
    return np.hstack([np.log(np.clip(window_proba, 1e-6, 1.0)), features])


class PhoneticFusion(nn.Module):
    """``base`` window model + an utterance-level logistic layer over ``[log p_windows, features]``."""

    needs_phone_features = True
    needs_transcript = False

    def __init__(self, base: nn.Module, n_classes: int, n_features: int) -> None:
        super().__init__()
        self.base = base
        self.n_classes, self.n_features = n_classes, n_features
        self.register_buffer("input_mean", torch.zeros(n_classes + n_features))
        self.register_buffer("input_scale", torch.ones(n_classes + n_features))
        self.fusion = nn.Linear(n_classes + n_features, n_classes)

    def forward(self, x: Any) -> torch.Tensor:
        return self.base(x)

    def prepare_inputs(self, windows: np.ndarray, device: Any) -> Any:
        hook = model_hook(self.base, "prepare_inputs")
        return hook(windows, device) if hook is not None else torch.from_numpy(windows).to(device)

    def embed(self, x: Any) -> torch.Tensor:
        return self.base.embed(x)

    fusion_inputs = staticmethod(fusion_inputs)

    def set_fusion(self, mean: np.ndarray, scale: np.ndarray, coef: np.ndarray, intercept: np.ndarray) -> None:
        """Install a fitted logistic layer (``coef [C, C + F]``, ``intercept [C]``, or the binary
        ``[1, C + F]`` / ``[1]`` form, which becomes logits ``[0, w x + b]``)."""
        coef, intercept = np.atleast_2d(coef), np.atleast_1d(intercept)
        if coef.shape[0] == 1 and self.n_classes == 2:
            coef = np.vstack([np.zeros_like(coef), coef])
            intercept = np.array([0.0, float(intercept[0])])
        with torch.no_grad():
            # a feature never observed in training has no mean or scale: it always enters as 0
            self.input_mean.copy_(torch.as_tensor(np.nan_to_num(mean, nan=0.0), dtype=torch.float32))
            self.input_scale.copy_(torch.as_tensor(np.where(scale > 0, scale, 1.0), dtype=torch.float32))
            self.fusion.weight.copy_(torch.as_tensor(coef, dtype=torch.float32))
            self.fusion.bias.copy_(torch.as_tensor(intercept, dtype=torch.float32))

    def fuse(self, window_proba: np.ndarray, features: np.ndarray) -> np.ndarray:
        """Class probabilities ``[n, C]`` for recordings whose mean calibrated window probabilities
        are ``window_proba [n, C]`` and phone features ``features [n, F]``."""
        z = torch.as_tensor(fusion_inputs(window_proba, features), dtype=torch.float32)
        z = torch.nan_to_num((z - self.input_mean.cpu()) / self.input_scale.cpu(), nan=0.0)
        with torch.no_grad():
            w, b = self.fusion.weight.detach().cpu().float(), self.fusion.bias.detach().cpu().float()
            return torch.softmax(z @ w.T + b, dim=1).double().numpy()


class ReadingFusion(PhoneticFusion):
    """``base`` window model + a logistic layer over ``[log p_windows, reading features]``, applied
    only to recordings with a transcript. A passage model (``passage``: the words its training
    speakers all read first) also takes per-word features of that passage, and applies only to
    recordings whose transcript begins with it."""

    needs_phone_features = False
    needs_transcript = True

    def __init__(self, base: nn.Module, n_classes: int, n_features: int, passage: list[str] | None = None) -> None:
        super().__init__(base, n_classes, n_features)
        self.passage = list(passage or [])


FUSION_CLASSES: dict[str, type[PhoneticFusion]] = {"phonetic_fusion": PhoneticFusion, "reading_fusion": ReadingFusion}


def build_phonetic_fusion(spec: ModelSpec, hparams: dict[str, Any], *, base: nn.Module,
                          load_pretrained: bool = True) -> PhoneticFusion:
    """Either fusion family around ``base``, the window model the registry built first from
    ``hparams["base_family"]`` and ``hparams["base"]`` (``Family.wraps_base``). ``hparams`` also
    holds ``n_features`` (and ``passage`` for ``reading_fusion``)."""
    if FUSION_CLASSES[spec.family] is ReadingFusion:
        return ReadingFusion(base, len(spec.labels), int(hparams["n_features"]), hparams.get("passage"))
    return PhoneticFusion(base, len(spec.labels), int(hparams["n_features"]))
