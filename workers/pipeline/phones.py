"""Phone-recogniser features: how a US-English acoustic model hears a recording.

The ``pocketsphinx`` wheel ships a US-English acoustic model and a phone bigram model, so a
phone-loop ("allphone") decoder runs offline. Decoding gives a phone sequence with frame spans
and acoustic scores; :func:`phone_features` summarises it into a fixed vector: how well each
phone fits the native-English model, how often each phone is heard and how long it lasts, the
phone rate and the pause share. Those are pronunciation cues a speaker encoder only partly keeps.

Input is low-passed to 3.8 kHz first, as every accent model here is, so the bandwidth of a
corpus cannot be a cue. One decoder per process (not thread-safe); about 16x real time per core.
"""
from __future__ import annotations

import threading
from typing import Any

import numpy as np

__all__ = ["PHONES", "FEATURE_NAMES", "decode_phones", "phone_features", "phone_features_from_segments"]

# the 39 phones of the CMU dictionary, as the en-us model names them
PHONES = (
    "AA AE AH AO AW AY B CH D DH EH ER EY F G HH IH IY JH K L M N NG OW OY P R S SH T TH UH UW V W Y Z ZH"
).split()
_GLOBAL = ["score_per_frame", "phone_score_mean", "phone_score_std", "phone_score_p10", "phones_per_s",
           "speech_share", "phone_frames_mean", "phone_frames_std"]
FEATURE_NAMES = (_GLOBAL + [f"share_{p}" for p in PHONES] + [f"score_{p}" for p in PHONES]
                 + [f"frames_{p}" for p in PHONES])
FRAMES_PER_S = 100  # the model's 10 ms frame shift

_local = threading.local()


def new_decoder(**config: Any) -> tuple[Any, str]:
    """A pocketsphinx decoder on the wheel's US-English acoustic model (``config``: its other
    options), and its starting cepstral-mean estimate, for :func:`reset_front_end`."""
    import pocketsphinx

    dec = pocketsphinx.Decoder(hmm=model_file("en-us"), samprate=16000, loglevel="FATAL", **config)
    return dec, dec.get_cmn(False)


def model_file(name: str) -> str:
    """A file of the pocketsphinx wheel's US-English model folder."""
    import os

    import pocketsphinx

    return os.path.join(pocketsphinx.get_model_path(), "en-us", name)


def reset_front_end(dec: Any, cmn: str) -> None:
    """Start a recording from the decoder's initial front-end state: the cepstral-mean estimate
    and the noise tracker otherwise carry over from one utterance to the next, and a recording's
    features would depend on what this process decoded before."""
    import warnings

    dec.set_cmn(cmn)
    with warnings.catch_warnings():  # "deprecated and unnecessary", yet it is what resets the front end's
        warnings.simplefilter("ignore", DeprecationWarning)  # noise tracker between utterances (5.1.1)
        dec.start_stream()


def _decoder() -> Any:
    dec = getattr(_local, "decoder", None)
    if dec is None:
        dec, _local.cmn = new_decoder(allphone=model_file("en-us-phone.lm.bin"), lw=2.0, beam=1e-20, pbeam=1e-20)
        _local.decoder = dec
    return dec


def _prepare(signal: np.ndarray, sr: int) -> bytes:
    from scipy import signal as sps

    x = np.asarray(signal, dtype=np.float64)
    if sr != 16000:
        raise ValueError(f"phone decoding needs 16 kHz audio, got {sr} Hz")
    if len(x) > 30:
        x = sps.sosfiltfilt(sps.butter(8, 3800, fs=16000, output="sos"), x)
    rms = float(np.sqrt(np.mean(x**2))) if len(x) else 0.0
    x = x / (rms + 1e-9) * 0.05  # -26 dBFS: the decoder's front end adapts, but from a fixed start
    return (np.clip(x, -1.0, 1.0) * 32767).astype(np.int16).tobytes()


def decode_phones(signal: np.ndarray, sr: int = 16000) -> list[tuple[str, int, int, float]]:
    """Phone-loop decode: ``[(phone, start_frame, end_frame, acoustic_score), ...]`` (10 ms frames,
    inclusive ends; silences and noises included, named ``SIL``, ``+NSN+``, ...; the score is
    pocketsphinx's, a likelihood ratio in (0, 1])."""
    dec = _decoder()
    reset_front_end(dec, _local.cmn)
    dec.start_utt()
    dec.process_raw(_prepare(signal, sr), full_utt=True)
    dec.end_utt()
    return [(seg.word, int(seg.start_frame), int(seg.end_frame), float(seg.ascore)) for seg in dec.seg()]


def phone_features_from_segments(segments: list[tuple[str, int, int, float]]) -> np.ndarray:
    """The :data:`FEATURE_NAMES` vector of a decoded recording (zeros where nothing was heard)."""
    index = {p: k for k, p in enumerate(PHONES)}
    total = sum(e - s + 1 for _, s, e, _ in segments)
    # pocketsphinx reports a segment's acoustic score as a likelihood ratio in (0, 1] against the
    # best-scoring state of each frame; its log is the segment's acoustic log-score (<= 0)
    speech = [(p, e - s + 1, float(np.log(max(a, 1e-300)))) for p, s, e, a in segments if p in index]
    out = np.zeros(len(FEATURE_NAMES), dtype=np.float64)
    if not speech:
        return out
    frames = np.array([n for _, n, _ in speech], dtype=np.float64)
    scores = np.array([a for _, _, a in speech], dtype=np.float64)
    per_frame = scores / frames
    out[: len(_GLOBAL)] = [
        scores.sum() / frames.sum(), per_frame.mean(), per_frame.std(), np.percentile(per_frame, 10),
        len(speech) / max(total, 1) * FRAMES_PER_S, frames.sum() / max(total, 1), frames.mean(), frames.std(),
    ]
    count = np.zeros(len(PHONES))
    score = np.zeros(len(PHONES))
    dur = np.zeros(len(PHONES))
    for (p, n, _), pf in zip(speech, per_frame, strict=True):
        k = index[p]
        count[k] += 1
        score[k] += pf
        dur[k] += n
    seen = np.maximum(count, 1)
    g, n = len(_GLOBAL), len(PHONES)
    out[g : g + n] = count / len(speech)
    out[g + n : g + 2 * n] = score / seen
    out[g + 2 * n :] = dur / seen
    return out


def phone_features(signal: np.ndarray, sr: int = 16000) -> np.ndarray:
    """Decode and summarise: ``[len(FEATURE_NAMES)]`` float64."""
    return phone_features_from_segments(decode_phones(signal, sr))
