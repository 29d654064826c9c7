"""Typed results of the Whisper paths, read by attribute like :class:`workers.pipeline.outcomes.ClassifyOutcome`:
:class:`LanguageOutcome` (``whisper_lang.identify_languages``) and :class:`TranscribeOutcome`
(``whisper_asr.transcribe``).

Both functions return plain dicts (JSON-able, what the pipeline's own tests and benchmarks read); the
consumers (job runners, ``/predict``, the result services) turn them into outcomes with
:meth:`from_dict` at the boundary. A key the dataclass does not know (a newer ``transcribe``) is kept in
``extra`` and comes back from :meth:`as_dict`, so nothing is dropped on the way. Pure Python: no Django.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, TypeVar

from workers.pipeline.outcomes import MappingBridge

__all__ = ["LanguageOutcome", "TranscribeOutcome"]

T = TypeVar("T", bound="_FromDict")


class _FromDict(MappingBridge):
    def as_dict(self) -> dict[str, Any]:
        """Every field (and every ``extra`` key) as the dict the pipeline returned."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "extra"}  # type: ignore[arg-type]
        return {**out, **self.extra}  # type: ignore[attr-defined]

    def __getitem__(self, key: str) -> Any:  # deprecated dict reading, ``extra`` keys included
        return self.as_dict()[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.as_dict().get(key, default)

    @classmethod
    def from_dict(cls: type[T], data: dict[str, Any] | T) -> T:
        """The outcome of a pipeline dict (an outcome is returned as it is)."""
        if isinstance(data, cls):
            return data
        names = {f.name for f in dataclasses.fields(cls)} - {"extra"}  # type: ignore[arg-type]
        return cls(**{k: v for k, v in data.items() if k in names},
                   extra={k: v for k, v in data.items() if k not in names})  # type: ignore[call-arg]


@dataclass(frozen=True)
class LanguageOutcome(_FromDict):
    """One recording's spoken language (the fields are ``identify_languages``'s Returns)."""

    outcome: str  # ok | uncertain | insufficient_speech
    window_s: float
    language: str | None = None
    probability: float | None = None
    scored: str | None = None  # whole | windows | None
    shares: dict[str, float] = field(default_factory=dict)
    mean_probabilities: dict[str, float] = field(default_factory=dict)
    whole: dict[str, float] | None = None
    windows: list[dict[str, Any]] = field(default_factory=list)
    speech_windows: int = 0
    languages: list[str] | None = None
    scan_s: float | None = None
    min_windows: int | None = None
    min_probability: float | None = None
    pad_windows: bool | None = None
    windows_padded: bool | None = None
    gain_db: float | None = None
    duration_s: float | None = None
    timings: dict[str, float] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TranscribeOutcome(_FromDict):
    """What Whisper heard in one recording (the fields are ``transcribe``'s Returns)."""

    text: str = ""
    language: str | None = None
    language_probability: float | None = None
    languages: dict[str, float] = field(default_factory=dict)
    segments: list[dict[str, Any]] = field(default_factory=list)
    speech_s: float | None = None
    duration_s: float | None = None
    params: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
