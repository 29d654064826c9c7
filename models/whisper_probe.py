"""The ``whisper_probe`` family: a frozen Whisper encoder, pooled layer statistics and a linear head.

Whisper's encoder was trained to hear *what was said*, so its hidden states keep the phonetic
detail (vowel quality, stress, rhythm) that a speaker-verification encoder learns to ignore. This
family pools chosen encoder states over each window and feeds them, standardised, to a linear
layer: a logistic-regression probe fitted by ``workers.pipeline.whisper_training`` on cached
features (minutes on a CPU). For the ``embed`` task the same features go through a learned linear
projection (shrinkage LDA over accent labels) and are L2-normalised.

The encoder's weights are **not** in the checkpoint: they are the faster-whisper folder's
``model.bin`` (the bundled Whisper base by default), identified by its sha256 in ``hparams``; a
checkpoint refuses to run on another encoder (its features would mean something else).

Shapes: ``prepare_inputs(windows [n, samples]) -> {"wave": [n, samples], "lengths": [n]}``;
``encode -> [n, feature_dim]``; ``forward -> [n, n_classes]``; ``embed -> [n, embedding_dim]``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from models.frontends import BandLimit
from models.whisper_encoder import WhisperModelError, check_model_dir, file_sha256, load_encoder

#: the bundled model's folder name under the var dir (scripts/whisper_model.py assembles it)
BUNDLED_DIR_NAME = "whisper-base"
_SHA_CACHE: dict[str, str] = {}


def candidate_model_dirs() -> list[Path]:
    """Where a Whisper encoder may be found: ``WHISPER_MODEL_DIR``, then the bundled folders."""
    root = Path(__file__).resolve().parent.parent
    var = Path(os.environ.get("ACCENTSITE_VAR_DIR") or root / "var")
    dirs = [Path(os.environ["WHISPER_MODEL_DIR"])] if os.environ.get("WHISPER_MODEL_DIR") else []
    dirs += [var / "models" / BUNDLED_DIR_NAME, var / "models" / "whisper-tiny.en"]
    return dirs


def find_encoder_dir(sha256: str | None = None) -> Path:
    """The first candidate folder holding a valid model whose ``model.bin`` hash is ``sha256``
    (any valid folder when ``sha256`` is None); raises :class:`WhisperModelError` saying why not."""
    reasons = []
    for folder in candidate_model_dirs():
        try:
            folder = check_model_dir(folder)
        except WhisperModelError as exc:
            reasons.append(str(exc))
            continue
        if sha256 is None:
            return folder
        key = str(folder)
        if key not in _SHA_CACHE:
            _SHA_CACHE[key] = file_sha256(folder / "model.bin")
        if _SHA_CACHE[key] == sha256:
            return folder
        reasons.append(f"{folder} holds another model (sha256 {_SHA_CACHE[key][:12]}...)")
    raise WhisperModelError(f"no Whisper encoder with sha256 {sha256} found: " + "; ".join(reasons))


class WhisperProbe(nn.Module):
    """Frozen Whisper encoder -> pooled states -> standardise -> linear.

    Parameters
    ----------
    n_outputs : int
        Classes (classify) or embedding size (embed).
    states : sequence of int
        Which hidden states to pool (0 = embedding, ``i`` = block ``i``; see
        ``WhisperEncoder.encode_mel``).
    pooling : str
        ``"mean"`` or ``"mean_std"`` over the window's real (unpadded) positions.
    d_model : int
        Encoder width.
    band_limit_hz : float or None
        Low-pass of the waveform before the encoder (4 kHz: most SAA clips are 8 kHz sourced).
    task : str
        ``classify`` (``head`` gives logits) or ``embed`` (``head`` is a projection).
    encoder_sha256 : str
        sha256 of the ``model.bin`` the probe was fitted on.
    """

    #: its input is only as long as the batch's longest real window: the inference loop cuts batches by length
    variable_length = True

    def __init__(self, n_outputs: int, states: tuple[int, ...], pooling: str = "mean", d_model: int = 512,
                 band_limit_hz: float | None = 4000.0, task: str = "classify", encoder_sha256: str = "",
                 input_level_dbfs: float | None = None) -> None:
        super().__init__()
        #: the level training brought each recording to (``models.hooks``); inference does the same
        self.input_level_dbfs = input_level_dbfs
        if pooling not in ("mean", "mean_std"):
            raise ValueError(f"unknown pooling {pooling!r}")
        self.states = tuple(int(s) for s in states)
        self.pooling = pooling
        self.task = task
        self.encoder_sha256 = encoder_sha256
        self.band_limit = BandLimit(16000, band_limit_hz)
        self.feature_dim = len(self.states) * d_model * (2 if pooling == "mean_std" else 1)
        self.register_buffer("feat_mean", torch.zeros(self.feature_dim))
        self.register_buffer("feat_scale", torch.ones(self.feature_dim))
        self.head = nn.Linear(self.feature_dim, n_outputs)
        self.embedding_dim = n_outputs if task == "embed" else None
        # not a submodule (set past nn.Module.__setattr__): the encoder's weights stay out of the checkpoint
        object.__setattr__(self, "_encoder", None)
        self._encoder_device: Any = None
        self._encoder_dir: Path | None = None
        #: "torch" (every state, batched, CPU or CUDA) or "ctranslate2" (CTranslate2's own encoder, one
        #: window at a time, for a probe that reads only the last state; see :meth:`use_engine`)
        self.engine = "torch"
        self._ct2: Any = None

    # -- the frozen encoder ------------------------------------------------------------------

    def attach_encoder(self, encoder: Any = None) -> Any:
        """Load (once per process, per device) the encoder this probe was fitted on."""
        device = self.feat_mean.device
        if encoder is not None:
            object.__setattr__(self, "_encoder", encoder)
            self._encoder_device = device
        if self._encoder is None or self._encoder_device != device:
            folder = find_encoder_dir(self.encoder_sha256 or None)
            loaded, _ = load_encoder(folder, device=device, expected_sha256=self.encoder_sha256 or None)
            object.__setattr__(self, "_encoder", loaded)
            self._encoder_device = device
            self._encoder_dir = folder
        return self._encoder

    @property
    def reads_last_state_only(self) -> bool:
        """The probe uses only the encoder's output (the last state, ``ln_post`` applied): what
        CTranslate2's ``encode`` returns."""
        enc = self.attach_encoder()
        return self.states == (enc.n_states - 1,)

    def use_engine(self, engine: str = "auto", *, compute_type: str = "int8", threads: int | None = None) -> str:
        """Choose the encoder engine for inference; returns the one in use.

        ``torch``: the module's own encoder (every state; batched with padding masked; CPU or CUDA,
        bf16 under autocast). ``ctranslate2``: CTranslate2's Whisper encoder (``compute_type``, e.g.
        ``int8`` on a CPU), one window at a time at its own length, never padded -- allowed only for a
        probe that reads the last state alone. ``auto``: ``ctranslate2`` on a CPU where the probe
        allows it, else ``torch``. The trainer always caches features with the torch engine in fp32;
        ``bench/whisper.py`` measures how closely the CTranslate2 engine's predictions agree with them.
        """
        on_cpu = self.feat_mean.device.type == "cpu"
        if engine == "auto":
            engine = "ctranslate2" if on_cpu and self.reads_last_state_only else "torch"
        if engine == "ctranslate2":
            if not self.reads_last_state_only:
                raise ValueError(f"the ctranslate2 engine gives only the last state; this probe reads states {self.states}")
            if not on_cpu:
                raise ValueError("the ctranslate2 engine of a whisper_probe runs on the CPU here; use torch on CUDA")
            self._ct2 = _ct2_encoder(self._encoder_dir or find_encoder_dir(self.encoder_sha256 or None), compute_type,
                                     int(threads or torch.get_num_threads()))
        elif engine != "torch":
            raise ValueError(f"unknown engine {engine!r}")
        self.engine = engine
        return engine

    def _ct2_pooled(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """The last state's pooled statistics ``[n, 2, d_model]`` from CTranslate2, window by window
        (the spread only for ``mean_std`` pooling; zeros otherwise)."""
        import ctranslate2

        enc = self.attach_encoder()
        wave = self.band_limit(inputs["wave"].float())
        lengths = inputs.get("lengths")
        rows = []
        for i in range(wave.shape[0]):
            n = int(lengths[i]) if lengths is not None else wave.shape[1]
            padded = -(-n // 320) * 320  # an even number of mel frames; at most 20 ms of zeros
            row = nn.functional.pad(wave[i : i + 1, :n], (0, padded - n))
            mel = enc.mel(row, torch.tensor([n]))
            out = np.asarray(self._ct2.encode(ctranslate2.StorageView.from_array(np.ascontiguousarray(mel.numpy())),
                                              to_cpu=True))[0]
            h = torch.from_numpy(out[: max(1, n // 320)]).float()
            spread = h.std(dim=0, unbiased=False) if self.pooling == "mean_std" else torch.zeros(h.shape[1])
            rows.append(torch.stack([h.mean(dim=0), spread]))
        return torch.stack(rows)

    def prepare_inputs(self, windows: np.ndarray, device: Any) -> dict[str, torch.Tensor]:
        """``[n, samples]`` zero-padded windows -> wave and real lengths (trailing zeros are padding)."""
        windows = np.atleast_2d(windows)
        nonzero = windows != 0
        last = np.where(nonzero.any(axis=1), windows.shape[1] - np.argmax(nonzero[:, ::-1], axis=1), 0)
        lengths = np.minimum(np.maximum(last, 1600), windows.shape[1])  # at least 0.1 s
        # the batch is only as long as its longest real window (never padded to 30 s, nor to the window)
        width = min(windows.shape[1], int(-(-int(lengths.max()) // 320) * 320))
        wave = np.ascontiguousarray(windows[:, :width], dtype=np.float32)
        return {"wave": torch.from_numpy(wave).to(device), "lengths": torch.from_numpy(lengths.astype(np.int64)).to(device)}

    @torch.no_grad()
    def pooled_states(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """Every state's pooled statistics: ``[n, n_states, 2, d_model]`` (mean, std) in float32.

        This is what the trainer caches per recording; :meth:`encode` selects from it.
        """
        enc = self.attach_encoder()
        wave = self.band_limit(inputs["wave"].float())
        states, mask = enc.hidden_states(wave, inputs.get("lengths"))
        w = mask.to(torch.float32)[..., None]
        count = w.sum(dim=1).clamp(min=1.0)
        out = []
        for h in states:
            h = h.float()
            mean = (h * w).sum(dim=1) / count
            var = (((h - mean[:, None]) ** 2) * w).sum(dim=1) / count
            out.append(torch.stack([mean, var.clamp(min=0).sqrt()], dim=1))
        return torch.stack(out, dim=1)

    def select(self, pooled: torch.Tensor) -> torch.Tensor:
        """``[n, n_states, 2, d]`` pooled statistics -> ``[n, feature_dim]`` (this probe's states)."""
        picked = pooled[:, list(self.states)]
        if self.pooling == "mean":
            picked = picked[:, :, :1]
        return picked.reshape(picked.shape[0], -1)

    def encode(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """``prepare_inputs`` output -> standardised features ``[n, feature_dim]``."""
        if self.engine == "ctranslate2":
            pooled = self._ct2_pooled(inputs)
            feats = (pooled[:, :1] if self.pooling == "mean" else pooled).reshape(pooled.shape[0], -1)
            return (feats - self.feat_mean) / self.feat_scale
        feats = self.select(self.pooled_states(inputs))
        return (feats - self.feat_mean) / self.feat_scale

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """-> logits ``[n, n_classes]`` (classify) or the raw projection (embed)."""
        return self.head(self.encode(inputs))

    def embed(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """-> L2-normalised ``[n, n_outputs]``: the projection (embed task) or the logits' inputs'
        projection by the classifier's weights (classify task: a class-score vector)."""
        return nn.functional.normalize(self.head(self.encode(inputs)), dim=-1)

    def set_head(self, mean: np.ndarray, scale: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> None:
        """Install a fitted standardiser and linear layer (``weight [n_outputs, feature_dim]``)."""
        with torch.no_grad():
            self.feat_mean.copy_(torch.as_tensor(mean, dtype=torch.float32))
            self.feat_scale.copy_(torch.as_tensor(np.where(scale > 0, scale, 1.0), dtype=torch.float32))
            self.head.weight.copy_(torch.as_tensor(weight, dtype=torch.float32))
            self.head.bias.copy_(torch.as_tensor(bias, dtype=torch.float32))


_CT2: dict[tuple[str, str, int], Any] = {}


def _ct2_encoder(folder: Path, compute_type: str, threads: int) -> Any:
    """One CTranslate2 Whisper model per (folder, compute type, threads) in this process."""
    import ctranslate2

    key = (str(folder), compute_type, threads)
    if key not in _CT2:
        _CT2[key] = ctranslate2.models.Whisper(str(folder), device="cpu", compute_type=compute_type, intra_threads=threads)
    return _CT2[key]


def build_whisper_probe(spec: Any, hparams: dict[str, Any], *, load_pretrained: bool = True) -> WhisperProbe:
    """Build a :class:`WhisperProbe` from a spec and ``hparams`` (``states``, ``pooling``,
    ``d_model``, ``band_limit_hz``, ``encoder_sha256``); the encoder attaches on first use."""
    n_outputs = spec.n_classes if spec.task == "classify" else int(spec.embedding_dim or hparams.get("embedding_dim") or 0)
    if n_outputs < 1:
        raise ValueError("a whisper_probe embed model needs embedding_dim")
    return WhisperProbe(
        n_outputs,
        tuple(hparams.get("states") or (6,)),
        pooling=str(hparams.get("pooling", "mean")),
        d_model=int(hparams.get("d_model", 512)),
        band_limit_hz=hparams.get("band_limit_hz", 4000.0),
        task=spec.task,
        encoder_sha256=str(hparams.get("encoder_sha256") or ""),
        input_level_dbfs=trained_level_dbfs(spec),
    )


#: what ``spec.extra["normalisation"]`` of a whisper_probe says: its trainer brought every recording to
#: this RMS level (``workers.pipeline.data.load_utterances``) before windowing it
NORMALISATION = "per-utterance RMS -25 dBFS; Whisper log-mel per window"


def trained_level_dbfs(spec: Any) -> float | None:
    """The per-recording RMS level (dBFS) the trainer normalised to, from ``spec.extra["normalisation"]``;
    -25 when the spec does not say (accent-embed 2.0.0's spec left it out, but its trainer, like every
    whisper_probe run, normalised), None when it names no such level."""
    said = (spec.extra or {}).get("normalisation", NORMALISATION)
    found = re.match(r"per-utterance RMS (-?\d+(?:\.\d+)?) dBFS", str(said or ""))
    return float(found.group(1)) if found else None
