"""What defines a training run: :class:`TrainConfig`, :class:`TrainResult`, the families the generic
loop trains and their default hyper-parameters and windows. Pure Python: no torch, no Django."""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from models.registry import FAMILIES as _REGISTRY
from models.registry import TRAINABLE_FAMILIES as _TRAINABLE
from workers.pipeline.data import (
    TrainItem,
)

#: ``progress(stage, done, total, info)``: stage is ``"load"``, ``"cache"``, ``"train"``,
#: ``"evaluate"`` or ``"done"``; ``info`` carries e.g. the epoch's losses and validation score.
ProgressFn = Callable[[str, int, int, dict[str, Any]], None]

# The family facts below are read from the registry (models/registry.py), the one place they are written.
#: the generic loop's families and their default hyper-parameters (a run's ``hparams`` merge over them)
DEFAULT_HPARAMS: dict[str, dict[str, Any]] = {
    name: copy.deepcopy(family.default_hparams) for name, family in _REGISTRY.items() if family.trainer == "window"}
#: ``(window_s, hop_s)`` of the generic loop's families
DEFAULT_WINDOW: dict[str, tuple[float, float]] = {
    name: family.window for name, family in _REGISTRY.items() if family.trainer == "window" and family.window}
#: a family's task when the run does not say (classify otherwise)
DEFAULT_TASK: dict[str, str] = {name: family.task for name, family in _REGISTRY.items() if family.task != "classify"}
#: every family ``train_model`` trains: the registry's trainable ones
TRAINABLE_FAMILIES: tuple[str, ...] = _TRAINABLE


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
    min_steps_per_epoch : int
        The generic loop's floor on batches per epoch when ``steps_per_epoch`` is not set (an epoch is
        otherwise ``ceil(units / batch_size)`` batches: 5 for 144 clips, so 8 epochs were 40 optimiser
        steps and a ``cnn`` never left chance; crops and augmentation are random, so more batches per
        epoch are new examples, not repeats).
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
    robustness : list of str or None
        With ``evaluate`` and ``out``: also score the saved model on degraded copies of its test clips
        under these conditions (``workers.pipeline.degrade.CONDITIONS``; clean is always added), at most
        ``robustness_limit`` clips; the table goes into ``metrics["robustness"]`` and the model card.
    hold_out_val : bool
        Score the validation split with a model that never saw it (``metrics["val_predictions"]``).
        Families that choose and fit on train + validation together (``whisper_probe``) then fit on
        the train split alone; :func:`workers.pipeline.train_loop.cross_validate` sets it, so a
        fold's held-out speakers are out of that fold's fit for every family.
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
    min_steps_per_epoch: int = 25
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
    hold_out_val: bool = False
    robustness: list[str] | None = None
    robustness_limit: int | None = 300

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


def emit_progress(progress: ProgressFn | None, stage: str, done: int, total: int, info: dict[str, Any] | None = None) -> None:
    """Call ``progress(stage, done, total, info)`` when there is one."""
    if progress is not None:
        progress(stage, done, total, info or {})
