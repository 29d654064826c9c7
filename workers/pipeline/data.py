"""Training data: manifest reading, speaker-disjoint splits, windowing and in-memory datasets.

Pure Python / numpy (no Django). Items come either from a manifest CSV (the ``accent-mini``
layout) or from a list of :class:`TrainItem` built by the caller (e.g. from database rows).
"""

from __future__ import annotations

import csv
import hashlib
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

SAMPLE_RATE = 16000
HOP_SAMPLES = 160  # 10 ms frame hop shared by the frontends and the parselmouth contours


@dataclass(frozen=True)
class TrainItem:
    """One labelled recording.

    Attributes
    ----------
    path_or_loader : str, Path or callable
        A file path, or a zero-argument callable returning float32 samples ``[time]`` at 16 kHz.
    label : str
        Target class (after any label map).
    speaker : str
        Speaker id; splits never put one speaker on two sides.
    corpus : str
        Source corpus, reported separately in evaluation.
    split : str
        ``"train"``, ``"test"``, ``"val"`` or ``""`` (unassigned: the splitter decides).
    key : str
        Stable id used for caching (defaults to the path).
    transcript : str
        What the speaker read, when known (``""`` otherwise); the ``reading_fusion`` family uses it.
    meta : tuple of (str, str)
        The manifest row's columns (e.g. ``l1``); an embedding may be fitted over one of them.
    """

    path_or_loader: str | Path | Callable[[], np.ndarray]
    label: str
    speaker: str
    corpus: str = ""
    split: str = ""
    key: str = ""
    transcript: str = ""
    #: the manifest row's other columns as ``(name, value)`` pairs (a tuple, so the item stays hashable)
    meta: tuple[tuple[str, str], ...] = ()

    def column(self, name: str, default: str = "") -> str:
        """A manifest column of this item's row (``default`` when the item has no such column)."""
        return dict(self.meta).get(name, default)

    @property
    def cache_key(self) -> str:
        """Stable short id for feature caches."""
        base = self.key or (str(self.path_or_loader) if not callable(self.path_or_loader) else "")
        if not base:
            raise ValueError("a TrainItem built from a loader needs an explicit key for caching")
        return hashlib.sha1(base.encode()).hexdigest()[:16]


def parse_label_map(text: str | None) -> dict[str, str] | None:
    """Parse ``"a=x,b=y"`` into ``{"a": "x", "b": "y"}`` (``None`` or empty -> ``None``)."""
    if not text:
        return None
    out = {}
    for part in text.split(","):
        if not part.strip():
            continue
        src, _, dst = part.partition("=")
        if not dst:
            raise ValueError(f"bad label map entry {part!r}; expected source=target")
        out[src.strip()] = dst.strip()
    return out


def read_manifest(
    path: str | Path,
    *,
    label_column: str = "accent_group",
    label_map: dict[str, str] | None = None,
    speaker_column: str = "speaker_id",
    corpus_column: str = "corpus",
    split_column: str = "split",
    transcript_column: str = "transcript",
    corpora: Sequence[str] | None = None,
    prompts: dict[str, str] | None = None,
) -> list[TrainItem]:
    """Read a manifest CSV into :class:`TrainItem` rows.

    Parameters
    ----------
    path : str or Path
        CSV with at least ``path`` and ``label_column``; relative paths are resolved against the
        manifest's folder.
    label_map : dict, optional
        Maps raw labels to target labels; raw labels mapped to ``""`` are dropped, unmapped ones kept.
    corpora : sequence of str, optional
        Keep only these corpora.
    prompts : dict, optional
        ``{corpus: text}``: every clip of that corpus read this text (e.g. ``SAA`` and its
        passage). A row's own ``transcript_column`` wins over it.

    Returns
    -------
    list of TrainItem
    """
    path = Path(path)
    root = path.parent
    items = []
    with open(path, newline="") as fh:
        for row in csv.DictReader(fh):
            raw = row[label_column]
            label = label_map.get(raw, raw) if label_map else raw
            if not label:
                continue
            corpus = row.get(corpus_column, "") or ""
            if corpora is not None and corpus not in corpora:
                continue
            p = Path(row["path"])
            full = p if p.is_absolute() else root / p
            items.append(
                TrainItem(
                    path_or_loader=str(full),
                    label=label,
                    speaker=row.get(speaker_column) or str(full),
                    corpus=corpus,
                    split=(row.get(split_column) or "").strip().lower(),
                    key=row["path"],
                    transcript=(row.get(transcript_column) or "").strip() or (prompts or {}).get(corpus, ""),
                    meta=tuple((k, v or "") for k, v in row.items() if k is not None),
                )
            )
    return items


def load_item_audio(item: TrainItem, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Decode one item to mono float32 ``[time]`` at ``sample_rate``.

    Uses ``workers.pipeline.audio.load_audio`` when it is available, soundfile otherwise.
    """
    if callable(item.path_or_loader):
        return np.asarray(item.path_or_loader(), dtype=np.float32)
    try:
        from workers.pipeline.audio import load_audio
    except ImportError:  # the audio module is optional here
        load_audio = None
    if load_audio is not None:
        return np.asarray(load_audio(str(item.path_or_loader), sample_rate).samples, dtype=np.float32)
    import soundfile as sf

    samples, sr = sf.read(str(item.path_or_loader), dtype="float32", always_2d=True)
    samples = samples.mean(axis=1)
    if sr != sample_rate:
        from scipy.signal import resample_poly

        g = np.gcd(int(sr), int(sample_rate))
        samples = resample_poly(samples, sample_rate // g, sr // g).astype(np.float32)
    return samples


def normalise_signal(samples: np.ndarray, target_dbfs: float = -25.0) -> np.ndarray:
    """Per-utterance normalisation: remove DC, scale to a fixed RMS level. ``[time]`` -> ``[time]``."""
    x = samples.astype(np.float32) - float(np.mean(samples)) if samples.size else samples.astype(np.float32)
    rms = float(np.sqrt(np.mean(x**2))) if x.size else 0.0
    if rms < 1e-8:
        return x
    return (x * (10 ** (target_dbfs / 20) / rms)).astype(np.float32)


def window_starts(n_samples: int, window: int, hop: int) -> list[int]:
    """Start offsets of fixed-length windows with overlap covering a signal.

    A signal shorter than one window gets a single window at 0 (to be zero-padded); the last
    window is aligned to the end so the tail is covered.
    """
    if n_samples <= window:
        return [0]
    starts = list(range(0, n_samples - window + 1, hop))
    if starts[-1] + window < n_samples:
        starts.append(n_samples - window)
    return starts


def frame_windows(samples: np.ndarray, window: int, hop: int) -> np.ndarray:
    """Cut ``[time]`` into ``[n_windows, window]`` (zero-padded when shorter than one window)."""
    if len(samples) < window:
        out = np.zeros((1, window), dtype=np.float32)
        out[0, : len(samples)] = samples
        return out
    return np.stack([samples[s : s + window] for s in window_starts(len(samples), window, hop)]).astype(np.float32)


def _speaker_table(items: Sequence[TrainItem], idx: Sequence[int]) -> dict[str, tuple[str, str]]:
    """speaker -> (majority label, majority corpus) over the given item indices."""
    labels: dict[str, Counter] = defaultdict(Counter)
    corpora: dict[str, Counter] = defaultdict(Counter)
    for i in idx:
        labels[items[i].speaker][items[i].label] += 1
        corpora[items[i].speaker][items[i].corpus] += 1
    return {s: (labels[s].most_common(1)[0][0], corpora[s].most_common(1)[0][0]) for s in labels}


def _carve(
    items: Sequence[TrainItem], pool: list[int], fraction: float, rng: np.random.Generator
) -> tuple[list[int], list[int]]:
    """Split ``pool`` by speaker, stratified by (label, corpus); returns (rest, carved)."""
    if fraction <= 0 or not pool:
        return pool, []
    table = _speaker_table(items, pool)
    strata: dict[tuple[str, str], list[str]] = defaultdict(list)
    for spk in sorted(table):
        strata[table[spk]].append(spk)
    carved: set[str] = set()
    for key in sorted(strata):
        spks = strata[key]
        rng.shuffle(spks)
        n = int(round(len(spks) * fraction))
        if n == 0 and len(spks) >= 3 and rng.random() < len(spks) * fraction:
            n = 1
        carved.update(spks[:n])
    rest = [i for i in pool if items[i].speaker not in carved]
    out = [i for i in pool if items[i].speaker in carved]
    return rest, out


def speaker_disjoint_split(
    items: Sequence[TrainItem],
    *,
    val_fraction: float = 0.15,
    test_fraction: float = 0.2,
    seed: int = 0,
) -> dict[str, list[int]]:
    """Assign item indices to ``train`` / ``val`` / ``test`` with no speaker on two sides.

    Items whose ``split`` is ``"test"`` (or ``"val"``) stay there; items with ``"train"`` are the
    train pool; unassigned items are split by speaker (``test_fraction``). Validation is carved out
    of the train pool by speaker, stratified by (label, corpus). A speaker that appears with more
    than one declared split is moved wholly to the test side.

    Returns
    -------
    dict
        ``{"train": [...], "val": [...], "test": [...]}`` (indices into ``items``).
    """
    rng = np.random.default_rng(seed)
    declared: dict[str, set[str]] = defaultdict(set)
    for it in items:
        if it.split:
            declared[it.speaker].add(it.split)
    side: dict[str, str] = {}
    for spk, splits in declared.items():
        if "test" in splits:
            side[spk] = "test"
        elif "val" in splits:
            side[spk] = "val"
        else:
            side[spk] = "train"
    train_pool = [i for i, it in enumerate(items) if side.get(it.speaker) == "train"]
    test = [i for i, it in enumerate(items) if side.get(it.speaker) == "test"]
    val = [i for i, it in enumerate(items) if side.get(it.speaker) == "val"]
    free = [i for i, it in enumerate(items) if it.speaker not in side]
    free_rest, free_test = _carve(items, free, test_fraction, rng)
    test += free_test
    train_pool += free_rest
    if not val:
        train_pool, val = _carve(items, sorted(train_pool), val_fraction, rng)
    return {"train": sorted(train_pool), "val": sorted(val), "test": sorted(test)}


def speaker_folds(items: Sequence[TrainItem], idx: Sequence[int], k: int, seed: int = 0) -> list[list[int]]:
    """Split ``idx`` into ``k`` speaker-disjoint folds, stratified by (label, corpus): the speakers of
    each stratum are shuffled and dealt round the folds from a random start, so every fold gets its
    share of every (label, corpus) pair that has at least ``k`` speakers."""
    if k < 2:
        raise ValueError("cross-validation needs at least 2 folds")
    rng = np.random.default_rng(seed)
    table = _speaker_table(items, idx)
    strata: dict[tuple[str, str], list[str]] = defaultdict(list)
    for spk in sorted(table):
        strata[table[spk]].append(spk)
    fold_of: dict[str, int] = {}
    start = 0
    for key in sorted(strata):
        spks = strata[key]
        rng.shuffle(spks)
        for n, spk in enumerate(spks):
            fold_of[spk] = (start + n) % k
        start = (start + len(spks)) % k  # the next stratum continues where this one stopped
    folds: list[list[int]] = [[] for _ in range(k)]
    for i in idx:
        folds[fold_of[items[i].speaker]].append(i)
    return folds


def check_speaker_disjoint(items: Sequence[TrainItem], splits: dict[str, list[int]]) -> None:
    """Raise ``ValueError`` if any speaker appears in more than one split."""
    seen: dict[str, str] = {}
    for name, idx in splits.items():
        for i in idx:
            spk = items[i].speaker
            if seen.setdefault(spk, name) != name:
                raise ValueError(f"speaker {spk!r} is in both {seen[spk]!r} and {name!r}")


def balanced_sample_weights(labels: Sequence[int], groups: Sequence[Any] | None = None) -> np.ndarray:
    """Per-sample weights so each class (and, within a class, each group such as a speaker)
    is drawn equally often: ``[n]``, sums to 1."""
    labels = np.asarray(labels)
    w = np.zeros(len(labels), dtype=float)
    classes = np.unique(labels)
    for c in classes:
        idx = np.where(labels == c)[0]
        if groups is None:
            w[idx] = 1.0 / len(idx)
        else:
            g = np.asarray(groups, dtype=object)[idx]
            uniq, inv, cnt = np.unique(g.astype(str), return_inverse=True, return_counts=True)
            w[idx] = 1.0 / (len(uniq) * cnt[inv])
    w /= len(classes)
    return w / w.sum()


def hierarchical_sample_weights(labels: Sequence[int], corpora: Sequence[str], speakers: Sequence[str]) -> np.ndarray:
    """Per-sample weights ``[n]`` (sum 1): classes equal; within a class each corpus equal; within
    a corpus each speaker equal. Stops one big corpus from defining a class."""
    labels = np.asarray(labels)
    corpora_a = np.asarray([str(c) for c in corpora])
    speakers_a = np.asarray([str(s) for s in speakers])
    w = np.zeros(len(labels), dtype=float)
    classes = np.unique(labels)
    for c in classes:
        ic = labels == c
        cs = np.unique(corpora_a[ic])
        for corpus in cs:
            icc = ic & (corpora_a == corpus)
            spk, inv, cnt = np.unique(speakers_a[icc], return_inverse=True, return_counts=True)
            w[icc] = 1.0 / (len(classes) * len(cs) * len(spk) * cnt[inv])
    return w / w.sum()


@dataclass
class Utterance:
    """A decoded item in memory: ``samples [time]`` plus its integer label and metadata."""

    samples: np.ndarray
    label: int
    speaker: str
    corpus: str
    key: str


def load_utterances(
    items: Sequence[TrainItem],
    labels: Sequence[str],
    *,
    max_seconds: float | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> list[Utterance]:
    """Decode and normalise items into :class:`Utterance` objects (``max_seconds`` trims long clips)."""
    index = {lab: i for i, lab in enumerate(labels)}
    out = []
    for n, it in enumerate(items):
        x = normalise_signal(load_item_audio(it))
        if max_seconds:
            x = x[: int(max_seconds * SAMPLE_RATE)]
        out.append(Utterance(x, index[it.label], it.speaker, it.corpus, it.cache_key))
        if progress:
            progress(n + 1, len(items))
    return out
