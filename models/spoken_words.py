"""The ``spoken_words`` family: zero-shot spoken-word classification with Whisper's decoder.

No training and no weights of its own: the classes are given per request (a job's or ``/predict``'s
``classes``; the ten digits ``zero`` ... ``nine`` by default) and each is scored by how likely
Whisper's decoder finds its spellings given the audio. For a class ``w`` the spellings are
``" W."`` (capitalised, with the full stop Whisper writes after a one-word utterance) and, for a
digit word or a digit, the other form (``" 0."`` for ``zero``, ``" Seven."`` for ``7``). A class's
score is the log of the summed probability of its spellings' tokens
(``log sum_s prod_t p(token_t | audio, tokens_<t)``); :meth:`SpokenWords.forward` returns these
scores as logits, so the inference engine's softmax normalises them over the classes asked for.

How it runs (CTranslate2, the faster-whisper folder's ``model.bin``, identified by sha256 in
``hparams`` like the ``whisper_probe`` family): each window's log-mel (its real length, padded with
silence to ``min_audio_s``) is encoded once, and one ``Whisper.align`` call scores every spelling of
every class for all windows of that length, the encoder output repeated along the batch axis (one
call per candidate was several times slower).

Shapes: ``prepare_inputs(windows [n, samples]) -> {"wave": [n, width], "lengths": [n]}`` (NumPy);
``forward -> [n, n_classes]`` log-scores.
"""

from __future__ import annotations

import copy
import threading
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from models.word_classes import DIGITS, check_classes, spellings

__all__ = ["DIGITS", "SpokenWords", "build_spoken_words", "check_classes", "spellings"]

SAMPLE_RATE = 16000
HOP = 160
#: a token probability is never taken as less than this (log 1e-30 = -69)
_PROB_FLOOR = 1e-30
#: windows per ``align`` call (each repeated once per spelling). One is fastest on a CPU: ten FSDD digits,
#: 20 spellings, one thread, seconds per digit at 1 / 3 / 6 / 12 windows per call: 0.39 / 0.48 / 0.63 / 0.66
ALIGN_WINDOWS = 1


class _Decoder:
    """CTranslate2's Whisper and its tokenizer for one folder, shared by every class list."""

    def __init__(self, folder: Path, *, compute_type: str, threads: int, device: str = "cpu") -> None:
        import ctranslate2
        from tokenizers import Tokenizer

        self.model = ctranslate2.models.Whisper(str(folder), device=device, compute_type=compute_type, intra_threads=threads)
        self.tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        ids = self.tokenizer.token_to_id
        start = [ids("<|startoftranscript|>")]
        if self.model.is_multilingual:
            start += [ids("<|en|>"), ids("<|transcribe|>")]
        self.start = start + [ids("<|notimestamps|>")]
        self.compute_type, self.threads, self.device = compute_type, threads, device
        self.lock = threading.Lock()
        self._mel: Any = None

    def tokens(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text, add_special_tokens=False).ids)

    def mel(self, wave: np.ndarray) -> np.ndarray:
        """Log-mel ``[80, frames]`` of ``wave`` (faster-whisper's extractor, the one transcription uses)."""
        if self._mel is None:
            from faster_whisper.feature_extractor import FeatureExtractor

            self._mel = FeatureExtractor(feature_size=self.model.n_mels)
        return self._mel(wave)[:, : max(2, len(wave) // HOP)]


_DECODERS: dict[tuple[str, str, int, str], _Decoder] = {}
_DECODERS_LOCK = threading.Lock()


def _decoder(folder: Path, compute_type: str, threads: int, device: str = "cpu") -> _Decoder:
    key = (str(folder), compute_type, int(threads), device)
    with _DECODERS_LOCK:
        if key not in _DECODERS:
            _DECODERS[key] = _Decoder(folder, compute_type=compute_type, threads=int(threads), device=device)
        return _DECODERS[key]


class SpokenWords(nn.Module):
    """Whisper's decoder as a classifier over ``classes`` (see the module docstring).

    Parameters
    ----------
    classes : sequence of str
        The default classes (:data:`DIGITS` for the shipped model); :meth:`with_classes` gives a
        view over others that shares the loaded Whisper.
    encoder_sha256 : str
        sha256 of the ``model.bin`` the model was measured with (another Whisper is refused).
    min_audio_s : float
        A window shorter than this is padded with silence to it before Whisper hears it.
    """

    variable_length = True
    #: classes come from the request, not from training
    zero_shot = True

    def __init__(self, classes: tuple[str, ...] = DIGITS, *, encoder_sha256: str = "", min_audio_s: float = 3.0,
                 compute_type: str = "int8") -> None:
        super().__init__()
        self.classes = tuple(check_classes(list(classes)))
        self.encoder_sha256 = encoder_sha256
        self.min_audio_s = float(min_audio_s)
        self.compute_type = compute_type
        self._decoder: _Decoder | None = None
        self._tokens: dict[str, list[list[int]]] = {}

    # -- the Whisper it runs on ---------------------------------------------------------------

    def attach_encoder(self, folder: str | Path | None = None, *, threads: int | None = None) -> _Decoder:
        """Load (once per process) the Whisper folder whose ``model.bin`` is ``encoder_sha256``."""
        if self._decoder is None or folder is not None:
            from models.whisper_encoder import check_model_dir, file_sha256
            from models.whisper_probe import find_encoder_dir

            if folder is None:
                path = find_encoder_dir(self.encoder_sha256 or None)
            else:
                path = check_model_dir(folder)
                if self.encoder_sha256 and file_sha256(path / "model.bin") != self.encoder_sha256:
                    from models.whisper_encoder import WhisperModelError

                    raise WhisperModelError(f"{path} does not hold the Whisper this model was measured with")
            self._decoder = _decoder(path, self.compute_type, int(threads or torch.get_num_threads()))
        return self._decoder

    def use_engine(self, engine: str = "auto", *, compute_type: str = "int8", threads: int | None = None) -> str:
        """The worker runtime's engine choice: always CTranslate2 (there is no torch decoder), on the
        CPU with ``compute_type`` and ``threads``; returns ``"ctranslate2"``."""
        from models.whisper_probe import find_encoder_dir

        self.compute_type = compute_type or self.compute_type
        self._decoder = _decoder(find_encoder_dir(self.encoder_sha256 or None), self.compute_type,
                                 int(threads or torch.get_num_threads()))
        return "ctranslate2"

    def with_classes(self, classes: Any) -> SpokenWords:
        """A view of this model over other ``classes`` (validated by :func:`check_classes`); it
        shares the loaded Whisper and costs nothing to make."""
        view = copy.copy(self)
        object.__setattr__(view, "classes", tuple(check_classes(classes)))
        object.__setattr__(view, "_tokens", {})
        return view

    # -- inference --------------------------------------------------------------------------

    def prepare_inputs(self, windows: np.ndarray, device: Any = None) -> dict[str, np.ndarray]:
        """``[n, samples]`` zero-padded windows -> their real audio: ``{"wave" [n, width], "lengths" [n]}``
        (trailing zeros are padding; the batch is only as wide as its longest window)."""
        windows = np.atleast_2d(np.asarray(windows, dtype=np.float32))
        nonzero = windows != 0
        last = np.where(nonzero.any(axis=1), windows.shape[1] - np.argmax(nonzero[:, ::-1], axis=1), 0)
        lengths = np.minimum(np.maximum(last, HOP * 2), windows.shape[1]).astype(np.int64)
        width = int(lengths.max()) if len(lengths) else 0
        return {"wave": np.ascontiguousarray(windows[:, :width]), "lengths": lengths}

    def _candidates(self) -> tuple[list[list[int]], np.ndarray]:
        """Token lists of every spelling of every class, and the class index of each ``[n_spellings]``."""
        rows, owner = [], []
        for k, word in enumerate(self.classes):
            if word not in self._tokens:
                dec = self.attach_encoder()
                self._tokens[word] = [dec.tokens(s) for s in spellings(word)]
            rows += self._tokens[word]
            owner += [k] * len(self._tokens[word])
        return rows, np.asarray(owner)

    def class_scores(self, waves: list[np.ndarray]) -> np.ndarray:
        """Log-scores ``[n, n_classes]`` of 16-kHz signals ``waves`` (each ``[time]``): per class, the log
        of the summed probability of its spellings."""
        import ctranslate2

        dec = self.attach_encoder()
        cands, owner = self._candidates()
        n_c = len(cands)
        pad = int(round(self.min_audio_s * SAMPLE_RATE))
        encoded: dict[int, list[tuple[int, np.ndarray]]] = {}
        frames_of: dict[int, int] = {}
        for i, w in enumerate(waves):
            w = np.asarray(w, dtype=np.float32)
            if len(w) < pad:
                w = np.concatenate([w, np.zeros(pad - len(w), dtype=np.float32)])
            mel = dec.mel(w)
            mel = mel[:, : mel.shape[1] // 2 * 2]  # an even number of frames: the encoder halves them
            with dec.lock:
                out = dec.model.encode(ctranslate2.StorageView.from_array(np.ascontiguousarray(mel[None])), to_cpu=True)
            enc = np.asarray(out)
            encoded.setdefault(enc.shape[1], []).append((i, enc[0]))
            frames_of[i] = mel.shape[1]
        logp = np.zeros((len(waves), n_c))
        per_call = ALIGN_WINDOWS
        for group in encoded.values():  # windows of one length share align calls
            for s in range(0, len(group), per_call):
                part = group[s : s + per_call]
                feats = np.ascontiguousarray(np.repeat(np.stack([e for _, e in part]), n_c, axis=0))
                tokens = [c for _ in part for c in cands]
                frames = [frames_of[i] for i, _ in part for _ in cands]
                with dec.lock:
                    res = dec.model.align(ctranslate2.StorageView.from_array(feats), dec.start, tokens, frames)
                scores = np.array([np.log(np.maximum(r.text_token_probs, _PROB_FLOOR)).sum() for r in res])
                for j, (i, _) in enumerate(part):
                    logp[i] = scores[j * n_c : (j + 1) * n_c]
        out = np.full((len(waves), len(self.classes)), -np.inf)
        for k in range(len(self.classes)):
            out[:, k] = np.logaddexp.reduce(logp[:, owner == k], axis=1)
        return out

    def forward(self, inputs: dict[str, np.ndarray]) -> torch.Tensor:
        """``prepare_inputs`` output -> class log-scores ``[n, n_classes]`` (float32)."""
        wave, lengths = inputs["wave"], inputs["lengths"]
        waves = [np.asarray(wave[i, : int(lengths[i])]) for i in range(len(lengths))]
        return torch.from_numpy(self.class_scores(waves).astype(np.float32))


def build_spoken_words(spec: Any, hparams: dict[str, Any], *, load_pretrained: bool = True) -> SpokenWords:
    """A :class:`SpokenWords` over the spec's labels (its default classes) with ``hparams``
    ``encoder_sha256``, ``min_audio_s`` and ``compute_type``; Whisper attaches on first use."""
    return SpokenWords(tuple(spec.labels) or DIGITS, encoder_sha256=str(hparams.get("encoder_sha256") or ""),
                       min_audio_s=float(hparams.get("min_audio_s", 3.0)),
                       compute_type=str(hparams.get("compute_type", "int8")))
