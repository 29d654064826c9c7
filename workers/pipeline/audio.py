"""Audio ingestion: every upload enters the pipeline through :func:`load_audio`.

``load_audio`` decodes wav, flac, mp3 and ogg/opus with soundfile (libsndfile) and everything else
(m4a/aac, webm, ...) with an FFmpeg subprocess, mixes to mono and resamples to 16 kHz float32.
``validate_audio`` then applies the service's rules on duration and level. Both raise
:class:`AudioError` with a stable ``code`` and a message a user can act on.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Literal

import numpy as np
import soundfile as sf
import soxr

TARGET_SR = 16000
SUPPORTED = "wav, flac, mp3, ogg/opus, m4a/aac, webm"
# A one-hour m4a decodes in a few seconds; only a stuck decoder reaches these limits.
FFPROBE_TIMEOUT_S = 30.0
FFMPEG_TIMEOUT_S = 300.0
# Decoders pad or trim a few codec frames; a container that promises more than this beyond what
# FFmpeg decoded was cut short.
TRUNCATION_TOLERANCE_S = 0.25
#: Peak level (dBFS) under which a recording is digital silence (``validate_audio``): about 10 steps of
#: 16-bit PCM. Anything louder may be quiet speech, which VAD judges after :func:`normalise_level`.
DIGITAL_SILENCE_DBFS = -70.0
#: Level :func:`normalise_level` brings a recording's loud frames to before the models hear it
TARGET_LEVEL_DBFS = -20.0

AudioErrorCode = Literal["not_audio", "corrupt", "empty", "silent", "too_short", "too_long", "too_large", "non_finite"]
AudioSource = str | os.PathLike | bytes | bytearray | memoryview | BinaryIO

# Formats soundfile cannot read: go straight to FFmpeg.
_FFMPEG_ONLY = frozenset({"m4a", "mp4", "aac", "webm", "mkv", "mka", "wma", "amr", "3gp"})
_SF_FORMATS = {"WAV": "wav", "WAVEX": "wav", "RF64": "wav", "W64": "wav", "FLAC": "flac", "MP3": "mp3", "OGG": "ogg"}
_FFMPEG_FORMATS = {"mov,mp4,m4a,3gp,3g2,mj2": "m4a", "matroska,webm": "webm"}
# Demuxers FFmpeg may use on an upload. Playlists (hls, concat, ...) would open other files or URLs.
_FFMPEG_DEMUXERS = "mov,matroska,aac,mp3,ogg,flac,wav,w64,aiff,caf,asf,amr"
# Lossless containers whose header states the exact number of frames, so a shortfall means truncation.
_EXACT_LENGTH = frozenset({"wav", "flac"})
# libsndfile shrinks a WAV's frame count to the bytes present and logs the header's claim like
# "data : 64000 (should be 31978)". Streamed WAVs (written to a pipe before the length is known)
# carry a placeholder instead of a size: 0xFFFFFFFF, 0x7FFFFFFF, or 0x7FFFF000 plus the header
# (espeak-ng --stdout, sox). A claim that large is "unknown length", never a promise.
_WAV_DATA_LOG = re.compile(r"^data\s*:\s*(\d+)\s*\(should be (\d+)\)", re.MULTILINE)
_STREAMED_WAV_MIN_SIZE = 0x7FFF0000
_FFMPEG_LOG_PREFIX = re.compile(r"^(\[[^\]]* @ 0x[0-9a-f]+\] |file:.*?: )", re.MULTILINE)

# Leading bytes of containers that hold audio: a file that starts like one but fails to decode is
# damaged ("corrupt"), anything else is "not_audio".
_AUDIO_MAGIC: tuple[tuple[int, bytes, str], ...] = (
    (0, b"RIFF", "a WAV file"),
    (0, b"RF64", "a WAV file"),
    (0, b"fLaC", "a FLAC file"),
    (0, b"OggS", "an Ogg file"),
    (0, b"ID3", "an MP3 file"),
    (0, b"FORM", "an AIFF file"),
    (0, b"\x1a\x45\xdf\xa3", "a WebM/Matroska file"),
    (4, b"ftyp", "an MP4/M4A file"),
)
_OTHER_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"%PDF", "a PDF document"),
    (b"\x89PNG", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF8", "a GIF image"),
    (b"PK\x03\x04", "a ZIP archive or an Office document"),
    (b"\x1f\x8b", "a gzip archive"),
)


class AudioError(Exception):
    """Audio that cannot be used, with a stable ``code`` and a human, actionable ``message``.

    Parameters
    ----------
    code : str
        One of ``not_audio``, ``corrupt``, ``empty``, ``silent``, ``too_short``, ``too_long``,
        ``too_large``, ``non_finite``.
    message : str
        What is wrong and what the user can do about it.
    """

    def __init__(self, code: AudioErrorCode, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


@dataclass(frozen=True)
class DecodedAudio:
    """A decoded recording.

    Attributes
    ----------
    samples : np.ndarray
        float32, ``[time]``, mono, at ``sample_rate``.
    sample_rate : int
        Rate of ``samples`` in Hz.
    orig_sample_rate : int
        Rate of the file as stored.
    channels : int
        Number of channels of the file as stored (mixed down to mono in ``samples``).
    format : str
        Container as detected from the content, e.g. ``wav``, ``flac``, ``mp3``, ``ogg``, ``m4a``, ``webm``.
    duration_s : float
        ``len(samples) / sample_rate``.
    """

    samples: np.ndarray
    sample_rate: int
    orig_sample_rate: int
    channels: int
    format: str
    duration_s: float


@dataclass(frozen=True)
class _Raw:
    """Decoder output before mixing and resampling; ``samples`` is float32 ``[time, channels]``."""

    samples: np.ndarray
    sample_rate: int
    format: str


def load_audio(
    source: AudioSource,
    sample_rate: int = TARGET_SR,
    *,
    format_hint: str | None = None,
    max_duration_s: float | None = None,
) -> DecodedAudio:
    """Decode a recording to mono float32 at ``sample_rate``.

    Parameters
    ----------
    source : path, bytes or binary file object
        The encoded file. A file object (e.g. from Django storage ``open()``) is read to its end.
    sample_rate : int
        Output rate in Hz.
    format_hint : str, optional
        The upload's extension or declared format (``"m4a"``, ``".webm"``). Formats soundfile cannot
        read skip it and go straight to FFmpeg; the detected format is reported either way.
    max_duration_s : float, optional
        Refuse (``too_long``) recordings longer than this, from the header when it states the length
        and before decoding, so an absurdly long file never fills memory.

    Returns
    -------
    DecodedAudio
        ``samples`` is float32 ``[time]``: the mean of the channels, resampled with soxr.

    Raises
    ------
    AudioError
        ``empty``, ``not_audio``, ``corrupt``, ``too_long`` or ``non_finite``.
    RuntimeError
        The file needs FFmpeg and FFmpeg is not installed (a deployment fault, not bad audio).
    """
    path, data = _read_source(source)
    size = os.path.getsize(path) if path is not None else len(data)
    if size == 0:
        raise AudioError("empty", "The file is empty (0 bytes). The upload probably failed; upload it again.")
    hint = (format_hint or (Path(path).suffix if path is not None else "")).lower().lstrip(".")

    raw = None
    if hint not in _FFMPEG_ONLY:
        raw = _decode_soundfile(path if path is not None else io.BytesIO(data), max_duration_s)
    if raw is None:
        raw = _decode_ffmpeg(path, data, max_duration_s)

    frames, channels = raw.samples.shape
    if frames == 0:
        raise AudioError("empty", f"The {raw.format} file has a valid header but contains no audio samples.")
    bad = frames * channels - int(np.count_nonzero(np.isfinite(raw.samples)))
    if bad:
        raise AudioError(
            "non_finite",
            f"{bad} of {frames * channels} samples are NaN or infinite, so the audio cannot be analysed. "
            "Re-export it as 16-bit PCM WAV or FLAC.",
        )
    mono = raw.samples[:, 0] if channels == 1 else raw.samples.mean(axis=1, dtype=np.float32)
    if raw.sample_rate != sample_rate:
        # soxr "HQ" (what librosa.resample uses by default): a band-limited polyphase resampler,
        # ~5x faster than torchaudio.functional.resample on CPU here (44.1 -> 16 kHz) with a
        # steeper anti-alias filter, and no torch in the decode path.
        mono = soxr.resample(mono, raw.sample_rate, sample_rate, quality="HQ")
    mono = np.require(mono, dtype=np.float32, requirements=["C", "W"])  # FFmpeg's buffer is read-only
    return DecodedAudio(
        samples=mono,
        sample_rate=sample_rate,
        orig_sample_rate=raw.sample_rate,
        channels=channels,
        format=raw.format,
        duration_s=mono.size / sample_rate,
    )


def validate_audio(
    audio: DecodedAudio,
    *,
    min_duration_s: float = 0.25,
    max_duration_s: float = 3600.0,
    silence_dbfs: float = DIGITAL_SILENCE_DBFS,
) -> None:
    """Apply the service's rules to a decoded recording.

    Parameters
    ----------
    audio : DecodedAudio
        ``samples`` float32 ``[time]``.
    min_duration_s, max_duration_s : float
        Allowed duration range in seconds.
    silence_dbfs : float
        A recording whose peak level (DC removed, dB re full scale 1.0) is below this is digital
        silence. The floor is low on purpose: quiet speech is speech (real recordings of clear
        speech sit at RMS under -60 dBFS and peaks under -40 dBFS), so whether a recording holds
        speech is judged later by VAD on the level-normalised signal (:func:`normalise_level`),
        never by its loudness.

    Raises
    ------
    AudioError
        ``empty``, ``non_finite``, ``too_short``, ``too_long`` or ``silent``.
    """
    x = audio.samples
    if x.size == 0:
        raise AudioError("empty", "The recording contains no audio samples.")
    if not np.isfinite(x).all():
        raise AudioError("non_finite", "The recording contains NaN or infinite samples. Re-export it as 16-bit PCM WAV or FLAC.")
    duration = x.size / audio.sample_rate
    if duration < min_duration_s:
        raise AudioError(
            "too_short", f"The recording is {duration:.2f} s long; at least {min_duration_s:g} s is needed. Upload a longer recording."
        )
    if duration > max_duration_s:
        raise AudioError("too_long", _too_long_message(duration, max_duration_s))
    mean = float(np.mean(x, dtype=np.float64))
    peak = max(float(x.max()) - mean, mean - float(x.min()))
    variance = float(np.dot(x, x)) / x.size - mean * mean  # float32 dot: no float64 copy of an hour of audio
    peak_db, rms_db = _dbfs(peak), _dbfs(math.sqrt(max(variance, 0.0)))
    if peak_db < silence_dbfs:
        raise AudioError(
            "silent",
            f"The recording is silent: its loudest sample is at {peak_db:.1f} dBFS (RMS {rms_db:.1f} dBFS), below the "
            f"{silence_dbfs:g} dBFS floor of digital silence. Check that the microphone was on and not muted.",
        )


def normalise_level(samples: np.ndarray, *, target_dbfs: float = TARGET_LEVEL_DBFS, max_gain_db: float = 60.0,
                    frame: int = 400) -> tuple[np.ndarray, float]:
    """The recording at a standard level, and the gain applied (dB).

    The loud frames (95th percentile of the RMS of ``frame``-sample frames, 25 ms at 16 kHz) are
    brought to ``target_dbfs``, with the gain limited to ``max_gain_db`` and to what keeps the peak
    under full scale; digital silence is returned as it is. Speech recorded quietly (RMS -60 dBFS)
    then reaches the VAD and the models at the level of a normal recording: silero VAD found 1.9 s
    of a 5.6-s espeak sentence at -70 dBFS RMS against 5.3 s at -30 dBFS.

    Parameters
    ----------
    samples : np.ndarray
        float32 ``[time]``.

    Returns
    -------
    (np.ndarray, float)
        float32 ``[time]`` (a new array unless the gain is 0 dB) and the gain in dB.
    """
    x = np.asarray(samples, dtype=np.float32).reshape(-1)
    n = x.size // frame
    if n == 0:
        frames_rms = np.sqrt(np.mean(np.square(x, dtype=np.float64))) if x.size else np.zeros(1)
    else:
        frames_rms = np.sqrt(np.mean(np.square(x[: n * frame].reshape(n, frame), dtype=np.float64), axis=1))
    loud = float(np.percentile(frames_rms, 95)) if np.size(frames_rms) else 0.0
    peak = float(np.max(np.abs(x))) if x.size else 0.0
    if loud <= 0 or peak <= 0:
        return x, 0.0
    gain = min(10 ** (target_dbfs / 20) / loud, 0.99 / peak, 10 ** (max_gain_db / 20))
    if abs(gain - 1.0) < 1e-3:
        return x, 0.0
    return (x * np.float32(gain)).astype(np.float32), round(20 * math.log10(gain), 2)


def _dbfs(amplitude: float) -> float:
    return 20.0 * math.log10(amplitude) if amplitude > 0 else -math.inf


def _too_long_message(duration_s: float, max_duration_s: float) -> str:
    return f"The recording is {duration_s / 60:.1f} min long; the limit is {max_duration_s / 60:g} min. Split it into shorter files."


def _check_length(duration_s: float, max_duration_s: float | None) -> None:
    if max_duration_s is not None and duration_s > max_duration_s:
        raise AudioError("too_long", _too_long_message(duration_s, max_duration_s))


def _read_source(source: AudioSource) -> tuple[str | None, bytes]:
    """Return ``(path, b"")`` for a path, else ``(None, data)`` with the whole content."""
    if isinstance(source, (str, os.PathLike)):
        return os.fspath(source), b""
    if isinstance(source, (bytes, bytearray, memoryview)):
        return None, bytes(source)
    return None, source.read()


def _decode_soundfile(file: str | io.BytesIO, max_duration_s: float | None) -> _Raw | None:
    """Decode with libsndfile; ``None`` when it does not recognise the format."""
    try:
        f = sf.SoundFile(file)
    except sf.LibsndfileError:
        return None
    with f:
        fmt = _SF_FORMATS.get(f.format, f.format.lower())
        promised = _promised_frames(f)
        # The length check before reading trusts the header only as far as the bytes present go:
        # libsndfile bounds a WAV's frame count by the file size; a compressed format's header
        # (FLAC STREAMINFO) is all there is, and the read below stops at the limit either way.
        _check_length(min(promised, f.frames) / f.samplerate, max_duration_s)
        limit = -1 if max_duration_s is None else int(max_duration_s * f.samplerate) + 1
        try:
            samples = f.read(frames=limit, dtype="float32", always_2d=True)
        except sf.LibsndfileError as exc:
            raise AudioError(
                "corrupt",
                f"The {fmt} file is damaged or ends early ({exc.error_string.strip()}); its header promises "
                f"{promised / f.samplerate:.2f} s of audio. Export or upload it again.",
            ) from exc
        _check_length(len(samples) / f.samplerate, max_duration_s)
        if fmt in _EXACT_LENGTH and len(samples) < promised:
            raise AudioError(
                "corrupt",
                f"The file ends early: its {fmt} header promises {promised / f.samplerate:.2f} s of audio but only "
                f"{len(samples) / f.samplerate:.2f} s is present. The upload or export was cut off; upload it again.",
            )
        return _Raw(samples, int(f.samplerate), fmt)


def _promised_frames(f: sf.SoundFile) -> int:
    """Frames the header promises (libsndfile reports only those present for a cut-off WAV)."""
    match = _WAV_DATA_LOG.search(f.extra_info)
    if match is None:
        return f.frames
    claimed, present = int(match.group(1)), int(match.group(2))
    if claimed >= _STREAMED_WAV_MIN_SIZE or claimed <= present or present == 0:
        return f.frames
    return round(f.frames * claimed / present)


def _decode_ffmpeg(path: str | None, data: bytes, max_duration_s: float | None) -> _Raw:
    """Decode with ffprobe + ffmpeg; the decoded PCM comes back on a stdout pipe.

    The input is a file, not stdin: an m4a whose index (``moov`` atom) sits at the end, as most
    recorders write it, can only be read from a seekable input. Bytes are spooled to a temp file.
    """
    if shutil.which("ffmpeg") is None or shutil.which("ffprobe") is None:
        raise RuntimeError("FFmpeg is not installed; it is needed to decode m4a/aac/webm (apt-get install ffmpeg).")
    with _as_file(path, data) as input_path:
        head = _head(input_path)
        source = ["-format_whitelist", _FFMPEG_DEMUXERS, "-i", f"file:{input_path}"]  # "file:": never a URL
        probe_cmd = ["ffprobe", "-v", "error", *source, "-select_streams", "a:0", "-of", "json"]
        probe = _run([*probe_cmd, "-show_entries", "stream=sample_rate,channels:format=format_name,duration"], FFPROBE_TIMEOUT_S)
        if probe.returncode != 0:
            raise _undecodable(head, _first_log_line(probe.stderr))
        info = json.loads(probe.stdout)
        container = info["format"]["format_name"]
        fmt = _FFMPEG_FORMATS.get(container, container.split(",")[0])
        if not info.get("streams"):
            raise AudioError(
                "not_audio",
                f"The file has no audio track. It looks like {_describe(head) or f'a {fmt} file without sound'}. "
                f"Upload the recording itself ({SUPPORTED}).",
            )
        stream = info["streams"][0]
        orig_sr, channels = int(stream.get("sample_rate") or 0), int(stream.get("channels") or 0)
        if orig_sr <= 0 or channels <= 0:
            raise AudioError("corrupt", f"The {fmt} file's audio track has no valid sample rate or channel count.")
        promised_s = float(info["format"].get("duration") or 0.0)  # absent for e.g. browser-recorded webm
        _check_length(promised_s, max_duration_s)
        # Keep the stored rate and channels: the channel mean and soxr below are the same for both decoders.
        cmd = ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", *source, "-map", "0:a:0"]
        cmd += ["-f", "f32le", "-ac", str(channels), "-ar", str(orig_sr)]
        if max_duration_s is not None:
            cmd += ["-t", f"{max_duration_s + 1.0:.3f}"]  # stop decoding a file whose header lied
        proc = _run([*cmd, "pipe:1"], FFMPEG_TIMEOUT_S)
    if proc.returncode != 0:
        raise AudioError(
            "corrupt", f"The {fmt} file is damaged and cannot be decoded ({_first_log_line(proc.stderr)}). Export or upload it again."
        )
    samples = np.frombuffer(proc.stdout, dtype="<f4")
    samples = samples[: samples.size - samples.size % channels].reshape(-1, channels)
    decoded_s = len(samples) / orig_sr
    _check_length(decoded_s, max_duration_s)
    if promised_s - decoded_s > TRUNCATION_TOLERANCE_S:
        raise AudioError(
            "corrupt",
            f"The file ends early: its {fmt} header promises {promised_s:.2f} s of audio but only {decoded_s:.2f} s "
            "could be decoded. The upload or export was cut off; upload it again.",
        )
    return _Raw(samples, orig_sr, fmt)


@contextlib.contextmanager
def _as_file(path: str | None, data: bytes) -> Iterator[str]:
    if path is not None:
        yield path
        return
    with tempfile.NamedTemporaryFile(prefix="accentsite-audio-") as tmp:
        tmp.write(data)
        tmp.flush()
        yield tmp.name


def _run(cmd: list[str], timeout_s: float) -> subprocess.CompletedProcess[bytes]:
    try:
        return subprocess.run(cmd, capture_output=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired as exc:
        raise AudioError("corrupt", f"Decoding took longer than {timeout_s:g} s and was stopped; the file is probably damaged.") from exc


def _head(path: str, n: int = 64) -> bytes:
    with open(path, "rb") as f:
        return f.read(n)


def _first_log_line(stderr: bytes) -> str:
    """FFmpeg's first complaint (the most specific one), without its component and file prefixes."""
    lines = _FFMPEG_LOG_PREFIX.sub("", stderr.decode("utf-8", "replace")).strip().splitlines()
    return lines[0].strip() if lines else "no details"


def _undecodable(head: bytes, detail: str) -> AudioError:
    """``corrupt`` if the content starts like an audio container, else ``not_audio``."""
    for offset, magic, kind in _AUDIO_MAGIC:
        if head[offset : offset + len(magic)] == magic:
            return AudioError("corrupt", f"The file looks like {kind} but it is damaged or incomplete ({detail}). Export or upload it again.")
    return AudioError(
        "not_audio",
        f"The file is not audio we can decode ({SUPPORTED}). It looks like {_describe(head) or 'unrecognised binary data'}.",
    )


def _describe(head: bytes) -> str:
    """A guess at what a non-audio file is, from its first bytes; ``""`` when unknown."""
    for magic, kind in _OTHER_MAGIC:
        if head.startswith(magic):
            return kind
    text = head.decode("utf-8", "replace")  # the last character may be cut: allow one bad sequence
    return "text" if text.count("\ufffd") <= 1 and all(c.isprintable() or c.isspace() for c in text) else ""
