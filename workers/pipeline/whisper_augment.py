"""Degraded copies for the ``whisper_probe`` trainer (``workers.pipeline.whisper_training``): cached
encoder features of augmented training copies and of the selection's degraded held-out copies.

Training copies (``augment_copies`` K): every train / validation utterance gets K copies drawn from
``workers.pipeline.augment.noisy_copy`` (recipe ``noisy-v1``), each from
``numpy.random.default_rng([augment_seed, crc32(key), k])``. A copy carries its utterance's speaker and
label. Babble donors are the other speakers of the **same cross-validation fold**, so when a fold is
held out no training row (clean or copy) holds any of its speakers' voices.

Selection copies (``select_conditions``, e.g. ``pink_10db``, ``babble_10db``): degrade.py's named
conditions applied to each fold's selection-slice utterances (seed ``select_conditions_seed``; babble
mixes the other clips of the same fold and slice, as ``degrade_all`` does on a test split), so each
held-out fold is also scored on degraded copies of its own clips.

Both are encoded once by the trainer's ``encode`` (its cached ``cached_features``, handed in so this
module does not import the trainer) under the trainer's tag; the cache key of a copy names the recipe
(every setting), the seed, the copy index and the fold's members. Pure numpy: no Django.
"""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Callable
from typing import Any

import numpy as np

from workers.pipeline.augment import NoisyRecipe, noisy_copy
from workers.pipeline.degrade import CONDITIONS, degrade


class _LazyUtterance:
    """What ``cached_features`` reads of an utterance (``key``, ``samples``), the samples made only
    when the features are not cached yet."""

    def __init__(self, key: str, make: Callable[[], np.ndarray]) -> None:
        self.key = key
        self._make = make

    @property
    def samples(self) -> np.ndarray:
        return self._make()


def _members_sig(utts: list[Any], members: list[int]) -> str:
    return hashlib.sha1("\n".join(utts[j].key for j in members).encode()).hexdigest()[:12]


Encode = Callable[[list[Any]], list[np.ndarray]]


def copy_features(utts: list[Any], folds: list[list[int]], copies: int, seed: int, *, encode: Encode,
                  recipe: NoisyRecipe | None = None) -> dict[int, list[np.ndarray]]:
    """Features of ``copies`` noisy copies of every utterance of ``folds`` (the CV folds over the
    pool): ``{utterance index: [copy 0 [windows, states, 2, d], ...]}``. ``encode(utterances)``
    returns each one's cached features (anything with ``key`` and ``samples``)."""
    cfg = recipe or NoisyRecipe()
    order: list[tuple[int, int]] = []
    lazies: list[_LazyUtterance] = []
    for fold in folds:
        members = sorted(fold)
        sig = _members_sig(utts, members)
        for i in members:
            others = [j for j in members if utts[j].speaker != utts[i].speaker]
            for k in range(int(copies)):
                def make(i: int = i, k: int = k, others: list[int] = others) -> np.ndarray:
                    rng = np.random.default_rng([int(seed), zlib.crc32(utts[i].key.encode()), k])
                    return noisy_copy(utts[i].samples, rng, [utts[j].samples for j in others], cfg)[0]

                order.append((i, k))
                lazies.append(_LazyUtterance(f"{utts[i].key}|{cfg.tag}|seed{seed}|copy{k}|fold{sig}", make))
    feats = encode(lazies)
    out: dict[int, list[np.ndarray]] = {}
    for (i, _k), f in zip(order, feats, strict=True):
        out.setdefault(i, []).append(f)
    return out


def condition_features(utts: list[Any], folds: list[list[int]], conditions: list[str], seed: int, *,
                       keep: Callable[[int], bool], encode: Encode) -> dict[str, dict[int, np.ndarray]]:
    """Features of each fold's kept utterances under each degrade.py condition:
    ``{condition: {utterance index: [windows, states, 2, d]}}``."""
    unknown = [c for c in conditions if c not in CONDITIONS]
    if unknown:
        raise ValueError(f"unknown select_conditions {unknown}; expected some of {sorted(CONDITIONS)}")
    out: dict[str, dict[int, np.ndarray]] = {}
    for cond in conditions:
        order: list[int] = []
        lazies: list[_LazyUtterance] = []
        for fold in folds:
            members = [i for i in sorted(fold) if keep(i)]
            sig = _members_sig(utts, members)
            for pos, i in enumerate(members):
                def make(i: int = i, pos: int = pos, members: list[int] = members, cond: str = cond) -> np.ndarray:
                    others = [utts[j].samples for j in members if j != i] if CONDITIONS[cond].needs_others else []
                    return degrade(utts[i].samples, cond, seed=int(seed), index=pos, others=others)

                order.append(i)
                lazies.append(_LazyUtterance(f"{utts[i].key}|{cond}|seed{seed}|pos{pos}|fold{sig}", make))
        feats = encode(lazies)
        out[cond] = dict(zip(order, feats, strict=True))
    return out
