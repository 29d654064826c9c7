"""Model specifications: what a model outputs and what it expects as input.

A :class:`ModelSpec` is stored inside every checkpoint so that inference code can window audio,
name classes and size embeddings without knowing the model family (pyannote ``Specifications``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from models.registry import FAMILIES as _REGISTRY

#: every registered family (models/registry.py)
FAMILIES: tuple[str, ...] = tuple(_REGISTRY)
TASKS: tuple[str, ...] = ("classify", "embed")


@dataclass(frozen=True)
class ModelSpec:
    """Declares a model's identity, task, classes and input windowing.

    Attributes
    ----------
    name : str
        Model name, e.g. ``"accent-native"``.
    version : str
        Version string of the trained weights, e.g. ``"1.0.0"``.
    family : str
        One of :data:`FAMILIES`.
    task : str
        ``"classify"`` (outputs logits ``[n, len(labels)]``) or ``"embed"`` (outputs
        L2-normalised vectors ``[n, embedding_dim]``).
    labels : tuple of str
        Class names in logit order (empty for pure embedding models).
    sample_rate : int
        Sample rate of the waveform windows the model takes (Hz).
    window_s : float
        Window length in seconds the model was trained on.
    hop_s : float
        Default hop between windows in seconds at inference time.
    embedding_dim : int or None
        Size of the vectors returned by ``LoadedModel.embed``.
    extra : dict
        JSON-able extra settings (frontend parameters, band limit, label map, ...).
    """

    name: str
    version: str
    family: str
    task: str
    labels: tuple[str, ...]
    sample_rate: int = 16000
    window_s: float = 4.0
    hop_s: float = 2.0
    embedding_dim: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise ValueError(f"unknown model family {self.family!r}; expected one of {FAMILIES}")
        if self.task not in TASKS:
            raise ValueError(f"unknown task {self.task!r}; expected one of {TASKS}")
        if self.task == "classify" and len(self.labels) < 2:
            raise ValueError("a classify model needs at least two labels")
        if self.window_s <= 0 or self.hop_s <= 0:
            raise ValueError("window_s and hop_s must be positive")
        object.__setattr__(self, "labels", tuple(self.labels))

    @property
    def n_classes(self) -> int:
        """Number of output classes (0 for embedding-only models)."""
        return len(self.labels)

    @property
    def window_samples(self) -> int:
        """Window length in samples at :attr:`sample_rate`."""
        return int(round(self.window_s * self.sample_rate))

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict (labels as a list)."""
        data = asdict(self)
        data["labels"] = list(self.labels)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelSpec:
        """Inverse of :meth:`to_dict`; unknown keys are ignored."""
        known = {f for f in cls.__dataclass_fields__}
        kwargs = {k: v for k, v in data.items() if k in known}
        kwargs["labels"] = tuple(kwargs.get("labels", ()))
        kwargs["extra"] = dict(kwargs.get("extra") or {})
        return cls(**kwargs)
