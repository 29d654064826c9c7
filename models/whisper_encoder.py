"""Whisper's audio encoder in torch, loaded from a CTranslate2 (faster-whisper) model folder.

faster-whisper (CTranslate2) runs language identification and transcription, but its encoder
returns only the last layer and needs 30-s inputs. Accent features want every layer's hidden
states over unpadded windows, batched on the worker's device, so the encoder is re-built here from
the *same* ``model.bin`` (no second copy of the weights): the CTranslate2 file is read directly
(:func:`read_ct2_variables`) and its ``encoder/*`` tensors are copied into :class:`WhisperEncoder`.
``tests/models/test_whisper_encoder.py`` checks the result against CTranslate2's own encoder.

Shapes: waveforms ``[batch, samples]`` at 16 kHz; log-mel ``[batch, n_mels, frames]`` (100 frames
per second); hidden states ``[batch, frames / 2, d_model]`` (50 per second, at most 1500 = 30 s).
"""

from __future__ import annotations

import hashlib
import json
import struct
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

SAMPLE_RATE = 16000
N_FFT = 400
HOP = 160
#: Whisper's encoder takes at most 30 s (1500 positions after the stride-2 convolution)
MAX_SECONDS = 30.0

# CTranslate2's DataType enum (include/ctranslate2/types.h)
_CT2_DTYPES: dict[int, Any] = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16}
_CT2_BF16 = 5


class WhisperModelError(RuntimeError):
    """A Whisper model folder that is missing, incomplete or not what it claims to be."""


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def check_model_dir(path: str | Path, expected_sha256: str | None = None) -> Path:
    """Check that ``path`` is a faster-whisper model folder; return it resolved.

    Raises :class:`WhisperModelError` naming what is missing (or the hash that does not match),
    so a worker refuses to start and the readiness check says why, instead of a job's traceback.
    """
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise WhisperModelError(f"Whisper model folder {folder} does not exist (run `make setup`, or set WHISPER_MODEL_DIR)")
    missing = [name for name in ("model.bin", "config.json") if not (folder / name).is_file()]
    if not ((folder / "tokenizer.json").is_file() or (folder / "vocabulary.txt").is_file()):
        missing.append("tokenizer.json")
    if missing:
        raise WhisperModelError(f"Whisper model folder {folder} lacks {', '.join(missing)}")
    if expected_sha256:
        got = file_sha256(folder / "model.bin")
        if got != expected_sha256:
            raise WhisperModelError(f"{folder / 'model.bin'} has sha256 {got}, expected {expected_sha256} (corrupt or replaced)")
    return folder.resolve()


def read_ct2_variables(path: str | Path, prefix: str = "encoder/") -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Read the variables of a CTranslate2 ``model.bin`` whose names start with ``prefix``.

    Returns
    -------
    variables : dict
        ``name -> np.ndarray`` (float16 / float32 / int8 / int16 / int32; bfloat16 as float32).
    header : dict
        ``binary_version``, ``spec`` (e.g. ``WhisperSpec``), ``revision``.
    """
    out: dict[str, np.ndarray] = {}
    with open(path, "rb") as fh:

        def take(fmt: str) -> tuple:
            size = struct.calcsize("<" + fmt)
            return struct.unpack("<" + fmt, fh.read(size))

        def text() -> str:
            (n,) = take("H")
            return fh.read(n).rstrip(b"\0").decode("utf-8")

        (version,) = take("I")
        if version < 5:
            raise WhisperModelError(f"{path}: CTranslate2 binary version {version} is too old (need 5 or newer)")
        spec = text()
        (revision,) = take("I")
        (n_vars,) = take("I")
        for _ in range(n_vars):
            name = text()
            (rank,) = take("B")
            dims = take("I" * rank) if rank else ()
            (dtype_id,) = take("B")
            (n_bytes,) = take("I")
            if not name.startswith(prefix):
                fh.seek(n_bytes, 1)
                continue
            raw = fh.read(n_bytes)
            if dtype_id == _CT2_BF16:
                arr = (np.frombuffer(raw, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)
            elif dtype_id in _CT2_DTYPES:
                arr = np.frombuffer(raw, dtype=_CT2_DTYPES[dtype_id])
            else:
                raise WhisperModelError(f"{path}: variable {name} has unknown CTranslate2 type {dtype_id}")
            out[name[len(prefix):]] = arr.reshape(dims) if dims else arr.reshape(())
    return out, {"binary_version": version, "spec": spec, "revision": revision}


def _dequantise(variables: dict[str, np.ndarray], name: str) -> np.ndarray:
    w = variables[name]
    scale = variables.get(name + "_scale")
    if w.dtype == np.int8 or scale is not None:
        if scale is None:
            raise WhisperModelError(f"quantised variable {name} has no scale")
        s = np.asarray(scale, dtype=np.float32)
        s = s.reshape(-1, *([1] * (w.ndim - 1))) if s.ndim else s
        return w.astype(np.float32) / s
    return w.astype(np.float32)


class WhisperMel(nn.Module):
    """Whisper's log-mel front end: ``[batch, samples]`` -> ``[batch, n_mels, samples // 160]``.

    Same arithmetic as Whisper's: 25-ms Hann STFT every 10 ms, Slaney mel filters, log10 floored at
    1e-10, dynamic range clipped to 8 (per window, since windows are not padded to 30 s here), then
    ``(x + 4) / 4``. ``lengths`` (valid samples per row) keep zero padding out of the range clip.
    """

    def __init__(self, n_mels: int = 80, filters: torch.Tensor | None = None) -> None:
        super().__init__()
        if filters is None:  # given: a machine without librosa (bench/gpu.py's carried encoder)
            import librosa

            filters = torch.from_numpy(np.asarray(librosa.filters.mel(sr=SAMPLE_RATE, n_fft=N_FFT, n_mels=n_mels),
                                                  dtype=np.float32))
        self.register_buffer("filters", filters.float(), persistent=False)
        self.register_buffer("window", torch.hann_window(N_FFT), persistent=False)
        self.n_mels = n_mels

    def forward(self, wave: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        wave = wave.float()
        stft = torch.stft(wave, N_FFT, HOP, window=self.window, return_complex=True)
        power = stft[..., :-1].abs() ** 2  # [b, freq, frames]
        mel = self.filters @ power
        log = torch.clamp(mel, min=1e-10).log10()
        if lengths is not None:
            frames = torch.arange(log.shape[-1], device=log.device)
            valid = frames[None, :] < (lengths[:, None] // HOP).clamp(min=1)
            peak = log.masked_fill(~valid[:, None, :], float("-inf")).amax(dim=(1, 2), keepdim=True)
        else:
            peak = log.amax(dim=(1, 2), keepdim=True)
        log = torch.maximum(log, peak - 8.0)
        return (log + 4.0) / 4.0


class _Block(nn.Module):
    """Pre-LN transformer block (self-attention, GELU MLP), CTranslate2's fused QKV layout."""

    def __init__(self, d_model: int, n_heads: int) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.attn_ln = nn.LayerNorm(d_model)
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out = nn.Linear(d_model, d_model)
        self.mlp_ln = nn.LayerNorm(d_model)
        self.fc1 = nn.Linear(d_model, 4 * d_model)
        self.fc2 = nn.Linear(4 * d_model, d_model)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor | None) -> torch.Tensor:
        b, t, d = x.shape
        h = self.n_heads
        q, k, v = self.qkv(self.attn_ln(x)).view(b, t, 3, h, d // h).permute(2, 0, 3, 1, 4)
        mask = None if key_mask is None else key_mask[:, None, None, :]
        a = nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        x = x + self.out(a.transpose(1, 2).reshape(b, t, d))
        return x + self.fc2(nn.functional.gelu(self.fc1(self.mlp_ln(x))))


class WhisperEncoder(nn.Module):
    """Whisper's audio encoder with every layer's hidden states.

    Parameters
    ----------
    n_mels, d_model, n_heads, n_layers : int
        Sizes (base: 80, 512, 8, 6; tiny: 80, 384, 6, 4).
    """

    def __init__(self, n_mels: int = 80, d_model: int = 512, n_heads: int = 8, n_layers: int = 6, n_ctx: int = 1500,
                 mel_filters: torch.Tensor | None = None) -> None:
        super().__init__()
        self.mel = WhisperMel(n_mels, mel_filters)
        self.conv1 = nn.Conv1d(n_mels, d_model, 3, padding=1)
        self.conv2 = nn.Conv1d(d_model, d_model, 3, stride=2, padding=1)
        self.register_buffer("positions", torch.zeros(n_ctx, d_model))
        self.blocks = nn.ModuleList(_Block(d_model, n_heads) for _ in range(n_layers))
        self.ln_post = nn.LayerNorm(d_model)
        self.d_model, self.n_layers, self.n_ctx = d_model, n_layers, n_ctx

    @property
    def n_states(self) -> int:
        """Hidden states returned by :meth:`hidden_states`: the input embedding and one per layer."""
        return self.n_layers + 1

    def encode_mel(self, mel: torch.Tensor, frame_mask: torch.Tensor | None = None) -> list[torch.Tensor]:
        """``[batch, n_mels, frames]`` -> ``n_layers + 1`` states ``[batch, ceil(frames / 2), d_model]``.

        State 0 is the embedding (convolutions + positions), state ``i`` the output of block ``i``;
        the last state has ``ln_post`` applied, i.e. it is what Whisper's decoder (and CTranslate2's
        ``encode``) sees. ``frame_mask`` ``[batch, positions]`` (True = real audio) keeps padding out
        of attention.
        """
        x = nn.functional.gelu(self.conv1(mel))
        x = nn.functional.gelu(self.conv2(x)).transpose(1, 2)
        t = x.shape[1]
        if t > self.n_ctx:
            raise ValueError(f"{t} positions exceed Whisper's {self.n_ctx} (30 s); window longer audio first")
        x = x + self.positions[:t].to(x.dtype)
        states = [x]
        for i, block in enumerate(self.blocks):
            x = block(x, frame_mask)
            states.append(self.ln_post(x) if i == self.n_layers - 1 else x)
        return states

    def hidden_states(self, wave: torch.Tensor, lengths: torch.Tensor | None = None) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Waveforms -> (states, mask).

        Parameters
        ----------
        wave : torch.Tensor
            ``[batch, samples]`` at 16 kHz, at most 30 s; rows may be zero-padded.
        lengths : torch.Tensor, optional
            ``[batch]`` valid samples per row (default: all).

        Returns
        -------
        states : list of torch.Tensor
            ``n_layers + 1`` tensors ``[batch, positions, d_model]``.
        mask : torch.Tensor
            bool ``[batch, positions]``, True where the position holds real audio.
        """
        with torch.autocast(wave.device.type, enabled=False):  # the front end stays fp32 under bf16 autocast
            mel = self.mel(wave.float(), lengths)
        positions = (mel.shape[-1] + 1) // 2
        if lengths is None:
            mask = torch.ones(wave.shape[0], positions, dtype=torch.bool, device=wave.device)
        else:
            valid = (lengths // (2 * HOP)).clamp(min=1)
            mask = torch.arange(positions, device=wave.device)[None, :] < valid[:, None]
        mel = mel.to(self.conv1.weight.dtype)
        return self.encode_mel(mel, mask if lengths is not None else None), mask

    def load_ct2(self, variables: dict[str, np.ndarray]) -> None:
        """Copy CTranslate2 ``encoder/*`` variables (from :func:`read_ct2_variables`) into this module."""

        def put(param: torch.Tensor, name: str) -> None:
            value = torch.from_numpy(_dequantise(variables, name).copy())
            if value.shape != param.shape:
                raise WhisperModelError(f"{name}: shape {tuple(value.shape)} where {tuple(param.shape)} was expected")
            param.copy_(value)

        with torch.no_grad():
            put(self.conv1.weight, "conv1/weight")
            put(self.conv1.bias, "conv1/bias")
            put(self.conv2.weight, "conv2/weight")
            put(self.conv2.bias, "conv2/bias")
            put(self.positions, "position_encodings/encodings")
            for i, blk in enumerate(self.blocks):
                p = f"layer_{i}/"
                put(blk.attn_ln.weight, p + "self_attention/layer_norm/gamma")
                put(blk.attn_ln.bias, p + "self_attention/layer_norm/beta")
                put(blk.qkv.weight, p + "self_attention/linear_0/weight")
                put(blk.qkv.bias, p + "self_attention/linear_0/bias")
                put(blk.out.weight, p + "self_attention/linear_1/weight")
                put(blk.out.bias, p + "self_attention/linear_1/bias")
                put(blk.mlp_ln.weight, p + "ffn/layer_norm/gamma")
                put(blk.mlp_ln.bias, p + "ffn/layer_norm/beta")
                put(blk.fc1.weight, p + "ffn/linear_0/weight")
                put(blk.fc1.bias, p + "ffn/linear_0/bias")
                put(blk.fc2.weight, p + "ffn/linear_1/weight")
                put(blk.fc2.bias, p + "ffn/linear_1/bias")
            put(self.ln_post.weight, "layer_norm/gamma")
            put(self.ln_post.bias, "layer_norm/beta")


@dataclass(frozen=True)
class EncoderInfo:
    """Identity of a loaded encoder: where it came from and the hash of its weights file."""

    model_dir: str
    sha256: str
    d_model: int
    n_layers: int
    n_mels: int


_CACHE: dict[tuple[str, str], tuple[WhisperEncoder, EncoderInfo]] = {}
_LOCK = threading.Lock()


def load_encoder(model_dir: str | Path, *, device: Any = "cpu", expected_sha256: str | None = None) -> tuple[WhisperEncoder, EncoderInfo]:
    """Build :class:`WhisperEncoder` from a faster-whisper folder, once per process and device.

    The encoder is frozen (``requires_grad=False``), in ``eval()`` mode, float32 on ``device``.
    """
    folder = check_model_dir(model_dir, expected_sha256)
    key = (str(folder), str(device))
    with _LOCK:
        if key in _CACHE:
            return _CACHE[key]
        sha = expected_sha256 or file_sha256(folder / "model.bin")
        variables, header = read_ct2_variables(folder / "model.bin")
        if header["spec"] != "WhisperSpec":
            raise WhisperModelError(f"{folder}: a {header['spec']} model, not Whisper")
        config = json.loads((folder / "config.json").read_text())
        d_model = int(variables["conv1/weight"].shape[0])
        n_mels = int(variables["conv1/weight"].shape[1])
        n_layers = sum(1 for name in variables if name.endswith("self_attention/linear_0/weight"))
        n_heads = int(variables["num_heads"]) if "num_heads" in variables else max(1, d_model // 64)
        n_ctx = int(variables["position_encodings/encodings"].shape[0])
        del config  # read for its presence; sizes come from the weights themselves
        enc = WhisperEncoder(n_mels=n_mels, d_model=d_model, n_heads=n_heads, n_layers=n_layers, n_ctx=n_ctx)
        enc.load_ct2(variables)
        enc.eval().requires_grad_(False).to(device)
        info = EncoderInfo(str(folder), sha, d_model, n_layers, n_mels)
        _CACHE[key] = (enc, info)
        return enc, info
