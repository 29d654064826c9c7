"""The feature-extractor interface, its registry, and helpers shared by the extractors.

An extractor is a class with a ``name``, a ``version``, a frozen dataclass ``Config`` and
``extract(samples, sample_rate) -> FeatureResult``, registered with ``@register_extractor``.
"""

from __future__ import annotations

import dataclasses
import io
import math
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, ClassVar, TypeVar

import numpy as np

from workers.pipeline.features import shared

Summary = dict[str, float | None]


@dataclass(frozen=True)
class FeatureResult:
    """What one extractor computed for one recording.

    Attributes
    ----------
    summary : dict[str, float | None]
        Recording-level statistics: finite Python numbers, or None where a value is undefined
        (no voiced frames, too short a signal); never NaN, so it serialises as strict JSON.
    arrays : dict[str, np.ndarray]
        Frame-level arrays, time on the last axis (shapes documented by each extractor).
    frame_rate_hz : float | None
        Frames per second of ``arrays``.
    version : str
        The extractor's ``version`` (filled in by :meth:`FeatureExtractor.result`).
    config : dict
        The extractor's ``config_dict()`` (filled in by :meth:`FeatureExtractor.result`).
    """

    summary: Summary
    arrays: dict[str, np.ndarray]
    frame_rate_hz: float | None
    version: str = ""
    config: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for key, value in self.summary.items():
            if value is not None and not (isinstance(value, (int, float)) and math.isfinite(value)):
                raise ValueError(f"summary[{key!r}] = {value!r} is not a finite Python number or None")


class FeatureExtractor(ABC):
    """Base class: subclasses set ``name``, ``version``, a nested frozen ``Config`` and ``extract``."""

    name: ClassVar[str]
    version: ClassVar[str]
    #: Whether a features job without ``extractors`` (and ``extract_features(names=None)``) runs it.
    in_default_set: ClassVar[bool] = True
    #: Whether ``extract`` runs torch operations (then it must not run in a worker before the prefork fork).
    uses_torch: ClassVar[bool] = False

    @dataclass(frozen=True)
    class Config:
        """No options."""

    def __init__(self, config: Config | None = None) -> None:
        if config is not None and not isinstance(config, self.Config):
            raise TypeError(f"{type(self).__name__} needs a {type(self).__name__}.Config, got {type(config).__name__}")
        self.config = self.Config() if config is None else config

    @abstractmethod
    def extract(self, samples: np.ndarray, sample_rate: int) -> FeatureResult:
        """Compute the features of one recording.

        Parameters
        ----------
        samples : np.ndarray
            Mono audio ``[time]``, float, nominally in [-1, 1].
        sample_rate : int
            Rate of ``samples`` in Hz (the pipeline always passes 16000).
        """

    def config_dict(self) -> dict[str, Any]:
        """The configuration as a JSON-able dict (recorded next to every result)."""
        return dataclasses.asdict(self.config)

    def result(self, summary: Summary, arrays: dict[str, np.ndarray], frame_rate_hz: float | None) -> FeatureResult:
        """A :class:`FeatureResult` stamped with this extractor's version and configuration."""
        return FeatureResult(summary, arrays, frame_rate_hz, version=self.version, config=self.config_dict())


EXTRACTORS: dict[str, type[FeatureExtractor]] = {}
_E = TypeVar("_E", bound=type[FeatureExtractor])


def register_extractor(cls: _E) -> _E:
    """Class decorator: make ``cls`` available by ``cls.name``."""
    if cls.name in EXTRACTORS:
        raise ValueError(f"A feature extractor named {cls.name!r} is already registered ({EXTRACTORS[cls.name].__qualname__})")
    EXTRACTORS[cls.name] = cls
    return cls


def get_extractor(name: str, config: Mapping[str, Any] | None = None) -> FeatureExtractor:
    """Instantiate a registered extractor, with ``config`` overriding fields of its ``Config``.

    Raises
    ------
    ValueError
        Unknown extractor name or unknown configuration option.
    """
    try:
        cls = EXTRACTORS[name]
    except KeyError:
        raise ValueError(f"Unknown feature extractor {name!r}; available: {', '.join(sorted(EXTRACTORS))}") from None
    if not config:
        return cls()
    options = {f.name for f in dataclasses.fields(cls.Config)}
    unknown = sorted(set(config) - options)
    if unknown:
        raise ValueError(f"Unknown option(s) {unknown} for feature extractor {name!r}; valid options: {sorted(options)}")
    return cls(cls.Config(**config))


def extract_features(
    samples: np.ndarray,
    sample_rate: int,
    names: Iterable[str] | None = None,
    configs: Mapping[str, Mapping[str, Any]] | None = None,
    *,
    timings: dict[str, float] | None = None,
) -> dict[str, FeatureResult]:
    """Run the requested extractors on one recording.

    Parameters
    ----------
    samples : np.ndarray
        Mono audio ``[time]``.
    sample_rate : int
        Rate of ``samples`` in Hz.
    names : iterable of str, optional
        Extractors to run, in order; None runs the default set (:func:`default_extractors`:
        every registered one except the opt-in ``compare``, ``formants`` and ``voice_quality``).
    configs : mapping, optional
        ``{name: {option: value}}`` overrides; entries for extractors not run are ignored.
    timings : dict, optional
        Filled with ``{name: seconds}``: the CPU time of the process each extractor took
        (``time.process_time``, every thread: Praat runs its pitch analyses on two; not the time
        spent waiting for a core on a busy machine; ``bench/features.py`` reads it).

    Returns
    -------
    dict[str, FeatureResult]
        Keyed by extractor name.

    Raises
    ------
    ValueError
        Unknown extractor or option (checked for all names before anything runs).
    """
    configs = configs or {}
    unknown = sorted(set(configs) - set(EXTRACTORS))
    if unknown:
        raise ValueError(f"Configuration given for unknown feature extractor(s) {unknown}; available: {', '.join(sorted(EXTRACTORS))}")
    extractors = {name: get_extractor(name, configs.get(name)) for name in (default_extractors() if names is None else names)}
    x = as_mono(samples)  # the array every extractor's own as_mono hands back, so shared lookups hash it once
    results = {}
    with shared.recording(x, sample_rate):
        for name, extractor in extractors.items():
            t0 = time.process_time()
            results[name] = extractor.extract(x, sample_rate)
            if timings is not None:
                timings[name] = timings.get(name, 0.0) + time.process_time() - t0
    return results


def default_extractors() -> list[str]:
    """Names of the extractors a features job runs when it names none (registration order).

    The default set measures each quantity once: eGeMAPS already reports formants F1-F3 and
    jitter, shimmer and HNR, so Praat's ``formants`` and ``voice_quality`` (the phonetic and
    clinical references, together as costly as eGeMAPS) are opt-in, as ``compare`` is."""
    return [name for name, cls in EXTRACTORS.items() if cls.in_default_set]


def summaries(results: Mapping[str, FeatureResult]) -> dict[str, Summary]:
    """``{extractor: summary}``, ready for a JSON field."""
    return {name: dict(result.summary) for name, result in results.items()}


def result_to_npz_bytes(results: Mapping[str, FeatureResult]) -> bytes:
    """All frame-level arrays as one ``.npz`` (``np.load`` reads it), keys ``"<extractor>/<array>"``.

    Stored, not deflated: the arrays are float32 tracks that deflate shrinks by ~12 % on speech
    (accent-mini clips) at ~1.5 ms of CPU per second of audio, 6 % of the default set's time; an
    uncompressed entry costs 0.06 ms (``docs/benchmarks.md``'s features section).
    """
    buffer = io.BytesIO()
    np.savez(buffer, **{f"{name}/{key}": array for name, r in results.items() for key, array in r.arrays.items()})
    return buffer.getvalue()


def as_mono(samples: np.ndarray) -> np.ndarray:
    """Check and convert extractor input to float32 ``[time]``."""
    x = np.asarray(samples, dtype=np.float32)
    if x.ndim != 1:
        raise ValueError(f"Expected mono samples with shape [time], got shape {x.shape}")
    return x


def nearest_frames(times: np.ndarray, frame_times: np.ndarray) -> np.ndarray:
    """Index ``[len(times)]`` of the nearest frame in the uniform, non-empty grid ``frame_times``."""
    return np.rint(np.interp(times, frame_times, np.arange(frame_times.size))).astype(np.intp)


def to_float(value: float) -> float | None:
    """A Python float, or None for NaN/inf (Praat returns NaN for "undefined")."""
    value = float(value)
    return value if math.isfinite(value) else None


_STATS: dict[str, Callable[[np.ndarray], Any]] = {
    "mean": np.mean,
    "std": np.std,
    "min": np.min,
    "max": np.max,
    "median": np.median,
    "range": np.ptp,
    "p5": partial(np.percentile, q=5),
    "p50": partial(np.percentile, q=50),
    "p95": partial(np.percentile, q=95),
}


def describe(values: np.ndarray, prefix: str, stats: Sequence[str] = ("mean", "std"), unit: str = "") -> Summary:
    """Statistics of the finite entries of ``values`` as ``{f"{prefix}_{stat}{unit}": value}``, None if there are none."""
    v = np.asarray(values, dtype=np.float64).ravel()
    v = v[np.isfinite(v)]
    return {f"{prefix}_{stat}{unit}": float(_STATS[stat](v)) if v.size else None for stat in stats}
