"""Which code trains which family: the one place where a registry entry's ``trainer`` key
(``models/registry.py``, plain data) becomes a function.

The trainers import nothing from here: :func:`train_model` hands itself to those that train another
family inside (a fusion trains its window model, then cross-validates it), so the training modules
form no import loop. A family that trains differently is one function and one entry in
:data:`TRAINERS`, named by its registry entry. Pure Python: no Django.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from models.registry import get_family
from workers.pipeline import train_loop
from workers.pipeline.fusion import train_fusion
from workers.pipeline.train_config import ProgressFn, TrainConfig, TrainResult
from workers.pipeline.whisper_training import train_whisper_probe

Trainer = Callable[..., TrainResult]  # trainer(config, *, progress=None) -> TrainResult


def train_model(config: TrainConfig, *, progress: ProgressFn | None = None) -> TrainResult:
    """Train, calibrate, evaluate and (optionally) save one model of ``config.family`` with its
    family's trainer; ``ValueError`` for a family that is unknown or not trained here.

    Returns
    -------
    TrainResult
        Checkpoint path and sha256 (when ``config.out`` is set), spec, calibration, metrics
        (``val``, ``test`` evaluation reports, ``history``) and the trained model.
    """
    family = get_family(config.family)
    if family.trainer is None:
        raise ValueError(f"model family {config.family!r} is not trained here")
    result = TRAINERS[family.trainer](config, progress=progress)
    if config.robustness and config.evaluate and result.checkpoint:
        result = _with_robustness(config, result, progress)
    return result


def _with_robustness(config: TrainConfig, result: TrainResult, progress: ProgressFn | None) -> TrainResult:
    """Score the saved checkpoint on degraded copies of its test clips and write the table into its
    metrics (the checkpoint is saved again, so ``sha256`` changes; the weights do not)."""
    from models.checkpoint import read_checkpoint, save_checkpoint
    from workers.pipeline.robustness import training_robustness
    from workers.pipeline.train_config import emit_progress

    report = training_robustness(config, result.checkpoint,
                                 progress=lambda name, k, n: emit_progress(progress, "robustness", k, n, {"condition": name}))
    if report is None:
        return result
    saved = read_checkpoint(result.checkpoint)
    metrics = {**saved["metrics"], "robustness": report}
    sha = save_checkpoint(result.checkpoint, model=saved["model"], spec=saved["spec"], calibration=saved["calibration"],
                          hparams=saved["hparams"], metrics=metrics, training_data=saved["training_data"])
    emit_progress(progress, "robustness", len(report["conditions"]), len(report["conditions"]))
    result.metrics["robustness"] = report
    result.sha256 = sha
    return result


def cross_validate(config: TrainConfig, k: int = 5, *, progress: ProgressFn | None = None) -> dict[str, Any]:
    """Speaker-grouped k-fold cross-validation of ``config`` with its family's trainer
    (:func:`workers.pipeline.train_loop.cross_validate` has the details)."""
    return train_loop.cross_validate(config, k, train=train_model, progress=progress)


#: registry ``trainer`` key -> trainer
TRAINERS: dict[str, Trainer] = {
    "window": train_loop.train_window_model,  # cnn, resnet, speaker_head, accent_embed: the generic loop
    "fusion": partial(train_fusion, train=train_model),  # a window model stacked with utterance features
    "whisper_probe": train_whisper_probe,  # cached frozen-encoder features + a probe chosen by cross-validation
}
