"""Where training data comes from and how each family turns it into model inputs: items from a
manifest or a batch (:func:`load_items`), speaker-disjoint splits (:func:`make_splits`), and the
feature sources of the generic loop (waveform windows, cached frame features, cached frozen-encoder
features). Pure Python / numpy / torch: no Django."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from workers.pipeline.data import (
    HOP_SAMPLES,
    TrainItem,
    Utterance,
    check_speaker_disjoint,
    frame_windows,
    read_manifest,
    speaker_disjoint_split,
    window_starts,
)
from workers.pipeline.train_config import ProgressFn, TrainConfig
from workers.pipeline.train_config import emit_progress as _emit


def hash_config(obj: Any) -> str:
    return hashlib.sha1(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:12]



def load_items(config: TrainConfig) -> list[TrainItem]:
    """Items from ``config.items`` or ``config.manifest``, filtered to ``config.corpora``."""
    if config.items is not None:
        items = list(config.items)
        if config.label_map:
            items = [replace(it, label=config.label_map.get(it.label, it.label)) for it in items]
        items = [it for it in items if it.label]
        if config.corpora is not None:
            items = [it for it in items if it.corpus in config.corpora]
        return items
    if not config.manifest:
        raise ValueError("TrainConfig needs a manifest or items")
    return read_manifest(config.manifest, label_column=config.label_column, label_map=config.label_map,
                         corpora=config.corpora, prompts=config.prompts)


def make_splits(items: list[TrainItem], config: TrainConfig) -> dict[str, list[int]]:
    """Speaker-disjoint train/val/test indices (manifest splits, or leave-corpus-out)."""
    if config.test_corpora:
        held = set(config.test_corpora)
        items = [replace(it, split="test" if it.corpus in held else "train") for it in items]
        # a speaker present in a held-out corpus and elsewhere is test-only
    splits = speaker_disjoint_split(items, val_fraction=config.val_fraction, test_fraction=config.test_fraction,
                                    seed=config.seed)
    check_speaker_disjoint(items, splits)
    return splits



class WaveSource:
    """Waveform families (cnn, resnet): random crops + augmentation on the fly."""

    def __init__(self, utts: list[Utterance], window: int, augment: bool, seed: int) -> None:
        from workers.pipeline.augment import AugmentConfig

        self.utts, self.window, self.augment = utts, window, augment
        self.aug_cfg = AugmentConfig()
        self.rng = np.random.default_rng(seed)

    def train_units(self, idx: Sequence[int]) -> tuple[np.ndarray, list[str]]:
        """Training units are utterances; ``batch`` takes positions in ``idx``."""
        self.unit_idx = list(idx)
        return np.array([self.utts[i].label for i in idx]), [self.utts[i].speaker for i in idx]

    def crop(self, u: Utterance) -> tuple[np.ndarray, int]:
        n, w = len(u.samples), self.window
        if n >= w:
            s = int(self.rng.integers(0, (n - w) // HOP_SAMPLES + 1)) * HOP_SAMPLES
            return u.samples[s : s + w], s
        out = np.zeros(w, dtype=np.float32)
        out[:n] = u.samples
        return out, 0

    def batch(self, units: Sequence[int], device: Any) -> Any:
        import torch

        from workers.pipeline.augment import augment

        xs = []
        for k in units:
            x, _ = self.crop(self.utts[self.unit_idx[k]])
            if self.augment:
                x = augment(x, self.rng, self.aug_cfg)
            xs.append(x)
        return torch.from_numpy(np.stack(xs)).to(device)

    def eval_inputs(self, i: int, hop: int, device: Any) -> Any:
        import torch

        return torch.from_numpy(frame_windows(self.utts[i].samples, self.window, hop)).to(device)


class FrameSource(WaveSource):
    """accent_embed: waveform crops plus cached parselmouth frame features, aligned by frame."""

    def __init__(self, utts: list[Utterance], window: int, augment: bool, seed: int, cache_dir: str,
                 band_limit_hz: float | None, progress: ProgressFn | None = None) -> None:
        super().__init__(utts, window, augment, seed)
        from workers.pipeline.augment import AugmentConfig

        # speed / pitch changes would misalign the cached contours: keep those off here
        self.aug_cfg = AugmentConfig(p_speed=0.0, p_pitch=0.0)
        self.frames = [self._frames(u, cache_dir, band_limit_hz) for u in utts]
        self.n_win_frames = window // HOP_SAMPLES + 1

    def _frames(self, u: Utterance, cache_dir: str, band_limit_hz: float | None) -> np.ndarray:
        from models.accent_embed import frame_features

        folder = Path(cache_dir) / f"frames-{hash_config([band_limit_hz, 'v1'])}"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{u.key}-{len(u.samples)}.npy"
        if path.exists():
            return np.load(path)
        f = frame_features(u.samples, band_limit_hz=band_limit_hz)
        np.save(path, f)
        return f

    def _slice(self, i: int, start: int) -> np.ndarray:
        f = self.frames[i]
        a = start // HOP_SAMPLES
        out = f[a : a + self.n_win_frames]
        if len(out) < self.n_win_frames:
            out = np.concatenate([out, np.zeros((self.n_win_frames - len(out), f.shape[1]), dtype=f.dtype)])
        return out

    def batch(self, units: Sequence[int], device: Any) -> Any:
        import torch

        from workers.pipeline.augment import augment

        xs, fs = [], []
        for k in units:
            i = self.unit_idx[k]
            x, s = self.crop(self.utts[i])
            if self.augment:
                x = augment(x, self.rng, self.aug_cfg)
            xs.append(x)
            fs.append(self._slice(i, s))
        return {"wave": torch.from_numpy(np.stack(xs)).to(device), "frames": torch.from_numpy(np.stack(fs)).to(device)}

    def eval_inputs(self, i: int, hop: int, device: Any) -> Any:
        import torch

        u = self.utts[i]
        wins = frame_windows(u.samples, self.window, hop)
        starts = window_starts(len(u.samples), self.window, hop)
        fs = np.stack([self._slice(i, s) for s in starts])
        return {"wave": torch.from_numpy(wins).to(device), "frames": torch.from_numpy(fs).to(device)}


class CachedSource:
    """speaker_head: the frozen encoder's pooled features per window, computed once (clean and
    ``n_aug_copies`` augmented copies for training utterances) and cached on disk."""

    def __init__(self, utts: list[Utterance], model: Any, window: int, hop: int, train_idx: set[int],
                 n_copies: int, augment: bool, seed: int, cache_dir: str, tag: str, device: Any,
                 progress: ProgressFn | None = None) -> None:
        import torch

        from workers.pipeline.augment import AugmentConfig
        from workers.pipeline.augment import augment as aug_fn

        self.rng = np.random.default_rng(seed)
        folder = Path(cache_dir) / f"enc-{tag}"
        folder.mkdir(parents=True, exist_ok=True)
        cfg = AugmentConfig()
        self.feats: list[list[np.ndarray]] = []  # per utterance: [copy] -> [n_windows, D]
        self.utts = utts
        for n, u in enumerate(utts):
            copies = (1 + n_copies) if (augment and n in train_idx) else 1
            per = []
            for c in range(copies):
                path = folder / f"{u.key}-{len(u.samples)}-{c}.npy"
                if path.exists():
                    per.append(np.load(path))
                    continue
                x = u.samples
                if c > 0:
                    x = aug_fn(x, np.random.default_rng([seed, n, c]), cfg)
                wins = frame_windows(x, window, hop)
                with torch.no_grad():
                    f = model.encode(torch.from_numpy(wins).to(device)).float().cpu().numpy()
                np.save(path, f)
                per.append(f)
            self.feats.append(per)
            _emit(progress, "cache", n + 1, len(utts))
        self.units: list[tuple[int, int, int]] = []

    def train_units(self, idx: Sequence[int]) -> tuple[np.ndarray, list[str]]:
        self.units = [(i, c, w) for i in idx for c in range(len(self.feats[i])) for w in range(len(self.feats[i][c]))]
        labels = np.array([self.utts[i].label for i, _, _ in self.units])
        return labels, [self.utts[i].speaker for i, _, _ in self.units]

    def batch(self, units: Sequence[int], device: Any) -> Any:
        import torch

        rows = [self.feats[self.units[k][0]][self.units[k][1]][self.units[k][2]] for k in units]
        return torch.from_numpy(np.stack(rows)).to(device)

    def eval_inputs(self, i: int, hop: int, device: Any) -> Any:
        import torch

        return torch.from_numpy(self.feats[i][0]).to(device)


# ---------------------------------------------------------------------------------------------
