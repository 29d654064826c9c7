"""Spoken language identification with Whisper's language head (faster-whisper / CTranslate2).

No Django here: the engine is built from a model folder, a device and a compute type, once per
process (:func:`load_engine`), and :func:`identify_languages` works on 16-kHz mono samples.

How a recording is scored
-------------------------
The recording (its first ``scan_s`` seconds, or all of it) is first brought to a standard level
(:func:`workers.pipeline.audio.normalise_level`): quietly recorded speech is speech, and silero VAD
and Whisper's log-mel both hear a quiet recording worse. It is cut into windows of ``window_s``
seconds (the last one keeps what is left when that is at least 1 s, or the whole recording when it is
shorter than a window). Windows that silero VAD (:mod:`workers.pipeline.vad`) finds mostly silent
(speech under ``min_speech`` of the window) are skipped, and a speech window loses long silence at its
edges (``EDGE_SILENCE_S``) before Whisper hears it. Every speech window's log-mel goes to CTranslate2's
``Whisper.detect_language`` zero-padded to Whisper's 30 s, as faster-whisper does (``pad_windows``;
off, the window is heard unpadded, the encoder's positional embedding sliced: about 10x cheaper, but
right on 83 % of 132 real accent-mini speech windows against 96 % padded, docs/benchmarks.md).

A recording with fewer than ``min_windows`` speech windows (a short clip: one or two trimmed 4-s
windows each gave a weak, sometimes wrong answer) is instead heard **whole**: from just before its
first speech, up to 30 s, zero-padded to Whisper's 30 s as faster-whisper's ``detect_language``
does, and that answer is the recording's. Longer recordings take the windows' vote.

Whisper's language head always names a language; faster-whisper sets no floor on its probability
(its issue #1322). Here an answer whose probability (the whole's, or the mean over the speech
windows) is under ``min_probability`` is ``uncertain``: the language is kept as the best guess, and
the outcome says not to trust it. ``MIN_PROBABILITY`` was chosen by ``bench/language_id.py`` on
espeak-ng voices and accent-mini's SAA train clips (docs/benchmarks.md).

Shapes: samples ``[time]`` float32 at 16 kHz; a window's features ``[80, frames]`` (100 per second);
a batch ``[windows, 80, frames]``.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

SAMPLE_RATE = 16000
HOP = 160
#: Whisper's encoder sees at most 30 s
MAX_WINDOW_S = 30.0
MIN_WINDOW_S = 1.0
#: How many of a window's languages are kept in its ``top``
TOP_K = 5
#: How many languages the recording's ``mean_probabilities`` keeps (the rest of 99 are ~0)
MEAN_TOP_K = 10
#: Silence at a speech window's edge at least this long is cut off before Whisper hears the window
EDGE_SILENCE_S = 0.5
#: Frames of Whisper's 30-s input (what faster-whisper pads every segment to)
PADDED_FRAMES = 3000
#: A recording with fewer speech windows than this is heard whole, padded (see ``identify_languages``)
MIN_WINDOWS = 3
#: Under this probability the outcome is ``uncertain`` (chosen by ``bench/language_id.py``, docs/benchmarks.md)
MIN_PROBABILITY = 0.4
#: Windows go to the language head padded to 30 s: on 132 real accent-mini speech windows padded ones were
#: right on 96 % against 83 % unpadded (``bench/language_id.py``, docs/benchmarks.md), at ~10x the cost
PAD_WINDOWS = True

_engines: dict[tuple[str, str, str, int], WhisperEngine] = {}
_lock = threading.Lock()


class WhisperError(RuntimeError):
    """A Whisper model that cannot be used as asked (missing folder, other weights, English-only)."""


def language_codes() -> tuple[str, ...]:
    """The language codes Whisper knows (``en``, ``fr``, ... 100 of them)."""
    from faster_whisper.tokenizer import _LANGUAGE_CODES

    return tuple(_LANGUAGE_CODES)


@dataclass
class WhisperEngine:
    """A faster-whisper model as loaded: the model, where it runs, and what it is.

    ``name`` is the model folder's name, ``sha256`` the hash of its ``model.bin``.
    """

    model: Any
    model_dir: Path
    device: str
    compute_type: str
    sha256: str
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def name(self) -> str:
        return self.model_dir.name

    @property
    def multilingual(self) -> bool:
        return bool(self.model.model.is_multilingual)

    def describe(self) -> dict[str, str]:
        return {"model": self.name, "model_sha256": self.sha256, "device": self.device, "compute_type": self.compute_type}


def _compute_type(device: str, compute_type: str) -> str:
    if compute_type and compute_type != "auto":
        return compute_type
    return "float16" if device.startswith("cuda") else "int8"


def load_engine(model_dir: str | Path, *, device: str = "cpu", compute_type: str = "auto", expected_sha256: str = "",
                cpu_threads: int = 1) -> WhisperEngine:
    """The :class:`WhisperEngine` for a faster-whisper folder, built once per process and kept.

    ``device`` is ``cpu``, ``cuda`` or ``cuda:N`` (the worker runtime's device). When CUDA cannot be
    used (CTranslate2 built without it, no device, out of memory) the engine falls back to the CPU
    with int8 and logs why. ``compute_type`` ``auto`` means float16 on CUDA and int8 on the CPU.
    Raises :class:`WhisperError` when the folder is incomplete or ``model.bin`` is not
    ``expected_sha256`` (when given). Nothing is ever downloaded (``HF_HUB_OFFLINE=1``).
    """
    from models.whisper_encoder import WhisperModelError, check_model_dir, file_sha256

    try:
        folder = check_model_dir(model_dir)
    except WhisperModelError as exc:
        raise WhisperError(str(exc)) from exc
    key = (str(folder), device, compute_type, int(cpu_threads))
    with _lock:
        if key in _engines:
            return _engines[key]
        sha = file_sha256(folder / "model.bin")
        if expected_sha256 and sha != expected_sha256:
            raise WhisperError(f"{folder / 'model.bin'} has sha256 {sha}, expected {expected_sha256} (corrupt or replaced)")
        os.environ["HF_HUB_OFFLINE"] = "1"
        from faster_whisper import WhisperModel

        dev, index = (device.split(":", 1) + ["0"])[:2] if device.startswith("cuda") else ("cpu", "0")
        ctype = _compute_type(dev, compute_type)
        try:
            model = WhisperModel(str(folder), device=dev, device_index=int(index), compute_type=ctype,
                                 cpu_threads=int(cpu_threads), local_files_only=True)
        except (RuntimeError, ValueError) as exc:
            if dev == "cpu":
                raise WhisperError(f"Whisper model {folder} cannot be loaded: {exc}") from exc
            logger.warning("Whisper on %s failed (%s); falling back to the CPU with int8", device, exc)
            dev, ctype = "cpu", "int8"
            model = WhisperModel(str(folder), device="cpu", compute_type="int8", cpu_threads=int(cpu_threads), local_files_only=True)
        engine = WhisperEngine(model=model, model_dir=folder, device=dev if dev == "cpu" else device, compute_type=ctype, sha256=sha)
        _engines[key] = engine
        logger.info("loaded Whisper %s on %s (%s)", folder.name, engine.device, ctype)
        return engine


def validate_languages(languages: Sequence[str] | None) -> list[str] | None:
    """The restriction list, lower-cased and de-duplicated in order; ``ValueError`` naming unknown codes."""
    if languages is None:
        return None
    known = set(language_codes())
    cleaned = list(dict.fromkeys(str(code).strip().lower() for code in languages))
    unknown = [code for code in cleaned if code not in known]
    if unknown:
        raise ValueError(f"unknown language codes {unknown}; Whisper knows {', '.join(sorted(known))}")
    if not cleaned:
        raise ValueError("'languages' must name at least one language")
    return cleaned


def window_spans(duration_s: float, window_s: float) -> list[tuple[float, float]]:
    """Touching windows ``[(start_s, end_s)]`` over a recording; a tail under 1 s is dropped
    (unless it is the whole recording)."""
    if duration_s <= 0:
        return []
    spans, start = [], 0.0
    while start < duration_s - 1e-9:
        end = min(start + window_s, duration_s)
        if end - start >= MIN_WINDOW_S or not spans:
            spans.append((round(start, 3), round(end, 3)))
        start += window_s
    return spans


def _trim_to_speech(span: tuple[float, float], stamps: Sequence[tuple[float, float]]) -> tuple[float, float]:
    """A window without the silence at its edges when that lasts ``EDGE_SILENCE_S`` or more (e.g.
    where speech starts 2 s into it: a long silence sways the language head, while the short pauses
    around words help it; trimming every pause turned espeak Polish into Russian / Finnish here); the
    window itself when what is left spans under 1 s."""
    start, end = span
    inside = [(max(s, start), min(e, end)) for s, e in stamps if e > start and s < end]
    if not inside:
        return span
    a, b = inside[0][0], inside[-1][1]
    a = a if a - start >= EDGE_SILENCE_S else start
    b = b if end - b >= EDGE_SILENCE_S else end
    return (a, b) if b - a >= MIN_WINDOW_S else span


def restrict_languages(probs: dict[str, float], languages: Sequence[str] | None) -> dict[str, float]:
    """``probs`` renormalised over ``languages`` only (all of them when None); uniform where none has mass."""
    if not languages:
        return probs
    picked = {code: probs.get(code, 0.0) for code in languages}
    total = sum(picked.values())
    if total <= 0:
        return {code: 1.0 / len(picked) for code in picked}
    return {code: p / total for code, p in picked.items()}


def _detect_batch(engine: WhisperEngine, features: list[np.ndarray], batch_size: int) -> list[dict[str, float]]:
    """Language probabilities ``{code: p}`` (all of Whisper's languages) for each ``[80, frames]`` window;
    windows of one length share a forward pass (``batch_size`` at most)."""
    import ctranslate2

    out: list[dict[str, float] | None] = [None] * len(features)
    by_len: dict[int, list[int]] = {}
    for i, f in enumerate(features):
        by_len.setdefault(f.shape[-1], []).append(i)
    for indices in by_len.values():  # trimmed windows differ in length: those run one by one
        for start in range(0, len(indices), batch_size):
            part = indices[start : start + batch_size]
            stacked = np.ascontiguousarray(np.stack([features[i] for i in part]).astype(np.float32))
            view = ctranslate2.StorageView.from_array(stacked)  # CTranslate2 moves it to the model's device
            with engine.lock:
                results = engine.model.model.detect_language(view)
            for i, pairs in zip(part, results, strict=True):
                out[i] = {token[2:-2]: float(p) for token, p in pairs}
    return [o or {} for o in out]


def window_features(engine: WhisperEngine, audio: np.ndarray, *, padded: bool) -> np.ndarray:
    """One window's log-mel ``[80, frames]``: unpadded (100 frames per second of ``audio``) or, as
    faster-whisper's ``detect_language`` does it, zero-padded (or cut) to Whisper's 30 s (3000 frames)."""
    from faster_whisper.audio import pad_or_trim

    f = engine.model.feature_extractor(audio)
    if padded:
        return pad_or_trim(f[:, : PADDED_FRAMES], PADDED_FRAMES)
    return f[:, : max(1, len(audio) // HOP)]


def _speech_extent(stamps: Sequence[tuple[float, float]], end_s: float) -> tuple[float, float]:
    """Where a short recording is heard whole: from ``EDGE_SILENCE_S`` before its first speech to at most
    30 s later (faster-whisper hears the first 30 s)."""
    first = stamps[0][0] if stamps else 0.0
    start = max(0.0, first - EDGE_SILENCE_S)
    return round(start, 3), round(min(end_s, start + MAX_WINDOW_S), 3)


def language_options(params: dict[str, Any]) -> dict[str, Any]:
    """``identify_languages`` keyword arguments from a language job's (validated) params."""
    keys = {"window_s": float, "languages": list, "vad": bool, "scan_s": float, "min_windows": int,
            "min_probability": float, "pad_windows": bool}
    return {key: (cast(params[key]) if params[key] is not None else None) for key, cast in keys.items() if key in params}


def identify_languages(
    engine: WhisperEngine,
    samples: np.ndarray,
    *,
    window_s: float = 4.0,
    languages: Sequence[str] | None = None,
    vad: bool = True,
    min_speech: float = 0.3,
    batch_size: int = 8,
    scan_s: float | None = None,
    min_windows: int = MIN_WINDOWS,
    min_probability: float = MIN_PROBABILITY,
    pad_windows: bool = PAD_WINDOWS,
    normalise: bool = True,
) -> dict[str, Any]:
    """The spoken language of one recording, window by window and overall, or ``uncertain``.

    Parameters
    ----------
    engine : WhisperEngine
        A multilingual Whisper (:func:`load_engine`).
    samples : np.ndarray
        Mono float32 ``[time]`` at 16 kHz, at any level (it is normalised first, see ``normalise``).
    window_s : float
        Window length, in ``[1, 30]`` seconds.
    languages : sequence of str, optional
        Restrict the answer to these codes; probabilities are renormalised over them.
    vad : bool
        Skip windows silero VAD finds silent (speech under ``min_speech`` of the window); without
        VAD every window counts.
    scan_s : float, optional
        Hear only the first ``scan_s`` seconds (None: the whole recording).
    min_windows : int
        With fewer speech windows than this the recording is scored whole: from just before its first
        speech, up to 30 s, padded to Whisper's 30 s as faster-whisper does (``scored`` ``whole``);
        otherwise by the windows' vote (``scored`` ``windows``).
    min_probability : float
        The answer's probability under this gives the outcome ``uncertain`` (the language is kept as
        the best guess). 0 turns it off.
    pad_windows : bool
        Feed each window that takes part in the vote to the language head padded to 30 s (as faster-whisper
        does) instead of unpadded. Beside a whole, windows only draw the timeline and are heard unpadded.
    normalise : bool
        Bring the recording to a standard level (:func:`workers.pipeline.audio.normalise_level`)
        before the VAD and Whisper hear it, so quiet speech counts as speech.

    Returns
    -------
    dict
        ``outcome`` (``ok`` | ``uncertain`` | ``insufficient_speech``), ``language`` (the whole
        recording's top language, or that of most speech windows, ties broken by mean probability; None
        without speech), ``probability`` (its probability: the whole's, or the mean over the speech
        windows), ``scored`` (``whole`` | ``windows`` | None), ``shares`` ``{code: fraction of speech
        windows}``, ``mean_probabilities`` (the whole's, or the mean over speech windows; the
        ``MEAN_TOP_K`` largest, or every restricted language), ``whole`` (``{start_s, end_s}`` heard
        whole, or None), ``windows`` ``[{start_s, end_s, speech, language, probability, top: {code:
        p}}]`` (non-speech windows have ``speech`` false and no language), ``speech_windows``,
        ``languages`` (the restriction or None), ``window_s``, ``scan_s``, ``min_windows``,
        ``min_probability``, ``pad_windows``, ``windows_padded`` (how the windows were heard),
        ``gain_db``, ``duration_s`` and ``timings``.
    """
    if not MIN_WINDOW_S <= window_s <= MAX_WINDOW_S:
        raise ValueError(f"window_s must be in [{MIN_WINDOW_S}, {MAX_WINDOW_S}] seconds")
    if scan_s is not None and scan_s < MIN_WINDOW_S:
        raise ValueError(f"scan_s must be at least {MIN_WINDOW_S} s")
    if not 0.0 <= min_probability < 1.0:
        raise ValueError("min_probability must be in [0, 1)")
    if not engine.multilingual:
        raise WhisperError(f"Whisper model {engine.name} is English-only; language identification needs a multilingual one")
    from workers.pipeline.audio import normalise_level

    languages = validate_languages(languages)
    x = np.asarray(samples, dtype=np.float32).reshape(-1)
    duration = len(x) / SAMPLE_RATE
    scanned = min(duration, scan_s) if scan_s else duration
    x = x[: int(round(scanned * SAMPLE_RATE))]
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    x, gain_db = normalise_level(x) if normalise else (x, 0.0)
    spans = window_spans(scanned, window_s)
    stamps: list[tuple[float, float]] = []
    if vad and spans:
        from workers.pipeline.vad import speech_fraction, speech_timestamps

        stamps = [(float(a), float(b)) for a, b in speech_timestamps(x, SAMPLE_RATE)]
        covered = speech_fraction(spans, stamps)
        is_speech = [bool(c >= min_speech) for c in covered]
        heard = [_trim_to_speech(span, stamps) if keep else span for span, keep in zip(spans, is_speech, strict=True)]
    else:
        is_speech = [True] * len(spans)
        heard = list(spans)
    t1 = time.perf_counter()
    timings["vad"] = t1 - t0
    n_speech = sum(is_speech)
    # too few speech windows: hear the recording whole, padded, when it holds a second of speech
    has_speech = sum(b - a for a, b in stamps) >= MIN_WINDOW_S
    whole_span = _speech_extent(stamps, scanned) if 0 < min_windows and n_speech < min_windows and (n_speech or has_speech) else None
    # windows that decide are padded (pad_windows); beside a whole they only draw the timeline: unpadded, 10x cheaper
    padded = bool(pad_windows) and whole_span is None
    features = []
    for (start, end), keep in zip(heard, is_speech, strict=True):
        if keep:
            a, b = int(round(start * SAMPLE_RATE)), int(round(end * SAMPLE_RATE))
            features.append(window_features(engine, x[a:b], padded=padded))
    if whole_span is not None:
        a, b = int(round(whole_span[0] * SAMPLE_RATE)), int(round(whole_span[1] * SAMPLE_RATE))
        features.append(window_features(engine, x[a:b], padded=True))
    probs = _detect_batch(engine, features, batch_size) if features else []
    timings["language"] = time.perf_counter() - t1
    whole_probs = restrict_languages(probs.pop(), languages) if whole_span is not None else None

    windows: list[dict[str, Any]] = []
    speech_probs: list[dict[str, float]] = []
    it = iter(probs)
    for (start, end), keep in zip(spans, is_speech, strict=True):
        if not keep:
            windows.append({"start_s": start, "end_s": end, "speech": False, "language": None, "probability": None, "top": {}})
            continue
        p = restrict_languages(next(it), languages)
        speech_probs.append(p)
        ranked = sorted(p.items(), key=lambda kv: -kv[1])
        top = dict(ranked if languages else ranked[:TOP_K])
        windows.append({"start_s": start, "end_s": end, "speech": True, "language": ranked[0][0],
                        "probability": round(ranked[0][1], 6), "top": {k: round(v, 6) for k, v in top.items()}})

    out: dict[str, Any] = {"windows": windows, "speech_windows": len(speech_probs), "languages": languages,
                           "window_s": float(window_s), "scan_s": float(scan_s) if scan_s else None, "min_windows": int(min_windows),
                           "min_probability": float(min_probability), "pad_windows": bool(pad_windows), "windows_padded": padded,
                           "gain_db": gain_db,
                           "duration_s": round(duration, 3), "timings": timings,
                           "whole": {"start_s": whole_span[0], "end_s": whole_span[1]} if whole_span else None}
    if not speech_probs and whole_probs is None:
        return {**out, "outcome": "insufficient_speech", "language": None, "probability": None, "scored": None, "shares": {},
                "mean_probabilities": {}}
    counts: dict[str, int] = {}
    for w in windows:
        if w["speech"]:
            counts[w["language"]] = counts.get(w["language"], 0) + 1
    shares = {code: round(n / len(speech_probs), 6) for code, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))}
    if whole_probs is not None:
        mean, scored = whole_probs, "whole"
        best = max(mean, key=mean.get)
    else:
        codes = sorted({code for p in speech_probs for code in p})
        mean = {code: float(np.mean([p.get(code, 0.0) for p in speech_probs])) for code in codes}
        best, scored = max(counts, key=lambda code: (counts[code], mean[code])), "windows"
    kept = sorted(mean.items(), key=lambda kv: -kv[1])
    kept = kept if languages else kept[:MEAN_TOP_K]
    outcome = "ok" if mean[best] >= min_probability else "uncertain"
    return {**out, "outcome": outcome, "language": best, "probability": round(mean[best], 6), "scored": scored, "shares": shares,
            "mean_probabilities": {k: round(v, 6) for k, v in kept}}
