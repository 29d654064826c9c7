"""Transcription with faster-whisper: text, languages and word time stamps. No Django here.

The engine is :class:`workers.pipeline.whisper_lang.WhisperEngine` (one per process). Samples are
mono float32 ``[time]`` at 16 kHz.

How a recording is transcribed
------------------------------
1. **Pieces.** faster-whisper's bundled Silero VAD (its own defaults: speech apart by 2 s of
   silence or more is split, 0.4 s of padding) cuts the recording into speech pieces of at most
   30 s. No speech: no text (silence, noise and music give an empty transcript, never an invented
   one). Without VAD the pieces are touching 30-s windows.
2. **One encoder pass per piece.** Each piece's log-mel is padded to ``CONTEXT_S`` (Whisper's 30 s;
   ``context_s`` may ask for less, never under the piece plus ``MIN_PAD_S`` of silence) and encoded
   once: ``[80, frames]`` -> ``[1, frames / 2, d_model]``. The spoken language is read off that
   encoding (restricted to ``languages`` when given) and the same encoding is decoded.
   faster-whisper's own ``transcribe`` encodes the first 30 s twice, once to detect the language
   and once to decode, and the encoder is most of the time on short clips. Whisper was trained on
   30-s inputs: padding a piece only to its own length plus 1 s made it invent text (WER 150 % on
   accent-mini); 20 s was much faster and nearly as good (``python -m bench.asr``).
3. **A language per piece.** A recording that switches language at a pause is transcribed piece by
   piece, each in its own language. A piece whose language is uncertain (top probability under
   ``UNCERTAIN_BELOW``), or that differs from the recording's main language without being sure of
   it (under ``SWITCH_ABOVE``), is decoded in each of its likeliest languages and the recording's
   main one, and the reading with the best mean token log-probability is kept: a lone "nine" is
   no longer written as German "Nein!" or in Arabic script.
4. **No invented text.** A segment without a letter or digit is dropped; without VAD, so is one
   whose no-speech probability is ``NO_SPEECH`` or more, whatever its log-probability.
5. **Short pieces share encodings.** :func:`transcribe_many` (a transcribe job's chunk, or the pieces
   of one long recording) lays pieces of up to 20 s end to end, up to 29 s, and reads them from one
   encoding (:mod:`workers.pipeline.whisper_pack`); a piece the pack reads badly, or in another
   language, is transcribed alone as above. ``pack=False`` gives every piece its own encoding.
6. **Decoding** is faster-whisper's own loop (``WhisperModel.generate_segments``: temperature
   fallback, its no-speech and compression-ratio checks, word time stamps), with
   ``condition_on_previous_text`` off (a piece is at most 30 s; carrying text over is what
   makes Whisper repeat itself).

``docs/benchmarks.md`` ("Transcription") has the measurements behind the defaults
(``python -m bench.asr``).
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from workers.pipeline.whisper_lang import SAMPLE_RATE, WhisperEngine, WhisperError, restrict_languages, validate_languages

#: Whisper hears at most 30 s at a time
PIECE_S = 30.0
#: The encoder hears a piece padded to this many seconds: Whisper's own 30 s. 20 s was 1.9x faster
#: again but heard one accented English clip of 28 as Latin (train split WER 17.5 % against 15.6 %:
#: docs/benchmarks.md, "Transcription"); ``context_s`` takes it per call...
CONTEXT_S = 30.0
#: ... or to the piece plus this much silence when that is longer (padding the piece to its own length
#: plus 1 s made Whisper invent text: WER 150 %)
MIN_PAD_S = 10.0
#: A piece whose likeliest language is below this is decoded in several and the best reading kept
UNCERTAIN_BELOW = 0.5
#: A piece in another language than the recording's main one switches only at this probability or over
SWITCH_ABOVE = 0.8
#: How many of a piece's likeliest languages an uncertain piece is decoded in (the main one comes too)
CANDIDATES = 2
#: faster-whisper's temperature fallback (its default): re-decode a failed greedy/beam reading warmer
TEMPERATURES = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
DEFAULT_BEAM = 5
#: Without VAD, a segment Whisper finds this likely to be no speech is dropped whatever its log-probability
#: (faster-whisper keeps it when its log-probability is over -1: "You" or "... ... ..." from 5 s of silence)
NO_SPEECH = 0.6


@dataclass
class _Piece:
    start: int  # samples
    end: int
    features: np.ndarray | None  # [80, frames + 1] as faster-whisper's feature extractor gives them
    encoded: Any = None  # ctranslate2.StorageView [1, 1500, d_model]
    probs: dict[str, float] = field(default_factory=dict)

    @property
    def seconds(self) -> float:
        return (self.end - self.start) / SAMPLE_RATE


def _pieces(x: np.ndarray, vad_filter: bool) -> list[tuple[int, int]]:
    """Speech pieces ``[(start, end)]`` in samples, each at most ``PIECE_S`` long."""
    step = int(PIECE_S * SAMPLE_RATE)
    if not vad_filter:
        return [(a, min(a + step, len(x))) for a in range(0, len(x), step) if min(a + step, len(x)) - a >= SAMPLE_RATE // 10]
    from faster_whisper.vad import VadOptions, get_speech_timestamps

    chunks = get_speech_timestamps(x, VadOptions(max_speech_duration_s=PIECE_S - 1.0))
    return [(int(c["start"]), int(c["end"])) for c in chunks if c["end"] > c["start"]]


def _options(beam_size: int, temperature_fallback: bool, word_timestamps: bool, tokenizer) -> Any:
    """faster-whisper's ``TranscriptionOptions`` with its own ``transcribe`` defaults, except ours."""
    from faster_whisper.transcribe import TranscriptionOptions, get_suppressed_tokens

    return TranscriptionOptions(
        beam_size=beam_size, best_of=5, patience=1, length_penalty=1, repetition_penalty=1, no_repeat_ngram_size=0,
        log_prob_threshold=-1.0, no_speech_threshold=0.6, compression_ratio_threshold=2.4, condition_on_previous_text=False,
        prompt_reset_on_temperature=0.5, temperatures=list(TEMPERATURES if temperature_fallback else TEMPERATURES[:1]),
        initial_prompt=None, prefix=None, suppress_blank=True, suppress_tokens=get_suppressed_tokens(tokenizer, [-1]),
        without_timestamps=False, max_initial_timestamp=1.0, word_timestamps=word_timestamps,
        prepend_punctuations="\"'“¿([{-", append_punctuations="\"'.。,，!！?？:：”)]}、", multilingual=False,
        max_new_tokens=None, clip_timestamps="0", hallucination_silence_threshold=None, hotwords=None,
    )


def _decode(engine: WhisperEngine, piece: _Piece, language: str, options_for, strict: bool) -> tuple[list[dict[str, Any]], float]:
    """One piece decoded in one language: its segments (recording time) and their mean token log-probability.
    A segment without a letter or digit is dropped; ``strict`` (no VAD before) also drops one with a
    no-speech probability of ``NO_SPEECH`` or more."""
    from faster_whisper.tokenizer import Tokenizer

    model = engine.model
    tokenizer = Tokenizer(model.hf_tokenizer, model.model.is_multilingual, task="transcribe", language=language)
    offset = piece.start / SAMPLE_RATE
    segments, logprob, tokens = [], 0.0, 0
    for seg in model.generate_segments(piece.features, tokenizer, options_for(tokenizer), False, piece.encoded):
        text = seg.text.strip()
        if not re.search(r"\w", text) or (strict and seg.no_speech_prob >= NO_SPEECH):
            continue
        n = max(1, len(seg.tokens))
        logprob, tokens = logprob + seg.avg_logprob * n, tokens + n
        words = [{"word": w.word.strip(), "start_s": round(offset + float(w.start), 3), "end_s": round(offset + float(w.end), 3),
                  "probability": round(float(w.probability), 4)} for w in (seg.words or [])]
        segments.append({"start_s": round(offset + float(seg.start), 3), "end_s": round(offset + float(seg.end), 3), "text": text,
                         "language": language, "avg_logprob": round(float(seg.avg_logprob), 4),
                         "no_speech_prob": round(float(seg.no_speech_prob), 4), "words": words})
    return segments, (logprob / tokens if tokens else float("-inf"))


def _choices(piece: _Piece, main: str, uncertain_below: float = UNCERTAIN_BELOW) -> list[str]:
    """The languages a piece is decoded in: its likeliest when sure, else a few candidates and the main one."""
    ranked = sorted(piece.probs.items(), key=lambda kv: -kv[1])
    top, p = ranked[0]
    if p >= SWITCH_ABOVE or (top == main and p >= uncertain_below):
        return [top]
    return list(dict.fromkeys([code for code, _ in ranked[:CANDIDATES]] + [main]))  # likeliest first


def transcribe(engine: WhisperEngine, samples: np.ndarray, **options: Any) -> dict[str, Any]:
    """Transcribe one recording, each speech piece in its own language: :func:`transcribe_many` of one."""
    return transcribe_many(engine, [samples], **options)[0]


def transcribe_many(
    engine: WhisperEngine,
    recordings: Sequence[np.ndarray],
    *,
    language: str | None = None,
    languages: Sequence[str] | None = None,
    beam_size: int = DEFAULT_BEAM,
    vad_filter: bool = True,
    temperature_fallback: bool = True,
    word_timestamps: bool = True,
    context_s: float = CONTEXT_S,
    uncertain_below: float = UNCERTAIN_BELOW,
    pack: bool = True,
) -> list[dict[str, Any]]:
    """Transcribe several recordings, each speech piece in its own language; short pieces share encodings.

    Parameters
    ----------
    engine : WhisperEngine
        From :func:`workers.pipeline.whisper_lang.load_engine`.
    recordings : sequence of np.ndarray
        Each mono float32 ``[time]`` at 16 kHz.
    language : str, optional
        Force one language (a Whisper code) for every recording.
    languages : sequence of str, optional
        Candidate languages: each piece's language is detected among these only.
    beam_size : int
        Beam width; 1 is greedy decoding.
    vad_filter : bool
        Transcribe only what faster-whisper's Silero VAD finds to be speech (no text from silence);
        time stamps stay in the recording's time.
    temperature_fallback : bool
        Re-decode a piece at rising temperatures when its reading fails faster-whisper's checks.
    word_timestamps : bool
        Each segment's words with their times (an alignment pass per segment; packed pieces always
        have them, they are how a pack is split).
    context_s : float
        What the encoder hears a piece padded to (``CONTEXT_S``; 30 is Whisper's own).
    uncertain_below : float
        A piece whose likeliest language is less likely than this is decoded in its likeliest
        languages and the recording's main one (``UNCERTAIN_BELOW``).
    pack : bool
        Share 30-s encodings between short speech pieces (:mod:`workers.pipeline.whisper_pack`);
        off, every piece has an encoding of its own.

    Returns
    -------
    list of dict
        Per recording, in order: ``text`` (the segments' text joined, stripped), ``language`` (the main
        language: the one most speech was transcribed in; None without text), ``language_probability``
        (its detected probability, weighted by piece length), ``languages`` ``{code: seconds of speech
        transcribed in it}``, ``segments`` ``[{start_s, end_s, text, language, avg_logprob,
        no_speech_prob, words: [{word, start_s, end_s, probability}]}]``, ``speech_s``, ``duration_s``,
        ``params`` (what was asked), ``timings`` and ``packed`` (how many of its pieces were read from a
        shared encoding).
    """
    from workers.pipeline import whisper_pack

    model = engine.model
    if language is not None and not engine.multilingual and language != "en":
        raise WhisperError(f"Whisper model {engine.name} is English-only; it cannot transcribe '{language}'")
    languages = validate_languages(languages)
    if languages and not engine.multilingual and languages != ["en"]:
        raise WhisperError(f"Whisper model {engine.name} is English-only; it cannot transcribe {languages}")
    xs = [np.asarray(x, dtype=np.float32).reshape(-1) for x in recordings]
    params = {"language": language, "languages": languages, "beam_size": int(beam_size), "vad_filter": bool(vad_filter),
              "temperature_fallback": bool(temperature_fallback), "context_s": float(context_s), "pack": bool(pack)}
    forced = language if language is not None else (None if engine.multilingual else "en")
    timings = [dict.fromkeys(("vad", "pack", "language", "transcribe"), 0.0) for _ in xs]

    def share(key: str, seconds: float, owners: Sequence[int]) -> None:
        for i in owners:
            timings[i][key] += seconds / max(1, len(owners))

    with engine.lock:
        from faster_whisper.audio import pad_or_trim

        pieces: list[list[_Piece]] = []
        for i, x in enumerate(xs):
            t0 = time.perf_counter()
            pieces.append([_Piece(a, b, None) for a, b in _pieces(x, vad_filter)])
            timings[i]["vad"] = time.perf_counter() - t0
        done: dict[tuple[int, int], tuple[list[dict[str, Any]], str]] = {}  # (recording, piece) -> (segments, language)
        if pack and context_s >= CONTEXT_S:
            t0 = time.perf_counter()
            shared = whisper_pack.transcribe_packed(
                engine, xs, [[(p.start, p.end) for p in ps] for ps in pieces], language=forced, languages=languages,
                beam_size=int(beam_size), uncertain_below=uncertain_below, options=_options)
            for (i, j), (segs, code, probs) in shared.items():
                pieces[i][j].probs = probs
                done[i, j] = (segs, code)
            share("pack", time.perf_counter() - t0, sorted({i for i, _ in shared}) or list(range(len(xs))))
        results = []
        for i, x in enumerate(xs):
            t1 = time.perf_counter()
            for j, piece in enumerate(pieces[i]):
                if (i, j) in done:
                    continue
                piece.features = model.feature_extractor(x[piece.start:piece.end])
                frames = min(3000, piece.features.shape[-1] - 1)
                context = min(3000, max(int(context_s * 100), frames + int(MIN_PAD_S * 100)))
                piece.encoded = model.encode(pad_or_trim(piece.features[:, :frames], context))
                if forced is not None:
                    piece.probs = {forced: 1.0}
                else:
                    detected = model.model.detect_language(piece.encoded)[0]
                    piece.probs = restrict_languages({token[2:-2]: float(p) for token, p in detected}, languages)
            t2 = time.perf_counter()
            timings[i]["language"] += t2 - t1
            speech = sum(p.seconds for p in pieces[i])
            weighted: dict[str, float] = {}
            for p in pieces[i]:
                for code, prob in p.probs.items():
                    weighted[code] = weighted.get(code, 0.0) + prob * p.seconds / speech
            main = max(weighted, key=weighted.get) if weighted else None

            def options_for(tokenizer):
                return _options(int(beam_size), temperature_fallback, word_timestamps, tokenizer)

            segments: list[dict[str, Any]] = []
            spoken: dict[str, float] = {}
            for j, p in enumerate(pieces[i]):
                if (i, j) in done:
                    segs, code = done[i, j]
                else:
                    choices = _choices(p, main, uncertain_below)
                    readings = [(_decode(engine, p, choices[0], options_for, not vad_filter), choices[0])]
                    if readings[0][0][0]:  # a piece Whisper finds silent in its likeliest language stays silent
                        readings += [(_decode(engine, p, code, options_for, not vad_filter), code) for code in choices[1:]]
                    (segs, _), code = max(readings, key=lambda r: r[0][1])
                if not word_timestamps:
                    segs = [{**s, "words": []} for s in segs]
                segments += segs
                if segs:
                    spoken[code] = round(spoken.get(code, 0.0) + p.seconds, 3)
            timings[i]["transcribe"] += time.perf_counter() - t2
            main = max(spoken, key=spoken.get) if spoken else None  # what was transcribed most; no text, no language
            results.append({
                "text": " ".join(s["text"] for s in segments).strip(),
                "language": main,
                "language_probability": round(float(weighted[main]), 6) if main in weighted else None,
                "languages": spoken,
                "segments": segments,
                "speech_s": round(speech, 3),
                "duration_s": round(len(x) / SAMPLE_RATE, 3),
                "params": params,
                "timings": timings[i],
                "packed": sum((i, j) in done for j in range(len(pieces[i]))),
            })
    return results


#: a transcribe job's params that are :func:`transcribe` keyword arguments
TRANSCRIBE_PARAMS = ("language", "languages", "beam_size", "vad_filter", "temperature_fallback", "pack")


def transcribe_options(params: dict[str, Any]) -> dict[str, Any]:
    """:func:`transcribe` keyword arguments from a transcribe job's (validated) params; the rest default."""
    return {key: params[key] for key in TRANSCRIBE_PARAMS if key in params}
