"""Reading features: how well a recording of read text fits US-English pronunciations of that text.

When the text a speaker read is known (the Speech Accent Archive's "Please call Stella..."
passage, a pronunciation-test prompt, a corpus transcript), a US-English acoustic model can be
aligned to it and asked, phone by phone, how well the audio fits the canonical pronunciation.
That is the classic goodness-of-pronunciation (GOP) measure of computer-assisted pronunciation
training, and it carries accent far more directly than a speaker encoder does.

:func:`align_reading`
    1. A grammar of the prompt is decoded by pocketsphinx's US-English model: the words in order,
       any of them skipped at a cost (readers skip and misread words, and a word the model cannot
       follow, such as a sibilant the 3.8 kHz low-pass has emptied, must not derail the rest), and
       stopping after any word (clips are often cut, and a recording may cover only the start of a
       long passage). The result is the words read, with their frame spans.
    2. Each word is then force-aligned on its own span (a few frames of margin) to its phones and
       HMM states. One alignment per word, because pocketsphinx's state-level pass over a whole
       utterance fails on about one recording in twenty; a word that fails is kept, unaligned.
    Every phone's score is pocketsphinx's acoustic score relative to the best-scoring senone of
    each frame, so ``score / frames`` (<= 0) is a per-frame GOP: 0 where the canonical phone is the
    best explanation of the audio, more negative the worse it fits.

:func:`reading_features_from_alignment`
    A fixed vector (:data:`FEATURE_NAMES`): reading rate, pauses, articulation rate, GOP
    statistics, the share of words that could not be aligned or were skipped, the share of the
    recording the words read span (low when the transcript is not what was said), and per phone (the 39 of the CMU
    dictionary) the mean GOP and mean duration. Nothing in it depends on which prompt was read,
    so one model serves any prompt. Phones not heard are NaN (a model imputes its training mean).

:func:`passage_word_features`
    For a model trained on one passage (every speaker read the same text, as in the Speech Accent
    Archive): per word of the passage's start, by position, the word's MFCC mean and spread
    (per-recording mean and variance normalised) and its duration. Everyone says the same words,
    so how each word sounds is directly comparable between speakers; a word not read is NaN.

Input is low-passed to 3.8 kHz first (as every accent model here is), so bandwidth is no cue.
One decoder per thread (pocketsphinx is not thread-safe). About 0.65 s per 8-s clip of read speech
on one core (12x real time, SAA clips); audio the text does not fit costs more (the search retries
with the recording's end cut off).
"""
from __future__ import annotations

import contextlib
import re
import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from workers.pipeline.phones import PHONES, _prepare, model_file, new_decoder, reset_front_end

__all__ = [
    "FEATURE_NAMES",
    "fusion_feature_names",
    "fusion_features",
    "WORD_FEATURES",
    "passage_matches",
    "passage_word_features",
    "ReadingAlignment",
    "align_reading",
    "normalise_prompt",
    "reading_features",
    "reading_features_from_alignment",
]

FRAMES_PER_S = 100
SAMPLES_PER_FRAME = 160
#: frames of margin around each word's span for its own alignment
WORD_MARGIN = 3
#: per-frame GOP under which a phone counts as poorly pronounced
LOW_GOP = -30.0
#: trailing frames dropped, in turn, when the grammar finds no complete path (a clip cut mid-word)
_CUTS = (0, 25, 50, 100, 150)
#: probability of the grammar's arc that skips a prompt word
SKIP_PROBABILITY = 0.05

_GLOBAL = ["words_per_s", "pauses_per_s", "speech_share", "phones_per_s", "gop_mean", "gop_std", "gop_p10",
           "gop_p25", "low_gop_share", "unaligned_word_share", "phone_frames_mean", "phone_frames_std",
           "skipped_word_share", "read_share"]
FEATURE_NAMES = _GLOBAL + [f"gop_{p}" for p in PHONES] + [f"frames_{p}" for p in PHONES]
N_MFCC = 20
#: per passage word: MFCC means, MFCC standard deviations, frames
WORD_FEATURES = [f"mfcc{k}_mean" for k in range(N_MFCC)] + [f"mfcc{k}_std" for k in range(N_MFCC)] + ["frames"]

_local = threading.local()


@dataclass
class ReadingAlignment:
    """What :func:`align_reading` found.

    ``words``: ``[(word, start_frame, end_frame)]`` of the prompt words read, in order (10 ms
    frames, inclusive); ``pauses``: ``[(start_frame, end_frame)]`` of silences between them;
    ``phones``: ``[(word_index, phone, start_frame, frames, score)]`` (``phone`` None and ``score``
    None for a word that could not be aligned; ``SIL`` entries are the margins);
    ``n_frames``: frames in the recording; ``oov``: prompt words missing from the dictionary
    (left out of the grammar); ``prompt_words``: words of the prompt used; ``skipped``: prompt
    words the reader skipped before the last word read; ``positions``: the prompt position
    (index into its dictionary words) of each word read.
    """

    words: list[tuple[str, int, int]] = field(default_factory=list)
    pauses: list[tuple[int, int]] = field(default_factory=list)
    phones: list[tuple[int, str | None, int, int, float | None]] = field(default_factory=list)
    n_frames: int = 0
    oov: list[str] = field(default_factory=list)
    prompt_words: int = 0
    skipped: int = 0
    positions: list[int] = field(default_factory=list)


def normalise_prompt(text: str) -> list[str]:
    """Lower-case words of a prompt: letters and inner apostrophes; punctuation and digits dropped."""
    return [w.strip("'") for w in re.findall(r"[a-z']+", (text or "").lower()) if w.strip("'")]


def _decoder() -> Any:
    dec = getattr(_local, "decoder", None)
    if dec is None:
        dec, _local.cmn = new_decoder(dict=model_file("cmudict-en-us.dict"), lm=None)
        _local.decoder = dec
        _local.grammars = {}
    return dec


def dictionary_words(text: str) -> tuple[list[str], list[str]]:
    """A prompt's words that the pronunciation dictionary has, in order, and (sorted) the ones it lacks."""
    dec = _decoder()
    words = normalise_prompt(text)
    oov = sorted({w for w in words if dec.lookup_word(w) is None})
    return [w for w in words if w not in oov], oov


def _recover(dec: Any) -> None:
    """After pocketsphinx fails to align a word: end the utterance it may have left open and restore
    the initial front end (the same features as a new decoder gives, checked on 40 SAA clips, without
    the 0.12 s a new one costs to load)."""
    with contextlib.suppress(RuntimeError):
        dec.end_utt()
    reset_front_end(dec, _local.cmn)


def _grammar(dec: Any, words: list[str]) -> str:
    """Activate (building once per prompt) a grammar accepting the words in order, each skippable
    at a cost, stopping after any of them."""
    key = " ".join(words)
    name = _local.grammars.get(key)
    if name is None:
        name = f"prompt{len(_local.grammars)}"
        n = len(words)
        transitions: list[tuple[Any, ...]] = [(i, i + 1, 1.0 - SKIP_PROBABILITY, w) for i, w in enumerate(words)]
        transitions += [(i, i + 1, SKIP_PROBABILITY) for i in range(n)]  # skip a word
        transitions += [(i, n, 1.0) for i in range(1, n)]  # stop after any word
        dec.add_fsg(name, dec.create_fsg(name, 0, n, transitions))
        _local.grammars[key] = name
    dec.activate_search(name)
    return name


def _decode(dec: Any, raw: bytes) -> None:
    dec.start_utt()
    dec.process_raw(raw, full_utt=True)
    dec.end_utt()


def _align_word(dec: Any, raw: bytes, word: str) -> list[tuple[str, int, int, float]]:
    dec.set_align_text(word)
    _decode(dec, raw)
    dec.set_alignment()
    _decode(dec, raw)
    return [(ph.name, int(ph.start), int(ph.duration), float(ph.score)) for w in dec.get_alignment() for ph in w]


def align_reading(signal: np.ndarray, sr: int, prompt: str) -> ReadingAlignment:
    """Align a recording to the prompt it reads (see the module docstring)."""
    dec = _decoder()
    out = ReadingAlignment()
    words, out.oov = dictionary_words(prompt)
    out.prompt_words = len(words)
    raw = _prepare(signal, sr)
    out.n_frames = len(raw) // 2 // SAMPLES_PER_FRAME
    if not words or out.n_frames < 10:
        return out
    reset_front_end(dec, _local.cmn)
    segments = []
    for cut in _CUTS:
        part = raw[: len(raw) - cut * SAMPLES_PER_FRAME * 2]
        if len(part) < 20 * SAMPLES_PER_FRAME * 2:
            break
        _grammar(dec, words)
        _decode(dec, part)
        if dec.hyp() is not None and dec.hyp().hypstr:
            segments = [(s.word, int(s.start_frame), int(s.end_frame)) for s in dec.seg()]
            break
    for w, a, b in segments:
        if w == "<sil>":
            out.pauses.append((a, b))
        elif not w.startswith(("<", "[", "+")):
            out.words.append((re.sub(r"\(\d+\)$", "", w), a, b))
    if out.words:  # pauses before the first and after the last word are not pauses in the reading
        first, last = out.words[0][1], out.words[-1][2]
        out.pauses = [(a, b) for a, b in out.pauses if a > first and b < last]
        pos = -1  # the prompt position of each word read (earliest match in order)
        for w, _, _ in out.words:
            pos = words.index(w, pos + 1)
            out.positions.append(pos)
        out.skipped = pos + 1 - len(out.words)
    for k, (w, a, b) in enumerate(out.words):
        lo, hi = max(a - WORD_MARGIN, 0), min(b + 1 + WORD_MARGIN, out.n_frames)
        try:
            for name, start, frames, score in _align_word(dec, raw[lo * 320 : hi * 320], w):
                out.phones.append((k, name, start + lo, frames, score))
        except RuntimeError:  # pocketsphinx could not align this word: keep it, unaligned
            _recover(dec)
            out.phones.append((k, None, a, b - a + 1, None))
    return out


def reading_features_from_alignment(al: ReadingAlignment) -> np.ndarray:
    """The :data:`FEATURE_NAMES` vector of an alignment: zeros where nothing was read, NaN for the
    per-phone entries of phones not heard."""
    out = np.zeros(len(FEATURE_NAMES), dtype=np.float64)
    if not al.words:
        return out
    index = {p: k for k, p in enumerate(PHONES)}
    span = max(al.words[-1][2] + 1 - al.words[0][1], 1)
    speech = [p for p in al.phones if p[1] is not None and p[1] != "SIL"]
    unaligned = len({p[0] for p in al.phones if p[1] is None}) / len(al.words)
    word_frames = sum(b - a + 1 for _, a, b in al.words)
    g = len(_GLOBAL)
    out[:4] = [len(al.words) / span * FRAMES_PER_S, len(al.pauses) / span * FRAMES_PER_S, word_frames / span, 0.0]
    out[9] = unaligned
    out[12] = al.skipped / (al.skipped + len(al.words))
    out[13] = span / max(al.n_frames, 1)
    if not speech:
        return out
    frames = np.array([p[3] for p in speech], dtype=np.float64)
    gop = np.array([p[4] / max(p[3], 1) for p in speech], dtype=np.float64)
    out[3] = len(speech) / frames.sum() * FRAMES_PER_S
    out[4:9] = [gop.mean(), gop.std(), np.percentile(gop, 10), np.percentile(gop, 25), float(np.mean(gop < LOW_GOP))]
    out[10:12] = [frames.mean(), frames.std()]
    n = len(PHONES)
    count, gsum, fsum = np.zeros(n), np.zeros(n), np.zeros(n)
    for (_, name, _, nf, _), pg in zip(speech, gop, strict=True):
        k = index.get(str(name))
        if k is not None:
            count[k] += 1
            gsum[k] += pg
            fsum[k] += nf
    with np.errstate(invalid="ignore", divide="ignore"):
        out[g : g + n] = np.where(count > 0, gsum / count, np.nan)
        out[g + n :] = np.where(count > 0, fsum / count, np.nan)
    return out


def reading_features(signal: np.ndarray, sr: int, prompt: str) -> np.ndarray:
    """Align and summarise: ``[len(FEATURE_NAMES)]`` float64."""
    return reading_features_from_alignment(align_reading(signal, sr, prompt))


def word_report(al: ReadingAlignment) -> list[dict[str, Any]]:
    """Per word read, in order: ``word``, ``start_s`` / ``end_s``, ``gop`` (mean per-frame goodness
    of pronunciation of its phones; None where the word could not be aligned), ``weakest`` (its
    phone with the lowest score) and ``low`` (``gop`` under :data:`LOW_GOP`): where a listener
    should look first."""
    per_word: dict[int, list[tuple[str, int, float]]] = {}
    for k, name, _, frames, score in al.phones:
        if name is not None and name != "SIL" and score is not None:
            per_word.setdefault(k, []).append((name, frames, score))
    out = []
    for k, (w, a, b) in enumerate(al.words):
        phones = per_word.get(k, [])
        frames = sum(f for _, f, _ in phones)
        gop = sum(sc for _, _, sc in phones) / frames if frames else None
        weakest = min(phones, key=lambda p: p[2] / max(p[1], 1))[0] if phones else None
        out.append({"word": w, "start_s": round(a / FRAMES_PER_S, 2), "end_s": round((b + 1) / FRAMES_PER_S, 2),
                    "gop": None if gop is None else round(gop, 1), "weakest": weakest,
                    "low": gop is not None and gop < LOW_GOP})
    return out


def passage_matches(transcript: str | None, passage: list[str]) -> bool:
    """Whether a transcript begins with ``passage`` (dictionary words, as a model stores them)."""
    if not transcript or not passage:
        return False
    return dictionary_words(transcript)[0][: len(passage)] == list(passage)


def passage_word_features(signal: np.ndarray, sr: int, al: ReadingAlignment, n_words: int) -> np.ndarray:
    """``[n_words * len(WORD_FEATURES)]``: the :data:`WORD_FEATURES` of the prompt's first ``n_words``
    words, by position (NaN for a word not read or too short to measure)."""
    import librosa

    out = np.full((n_words, len(WORD_FEATURES)), np.nan)
    if not al.words:
        return out.ravel()
    from scipy import signal as sps

    x = np.asarray(signal, dtype=np.float64)
    if len(x) > 30:
        x = sps.sosfiltfilt(sps.butter(8, 3800, fs=sr, output="sos"), x)
    m = librosa.feature.mfcc(y=x, sr=sr, n_mfcc=N_MFCC, n_fft=512, hop_length=SAMPLES_PER_FRAME, n_mels=40, fmax=4000)
    m = (m - m.mean(axis=1, keepdims=True)) / (m.std(axis=1, keepdims=True) + 1e-6)
    for pos, (_, a, b) in zip(al.positions, al.words, strict=True):
        seg = m[:, a : b + 1]
        if pos < n_words and seg.shape[1] >= 2:
            out[pos] = np.concatenate([seg.mean(axis=1), seg.std(axis=1), [b - a + 1]])
    return out.ravel()


def fusion_feature_names(passage_words: int = 0) -> list[str]:
    """Names of :func:`fusion_features`: the reading features, then, for a passage model, the
    word features of each of its first ``passage_words`` words (``w3_mfcc0_mean``, ...)."""
    return FEATURE_NAMES + [f"w{k}_{name}" for k in range(passage_words) for name in WORD_FEATURES]


def fusion_features(signal: np.ndarray, sr: int, transcript: str,
                    passage: list[str] | None = None) -> tuple[np.ndarray, ReadingAlignment]:
    """What a ``reading_fusion`` model takes from one recording (one alignment): the reading
    features, and for a passage model (``passage``: its words, which the transcript begins with)
    the passage word features. Training and inference both call this."""
    al = align_reading(signal, sr, transcript)
    feats = reading_features_from_alignment(al)
    if passage:
        feats = np.concatenate([feats, passage_word_features(signal, sr, al, len(passage))])
    return feats, al
