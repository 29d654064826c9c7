"""Training pipeline for the model families in ``models/``: speaker-disjoint splits, windowed
training with augmentation and class balancing, early stopping on validation balanced accuracy,
calibration on validation, evaluation on the test split and a model card.

Usage (CLI)::

    python -m workers.pipeline.training --manifest /work/shared/data/accent-mini/manifest.csv \\
        --family speaker_head --label-column accent_group \\
        --label-map native_english=native,mandarin_l1=non_native,other_l1=non_native \\
        --name accent-native --out models/checkpoints/accent-native.pt

The Django ``manage.py train`` command and the ``train`` Celery job call :func:`train_model`
with the same :class:`TrainConfig`, either with a manifest or with a list of :class:`TrainItem`.
Pure Python / numpy / torch: no Django import.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from workers.pipeline.data import (
    HOP_SAMPLES,
    TrainItem,
    Utterance,
    balanced_sample_weights,
    check_speaker_disjoint,
    frame_windows,
    hierarchical_sample_weights,
    load_utterances,
    parse_label_map,
    read_manifest,
    speaker_disjoint_split,
    window_starts,
)

logger = logging.getLogger(__name__)

#: ``progress(stage, done, total, info)``: stage is ``"load"``, ``"cache"``, ``"train"``,
#: ``"evaluate"`` or ``"done"``; ``info`` carries e.g. the epoch's losses and validation score.
ProgressFn = Callable[[str, int, int, dict[str, Any]], None]

DEFAULT_HPARAMS: dict[str, dict[str, Any]] = {
    "cnn": {"frontend": "logmel", "n_mels": 64, "channels": 16, "embedding_dim": 128, "band_limit_hz": 4000.0,
            "dropout": 0.3, "specaug": True},
    "resnet": {"n_mels": 80, "base_channels": 16, "layers": [2, 2, 2, 2], "embedding_dim": 256,
               "band_limit_hz": 4000.0, "dropout": 0.3, "specaug": True},
    "speaker_head": {"pool_layers": [0, 1, 2], "use_embedding": True, "hidden": 128, "dropout": 0.5,
                     "input_dropout": 0.2, "band_limit_hz": 4000.0},
    "accent_embed": {"n_mels": 64, "n_mfcc": 20, "d_model": 128, "n_layers": 2, "n_heads": 4, "band_limit_hz": 4000.0,
                     "dropout": 0.1, "scale": 10.0, "specaug": True},
}
DEFAULT_WINDOW: dict[str, tuple[float, float]] = {
    "cnn": (3.0, 1.5), "resnet": (3.0, 1.5), "speaker_head": (2.0, 1.0), "accent_embed": (3.0, 1.5),
}
#: every family ``train_model`` trains: the above, and the fusion families (one of them stacked with
#: phone features or with reading features of the transcript, workers/pipeline/fusion.py)
TRAINABLE_FAMILIES: tuple[str, ...] = (*DEFAULT_HPARAMS, "phonetic_fusion", "reading_fusion")


@dataclass
class TrainConfig:
    """Everything that defines a training run (JSON-able apart from ``items``).

    Attributes
    ----------
    name, family, version : str
        Model name (``accent-native``), family (``cnn``, ``resnet``, ``speaker_head``,
        ``accent_embed``) and version.
    manifest : str or None
        Manifest CSV; alternatively pass ``items``.
    items : list of TrainItem or None
        Labelled recordings (e.g. from the database); ``split`` may be empty.
    label_column, label_map : str, dict
        Manifest column holding the label, and an optional raw -> target map.
    labels : list of str or None
        Class order (default: sorted unique labels).
    task : str or None
        ``classify`` or ``embed`` (default: ``embed`` for accent_embed, else ``classify``).
    out : str or None
        Checkpoint path; ``None`` keeps the model in memory only.
    window_s, hop_s : float or None
        Window length and evaluation hop (family defaults when ``None``).
    epochs, batch_size, steps_per_epoch, lr, weight_decay, patience : training loop settings.
    val_fraction, test_fraction : float
        Speaker fractions carved for validation (from train) and test (from unassigned items).
    test_corpora : list of str or None
        Leave-corpus-out mode: these corpora form the test split, all others train/val (the
        manifest's split column is ignored).
    corpora : list of str or None
        Use only these corpora.
    prompts : dict or None
        ``{corpus: text}``: the text every clip of that corpus read (manifest input; a
        ``transcript`` column wins). Only ``reading_fusion`` uses transcripts.
    hparams : dict
        Family hyper-parameters, merged over :data:`DEFAULT_HPARAMS`.
    augment : bool
        Waveform augmentation (and SpecAugment) during training.
    n_aug_copies : int
        Augmented copies per utterance for families that cache frozen features (speaker_head).
    deploy_prior : list of float or None
        Declared deployment class prior (default uniform).
    balance : str
        ``"speaker"``: classes drawn equally, speakers equally within a class; ``"corpus"``:
        classes equally, corpora equally within a class, speakers equally within a corpus.
    select_corpus : str or None
        Early stopping on the validation balanced accuracy of this corpus only (e.g. ``SAA``,
        the unconfounded one); default: all validation items.
    seed : int
    device : str or None
        ``cuda`` when present, else ``cpu`` (default).
    num_threads : int or None
        ``torch.set_num_threads`` (default: leave as is).
    cache_dir : str
        Where features are cached between runs.
    max_seconds : float or None
        Trim each utterance to this many seconds.
    evaluate : bool
        Evaluate on the test split at the end.
    n_boot : int
        Bootstrap replicates in the evaluation report.
    references : bool
        With ``evaluate``: also train the brief's two reference baselines (MFCC statistics and the
        pretrained speaker encoder's embedding, each + logistic regression, 4 kHz band limit) on
        this run's train + validation recordings, score them on its test split, and compare the
        model with each, paired by recording (``metrics["references"]``).
    """

    name: str
    family: str
    manifest: str | None = None
    items: list[TrainItem] | None = None
    label_column: str = "accent_group"
    label_map: dict[str, str] | None = None
    labels: list[str] | None = None
    task: str | None = None
    out: str | None = None
    version: str = "1.0.0"
    window_s: float | None = None
    hop_s: float | None = None
    epochs: int = 30
    batch_size: int = 32
    steps_per_epoch: int | None = None
    lr: float = 1e-3
    weight_decay: float = 1e-3
    patience: int = 8
    val_fraction: float = 0.15
    test_fraction: float = 0.2
    test_corpora: list[str] | None = None
    corpora: list[str] | None = None
    prompts: dict[str, str] | None = None
    hparams: dict[str, Any] = field(default_factory=dict)
    augment: bool = True
    n_aug_copies: int = 2
    deploy_prior: list[float] | None = None
    balance: str = "speaker"
    select_corpus: str | None = None
    seed: int = 0
    device: str | None = None
    num_threads: int | None = None
    cache_dir: str = "/tmp/accentsite-cache"
    max_seconds: float | None = 30.0
    evaluate: bool = True
    n_boot: int = 500
    references: bool = True

    def to_dict(self) -> dict[str, Any]:
        """JSON-able view (``items`` summarised by count)."""
        d = asdict(self) if self.items is None else {**asdict(replace_items(self, None)), "items": len(self.items)}
        return d


def replace_items(config: TrainConfig, items: list[TrainItem] | None) -> TrainConfig:
    """Shallow copy of ``config`` with other ``items``."""
    c = copy.copy(config)
    c.items = items
    return c


@dataclass
class TrainResult:
    """What :func:`train_model` returns."""

    checkpoint: str | None
    sha256: str | None
    spec: Any
    calibration: dict[str, Any]
    metrics: dict[str, Any]
    history: list[dict[str, Any]]
    best_epoch: int
    model: Any = None


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------


def _set_seed(seed: int) -> None:
    import random

    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _pick_device(name: str | None) -> Any:
    import torch

    if name:
        return torch.device(name)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _emit(progress: ProgressFn | None, stage: str, done: int, total: int, info: dict[str, Any] | None = None) -> None:
    if progress is not None:
        progress(stage, done, total, info or {})


def _hash(obj: Any) -> str:
    return hashlib.sha1(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:12]


def _balanced_accuracy(y: np.ndarray, pred: np.ndarray, n_classes: int) -> float:
    recalls = [float((pred[y == c] == c).mean()) for c in range(n_classes) if (y == c).any()]
    return float(np.mean(recalls)) if recalls else 0.0


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


# ---------------------------------------------------------------------------------------------
# feature sources: how each family turns utterances into model inputs
# ---------------------------------------------------------------------------------------------


class _WaveSource:
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


class _FrameSource(_WaveSource):
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

        folder = Path(cache_dir) / f"frames-{_hash([band_limit_hz, 'v1'])}"
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


class _CachedSource:
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
# the loop
# ---------------------------------------------------------------------------------------------


def _forward_train(model: Any, family: str, inputs: Any, y: Any, class_weight: Any, hp: dict[str, Any]) -> tuple[Any, Any]:
    import torch

    if family == "accent_embed":
        loss, logits, _ = model.training_losses(
            inputs, y, class_weight=class_weight, w_supcon=hp.get("w_supcon", 0.5),
            w_triplet=hp.get("w_triplet", 0.5), w_recon=hp.get("w_recon", 0.1))
        return loss, logits
    if family == "speaker_head" and getattr(model, "n_heads", 1) > 1:
        # head ensemble: each member gets its own loss; with ``bag`` each member also sees its own
        # Poisson(1) bootstrap weighting of the batch (bagging), which decorrelates the members
        all_logits = model.head_all(inputs)  # [K, b, C]
        k, b, c = all_logits.shape
        ce = torch.nn.functional.cross_entropy(all_logits.reshape(k * b, c), y.repeat(k), weight=class_weight,
                                               label_smoothing=0.05, reduction="none").reshape(k, b)
        if hp.get("bag", False):
            w = torch.poisson(torch.ones(k, b, device=ce.device))
            loss = ((ce * w).sum(dim=1) / w.sum(dim=1).clamp(min=1.0)).mean()
        else:
            loss = ce.mean()
        return loss, all_logits.mean(dim=0)
    logits = model.head(inputs) if family == "speaker_head" else model(inputs)
    return torch.nn.functional.cross_entropy(logits, y, weight=class_weight, label_smoothing=0.05), logits


def _eval_logits(model: Any, family: str, source: Any, idx: Sequence[int], hop: int, device: Any,
                 batch_windows: int = 64) -> list[np.ndarray]:
    """Window logits ``[n_windows, C]`` per utterance in ``idx``."""
    import torch

    model.eval()
    out = []
    with torch.inference_mode():
        for i in idx:
            inp = source.eval_inputs(i, hop, device)
            if family == "speaker_head":
                out.append(model.head(inp).float().cpu().numpy())
            else:
                out.append(model(inp).float().cpu().numpy())
    return out


def _eval_embeddings(model: Any, source: Any, idx: Sequence[int], hop: int, device: Any) -> np.ndarray:
    """Utterance embeddings ``[n, d]`` (mean of window embeddings, re-normalised)."""
    import torch

    model.eval()
    out = []
    with torch.inference_mode():
        for i in idx:
            e = model.embed(source.eval_inputs(i, hop, device)).float().cpu().numpy().mean(axis=0)
            out.append(e / max(np.linalg.norm(e), 1e-12))
    return np.stack(out)


def _utterance_proba(window_logits: list[np.ndarray], calibration: dict[str, Any] | None) -> np.ndarray:
    """Mean of calibrated window probabilities per utterance ``[n, C]`` (what inference does)."""
    from workers.pipeline.calibration import calibrate

    return np.stack([calibrate(wl, calibration).mean(axis=0) for wl in window_logits])


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


def train_model(config: TrainConfig, *, progress: ProgressFn | None = None) -> TrainResult:
    """Train, calibrate, evaluate and (optionally) save one model.

    Parameters
    ----------
    config : TrainConfig
        The run's settings.
    progress : callable, optional
        ``progress(stage, done, total, info)``.

    Returns
    -------
    TrainResult
        Checkpoint path and sha256 (when ``config.out`` is set), spec, calibration, metrics
        (``val``, ``test`` evaluation reports, ``history``) and the trained model.
    """
    import torch

    from models.checkpoint import build_model, save_checkpoint
    from models.specs import ModelSpec
    from workers.pipeline.calibration import fit_calibration

    if config.family in ("phonetic_fusion", "reading_fusion"):  # a window model stacked with utterance
        from workers.pipeline.fusion import train_fusion  # features: workers/pipeline/fusion.py

        return train_fusion(config, progress=progress)
    t_start = time.time()
    if config.num_threads:
        torch.set_num_threads(int(config.num_threads))
    _set_seed(config.seed)
    device = _pick_device(config.device)
    family = config.family
    if family not in DEFAULT_HPARAMS:
        raise ValueError(f"unknown family {family!r}; expected one of {sorted(DEFAULT_HPARAMS)}")
    hp = {**DEFAULT_HPARAMS[family], **(config.hparams or {})}
    if not config.augment and "specaug" in hp:
        hp["specaug"] = False
    window_s, hop_s = DEFAULT_WINDOW[family]
    window_s = float(config.window_s or window_s)
    hop_s = float(config.hop_s or hop_s)
    W, H = int(round(window_s * 16000)), int(round(hop_s * 16000))

    items = load_items(config)
    labels = list(config.labels) if config.labels else sorted({it.label for it in items})
    items = [it for it in items if it.label in labels]
    splits = make_splits(items, config)
    if not splits["train"] or not splits["val"]:
        sizes = {k: len(v) for k, v in splits.items()}
        raise ValueError(f"not enough speakers to train and validate: {sizes}")
    n_classes = len(labels)
    task = config.task or ("embed" if family == "accent_embed" else "classify")

    _emit(progress, "load", 0, len(items))
    utts = load_utterances(items, labels, max_seconds=config.max_seconds,
                           progress=lambda d, t: _emit(progress, "load", d, t))
    spec = ModelSpec(
        name=config.name, version=config.version, family=family, task=task, labels=tuple(labels),
        sample_rate=16000, window_s=window_s, hop_s=hop_s,
        embedding_dim=int(hp.get("hidden") or hp.get("embedding_dim") or (128 if family == "accent_embed" else 0)) or None,
        extra={"band_limit_hz": hp.get("band_limit_hz"), "label_column": config.label_column,
               "label_map": config.label_map, "normalisation": "per-utterance RMS -25 dBFS, per-window RMS + CMVN"},
    )
    model = build_model(spec, hp).to(device)
    if family == "accent_embed":
        spec = ModelSpec(**{**spec.__dict__, "embedding_dim": model.embedding_dim})

    train_idx, val_idx, test_idx = splits["train"], splits["val"], splits["test"]
    if family == "speaker_head":
        tag = _hash([hp.get("band_limit_hz"), hp.get("pool_layers"), hp.get("use_embedding"), W, H, config.seed, "v1"])
        source: Any = _CachedSource(utts, model, W, H, set(train_idx), config.n_aug_copies, config.augment,
                                    config.seed, config.cache_dir, tag, device, progress)
    elif family == "accent_embed":
        source = _FrameSource(utts, W, config.augment, config.seed, config.cache_dir, hp.get("band_limit_hz"), progress)
    else:
        source = _WaveSource(utts, W, config.augment, config.seed)

    unit_labels, unit_groups = source.train_units(train_idx)
    if config.balance == "corpus":
        spk_corpus = {u.speaker: u.corpus for u in utts}
        weights = hierarchical_sample_weights(unit_labels, [spk_corpus[g] for g in unit_groups], unit_groups)
    else:
        weights = balanced_sample_weights(unit_labels, unit_groups)
    units = np.arange(len(unit_labels))
    steps = config.steps_per_epoch or max(1, int(np.ceil(len(unit_labels) / config.batch_size)))
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    total_steps = steps * config.epochs
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=config.lr, total_steps=total_steps, pct_start=0.15)
    rng = np.random.default_rng(config.seed)
    y_val = np.array([utts[i].label for i in val_idx])
    sel = np.array([config.select_corpus is None or utts[i].corpus == config.select_corpus for i in val_idx])
    if not sel.any():
        raise ValueError(f"no validation items from corpus {config.select_corpus!r}")

    history: list[dict[str, Any]] = []
    best = (-1.0, float("inf"))
    best_state: dict[str, Any] | None = None
    best_epoch, bad = -1, 0
    for epoch in range(config.epochs):
        model.train()
        t0 = time.time()
        losses, correct, seen = [], 0, 0
        for _ in range(steps):
            pick = rng.choice(units, size=config.batch_size, replace=True, p=weights)
            inputs = source.batch(pick, device)
            y = torch.as_tensor(unit_labels[pick], device=device, dtype=torch.long)
            loss, logits = _forward_train(model, family, inputs, y, None, hp)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 5.0)
            opt.step()
            sched.step()
            losses.append(loss.item())
            correct += int((logits.argmax(1) == y).sum())
            seen += len(pick)
        val_logits = _eval_logits(model, family, source, val_idx, H, device)
        val_proba = _utterance_proba(val_logits, None)
        val_bacc = _balanced_accuracy(y_val[sel], val_proba[sel].argmax(1), n_classes)
        val_nll = float(-np.mean(np.log(np.clip(val_proba[np.arange(len(y_val)), y_val][sel], 1e-9, 1))))
        rec = {"epoch": epoch, "loss": float(np.mean(losses)), "train_acc": correct / max(seen, 1),
               "val_balanced_accuracy": val_bacc, "val_nll": val_nll, "seconds": time.time() - t0}
        history.append(rec)
        logger.info("epoch %d %s", epoch, rec)
        _emit(progress, "train", epoch + 1, config.epochs, rec)
        if (val_bacc, -val_nll) > (best[0], -best[1]):
            best, best_epoch, bad = (val_bacc, val_nll), epoch, 0
            best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        else:
            bad += 1
            if bad >= config.patience:
                break
    assert best_state is not None
    model.load_state_dict(best_state)
    model.eval()

    # calibration on validation (window-level temperature; confidence threshold on utterances)
    val_logits = _eval_logits(model, family, source, val_idx, H, device)
    win_logits = np.concatenate(val_logits)
    win_y = np.concatenate([[utts[i].label] * len(wl) for i, wl in zip(val_idx, val_logits, strict=True)])
    train_prior = [1.0 / n_classes] * n_classes  # balanced sampling: the effective training prior
    deploy_prior = config.deploy_prior or [1.0 / n_classes] * n_classes
    calibration = fit_calibration(win_logits, win_y, train_prior=train_prior, deploy_prior=deploy_prior)
    from workers.pipeline.calibration import fit_confidence_threshold

    val_proba = _utterance_proba(val_logits, calibration)
    calibration["threshold"], calibration["coverage_at_threshold"] = fit_confidence_threshold(val_proba, y_val)
    calibration["fitted_on"] = "validation speakers"

    metrics: dict[str, Any] = {
        "best_epoch": best_epoch,
        "val_balanced_accuracy": best[0],
        "val": _report([labels[k] for k in y_val], val_proba, labels, [utts[i] for i in val_idx], n_boot=0),
        "history": history,
        "val_predictions": _predictions(items, utts, val_idx, val_proba, labels),
    }
    if config.evaluate and test_idx:
        _emit(progress, "evaluate", 0, len(test_idx))
        test_logits = _eval_logits(model, family, source, test_idx, H, device)
        test_proba = _utterance_proba(test_logits, calibration)
        metrics["test"] = _report([labels[utts[i].label] for i in test_idx], test_proba, labels,
                                  [utts[i] for i in test_idx], n_boot=config.n_boot, seed=config.seed)
        if task == "embed" or family == "accent_embed":
            from workers.pipeline.evaluation import embedding_report

            emb = _eval_embeddings(model, source, test_idx, H, device)
            metrics["test_embedding"] = embedding_report(emb, [labels[utts[i].label] for i in test_idx],
                                                         [utts[i].speaker for i in test_idx])
        metrics["test_predictions"] = _predictions(items, utts, test_idx, test_proba, labels)
        if config.references:
            _emit(progress, "references", 0, 1)
            metrics["references"] = reference_reports([utts[i] for i in train_idx + val_idx],
                                                      [utts[i] for i in test_idx], test_proba, labels, config)
            _emit(progress, "references", 1, 1)
    training_data = {
        "source": config.manifest or "items",
        "n_items": len(items),
        "splits": {k: {"items": len(v), "speakers": len({items[i].speaker for i in v})} for k, v in splits.items()},
        "class_counts": {k: {lab: int(sum(1 for i in v if items[i].label == lab)) for lab in labels}
                         for k, v in splits.items()},
        "corpora": sorted({it.corpus for it in items}),
        "test_corpora": config.test_corpora,
        "data_prior": [float(np.mean([utts[i].label == c for i in train_idx])) for c in range(n_classes)],
        "config": config.to_dict(),
        "seconds": time.time() - t_start,
    }
    sha = None
    if config.out:
        sha = save_checkpoint(config.out, model=model.cpu(), spec=spec, calibration=calibration, hparams=hp,
                              metrics=metrics, training_data=training_data)
        model.to(device)
    _emit(progress, "done", 1, 1, {"checkpoint": config.out, "sha256": sha})
    return TrainResult(config.out, sha, spec, calibration, metrics, history, best_epoch, model)


def cross_validate(config: TrainConfig, k: int = 5, *, progress: ProgressFn | None = None) -> dict[str, Any]:
    """Speaker-grouped k-fold cross-validation over the train + validation speakers, for choosing
    between configurations without touching the test split (which is left out entirely).

    Each fold trains ``config`` on the other folds and early-stops on this one, as a normal run
    early-stops on its validation split (so every fold score carries the same small optimism, and
    candidates compare fairly). With ~500 pooled speakers, a fold holds ~100, and the mean over
    folds rests on all of them instead of one validation slice.

    Returns
    -------
    dict
        ``folds``: per fold ``{"speakers", "items", "balanced_accuracy", "per_corpus", "best_epoch"}``;
        ``mean`` / ``std`` of the balanced accuracy, ``per_corpus_mean``, ``k``; ``predictions``: the
        out-of-fold prediction of every pooled utterance (for stacking or error analysis).
    """
    import copy

    from workers.pipeline.data import speaker_folds

    items = load_items(config)
    labels = list(config.labels) if config.labels else sorted({it.label for it in items})
    items = [it for it in items if it.label in labels]
    splits = make_splits(items, config)
    pool = sorted(splits["train"] + splits["val"])
    folds = speaker_folds(items, pool, k, seed=config.seed)
    out: list[dict[str, Any]] = []
    oof: list[dict[str, Any]] = []  # out-of-fold predictions: every pooled utterance, scored by the fold that held it out
    for j, held in enumerate(folds):
        held_set = set(held)
        fold_items = [replace(items[i], split="val" if i in held_set else "train") for i in pool]
        c = copy.copy(config)
        c.items, c.manifest, c.label_map, c.corpora, c.labels = fold_items, None, None, None, labels
        c.out, c.evaluate, c.test_corpora = None, False, None
        result = train_model(c, progress=progress)
        val = result.metrics.get("val") or {}
        oof.extend({**row, "fold": j} for row in result.metrics.get("val_predictions") or [])
        out.append({
            "fold": j, "items": len(held), "speakers": len({items[i].speaker for i in held}),
            "balanced_accuracy": result.metrics.get("val_balanced_accuracy"), "best_epoch": result.best_epoch,
            "per_corpus": {name: r.get("balanced_accuracy") for name, r in (val.get("per_corpus") or {}).items()},
        })
        logger.info("fold %d/%d: %s", j + 1, k, out[-1])
    scores = np.array([f["balanced_accuracy"] for f in out], dtype=float)
    corpora = sorted({name for f in out for name in f["per_corpus"]})
    per_corpus = {
        name: float(np.nanmean([np.nan if f["per_corpus"].get(name) is None else f["per_corpus"][name] for f in out]))
        for name in corpora
    }
    return {"k": k, "folds": out, "mean": float(scores.mean()), "std": float(scores.std(ddof=1)) if k > 1 else 0.0,
            "per_corpus_mean": per_corpus, "predictions": oof}


def _predictions(items: list[TrainItem], utts: list[Utterance], idx: list[int], proba: np.ndarray,
                 labels: list[str]) -> list[dict[str, Any]]:
    """One row per utterance: key, speaker, corpus, true label and calibrated class probabilities."""
    return [
        {"key": prediction_key(items[i]), "speaker": utts[i].speaker, "corpus": utts[i].corpus,
         "label": labels[utts[i].label], "proba": [round(float(p), 5) for p in pr]}
        for i, pr in zip(idx, proba, strict=True)
    ]


def prediction_key(item: TrainItem) -> str:
    """The ``key`` of a recording's rows in ``val_predictions`` / ``test_predictions``: its own key,
    else its path, else (a loader) its cache key."""
    if item.key:
        return item.key
    return item.cache_key if callable(item.path_or_loader) else str(item.path_or_loader)


def _report(y_true: list[str], proba: np.ndarray, labels: list[str], utts: list[Utterance], *, n_boot: int = 500,
            seed: int = 0) -> dict[str, Any]:
    """``evaluation_report`` (speakers and corpora attached)."""
    from workers.pipeline.evaluation import evaluation_report

    return evaluation_report(y_true, proba, labels, speakers=[u.speaker for u in utts],
                             corpora=[u.corpus for u in utts], n_boot=n_boot, seed=seed)


# ---------------------------------------------------------------------------------------------
# model card
# ---------------------------------------------------------------------------------------------

LICENCE_NOTE = (
    "Trained on accent-mini clips that include the Speech Accent Archive (CC BY-NC-SA 4.0) and "
    "L2-ARCTIC (CC BY-NC 4.0). Both are **non-commercial**; the weights inherit that restriction "
    "(and SAA's share-alike). Other sources: speechocean762 (Apache-2.0), LibriSpeech and VCTK "
    "(CC BY 4.0), FSDD (CC BY-SA 4.0), VCC2020/EMIME (ODbL / DbCL), CMU ARCTIC (BSD-style)."
)

CONFOUNDS = [
    "Corpus and accent are entangled: outside SAA, `mandarin_l1` is almost all speechocean762 and "
    "`native_english` mostly LibriSpeech and VCTK, so numbers on those corpora partly measure recording "
    "setup. The SAA rows (one archive, one passage, one procedure for both classes) are the honest test.",
    "Bandwidth: 484 of 491 SAA clips and all of FSDD are 8 kHz-sourced. Every model here low-passes its "
    "input to 4 kHz inside the network (and parselmouth analysis runs at 8 kHz), so bandwidth cannot be a cue.",
    "`other_l1` outside SAA is a handful of speakers; a 3-class model rests on SAA for that class.",
    "Some SAA non-native speakers learned English in early childhood (`age_onset` in the data notes).",
    "LibriSpeech accents are presumed, not labelled; 32 SAA speaker ids are inferred.",
    "Test sets are small (SAA test: 62 native, 88 non-native speakers; one clip each), so confidence "
    "intervals are wide: see the bootstrap CIs (resampled by speaker).",
]


def _fmt(x: Any) -> str:
    return "-" if x is None else (f"{x:.3f}" if isinstance(x, float) else str(x))


def _ci(rep: dict[str, Any], key: str = "balanced_accuracy") -> str:
    ci = (rep.get("ci") or {}).get(key) or {}
    if ci.get("low") is None:
        return ""
    return f" ({ci['low']:.2f}-{ci['high']:.2f})"


REFERENCE_NAMES = {"mfcc_logreg": "MFCC statistics + logistic regression",
                   "speaker_encoder_logreg": "speaker encoder (resemblyzer GE2E) embedding + logistic regression"}


def reference_reports(train: list[Utterance], test: list[Utterance], model_proba: np.ndarray, labels: list[str],
                      config: TrainConfig) -> dict[str, Any]:
    """The reference baselines of this run (see ``TrainConfig.references``): ``{name: evaluation
    report + "baseline" (how it was fitted) + "paired"}``, where ``paired`` is the model's balanced
    accuracy minus the reference's on the same test recordings, overall (``"all"``) and per corpus,
    with a paired speaker-bootstrap interval (:func:`~workers.pipeline.evaluation.paired_difference`).
    C = 0.1, as the brief's reference numbers were measured."""
    from workers.pipeline.baselines import reference_baselines
    from workers.pipeline.evaluation import paired_by_corpus

    y_test = [labels[u.label] for u in test]
    reports = reference_baselines([u.samples for u in train], [labels[u.label] for u in train],
                                  [u.samples for u in test], y_test, labels,
                                  test_speakers=[u.speaker for u in test], test_corpora=[u.corpus for u in test],
                                  C=0.1, cache_dir=Path(config.cache_dir) / "baselines", n_boot=config.n_boot,
                                  seed=config.seed, keep_proba=True)
    for rep in reports.values():
        rep["paired"] = paired_by_corpus(y_test, model_proba, rep.pop("test_proba"), labels,
                                         speakers=[u.speaker for u in test], corpora=[u.corpus for u in test],
                                         n_boot=config.n_boot, seed=config.seed)
    return reports


def write_model_card(
    metrics: dict[str, Any],
    *,
    spec: Any,
    path: str | Path,
    command: str,
    calibration: dict[str, Any] | None = None,
    training_data: dict[str, Any] | None = None,
    sha256: str | None = None,
    loco: dict[str, dict[str, Any]] | None = None,
    baselines: list[dict[str, Any]] | None = None,
    notes: Sequence[str] = (),
) -> str:
    """Render a Markdown model card from the evaluation reports; writes it to ``path`` and returns it.

    Parameters
    ----------
    metrics : dict
        ``TrainResult.metrics`` (``test`` evaluation report, optional ``test_embedding``).
    spec : ModelSpec
        The model's spec.
    command : str
        The one command that reproduces the checkpoint.
    loco : dict, optional
        ``{held_out_corpus: evaluation_report}`` from leave-one-corpus-out runs.
    baselines : list of dict, optional
        Rows ``{"name", "saa_test_balanced_accuracy", "note"}``.
    notes : sequence of str
        Extra paragraphs (measured facts, limits).
    """
    test = metrics.get("test") or {}
    lines = [f"# Model card: {spec.name} ({spec.version})", ""]
    lines += [
        f"- Family: `{spec.family}`; task: `{spec.task}`; classes: {', '.join(f'`{c}`' for c in spec.labels)}",
        f"- Input: 16 kHz mono, {spec.window_s:g} s windows (hop {spec.hop_s:g} s at inference), low-passed to "
        f"{spec.extra.get('band_limit_hz')} Hz inside the model; utterance score = mean of calibrated window probabilities"
        + {"phonetic_fusion": "; then fused, per recording, with phone-recogniser features (pocketsphinx's US-English "
                              "model, allphone decoding) by a logistic layer fitted on out-of-fold predictions.",
           "reading_fusion": "; then, for a recording whose transcript is known, fused with reading features (the "
                             "transcript force-aligned by pocketsphinx's US-English model: goodness of pronunciation "
                             "and duration per phone, reading rate, pauses, skipped words) by a logistic layer fitted "
                             "on out-of-fold predictions. Without a transcript the window model's output stands.",
           }.get(spec.family, "."),
    ]
    if spec.embedding_dim:
        lines.append(f"- Embedding: {spec.embedding_dim}-d, L2-normalised")
    if sha256:
        lines.append(f"- Checkpoint sha256: `{sha256}`")
    if calibration:
        where = ("window temperature fitted on validation speakers, threshold on out-of-fold fused predictions"
                 if "fusion" in calibration else "fitted on validation speakers")
        lines.append(f"- Calibration ({where}): temperature {calibration.get('temperature', 1):.3f}, "
                     f"deployment prior {calibration.get('deploy_prior')}, confidence threshold "
                     f"{calibration.get('threshold')} (coverage {_fmt(calibration.get('coverage_at_threshold'))})")
        if "fused_threshold" in calibration:
            lines[-1] = lines[-1].replace("threshold on out-of-fold fused predictions", "window threshold on validation")
            lines.append(f"- With a transcript: confidence threshold {calibration['fused_threshold']} (coverage "
                         f"{_fmt(calibration.get('fused_coverage_at_threshold'))}), on out-of-fold fused predictions")
    lines += ["", "## Reproduce", "", "```", command, "```", ""]
    if training_data:
        lines += ["## Data", "", f"Source: `{training_data.get('source')}`. Speaker-disjoint splits "
                  "(manifest `split`; validation carved from train by speaker, stratified by label and corpus):", ""]
        lines += ["| split | items | speakers | " + " | ".join(spec.labels) + " |", "|---|---|---|" + "---|" * len(spec.labels)]
        for k, v in training_data.get("splits", {}).items():
            cc = training_data.get("class_counts", {}).get(k, {})
            lines.append(f"| {k} | {v['items']} | {v['speakers']} | " + " | ".join(str(cc.get(c, 0)) for c in spec.labels) + " |")
        lines.append("")
    lines += ["## Results on the speaker-disjoint test split", "",
              "Balanced accuracy with a 95 % bootstrap interval (speakers resampled).", "",
              "| slice | n | speakers | balanced acc. | accuracy | macro F1 | ROC AUC |", "|---|---|---|---|---|---|---|"]
    if test:
        roc = test.get("roc_auc") or {}
        lines.append(f"| all test | {test.get('n')} | {(test.get('ci') or {}).get('n_units', '-')} | "
                     f"{_fmt(test.get('balanced_accuracy'))}{_ci(test)} | {_fmt(test.get('accuracy'))} | "
                     f"{_fmt(test.get('macro_f1'))} | {_fmt(roc.get('value') if isinstance(roc, dict) else roc)} |")
        for corpus, rep in sorted((test.get("per_corpus") or {}).items(), key=lambda kv: kv[0] != "SAA"):
            name = "**SAA test**" if corpus == "SAA" else corpus
            lines.append(f"| {name} | {rep.get('n')} | {rep.get('n_speakers')} | {_fmt(rep.get('balanced_accuracy'))}{_ci(rep)} | "
                         f"{_fmt(rep.get('accuracy'))} | {_fmt(rep.get('macro_f1'))} | {_fmt(rep.get('roc_auc'))} |")
        lines += ["", "Single-class slices have a balanced accuracy equal to that class's recall.", ""]
        if test.get("per_class"):
            lines += ["Per class (all test): " + "; ".join(
                f"`{c}` P {_fmt(v.get('precision'))} R {_fmt(v.get('recall'))} F1 {_fmt(v.get('f1'))}"
                for c, v in test["per_class"].items()), ""]
        lines += [f"ECE {_fmt(test.get('ece'))}, NLL {_fmt(test.get('nll'))}, Brier {_fmt(test.get('brier'))}.", ""]
    emb = metrics.get("test_embedding")
    if emb:
        keys = [k for k in emb if isinstance(emb[k], (int, float)) and not isinstance(emb[k], bool)]
        lines += ["## Embedding quality (test speakers)", "", "| metric | value |", "|---|---|"]
        lines += [f"| {k} | {_fmt(float(emb[k]))} |" for k in keys]
        lines.append("")
    fcv = metrics.get("fusion_cv")
    if fcv:
        wm = metrics.get("window_model") or {}
        reading = spec.family == "reading_fusion"
        lines += [f"## Window model alone and fused with {'reading' if reading else 'phone'} features", "",
                  f"Speaker-grouped {fcv['folds']}-fold cross-validation over train + validation (out-of-fold window-model "
                  f"probabilities; fusion cross-fitted, {fcv['seeds']} seeds, L2 strength C = {fcv['C']}), and the test split"
                  + (f". The fusion applies to recordings with a transcript only ({fcv.get('rows')} in cross-validation), "
                     "so the CV columns cover those; on the test split, recordings without one keep the window model's "
                     "output." if reading else ":"), "",
                  "| slice | CV window model | CV fused | test window model | test fused |", "|---|---|---|---|---|"]
        alone, fused = fcv["window_model_alone"], fcv["fused"]
        test_pc = (test or {}).get("per_corpus") or {}
        lines.append(f"| all | {_fmt(alone['overall'])} | {_fmt(fused['overall'])} | {_fmt(wm.get('test'))} | "
                     f"{_fmt((test or {}).get('balanced_accuracy'))} |")
        for name in sorted(fused["per_corpus"], key=lambda n: n != "SAA"):
            lines.append(f"| {name} | {_fmt(alone['per_corpus'].get(name))} | {_fmt(fused['per_corpus'][name])} | "
                         f"{_fmt((wm.get('test_per_corpus') or {}).get(name))} | {_fmt((test_pc.get(name) or {}).get('balanced_accuracy'))} |")
        lines.append("")
    if loco:
        lines += ["## Leave-one-corpus-out", "", "Trained on every other corpus, tested on the held-out one.", "",
                  "| held-out corpus | n | balanced acc. | accuracy |", "|---|---|---|---|"]
        for corpus, rep in loco.items():
            lines.append(f"| {corpus} | {rep.get('n')} | {_fmt(rep.get('balanced_accuracy'))}{_ci(rep)} | {_fmt(rep.get('accuracy'))} |")
        lines.append("")
    refs = metrics.get("references") or {}
    if refs:
        focus = "SAA" if any("SAA" in (r.get("per_corpus") or {}) for r in refs.values()) else None
        lines += ["## Reference baselines (this run, same split)", "",
                  "The brief's two references, trained in the same run on its train + validation recordings "
                  "(band-limited to 4 kHz, logistic regression C = 0.1) and scored on the same test recordings; "
                  "'model minus reference' is a paired speaker bootstrap on those recordings (95 % interval; "
                  "'not better': share of draws where the model does not beat the reference).", ""]
        head = ["reference", "test balanced acc.", "model minus reference, test"]
        if focus:
            head += [f"{focus} test balanced acc.", f"model minus reference, {focus} test"]
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]

        def diff(d: dict[str, Any] | None) -> str:
            if not d or d.get("difference") is None:
                return "-"
            if d.get("low") is None:  # fewer than 2 speakers: no interval (see d["reason"])
                return f"{d['difference']:+.3f} (no interval: {d.get('reason') or 'not estimable'})"
            return (f"{d['difference']:+.3f} ({d['low']:+.3f} to {d['high']:+.3f}); not better "
                    f"{100 * d['share_not_better']:.0f} %")

        for name, rep in refs.items():
            row = [REFERENCE_NAMES.get(name, name),
                   f"{_fmt(rep.get('balanced_accuracy'))}{_ci(rep)}", diff((rep.get("paired") or {}).get("all"))]
            if focus:
                pc = (rep.get("per_corpus") or {}).get(focus) or {}
                row += [f"{_fmt(pc.get('balanced_accuracy'))}{_ci(pc)}",
                        diff(((rep.get("paired") or {}).get("per_corpus") or {}).get(focus))]
            lines.append("| " + " | ".join(row) + " |")
        lines.append("")
    if baselines:
        lines += ["## Baselines (SAA test, native vs non-native, band-limited to 4 kHz)", "",
                  "| baseline | SAA-test balanced acc. | note |", "|---|---|---|"]
        lines += [f"| {b['name']} | {_fmt(b.get('saa_test_balanced_accuracy'))} | {b.get('note', '')} |" for b in baselines]
        lines.append("")
    if notes:
        lines += ["## Notes", ""] + [f"- {n}" for n in notes] + [""]
    lines += ["## Known confounds", ""] + [f"- {c}" for c in CONFOUNDS] + [""]
    lines += ["## Licence", "", LICENCE_NOTE, ""]
    text = "\n".join(lines)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(text)
    return text


# ---------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------


def _parse_hparam(text: str) -> tuple[str, Any]:
    k, _, v = text.partition("=")
    try:
        return k, json.loads(v)
    except json.JSONDecodeError:
        return k, v


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point (see the module docstring)."""
    p = argparse.ArgumentParser(prog="python -m workers.pipeline.training", description=__doc__.split("\n")[0])
    p.add_argument("--manifest", required=True)
    p.add_argument("--family", required=True, choices=sorted(TRAINABLE_FAMILIES),
                   help="phonetic_fusion / reading_fusion: the window model of --hparam base_family (default "
                        "speaker_head), or of --hparam base_checkpoint=PATH as it is, stacked with phone features / "
                        "with reading features of each recording's transcript")
    p.add_argument("--label-column", default="accent_group")
    p.add_argument("--label-map", default=None, help="raw=target,raw=target")
    p.add_argument("--labels", default=None, help="class order, comma-separated")
    p.add_argument("--name", required=True)
    p.add_argument("--version", default="1.0.0")
    p.add_argument("--task", default=None, choices=["classify", "embed"])
    p.add_argument("--out", default=None)
    p.add_argument("--card", default=None, help="write a model card here")
    p.add_argument("--window-s", type=float, default=None)
    p.add_argument("--hop-s", type=float, default=None)
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--steps-per-epoch", type=int, default=None)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--weight-decay", type=float, default=1e-3)
    p.add_argument("--patience", type=int, default=8)
    p.add_argument("--n-aug-copies", type=int, default=2)
    p.add_argument("--no-augment", action="store_true")
    p.add_argument("--hparam", action="append", default=[], help="key=json-value (repeatable)")
    p.add_argument("--deploy-prior", default=None, help="comma-separated, in class order")
    p.add_argument("--corpora", default=None, help="comma-separated corpora to use")
    p.add_argument("--prompt", action="append", default=[], metavar="CORPUS=FILE",
                   help="every clip of CORPUS read the text in FILE (repeatable; a manifest 'transcript' column wins)")
    p.add_argument("--loco", action="append", default=[], help="also run leave-this-corpus-out (repeatable)")
    p.add_argument("--balance", default="speaker", choices=["speaker", "corpus"])
    p.add_argument("--select-corpus", default=None, help="early-stop on this corpus's validation items")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default=None)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--cache-dir", default=os.environ.get("ACCENTSITE_CACHE", "/tmp/accentsite-cache"))
    p.add_argument("--n-boot", type=int, default=500)
    p.add_argument("--no-references", action="store_true",
                   help="skip the two reference baselines (MFCC / speaker encoder + logistic regression) of the report")
    p.add_argument("--cv-folds", type=int, default=0,
                   help="instead of training one model: speaker-grouped k-fold cross-validation over train+val "
                        "(the test split is not touched), to compare configurations; prints the fold scores")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    prompts = {}
    for entry in args.prompt:
        corpus, sep, file = entry.partition("=")
        if not sep or not corpus or not file:
            p.error(f"--prompt {entry!r}: expected CORPUS=FILE")
        prompts[corpus] = Path(file).read_text().strip()

    config = TrainConfig(
        name=args.name, family=args.family, manifest=args.manifest, label_column=args.label_column,
        label_map=parse_label_map(args.label_map), labels=args.labels.split(",") if args.labels else None,
        task=args.task, out=args.out, version=args.version, window_s=args.window_s, hop_s=args.hop_s,
        epochs=args.epochs, batch_size=args.batch_size, steps_per_epoch=args.steps_per_epoch, lr=args.lr,
        weight_decay=args.weight_decay, patience=args.patience, n_aug_copies=args.n_aug_copies,
        augment=not args.no_augment, hparams=dict(_parse_hparam(h) for h in args.hparam),
        deploy_prior=[float(x) for x in args.deploy_prior.split(",")] if args.deploy_prior else None,
        corpora=args.corpora.split(",") if args.corpora else None, seed=args.seed,
        balance=args.balance, select_corpus=args.select_corpus, device=args.device,
        num_threads=args.threads, cache_dir=args.cache_dir, n_boot=args.n_boot, references=not args.no_references, prompts=prompts or None,
    )
    bar = _tqdm_progress()
    if args.cv_folds:
        print(json.dumps(cross_validate(config, args.cv_folds, progress=bar), indent=2, default=str))
        return 0
    result = train_model(config, progress=bar)
    loco: dict[str, Any] = {}
    for corpus in args.loco:
        c = copy.copy(config)
        c.out, c.test_corpora, c.n_boot = None, [corpus], min(config.n_boot, 200)
        c.references = False  # the card shows the held-out corpus's score only
        r = train_model(c, progress=bar)
        loco[corpus] = (r.metrics.get("test") or {})
    test = result.metrics.get("test") or {}
    summary = {"checkpoint": result.checkpoint, "sha256": result.sha256, "best_epoch": result.best_epoch,
               "val_balanced_accuracy": result.metrics.get("val_balanced_accuracy"),
               "test_balanced_accuracy": test.get("balanced_accuracy"),
               "per_corpus": {k: v.get("balanced_accuracy") for k, v in (test.get("per_corpus") or {}).items()},
               "loco": {k: v.get("balanced_accuracy") for k, v in loco.items()}}
    if args.out and loco:
        side = Path(args.out).with_suffix(".loco.json")
        side.write_text(json.dumps(loco, indent=1, default=str))
    if args.card:
        import shlex
        import sys

        cmd = "python -m workers.pipeline.training " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
        write_model_card(result.metrics, spec=result.spec, path=args.card, command=cmd, calibration=result.calibration,
                         sha256=result.sha256, loco=loco or None,
                         training_data=json.loads(Path(args.out).with_suffix(".json").read_text())["training_data"]
                         if args.out else None)
    print(json.dumps(summary, indent=2, default=str))
    return 0


def _tqdm_progress() -> ProgressFn:
    """A tqdm bar per stage for the CLI."""
    from tqdm import tqdm

    bars: dict[str, Any] = {}

    def progress(stage: str, done: int, total: int, info: dict[str, Any]) -> None:
        bar = bars.get(stage)
        if bar is None or bar.total != total or done < bar.n:
            if bar is not None:
                bar.close()
            bar = bars[stage] = tqdm(total=total, desc=stage, leave=stage == "train", mininterval=2.0)
        bar.update(done - bar.n)
        if stage == "train" and info:
            bar.set_postfix(loss=f"{info.get('loss', 0):.3f}", val_bacc=f"{info.get('val_balanced_accuracy', 0):.3f}")

    return progress


if __name__ == "__main__":
    raise SystemExit(main())
