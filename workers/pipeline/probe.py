"""Cheap header probe of an upload: format, rate, channels and duration without decoding it all.

The upload path only probes (fast, constant memory); full decoding and validation happen in the
worker, where a file whose header is fine but whose data is truncated fails that one recording.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from typing import BinaryIO

import soundfile as sf

from workers.pipeline.audio import _FFMPEG_DEMUXERS, AudioError

SUPPORTED_FORMATS = ("wav", "flac", "mp3", "ogg", "opus", "m4a", "aac", "webm")
_SF_FORMATS = {"WAV": "wav", "WAVEX": "wav", "FLAC": "flac", "MPEG": "mp3", "OGG": "ogg", "AIFF": "aiff"}
_FFPROBE_TIMEOUT_S = 30


@dataclass(frozen=True)
class AudioInfo:
    format: str
    sample_rate: int
    channels: int
    duration_s: float


def probe_audio(fileobj: BinaryIO, *, filename: str = "", path: str | None = None) -> AudioInfo:
    """Read an audio header.

    Parameters
    ----------
    fileobj : seekable binary file object positioned anywhere (it is rewound)
    filename : the user's filename, used only to name the format in messages
    path : a local path of the same bytes when one exists (lets FFmpeg seek in m4a/webm)

    Raises
    ------
    AudioError
        ``empty`` for zero bytes, ``not_audio`` when neither soundfile nor FFmpeg recognises it.
    """
    fileobj.seek(0, os.SEEK_END)
    size = fileobj.tell()
    fileobj.seek(0)
    if size == 0:
        raise AudioError("empty", f"'{filename}' is empty (0 bytes). Upload the recording again.")
    try:
        info = sf.info(fileobj)
        fmt = _SF_FORMATS.get(info.format, info.format.lower())
        if info.frames <= 0 or info.samplerate <= 0:
            raise AudioError("empty", f"'{filename}' holds no audio samples.")
        return AudioInfo(fmt, int(info.samplerate), int(info.channels), info.frames / info.samplerate)
    except (sf.LibsndfileError, RuntimeError, TypeError):
        pass
    finally:
        fileobj.seek(0)
    return _probe_ffprobe(fileobj, filename=filename, path=path)


def _probe_ffprobe(fileobj: BinaryIO, *, filename: str, path: str | None) -> AudioInfo:
    if shutil.which("ffprobe") is None:
        raise AudioError(
            "not_audio",
            f"'{filename}' is not wav/flac/mp3/ogg, and FFmpeg (needed for m4a/aac/webm) is not installed.",
        )
    tmp = None
    if path is None:
        tmp = tempfile.NamedTemporaryFile(suffix=os.path.splitext(filename)[1][:10] or ".bin", delete=False)
        shutil.copyfileobj(fileobj, tmp)
        tmp.close()
        fileobj.seek(0)
        path = tmp.name
    try:
        # Same demuxer whitelist and "file:" prefix as the decoder: an upload must never make
        # FFmpeg open a playlist (hls, concat) that reads other local files or URLs.
        proc = subprocess.run(
            ["ffprobe", "-v", "error", "-format_whitelist", _FFMPEG_DEMUXERS,
             "-show_entries", "format=format_name,duration:stream=codec_type,sample_rate,channels,duration",
             "-of", "json", f"file:{path}"],
            capture_output=True, timeout=_FFPROBE_TIMEOUT_S, check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise AudioError("corrupt", f"'{filename}' could not be read: probing it took over {_FFPROBE_TIMEOUT_S} s.") from exc
    finally:
        if tmp is not None:
            os.unlink(tmp.name)
    data = json.loads(proc.stdout or b"{}") if proc.returncode == 0 else {}
    streams = [s for s in data.get("streams", []) if s.get("codec_type") == "audio"]
    if not streams:
        raise AudioError(
            "not_audio",
            f"'{filename}' is not audio we can decode (wav, flac, mp3, ogg/opus, m4a/aac, webm).",
        )
    stream = streams[0]
    if int(stream.get("sample_rate") or 0) <= 0 or int(stream.get("channels") or 0) <= 0:
        # FFmpeg guesses a container from the extension of random bytes and reports a stream
        # with no rate or channels: that is not audio anyone can decode.
        raise AudioError(
            "not_audio",
            f"'{filename}' is not audio we can decode: no valid sample rate or channel count (wav, flac, mp3, ogg/opus, m4a/aac, webm).",
        )
    duration = float(stream.get("duration") or data.get("format", {}).get("duration") or 0.0)
    fmt_name = data.get("format", {}).get("format_name", "")
    ext = os.path.splitext(filename)[1].lower().lstrip(".")
    fmt = ext if ext in SUPPORTED_FORMATS else fmt_name.split(",")[0]
    if fmt == "mov":
        fmt = "m4a"
    return AudioInfo(fmt, int(stream.get("sample_rate") or 0), int(stream.get("channels") or 0), duration)
