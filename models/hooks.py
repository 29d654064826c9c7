"""The model contract: every optional attribute that code finds on a family's module (or on a loaded
model) by name, with its default, written down once.

A family's ``nn.Module`` needs only ``forward(inputs) -> [batch, n_classes]`` and ``embed(inputs)``;
everything in :class:`ModelHooks` is optional, and a module without it behaves as the default says.
Code reads a hook through :func:`model_hook` (never a bare ``getattr`` with a hook's name: the test
``tests/models/test_hooks.py`` looks), so a new hook is one line in the Protocol and one in
:data:`HOOK_DEFAULTS`. Pure Python: no torch, no Django.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Protocol


class ModelHooks(Protocol):
    """What the pipeline may ask of a model family's module (the defaults are :data:`HOOK_DEFAULTS`).

    Inference (``workers/pipeline/inference.py``, ``batching.py``) and the worker's runtime
    ----------------------------------------------------------------------------------------
    prepare_inputs(windows [batch, samples] float32 numpy, device) -> model input
        Default: the windows as a float tensor on ``device``.
    variable_length : bool
        The module runs only the real length of its windows (``whisper_probe``), so batches are cut by
        length. Default False: every window runs at full length.
    needs_transcript : bool
        It fuses features of each recording's transcript (``reading_fusion``); classify jobs with
        ``"transcript": "auto"`` have Whisper transcribe recordings without one. Default False.
    needs_phone_features : bool
        It fuses phone-recogniser features of each recording (``phonetic_fusion``). Default False.
    passage : list of str
        The words of the passage a reading model scores (only recordings reading it are fused).
        Default: none.
    zero_shot : bool
        Its classes come from each request (``spoken_words``), not from training. Default False.
    input_level_dbfs : float or None
        The RMS level (dBFS) its training brought every whole recording to, DC removed
        (``workers.pipeline.data.normalise_signal``); inference does the same to each recording before
        windowing it (``whisper_probe``: the Whisper log-mel is not level-invariant). Default None:
        the samples as they are (a family that normalises inside its forward).
    attach_encoder(engine) / use_engine(name)
        A Whisper-based module shares the worker's faster-whisper engine / picks its engine
        (``workers/runtime.py``). Default: absent.
    conv_bn_pairs : iterable of (conv attribute, batch-norm attribute)
        Pairs ``models/fold.py`` folds for inference. Default: none.

    Training (``workers/pipeline/train_loop.py``)
    ---------------------------------------------
    train_loss(inputs, y, *, class_weight, hp) -> (loss, logits)
        The family's own loss. Default: label-smoothed cross-entropy on ``forward``.
    eval_logits(inputs) -> [n_windows, n_classes]
        Scores the inputs its training source yields (cached features). Default: ``forward``.
    train_source : str
        ``"wave"`` (waveform windows), ``"frames"`` (cached frame features) or ``"cached"`` (cached
        frozen-encoder features). Default ``"wave"``.
    embedding_dim : int or None
        The embedding size the module chose. Default None.

    The loaded model (``models.checkpoint.LoadedModel`` or a stand-in with its attributes)
    ------------------------------------------------------------------------------------
    calibration : dict or None
        Temperature, priors and thresholds fitted in training. Default None: softmax only.
    device : str
        Default ``"cpu"``.
    """

    variable_length: bool
    needs_transcript: bool
    needs_phone_features: bool
    passage: list[str] | None
    zero_shot: bool
    input_level_dbfs: float | None
    conv_bn_pairs: Iterable[tuple[str, str]]
    train_source: str
    embedding_dim: int | None
    calibration: dict[str, Any] | None
    device: Any
    prepare_inputs: Callable[..., Any] | None
    attach_encoder: Callable[..., Any] | None
    use_engine: Callable[..., Any] | None
    train_loss: Callable[..., Any] | None
    eval_logits: Callable[..., Any] | None


#: each hook's value for a module that does not define it
HOOK_DEFAULTS: dict[str, Any] = {
    "variable_length": False,
    "needs_transcript": False,
    "needs_phone_features": False,
    "passage": None,
    "zero_shot": False,
    "input_level_dbfs": None,
    "conv_bn_pairs": (),
    "train_source": "wave",
    "embedding_dim": None,
    "calibration": None,
    "device": "cpu",
    "prepare_inputs": None,
    "attach_encoder": None,
    "use_engine": None,
    "train_loss": None,
    "eval_logits": None,
}


def model_hook(model: Any, name: str) -> Any:
    """``model``'s hook ``name``, or its default (:data:`HOOK_DEFAULTS`) when the model has none;
    ``KeyError`` for a name the contract does not list. ``model`` may be None (every default)."""
    try:
        default = HOOK_DEFAULTS[name]
    except KeyError:
        raise KeyError(f"{name!r} is not in the model contract (models/hooks.py)") from None
    return getattr(model, name, default)
