"""Checkpoint save/load and the :class:`LoadedModel` wrapper the inference engine uses.

A checkpoint is a ``torch.save`` dict::

    {"format": 1, "spec": ModelSpec.to_dict(), "hparams": {...}, "state_dict": {...},
     "calibration": {...}, "metrics": {...}, "training_data": {...}}

``save_checkpoint`` also writes a JSON sidecar (``<name>.json``) with everything but the weights.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from models.fold import optimise_for_inference
from models.hooks import model_hook
from models.specs import ModelSpec

FORMAT_VERSION = 1


def build_model(spec: ModelSpec, hparams: dict[str, Any], *, load_pretrained: bool = True) -> nn.Module:
    """Instantiate the ``nn.Module`` for ``spec.family`` with ``hparams``.

    ``load_pretrained`` copies packaged pretrained weights (speaker_head's GE2E encoder) at build
    time; loading a checkpoint overwrites them anyway.
    """
    from models.registry import get_family

    return get_family(spec.family).build(spec, hparams, load_pretrained=load_pretrained)


@dataclass
class LoadedModel:
    """A model ready for inference.

    Attributes
    ----------
    model : nn.Module
        In ``eval()`` mode on :attr:`device`.
    spec : ModelSpec
        What the model outputs and its windowing.
    calibration : dict
        Temperature / priors / threshold (empty for embed models).
    meta : dict
        ``hparams``, ``metrics``, ``training_data`` from the checkpoint.
    sha256 : str
        sha256 of the checkpoint file (or of the packaged weights).
    device : torch.device
        Where inputs are placed.
    """

    model: nn.Module
    spec: ModelSpec
    calibration: dict[str, Any] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    sha256: str = ""
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    def prepare(self, windows: np.ndarray) -> Any:
        """Turn waveform windows into model input on :attr:`device`.

        Parameters
        ----------
        windows : np.ndarray
            ``[n, samples]`` float32 at ``spec.sample_rate``.

        Returns
        -------
        torch.Tensor or dict
            ``[n, samples]`` tensor for waveform models; the accent_embed family returns a dict
            with ``"wave" [n, samples]`` and ``"frames" [n, frames, n_frame_features]``.
        """
        windows = np.ascontiguousarray(np.atleast_2d(windows), dtype=np.float32)
        hook = model_hook(self.model, "prepare_inputs")
        if hook is not None:
            return hook(windows, self.device)
        return torch.from_numpy(windows).to(self.device)

    def logits(self, inputs: Any) -> torch.Tensor:
        """Model input from :meth:`prepare` -> ``[n, n_classes]`` raw logits.

        Classify models, and embed models that declare ``labels`` (accent_embed keeps its
        auxiliary classifier); a pure embedding model raises ``TypeError``.
        """
        if self.spec.task != "classify" and not self.spec.labels:
            raise TypeError(f"{self.spec.name} is an embedding model; use embed()")
        return self.model(inputs)

    def embed(self, inputs: Any) -> torch.Tensor:
        """Model input from :meth:`prepare` -> ``[n, dim]`` L2-normalised vectors."""
        return self.model.embed(inputs)


def _sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _jsonable(obj: Any) -> Any:
    """Recursively convert numpy scalars/arrays and tuples into JSON-able values."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    return obj


def save_checkpoint(
    path: str | Path,
    *,
    model: nn.Module,
    spec: ModelSpec,
    calibration: dict[str, Any] | None,
    hparams: dict[str, Any],
    metrics: dict[str, Any] | None = None,
    training_data: dict[str, Any] | None = None,
) -> str:
    """Write a checkpoint (and its ``.json`` sidecar); returns the checkpoint file's sha256.

    Non-persistent buffers are not stored; frozen pretrained weights are (the file is then
    self-contained).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    payload = {
        "format": FORMAT_VERSION,
        "spec": spec.to_dict(),
        "hparams": _jsonable(hparams),
        "state_dict": state,
        "calibration": _jsonable(calibration or {}),
        "metrics": _jsonable(metrics or {}),
        "training_data": _jsonable(training_data or {}),
    }
    buf = io.BytesIO()
    torch.save(payload, buf)
    data = buf.getvalue()
    path.write_bytes(data)
    sha = _sha256_bytes(data)
    sidecar = {k: v for k, v in payload.items() if k != "state_dict"}
    sidecar["sha256"] = sha
    sidecar["size_bytes"] = len(data)
    path.with_suffix(".json").write_text(json.dumps(sidecar, indent=2, sort_keys=True) + "\n")
    return sha


class CheckpointRefused(ValueError):
    """A checkpoint file that is not what it should be: another hash than expected, or content
    that is not a plain checkpoint (pickled objects beyond tensors and containers)."""


def _read_payload(path: Path, expected_sha256: str = "") -> tuple[bytes, dict[str, Any], ModelSpec, nn.Module]:
    """Read, hash first, then unpickle with ``weights_only=True`` (tensors, dicts, lists, numbers,
    strings only): a file that is not the expected one is never unpickled, and even an expected one
    cannot run code on load."""
    data = path.read_bytes()
    sha = _sha256_bytes(data)
    if expected_sha256 and sha != expected_sha256:
        raise CheckpointRefused(
            f"{path.name}: sha256 {sha[:12]}... is not the registered {expected_sha256[:12]}...; not loaded.")
    try:
        payload = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle.UnpicklingError for a forbidden global, or a file that is no checkpoint
        raise CheckpointRefused(
            f"{path.name}: not a plain checkpoint (only tensors and plain containers load): {str(exc)[:300]}") from exc
    if not isinstance(payload, dict):
        raise CheckpointRefused(f"{path.name}: not a checkpoint (a {type(payload).__name__}, not a dict).")
    if payload.get("format") != FORMAT_VERSION:
        raise ValueError(f"{path}: unsupported checkpoint format {payload.get('format')!r}")
    spec = ModelSpec.from_dict(payload["spec"])
    model = build_model(spec, payload["hparams"], load_pretrained=False)
    model.load_state_dict(payload["state_dict"])
    return data, payload, spec, model


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """A checkpoint as it was saved, for building on it (e.g. a fusion around a shipped window
    model): ``model`` (CPU, eval mode, not inference-optimised), ``spec``, ``calibration``,
    ``hparams``, ``metrics``, ``training_data`` and ``sha256``."""
    data, payload, spec, model = _read_payload(Path(path))
    model.eval()
    return {"model": model, "spec": spec, "sha256": _sha256_bytes(data),
            **{k: dict(payload.get(k) or {}) for k in ("calibration", "hparams", "metrics", "training_data")}}


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu", *, expected_sha256: str = "") -> LoadedModel:
    """Load a checkpoint written by :func:`save_checkpoint` into a :class:`LoadedModel` (eval mode,
    rewritten for speed by :func:`models.fold.optimise_for_inference`: for inference only).

    ``expected_sha256``: the registered hash; a file with another one raises :class:`CheckpointRefused`
    before anything in it is unpickled."""
    data, payload, spec, model = _read_payload(Path(path), expected_sha256)
    device = torch.device(device)
    model.to(device).eval()
    optimise_for_inference(model)  # same outputs, about 2x faster conv nets on CPU (models/fold.py)
    meta = {k: payload.get(k, {}) for k in ("hparams", "metrics", "training_data")}
    return LoadedModel(
        model=model,
        spec=spec,
        calibration=dict(payload.get("calibration") or {}),
        meta=meta,
        sha256=_sha256_bytes(data),
        device=device,
    )


def load_speaker_encoder(device: str | torch.device = "cpu") -> LoadedModel:
    """The pretrained resemblyzer GE2E speaker encoder as an embed model (no checkpoint file).

    ``embed``: ``[n, samples]`` 16 kHz windows -> ``[n, 256]``; 1.6 s windows as resemblyzer uses.
    ``sha256`` is that of the packaged weights file.
    """
    from models.speaker_head import GE2EEncoder

    spec = ModelSpec(
        name="speaker-encoder-ge2e",
        version="resemblyzer-0.1.4",
        family="speaker_encoder",
        task="embed",
        labels=(),
        sample_rate=16000,
        window_s=1.6,
        hop_s=0.8,
        embedding_dim=256,
        extra={"source": "resemblyzer pretrained.pt (GE2E)", "band_limit_hz": None},
    )
    enc = GE2EEncoder()
    sha = enc.load_pretrained()
    device = torch.device(device)
    enc.to(device).eval()
    return LoadedModel(model=enc, spec=spec, calibration={}, meta={"hparams": {}}, sha256=sha, device=device)


def load_served(path: str | Path, *, engine: str = "auto", threads: int | None = None) -> tuple[LoadedModel, str | None]:
    """:func:`load_checkpoint`, then served as a worker serves it: a Whisper-based module attaches its
    encoder and picks ``engine`` (``auto``: CTranslate2 int8 on a CPU where the probe allows it).
    Returns the model and the engine it runs on (None for a module without one)."""
    from models.hooks import model_hook

    loaded = load_checkpoint(path)
    attach = model_hook(loaded.model, "attach_encoder")
    if attach is not None:
        attach()
    choose = model_hook(loaded.model, "use_engine")
    chosen = choose(engine, threads=threads or torch.get_num_threads()) if choose is not None else None
    return loaded, chosen
