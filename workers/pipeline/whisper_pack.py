"""Short speech pieces transcribed together: several pieces in one 30-s Whisper encoding. No Django here.

Why
---
Whisper's encoder always hears 30 s. A 5-s clip costs a whole 30-s encoding, and on a CPU that
encoding is most of a short clip's time (``python -m bench.asr``). Whisper was trained on 30-s
windows that hold several utterances, so short pieces (of one recording or of several recordings in
a chunk) are laid end to end with ``GAP_S`` of silence between them, up to ``PACK_S``, encoded once
and decoded once; the words are then given back to their pieces by their aligned times.

How a pack is read
------------------
1. **Language.** With a language forced (or an English-only model) every piece is in it. Otherwise
   the pack's language is read off its encoding (restricted to ``languages``) and each piece's own
   from the same encoding with every frame outside the piece replaced by the encoding of silence
   (one decoder step each). A piece whose own language is not the pack's, or a pack whose language
   is uncertain (under ``uncertain_below``), leaves the pack: it is transcribed alone, with its own
   encoding and language, as ``whisper_asr`` does without packing.
2. **Decoding.** One beam-search pass over the pack without timestamp tokens and with word
   alignment (faster-whisper's ``generate_segments`` on the pack's encoding). The pack's temperature
   fallback is off: it judges the whole pack, and a pack of readings of one passage is repetitive by
   design. Each piece is judged on its own instead.
3. **Each piece on its own.** A word goes to the piece its aligned middle falls in (or the nearest).
   A piece with no words, a mean word log-probability under ``LOG_PROB_FLOOR`` or a compression ratio
   over ``COMPRESSION_CEILING`` (faster-whisper's own fallback thresholds) is transcribed alone; its
   words from the pack are dropped. Segments are the piece's sentences (cut after ``.?!``), with the
   words' times mapped back to the recording.

Measured on accent-mini's read speech (``python -m bench.asr``, docs/benchmarks.md "Transcription").
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import numpy as np

SAMPLE_RATE = 16000
#: Whisper's encoder frames per second (100 log-mel frames / 2)
ENCODER_FPS = 50
#: A pack's audio, pieces and gaps: under Whisper's 30 s, so the last word is never cut
PACK_S = 29.0
#: Silence between two pieces of a pack
GAP_S = 1.0
#: Only pieces up to this long are packed (a longer one fills most of a window anyway)
PIECE_MAX_S = 20.0
#: faster-whisper's ``log_prob_threshold``: a piece whose words are less likely than this on average is read alone
LOG_PROB_FLOOR = -1.0
#: faster-whisper's ``compression_ratio_threshold``: a piece whose text repeats itself more is read alone
COMPRESSION_CEILING = 2.4
#: Encoder frames of context kept around a piece when its own language is read
MARGIN_FRAMES = 10

_silence: dict[int, np.ndarray] = {}


def plan(spans: Sequence[Sequence[tuple[int, int]]], *, pack_s: float = PACK_S, gap_s: float = GAP_S,
         piece_max_s: float = PIECE_MAX_S) -> list[list[tuple[int, int]]]:
    """Packs of ``(recording, piece)`` indices, in order; only packs of two pieces or more.

    ``spans[i][j]`` is piece ``j`` of recording ``i`` as ``(start, end)`` samples. Pieces longer
    than ``piece_max_s`` are never packed; a pack's pieces and the gaps between them fit ``pack_s``.
    """
    packs: list[list[tuple[int, int]]] = []
    current: list[tuple[int, int]] = []
    used = 0.0
    for i, pieces in enumerate(spans):
        for j, (a, b) in enumerate(pieces):
            seconds = (b - a) / SAMPLE_RATE
            if seconds > piece_max_s:
                continue
            need = seconds + (gap_s if current else 0.0)
            if current and used + need > pack_s:
                packs.append(current)
                current, used, need = [], 0.0, seconds
            current.append((i, j))
            used += need
    packs.append(current)
    return [p for p in packs if len(p) >= 2]


def _silence_encoding(engine) -> np.ndarray:
    """The encoding of 30 s of silence, ``[1, 1500, d_model]``, once per engine."""
    key = id(engine.model)
    if key not in _silence:
        from faster_whisper.audio import pad_or_trim

        model = engine.model
        features = model.feature_extractor(np.zeros(SAMPLE_RATE, dtype=np.float32))
        _silence[key] = np.array(model.encode(pad_or_trim(features[:, :-1], 3000)))
    return _silence[key]


def _detect(model, encoded, languages: Sequence[str] | None) -> dict[str, float]:
    from workers.pipeline.whisper_lang import restrict_languages

    detected = model.model.detect_language(encoded)[0]
    return restrict_languages({token[2:-2]: float(p) for token, p in detected}, languages)


def _sentences(words: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """Words cut into sentences after a word ending in ``.``, ``?`` or ``!`` (or their CJK forms)."""
    out: list[list[dict[str, Any]]] = [[]]
    for w in words:
        out[-1].append(w)
        if re.search(r"[.?!。？！]$", w["word"]):
            out.append([])
    return [s for s in out if s]


def _compression_ratio(text: str) -> float:
    import zlib

    raw = text.encode("utf-8")
    return len(raw) / max(1, len(zlib.compress(raw)))


def transcribe_packed(
    engine,
    recordings: Sequence[np.ndarray],
    spans: Sequence[Sequence[tuple[int, int]]],
    *,
    language: str | None,
    languages: Sequence[str] | None,
    beam_size: int,
    uncertain_below: float,
    options: Callable[..., Any],
) -> dict[tuple[int, int], tuple[list[dict[str, Any]], str, dict[str, float]]]:
    """The pieces that packing read well: ``{(recording, piece): (segments, language, probabilities)}``.

    ``options(beam_size, temperature_fallback, word_timestamps, tokenizer)`` gives faster-whisper's
    ``TranscriptionOptions`` (``whisper_asr._options``). Pieces missing from the answer are for the
    caller to transcribe alone.
    """
    import ctranslate2
    from faster_whisper.audio import pad_or_trim
    from faster_whisper.tokenizer import Tokenizer

    model = engine.model
    gap = np.zeros(int(GAP_S * SAMPLE_RATE), dtype=np.float32)
    out: dict[tuple[int, int], tuple[list[dict[str, Any]], str, dict[str, float]]] = {}
    for members in plan(spans):
        parts, where, pos = [], [], 0  # where: each member's (start, end) in the pack, samples
        for k, (i, j) in enumerate(members):
            if k:
                parts.append(gap)
                pos += len(gap)
            a, b = spans[i][j]
            parts.append(recordings[i][a:b])
            where.append((pos, pos + b - a))
            pos += b - a
        features = model.feature_extractor(np.concatenate(parts))
        frames = min(3000, features.shape[-1] - 1)
        encoded = model.encode(pad_or_trim(features[:, :frames], 3000))
        if language is not None:
            code, own = language, [{language: 1.0} for _ in members]
        else:
            whole = _detect(model, encoded, languages)
            code = max(whole, key=whole.get)
            if whole[code] < uncertain_below:
                continue  # every piece alone
            array, silence = np.array(encoded), _silence_encoding(engine)
            own = []
            for a, b in where:
                f0, f1 = max(0, a // 320 - MARGIN_FRAMES), min(1500, b // 320 + MARGIN_FRAMES)
                view = silence.copy()
                view[:, f0:f1] = array[:, f0:f1]
                own.append(_detect(model, ctranslate2.StorageView.from_array(view), languages))
        keep = [max(p, key=p.get) == code for p in own]
        if sum(keep) < 1:
            continue
        tokenizer = Tokenizer(model.hf_tokenizer, model.model.is_multilingual, task="transcribe", language=code)
        opts = replace(options(beam_size, False, True, tokenizer), without_timestamps=True)
        words: list[list[dict[str, Any]]] = [[] for _ in members]
        no_speech = 0.0
        # without timestamp tokens the window is one segment; faster-whisper would then go on from the last word
        # with a fresh encoding of the rest (silence, mostly): the first segment is the whole reading
        reading = model.generate_segments(features[:, :frames + 1], tokenizer, opts, False, encoded)
        first = next(reading, None)
        reading.close()
        for seg in [first] if first is not None else []:
            no_speech = max(no_speech, float(seg.no_speech_prob))
            for w in seg.words or []:
                mid = (float(w.start) + float(w.end)) / 2 * SAMPLE_RATE
                k = min(range(len(where)), key=lambda n: max(where[n][0] - mid, mid - where[n][1], 0.0))
                words[k].append({"word": w.word, "start": float(w.start), "end": float(w.end), "probability": float(w.probability)})
        for k, (i, j) in enumerate(members):
            text = "".join(w["word"] for w in words[k]).strip()
            if not keep[k] or not re.search(r"\w", text):
                continue
            logprob = sum(math.log(max(w["probability"], 1e-6)) for w in words[k]) / len(words[k])
            if logprob < LOG_PROB_FLOOR or _compression_ratio(text) > COMPRESSION_CEILING:
                continue
            shift = (spans[i][j][0] - where[k][0]) / SAMPLE_RATE  # pack time -> recording time
            lo, hi = spans[i][j][0] / SAMPLE_RATE, spans[i][j][1] / SAMPLE_RATE

            def at(t: float, lo=lo, hi=hi, shift=shift) -> float:
                return round(min(hi, max(lo, t + shift)), 3)

            segments = []
            for sentence in _sentences(words[k]):
                said = "".join(w["word"] for w in sentence).strip()
                if not re.search(r"\w", said):
                    continue
                lp = sum(math.log(max(w["probability"], 1e-6)) for w in sentence) / len(sentence)
                segments.append({
                    "start_s": at(sentence[0]["start"]), "end_s": at(sentence[-1]["end"]), "text": said, "language": code,
                    "avg_logprob": round(lp, 4), "no_speech_prob": round(no_speech, 4),
                    "words": [{"word": w["word"].strip(), "start_s": at(w["start"]), "end_s": at(w["end"]),
                               "probability": round(w["probability"], 4)} for w in sentence],
                })
            out[i, j] = (segments, code, own[k])
    return out
