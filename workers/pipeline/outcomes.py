"""The typed results of the one inference path: :class:`ClassifyOutcome` and :class:`EmbedOutcome`
(what :func:`workers.pipeline.inference.classify_batch` and ``embed_batch`` return per recording).
Pure Python: no Django, no torch."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

__all__ = ["ClassifyOutcome", "EmbedOutcome", "MappingBridge"]

# ---------------------------------------------------------------------------------------------
# Outcomes
# ---------------------------------------------------------------------------------------------


class MappingBridge:
    """Read-only ``outcome["key"]`` / ``outcome.get("key")`` / ``"key" in outcome`` over the keys of
    ``as_dict()``, for code written against the old dict outcomes. Deprecated: use attributes."""

    def as_dict(self) -> dict[str, Any]:  # pragma: no cover - overridden
        raise NotImplementedError

    def _has(self, key: object) -> bool:
        return isinstance(key, str) and key in self.as_dict()

    def __getitem__(self, key: str) -> Any:
        if not self._has(key):
            raise KeyError(key)
        return getattr(self, key)

    def get(self, key: str, default: Any = None) -> Any:
        return getattr(self, key) if self._has(key) else default

    def __contains__(self, key: object) -> bool:
        return self._has(key)


@dataclass(frozen=True)
class ClassifyOutcome(MappingBridge):
    """One recording's classification (the fields are those of :func:`classify_batch`'s Returns).

    Frozen, but its dicts and lists are plain containers: treat them as read-only. ``reading`` and
    ``fused`` are None for models that do not read a transcript (and then absent from ``as_dict()``).
    """

    outcome: str
    predicted_class: str | None = None
    confidence: float | None = None
    probabilities: dict[str, float] | None = None
    probabilities_raw: dict[str, float] | None = None
    window_share: dict[str, float] | None = None
    agreement: float | None = None
    windows: list[dict[str, Any]] = field(default_factory=list)
    n_windows: int = 0
    n_windows_total: int = 0
    duration_s: float = 0.0
    speech_s: float | None = None
    speech_fraction: float | None = None
    threshold: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)
    reading: dict[str, Any] | None = None
    fused: bool | None = None

    def as_dict(self) -> dict[str, Any]:
        """Every field as a dict (shallow), without ``reading`` / ``fused`` for non-reading models."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        if self.fused is None:
            del out["reading"], out["fused"]
        return out

    def api_dict(self) -> dict[str, Any]:
        """The outcome under the API's key names: the fields a job's ``Prediction`` stores (and
        ``results/`` returns), the core of the ``/predict`` answer and of ``manage.py classify`` rows.

        ``probabilities``, ``probabilities_raw`` and ``window_share`` are ``{}`` and ``windows`` ``[]``
        without a prediction; ``reading`` carries ``fused`` and is None without a transcript.
        """
        return {
            "outcome": self.outcome,
            "predicted_class": self.predicted_class,
            "confidence": self.confidence,
            "probabilities": dict(self.probabilities or {}),
            "probabilities_raw": dict(self.probabilities_raw or {}),
            "window_share": dict(self.window_share or {}),
            "agreement": self.agreement,
            "speech_fraction": self.speech_fraction,
            "windows": list(self.windows or []),
            "reading": {**self.reading, "fused": bool(self.fused)} if self.reading else None,
        }


@dataclass(frozen=True)
class EmbedOutcome(MappingBridge):
    """One recording's embedding (the fields are those of :func:`embed_batch`'s Returns);
    ``windows`` is None unless per-window vectors were asked for (and then absent from ``as_dict()``)."""

    vector: list[float] | None
    n_windows: int
    duration_s: float
    windows: list[dict[str, Any]] | None = None
    timings: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        if self.windows is None:
            del out["windows"]
        return out
