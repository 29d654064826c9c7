"""What the extractors of one recording share: objects derived from the same samples, built once.

``extract_features`` runs the extractors one after another on one array, and several need the same
derived object: a ``parselmouth.Sound`` and the autocorrelation Pitch (``praat_shared``: prosody,
formants, voice quality), the power spectrogram (``spectrogram_shared``: logmel, mfcc). The first
extractor to ask builds it; the others get the same object.

The cache holds the objects of the last recording only (per thread; ``extract_features`` drops them
when it returns), keyed by the sample rate and a hash of the samples' bytes (~0.3 ms per second of
audio), so a different or modified array never gets a stale object. Callers must not modify what
they get.
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
from collections.abc import Callable, Hashable, Iterator
from typing import TypeVar

import numpy as np

__all__ = ["cached", "forget", "recording"]

T = TypeVar("T")
_local = threading.local()


def _key(x: np.ndarray, sample_rate: int) -> tuple[int, int, str, bytes]:
    digest = hashlib.blake2b(memoryview(np.ascontiguousarray(x)).cast("B"), digest_size=16).digest()
    return (int(sample_rate), int(x.size), x.dtype.str, digest)


@contextlib.contextmanager
def recording(x: np.ndarray, sample_rate: int) -> Iterator[None]:
    """One recording's extractors: inside the block, lookups for this very array object (``x is``)
    reuse one hash of its samples instead of hashing them again (``extract_features`` wraps its
    extractors in it; they read the samples and never write them; other arrays are hashed as usual).
    On leaving, the recording's shared objects are dropped: a two-hour recording's Sound and
    spectrogram are ~1.5 GB, not to be kept until the next recording."""
    previous = getattr(_local, "pinned", None)
    key = _key(x, sample_rate)
    _local.pinned = (x, sample_rate, key)
    try:
        yield
    finally:
        _local.pinned = previous
        entry = getattr(_local, "entry", None)
        if entry is not None and entry[0] == key:
            _local.entry = None


def cached(x: np.ndarray, sample_rate: int, what: tuple[Hashable, ...], make: Callable[[], T]) -> T:
    """The object ``what`` names for samples ``x`` ``[time]``: ``make()`` the first time, then the same one.

    ``what`` is a tuple whose first item names the kind of object (``"praat.sound"``,
    ``"spectrogram"``) and whose other items are every setting it depends on.
    """
    pinned = getattr(_local, "pinned", None)
    key = pinned[2] if pinned is not None and pinned[0] is x and pinned[1] == sample_rate else _key(x, sample_rate)
    entry = getattr(_local, "entry", None)
    if entry is None or entry[0] != key:
        entry = (key, {})
        _local.entry = entry
    objects = entry[1]
    if what not in objects:
        objects[what] = make()
    return objects[what]


def forget(kind: str | None = None) -> None:
    """Drop the shared objects of ``kind`` (the first item of ``what``), or all of them."""
    entry = getattr(_local, "entry", None)
    if entry is None:
        return
    if kind is None:
        _local.entry = None
    else:
        for what in [w for w in entry[1] if w[0] == kind]:
            del entry[1][what]
