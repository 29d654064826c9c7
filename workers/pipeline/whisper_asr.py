"""Transcription with faster-whisper: text, language and word time stamps. No Django here.

The engine is :class:`workers.pipeline.whisper_lang.WhisperEngine` (one per process). Samples are
mono float32 ``[time]`` at 16 kHz. Greedy decoding (``beam_size=1``) is the CPU default: on an
espeak English sentence it was word-perfect at about 2 s per 5-s clip (Whisper base, int8, one thread).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from workers.pipeline.whisper_lang import SAMPLE_RATE, WhisperEngine, WhisperError


def transcribe(
    engine: WhisperEngine,
    samples: np.ndarray,
    *,
    language: str | None = None,
    beam_size: int = 1,
    vad_filter: bool = True,
) -> dict[str, Any]:
    """Transcribe one recording.

    Parameters
    ----------
    engine : WhisperEngine
        From :func:`workers.pipeline.whisper_lang.load_engine`.
    samples : np.ndarray
        Mono float32 ``[time]`` at 16 kHz.
    language : str, optional
        Force the language (a Whisper code); detected from the first 30 s when None.
    beam_size : int
        Beam width; 1 is greedy decoding.
    vad_filter : bool
        Drop silence before decoding with faster-whisper's bundled silero VAD (fewer invented words
        on silence); time stamps stay in the recording's time.

    Returns
    -------
    dict
        ``text`` (the segments' text joined, stripped), ``language``, ``language_probability``,
        ``segments`` ``[{start_s, end_s, text, avg_logprob, no_speech_prob, words: [{word, start_s,
        end_s, probability}]}]``, ``duration_s``, ``params`` (what was asked) and ``timings``.
    """
    if language is not None and not engine.multilingual and language != "en":
        raise WhisperError(f"Whisper model {engine.name} is English-only; it cannot transcribe '{language}'")
    x = np.asarray(samples, dtype=np.float32).reshape(-1)
    t0 = time.perf_counter()
    with engine.lock:
        pieces, info = engine.model.transcribe(
            x, language=language, beam_size=int(beam_size), word_timestamps=True, vad_filter=bool(vad_filter),
            condition_on_previous_text=False,
        )
        segments = []
        for seg in pieces:  # a generator: decoding happens while it is consumed
            words = [{"word": w.word.strip(), "start_s": round(float(w.start), 3), "end_s": round(float(w.end), 3),
                      "probability": round(float(w.probability), 4)} for w in (seg.words or [])]
            segments.append({"start_s": round(float(seg.start), 3), "end_s": round(float(seg.end), 3), "text": seg.text.strip(),
                             "avg_logprob": round(float(seg.avg_logprob), 4), "no_speech_prob": round(float(seg.no_speech_prob), 4),
                             "words": words})
    elapsed = time.perf_counter() - t0
    return {
        "text": " ".join(s["text"] for s in segments if s["text"]).strip(),
        "language": info.language,
        "language_probability": round(float(info.language_probability), 6),
        "segments": segments,
        "duration_s": round(len(x) / SAMPLE_RATE, 3),
        "params": {"language": language, "beam_size": int(beam_size), "vad_filter": bool(vad_filter)},
        "timings": {"transcribe": elapsed},
    }
