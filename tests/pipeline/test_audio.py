"""Tests for workers.pipeline.audio: decoding, mixing, resampling and the error codes."""

from __future__ import annotations

import io
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from workers.pipeline.audio import TARGET_SR, AudioError, DecodedAudio, load_audio, validate_audio


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))


def _stereo_tone(synth, sr: int, duration: float = 2.0) -> np.ndarray:
    """``[time, 2]``: the same 1 kHz tone (amplitude 0.5) in both channels."""
    return np.stack([synth.tone(1000, duration, sr)] * 2, axis=1)


@pytest.mark.parametrize(
    ("name", "sf_format", "subtype", "sr", "expected"),
    [
        ("a.wav", "WAV", "PCM_16", 44100, "wav"),
        ("a.flac", "FLAC", "PCM_24", 44100, "flac"),
        ("a.mp3", "MP3", "MPEG_LAYER_III", 44100, "mp3"),
        ("a.ogg", "OGG", "VORBIS", 44100, "ogg"),
        ("a.opus", "OGG", "OPUS", 48000, "ogg"),
    ],
)
def test_soundfile_formats_decode_to_16k_mono(synth, tmp_path, name, sf_format, subtype, sr, expected) -> None:
    path = synth.write(tmp_path / name, _stereo_tone(synth, sr), sr, sf_format, subtype)
    audio = load_audio(path)
    assert (audio.format, audio.orig_sample_rate, audio.channels, audio.sample_rate) == (expected, sr, 2, TARGET_SR)
    assert audio.samples.dtype == np.float32 and audio.samples.ndim == 1
    assert audio.duration_s == pytest.approx(2.0, abs=0.06)  # lossy codecs add or trim a few ms
    assert synth.fft_peak_hz(audio.samples, TARGET_SR) == pytest.approx(1000, abs=2)
    assert _rms(audio.samples) == pytest.approx(0.5 / np.sqrt(2), rel=0.05)


@pytest.mark.parametrize(
    ("name", "args", "expected"),
    [
        ("a.m4a", ["-c:a", "aac"], "m4a"),
        ("a.aac", ["-c:a", "aac"], "aac"),
        ("a.webm", ["-c:a", "libopus"], "webm"),
    ],
)
def test_ffmpeg_formats_decode_to_16k_mono(synth, tmp_path, ffmpeg, name, args, expected) -> None:
    wav = synth.write(tmp_path / "src.wav", _stereo_tone(synth, 44100), 44100)
    path = synth.encode(wav, tmp_path / name, *args)
    audio = load_audio(path)
    assert (audio.format, audio.channels, audio.sample_rate) == (expected, 2, TARGET_SR)
    assert audio.orig_sample_rate == (48000 if expected == "webm" else 44100)  # Opus always decodes at 48 kHz
    assert audio.duration_s == pytest.approx(2.0, abs=0.06)
    assert synth.fft_peak_hz(audio.samples, TARGET_SR) == pytest.approx(1000, abs=2)
    assert _rms(audio.samples) == pytest.approx(0.5 / np.sqrt(2), rel=0.05)


@pytest.mark.parametrize("kind", ["path", "str", "bytes", "fileobj"])
def test_sources_path_bytes_and_file_objects(synth, tmp_path, kind) -> None:
    path = synth.write(tmp_path / "a.wav", synth.tone(1000, 1.0), TARGET_SR, subtype="PCM_16")
    source = {"path": path, "str": str(path), "bytes": path.read_bytes(), "fileobj": io.BytesIO(path.read_bytes())}[kind]
    audio = load_audio(source)
    assert audio.format == "wav" and audio.samples.size == TARGET_SR


@pytest.mark.parametrize("kind", ["bytes", "fileobj"])
def test_m4a_from_memory_with_index_at_the_end(synth, tmp_path, ffmpeg, kind) -> None:
    data = synth.encode(synth.write(tmp_path / "a.wav", synth.tone(1000, 1.0), TARGET_SR), tmp_path / "a.m4a").read_bytes()
    assert data.rfind(b"moov") > data.find(b"mdat")  # FFmpeg's default layout, like most recorders
    audio = load_audio(data if kind == "bytes" else io.BytesIO(data), format_hint="m4a")
    assert audio.format == "m4a" and audio.duration_s == pytest.approx(1.0, abs=0.06)


def test_stereo_is_the_mean_of_the_channels(synth, tmp_path) -> None:
    x = synth.tone(1000, 1.0)
    same = load_audio(synth.write(tmp_path / "same.wav", np.stack([x, x], axis=1), TARGET_SR))
    np.testing.assert_allclose(same.samples, x, atol=1e-6)
    opposite = load_audio(synth.write(tmp_path / "opposite.wav", np.stack([x, -x], axis=1), TARGET_SR))
    assert np.abs(opposite.samples).max() < 1e-6


def test_eight_channels_mix_to_mono(synth, tmp_path) -> None:
    x = synth.tone(1000, 1.0)
    channels = np.stack([x * (k + 1) / 8 for k in range(8)], axis=1)
    audio = load_audio(synth.write(tmp_path / "octo.wav", channels, TARGET_SR))
    assert audio.channels == 8
    np.testing.assert_allclose(audio.samples, channels.mean(axis=1), atol=1e-6)


@pytest.mark.parametrize("sr", [8000, 22050, 44100, 48000, 192000])
def test_resampling_keeps_frequency_level_and_duration(synth, tmp_path, sr) -> None:
    audio = load_audio(synth.write(tmp_path / "tone.wav", synth.tone(1000, 2.0, sr), sr))
    assert audio.orig_sample_rate == sr and audio.sample_rate == TARGET_SR
    assert abs(audio.samples.size - 2 * TARGET_SR) <= 1
    assert synth.fft_peak_hz(audio.samples, TARGET_SR) == pytest.approx(1000, abs=1)
    assert _rms(audio.samples[1000:-1000]) == pytest.approx(0.5 / np.sqrt(2), rel=0.01)


@pytest.mark.parametrize(("sr", "freq"), [(48000, 9000), (192000, 30000)])
def test_resampling_removes_what_is_above_the_new_nyquist(synth, tmp_path, sr, freq) -> None:
    audio = load_audio(synth.write(tmp_path / "high.wav", synth.tone(freq, 1.0, sr), sr))
    assert _rms(audio.samples[1000:-1000]) < 1e-3 * 0.5  # no alias: > 60 dB down (edges hold the onset click)


def test_empty_inputs(synth, tmp_path) -> None:
    with pytest.raises(AudioError) as exc:
        load_audio(b"")
    assert exc.value.code == "empty" and "0 bytes" in exc.value.message
    (tmp_path / "empty.wav").write_bytes(b"")
    with pytest.raises(AudioError, match="empty"):
        load_audio(tmp_path / "empty.wav")
    with pytest.raises(AudioError) as exc:
        load_audio(synth.write(tmp_path / "no_frames.wav", np.zeros(0, np.float32), TARGET_SR))
    assert exc.value.code == "empty" and "no audio samples" in exc.value.message


def test_random_bytes_named_wav_are_not_audio(tmp_path, ffmpeg) -> None:
    path = tmp_path / "noise.wav"
    path.write_bytes(np.random.default_rng(0).bytes(20000))
    with pytest.raises(AudioError) as exc:
        load_audio(path)
    assert exc.value.code == "not_audio"
    assert "not audio we can decode" in exc.value.message


@pytest.mark.parametrize(("data", "looks_like"), [(b"%PDF-1.7\n" + bytes(500), "PDF"), (b"name,accent\nalice,scottish\n" * 20, "text")])
def test_not_audio_says_what_the_file_looks_like(ffmpeg, data, looks_like) -> None:
    with pytest.raises(AudioError) as exc:
        load_audio(data, format_hint="wav")
    assert exc.value.code == "not_audio" and looks_like in exc.value.message


@pytest.mark.parametrize(("fmt", "subtype"), [("WAV", "PCM_16"), ("FLAC", "PCM_16")])
def test_truncated_files_are_corrupt(synth, fmt, subtype) -> None:
    buffer = io.BytesIO()
    sf.write(buffer, synth.tone(440, 2.0), TARGET_SR, format=fmt, subtype=subtype)
    with pytest.raises(AudioError) as exc:
        load_audio(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    assert exc.value.code == "corrupt"
    assert "ends early" in exc.value.message


def _wav_with_data_size(samples: np.ndarray, size: int) -> bytes:
    """A 16-bit WAV whose ``data`` chunk header states ``size`` bytes (RIFF size adjusted to match)."""
    buffer = io.BytesIO()
    sf.write(buffer, samples, TARGET_SR, format="WAV", subtype="PCM_16")
    data = bytearray(buffer.getvalue())
    at = data.index(b"data")
    data[at + 4 : at + 8] = struct.pack("<I", size)
    data[4:8] = struct.pack("<I", min(size + at, 0xFFFFFFFF))
    return bytes(data)


def test_header_claiming_more_data_than_present_is_corrupt(synth) -> None:
    x = synth.tone(440, 1.0)
    with pytest.raises(AudioError) as exc:
        load_audio(_wav_with_data_size(x, 4 * x.size))
    assert exc.value.code == "corrupt"
    assert "promises 2.00 s" in exc.value.message and "only 1.00 s" in exc.value.message


def test_streamed_wav_with_unknown_length_decodes(synth) -> None:
    x = synth.tone(440, 1.0)
    audio = load_audio(_wav_with_data_size(x, 0xFFFFFFFF))
    assert audio.samples.size == x.size


def test_truncated_m4a_is_corrupt(synth, tmp_path, ffmpeg) -> None:
    wav = synth.write(tmp_path / "src.wav", synth.tone(440, 3.0), TARGET_SR)
    data = synth.encode(wav, tmp_path / "a.m4a", "-movflags", "+faststart").read_bytes()  # index first
    with pytest.raises(AudioError) as exc:
        load_audio(data[: len(data) // 2], format_hint="m4a")
    assert exc.value.code == "corrupt" and "ends early" in exc.value.message


def test_nan_samples_are_non_finite(synth, tmp_path) -> None:
    path = synth.write(tmp_path / "nan.wav", np.full(TARGET_SR, np.nan, np.float32), TARGET_SR)
    with pytest.raises(AudioError) as exc:
        load_audio(path)
    assert exc.value.code == "non_finite"
    assert f"{TARGET_SR} of {TARGET_SR} samples" in exc.value.message


def test_max_duration_refuses_before_decoding(synth, tmp_path) -> None:
    path = synth.write(tmp_path / "long.wav", synth.tone(440, 3.0), TARGET_SR)
    with pytest.raises(AudioError) as exc:
        load_audio(path, max_duration_s=2.0)
    assert exc.value.code == "too_long"
    assert load_audio(path, max_duration_s=3.0).duration_s == pytest.approx(3.0)


def test_max_duration_with_ffmpeg(synth, tmp_path, ffmpeg) -> None:
    path = synth.encode(synth.write(tmp_path / "long.wav", synth.tone(440, 3.0), TARGET_SR), tmp_path / "long.m4a")
    with pytest.raises(AudioError) as exc:
        load_audio(path, max_duration_s=2.0)
    assert exc.value.code == "too_long"


def _decoded(samples: np.ndarray) -> DecodedAudio:
    return DecodedAudio(samples, TARGET_SR, TARGET_SR, 1, "wav", samples.size / TARGET_SR)


@pytest.mark.parametrize(
    ("samples", "code"),
    [
        (np.zeros(0, np.float32), "empty"),
        (np.full(TARGET_SR, np.inf, np.float32), "non_finite"),
        (np.full(TARGET_SR, 0.3, np.float32), "silent"),  # DC only
        (np.zeros(TARGET_SR, np.float32), "silent"),
        (0.5 * np.ones(TARGET_SR // 8, np.float32), "too_short"),
    ],
)
def test_validate_audio_errors(samples, code) -> None:
    with pytest.raises(AudioError) as exc:
        validate_audio(_decoded(samples))
    assert exc.value.code == code and exc.value.message


def test_validate_audio_levels_and_durations(synth) -> None:
    validate_audio(_decoded(synth.tone(440, 1.0, amp=0.01)))  # -43 dBFS RMS: quiet but fine
    validate_audio(_decoded(synth.tone(440, 1.0, amp=0.0005)))  # -69 dBFS RMS, peak -66 dBFS: quiet is not silent
    with pytest.raises(AudioError, match="silent"):
        validate_audio(_decoded(synth.tone(440, 1.0, amp=0.0002)))  # peak -74 dBFS: digital silence
    with pytest.raises(AudioError) as exc:
        validate_audio(_decoded(synth.tone(440, 2.0)), max_duration_s=1.0)
    assert exc.value.code == "too_long"
    validate_audio(_decoded(synth.tone(440, 0.3)), min_duration_s=0.25)


def test_pipeline_modules_do_not_import_django() -> None:
    code = (
        "import sys, workers.pipeline.audio, workers.pipeline.features\n"
        "assert not [m for m in sys.modules if m.split('.')[0] == 'django'], 'django imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).parents[2], check=True, timeout=120)
