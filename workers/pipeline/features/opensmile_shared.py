"""openSMILE functionals (the ``opensmile`` package, 2.6.0) shared by ``egemaps`` and ``compare``.

One ``opensmile.Smile`` per feature set and process, built on first use (~0.1-0.8 s: it parses
the set's configuration), never at import, so importing the registry stays cheap for the web
process. ``Smile.process_signal`` runs openSMILE's C library on the samples in memory.
"""

from __future__ import annotations

import functools
import warnings

import numpy as np

from workers.pipeline.features.base import Summary, as_mono, to_float

__all__ = ["feature_names", "functionals"]


@functools.lru_cache(maxsize=4)
def _smile(feature_set: str):
    import opensmile

    return opensmile.Smile(feature_set=opensmile.FeatureSet[feature_set], feature_level=opensmile.FeatureLevel.Functionals)


def feature_names(feature_set: str) -> list[str]:
    """The names of the set's functionals, in openSMILE's order."""
    return list(_smile(feature_set).feature_names)


def functionals(feature_set: str, samples: np.ndarray, sample_rate: int) -> Summary:
    """``{name: value}`` of every functional of ``feature_set`` over the whole recording.

    Parameters
    ----------
    samples : np.ndarray
        Mono audio ``[time]``.

    Returns
    -------
    dict
        One entry per functional (88 for eGeMAPSv02, 6373 for ComParE_2016); None where openSMILE
        gives NaN (a signal shorter than its analysis window).
    """
    x = as_mono(samples)
    names = feature_names(feature_set)
    if x.size == 0:
        return dict.fromkeys(names)
    with warnings.catch_warnings():  # "Segment too short, filling with NaN": the Nones below say so
        warnings.filterwarnings("ignore", message="Segment too short", category=UserWarning)
        frame = _smile(feature_set).process_signal(x, sample_rate)  # one row [1, n_features]
    values = frame.to_numpy(dtype=np.float64)[0]
    return {name: to_float(v) for name, v in zip(frame.columns, values, strict=True)}
