"""Hostile and broken input, built by the tests: every case gets a clear 4xx or a per-recording
failure with a reason, the service keeps serving (a normal upload works after each), and nothing
half-written stays behind (stored files == Recording rows).

Files whose header is fine but whose data is bad pass the upload (it only probes the header) and
fail in the worker: ``test_worker_fails_bad_data_per_recording`` runs them through a real worker.
"""
from __future__ import annotations

import functools
import io
import os
import stat
import struct
import subprocess
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from recognition.models import Batch, Job, Recording
from tests.conftest import wait_for_job
from tests.factories import audio_bytes, pulse_train, upload

SR = 16000


# --- the corpus -----------------------------------------------------------------------------------

def _good(seed: int = 0, seconds: float = 1.0, sr: int = SR) -> bytes:
    return audio_bytes(pulse_train(f0=100 + seed % 200, seconds=seconds, sr=sr, seed=seed), sr=sr)


def _random(n: int = 8192, seed: int = 1) -> bytes:
    return np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes()


def _encoded(fmt: str, subtype: str | None = None, seconds: float = 2.0) -> bytes:
    return audio_bytes(pulse_train(seconds=seconds, seed=7), fmt=fmt, subtype=subtype)


def _with_data_size(wav: bytes, size: int, riff: int | None = None) -> bytes:
    """The same WAV with its ``data`` chunk (and RIFF) size fields set to ``size``."""
    data = bytearray(wav)
    at = data.index(b"data")
    data[at + 4 : at + 8] = struct.pack("<I", size)
    data[4:8] = struct.pack("<I", riff if riff is not None else min(size + at, 0xFFFFFFFF))
    return bytes(data)


def _float_wav(value: float) -> bytes:
    x = pulse_train(seconds=1.0)
    x[::3] = value
    if np.isnan(value):
        x[:] = value
    return audio_bytes(x, subtype="FLOAT")


@functools.lru_cache(maxsize=1)
def _three_hours_flac() -> bytes:
    """A real 3-hour FLAC (8 kHz silence compresses to ~270 KB, ~1.5 s to encode)."""
    buffer = io.BytesIO()
    with sf.SoundFile(buffer, "w", 8000, 1, format="FLAC", subtype="PCM_16") as f:
        minute = np.zeros(8000 * 60, np.int16)
        for _ in range(180):
            f.write(minute)
    return buffer.getvalue()


def _zip(members: list[tuple[str | zipfile.ZipInfo, bytes]], compression: int = zipfile.ZIP_STORED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=compression) as zf:
        for name, data in members:
            zf.writestr(name, data)
    return buffer.getvalue()


def _symlink(name: str, target: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info


@dataclass(frozen=True)
class Case:
    id: str
    send: Callable  # (api) -> response
    status: int
    code: str | None = None  # the error code of a 4xx, or a rejection code in a 201 batch
    then: Callable | None = None  # extra checks on (response)


def _post_file(name: str, data: bytes, **fields) -> Callable:
    return lambda api: api.post("/api/v1/recordings/", {"file": upload(name, data), **fields}, format="multipart")


def _post_batch(files=(), archive: bytes | None = None, labels: bytes | None = None) -> Callable:
    def send(api):
        body = {"name": "hostile", "files": [upload(n, d) for n, d in files]}
        if archive is not None:
            body["archive"] = upload("a.zip", archive)
        if labels is not None:
            body["labels"] = upload("labels.csv", labels)
        return api.post("/api/v1/batches/", body, format="multipart")

    return send


def _post_job(body, content_type: str | None = None) -> Callable:
    def send(api):
        if content_type:
            return api.post("/api/v1/jobs/", body, content_type=content_type)
        payload = body(api) if callable(body) else body
        return api.post("/api/v1/jobs/", payload, format="json")

    return send


def _stored_name(expected: Callable[[str], bool]) -> Callable:
    def check(response):
        rec = Recording.objects.get(pk=response.json()["id"])
        assert expected(rec.original_filename), rec.original_filename
        assert rec.file.name.startswith("recordings/") and ".." not in rec.file.name
    return check


def _own_batch(api) -> int:
    b = Batch.objects.create(owner=api.user, name="mine")
    rec = Recording.objects.filter(owner=api.user).first()
    if rec:
        b.recordings.add(rec)
    return b.pk


def _rejected(*codes: str) -> Callable:
    def check(response):
        got = {r["code"] for r in response.json()["rejected"]}
        assert set(codes) <= got, response.json()["rejected"]
    return check


GOOD = _good(999)

CASES = [
    # audio files refused at upload
    Case("empty-file", _post_file("empty.wav", b""), 400, "empty"),
    Case("random-bytes-wav", _post_file("noise.wav", _random(seed=1)), 400, "not_audio"),
    Case("random-bytes-flac", _post_file("noise.flac", _random(seed=2)), 400, "not_audio"),
    Case("random-bytes-mp3", _post_file("noise.mp3", _random(seed=3)), 400, "not_audio"),
    Case("pdf-named-wav", _post_file("doc.wav", b"%PDF-1.4\n" + _random(2000)), 400, "not_audio"),
    Case("mp3-cut-inside-header", _post_file("cut.mp3", _encoded("MP3", "MPEG_LAYER_III")[:60]), 400, "not_audio"),
    Case("wav-header-only-no-data", _post_file("hdr.wav", _good(1)[:44]), 400, "empty"),
    Case("wav-zero-samples", _post_file("zero.wav", audio_bytes(np.zeros(0, np.float32))), 400, "empty"),
    Case("too-short", _post_file("short.wav", _good(2, seconds=0.1)), 400, "too_short"),
    Case("three-hour-flac", _post_file("long.flac", b""), 400, "too_long"),  # data filled in below
    Case("over-upload-size-limit", _post_file("big.wav", _good(3, seconds=10.0)), 413, "too_large"),
    Case("label-formula-injection", _post_file("f.wav", _good(4), label="=cmd|'/c calc'!A1"), 400, "invalid_label"),
    Case("metadata-not-object", _post_file("m.wav", _good(5), metadata="[1, 2]"), 400, "invalid"),
    Case("metadata-not-json", _post_file("m.wav", _good(6), metadata="{nope"), 400, "invalid"),
    Case("no-file-field", lambda api: api.post("/api/v1/recordings/", {"label": "x"}, format="multipart"), 400, "invalid"),
    # accepted at upload: names are cleaned, the stored key never comes from the name
    Case("unicode-filename", _post_file("n\u0303and\u00fa-\u65e5\u672c-\U0001F600.wav", _good(7)), 201,
         then=_stored_name(lambda n: n == "\u00f1and\u00fa-\u65e5\u672c-\U0001F600.wav")),
    Case("300-char-filename", _post_file("x" * 300 + ".wav", _good(8)), 201,
         then=_stored_name(lambda n: len(n) <= 255 and n.endswith(".wav"))),
    Case("path-in-filename", _post_file("../../etc/passwd.wav", _good(9)), 201,
         then=_stored_name(lambda n: "/" not in n and ".." not in n)),
    Case("control-chars-in-filename", _post_file("a\x07b\x1b[31m.wav", _good(10)), 201,
         then=_stored_name(lambda n: n.isprintable())),
    Case("wav-named-mp3", _post_file("really-a-wav.mp3", _good(11)), 201,
         then=lambda r: r.json()["format"] == "wav" or pytest.fail(r.json())),
    # archives
    Case("zip-path-traversal", _post_batch(archive=_zip([("../../evil.wav", _good(12)), ("ok.wav", _good(13))])), 201,
         then=_rejected("unsafe_path")),
    Case("zip-absolute-path", _post_batch(archive=_zip([("/etc/evil.wav", _good(14)), ("C:/evil.wav", _good(15))])), 201,
         then=_rejected("unsafe_path")),
    Case("zip-symlink", _post_batch(archive=_zip([(_symlink("link.wav", "/etc/passwd"), b"/etc/passwd"), ("ok.wav", _good(16))])),
         201, then=_rejected("symlink")),
    Case("zip-nested-archive", _post_batch(archive=_zip([("inner.zip", _zip([("a.wav", _good(17))])), ("ok.wav", _good(18))])),
         201, then=_rejected("nested_archive")),
    Case("zip-bomb", _post_batch(archive=_zip([("bomb.wav", b"\0" * (20 << 20))], zipfile.ZIP_DEFLATED)), 400, "zip_bomb"),
    Case("archive-not-a-zip", _post_batch(archive=_random(seed=4)), 400, "bad_archive"),
    Case("archive-in-files-field", _post_batch(files=[("x.zip", _zip([("a.wav", _good(19))])), ("ok.wav", _good(20))]), 201,
         then=_rejected("nested_archive")),
    Case("zip-member-over-size-limit", _post_batch(archive=_zip([("big.wav", _good(21, seconds=10.0)), ("ok.wav", _good(22))])), 201,
         then=_rejected("too_large")),
    # labels CSV
    Case("labels-unknown-filenames", _post_batch(files=[("a.wav", _good(23))], labels=b"filename,label\nghost.wav,native\n"), 201,
         then=_rejected("unknown_filename")),
    Case("labels-duplicate-rows", _post_batch(files=[("a.wav", _good(24))], labels=b"a.wav,native\na.wav,non_native\n"), 201,
         then=_rejected("duplicate_label")),
    Case("labels-formula-injection", _post_batch(files=[("a.wav", _good(25))], labels=b"a.wav,=cmd|'/c calc'!A1\n"), 201,
         then=_rejected("formula_injection")),
    Case("labels-formula-in-speaker", _post_batch(files=[("a.wav", _good(26))], labels=b"a.wav,native,@SUM(A1)\n"), 201,
         then=_rejected("formula_injection")),
    Case("labels-latin1", _post_batch(files=[("a.wav", _good(27))], labels="a.wav,espa\u00f1ol\n".encode("latin-1")), 400,
         "bad_labels_csv"),
    Case("labels-utf16", _post_batch(files=[("a.wav", _good(28))], labels="a.wav,native\n".encode("utf-16")), 400, "bad_labels_csv"),
    Case("labels-binary", _post_batch(files=[("a.wav", _good(29))], labels=_random(seed=5)), 400, "bad_labels_csv"),
    Case("batch-without-files", _post_batch(), 400, "invalid"),
    # JSON bodies of the wrong shape
    Case("job-kind-wrong-type", _post_job({"kind": 3, "batch": 1}), 400, "invalid"),
    Case("job-batch-a-list", _post_job({"kind": "features", "batch": [1, 2]}), 400, "invalid"),
    Case("job-recordings-strings", _post_job({"kind": "features", "recordings": ["a", "b"]}), 400, "invalid"),
    Case("job-recordings-huge-id", _post_job({"kind": "features", "recordings": [2**70]}), 400, "invalid"),
    Case("job-batch-huge-id", _post_job({"kind": "features", "batch": 2**64}), 400, "invalid"),
    Case("job-params-a-string", _post_job(lambda api: {"kind": "features", "batch": _own_batch(api), "params": "fast"}), 400,
         "invalid_params"),
    Case("job-extractors-nested", _post_job(lambda api: {"kind": "features", "batch": _own_batch(api), "params": {"extractors": [["mfcc"]]}}),
         400, "invalid_params"),
    Case("job-chunk-size-bool", _post_job(lambda api: {"kind": "features", "batch": _own_batch(api), "params": {"chunk_size": True}}),
         400, "invalid_params"),
    Case("job-window-out-of-range", _post_job(lambda api: {"kind": "classify", "batch": _own_batch(api), "params": {"window_s": 1e9}}),
         400, "invalid_params"),
    Case("job-malformed-json", _post_job('{"kind": "features", ', content_type="application/json"), 400, "parse_error"),
    Case("job-json-nan", _post_job('{"kind": "features", "batch": NaN}', content_type="application/json"), 400, "parse_error"),
    Case("job-body-an-array", _post_job("[1, 2, 3]", content_type="application/json"), 400, "invalid"),
    Case("job-form-encoded", _post_job("kind=features&batch=1", content_type="application/x-www-form-urlencoded"), 415,
         "unsupported_media_type"),
    # query strings
    Case("list-filter-wrong-type", lambda api: api.get("/api/v1/recordings/?batch=abc"), 400),
    Case("list-filter-unknown-choice", lambda api: api.get("/api/v1/jobs/?status=bogus"), 400),
    Case("page-out-of-range", lambda api: api.get("/api/v1/jobs/?page=999999"), 404),
]


def _media_files(root: Path) -> set[str]:
    base = root / "recordings"
    return {str(p.relative_to(root)) for p in base.rglob("*") if p.is_file()} if base.exists() else set()


@pytest.fixture
def private_media(settings, tmp_path, monkeypatch):
    settings.MEDIA_ROOT = str(tmp_path / "media")
    settings.AUDIO_MAX_UPLOAD_BYTES = 300_000  # a 10-s 16-bit wav (320 KB) is over it, the 3-h FLAC (270 KB) is not
    monkeypatch.setattr("recognition.services.jobs._enqueue_chunks", lambda job, ids: None)
    return Path(settings.MEDIA_ROOT)


@pytest.mark.django_db
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_hostile_request_gets_a_clear_answer_and_leaves_nothing_behind(api, private_media, case):
    if case.id == "three-hour-flac":
        case = Case(case.id, _post_file("long.flac", _three_hours_flac()), case.status, case.code)
    rows_before, jobs_before = Recording.objects.count(), Job.objects.count()
    response = case.send(api)
    assert response.status_code == case.status, (response.status_code, getattr(response, "content", b"")[:500])
    body = response.json() if response.content else {}
    if case.status >= 400 and case.code:
        assert body["error"]["code"] == case.code and body["error"]["message"], body
    if case.status >= 400 and "recordings" in response.wsgi_request.path:
        assert Recording.objects.count() == rows_before
    if case.then:
        case.then(response)
    if "/jobs/" in response.wsgi_request.path and case.status >= 400:
        assert Job.objects.count() == jobs_before

    # nothing half-written: every stored audio file has its row and every row its file
    assert _media_files(private_media) == set(Recording.objects.values_list("file", flat=True))
    # the service keeps serving
    ok = api.post("/api/v1/recordings/", {"file": upload("after.wav", GOOD)}, format="multipart")
    assert ok.status_code in (200, 201), ok.content[:300]


# --- streamed WAVs: placeholder sizes are "unknown length", not a 13-hour promise -----------------

def _espeak_stdout() -> bytes:
    import shutil

    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng not installed")
    return subprocess.run(["espeak-ng", "--stdout", "Please call Stella, ask her to bring these things."],
                          capture_output=True, check=True).stdout


@pytest.mark.parametrize("size", [0xFFFFFFFF, 0x7FFFFFFF, 0x7FFFF000, "espeak"])
def test_streamed_wav_decodes_to_its_real_length(size):
    from workers.pipeline.audio import load_audio
    from workers.pipeline.probe import probe_audio

    if size == "espeak":
        data = _espeak_stdout()
        assert struct.unpack("<I", data[40:44])[0] >= 0x7FFF0000  # what espeak-ng writes to a pipe
        real = (len(data) - 44) / 2 / 22050
    else:
        good = _good(30, seconds=1.5)
        data, real = _with_data_size(good, size), 1.5
    assert probe_audio(io.BytesIO(data), filename="s.wav").duration_s == pytest.approx(real, abs=0.01)
    audio = load_audio(data, 16000, max_duration_s=7200)
    assert audio.duration_s == pytest.approx(real, abs=0.01)


# --- header fine, data bad: the worker fails that recording with a reason -------------------------

WORKER_CASES = {
    # name: (bytes, expected status, expected error code)
    "truncated.wav": (lambda: _encoded("WAV", "PCM_16")[: 44 + 20000], "failed", "corrupt"),
    "truncated.flac": (lambda: _encoded("FLAC", "PCM_16", seconds=4.0)[:12000], "failed", "corrupt"),
    "header-claims-more.wav": (lambda: _with_data_size(_good(31, seconds=1.0), 4 * 32000), "failed", "corrupt"),
    "all-nan-float.wav": (lambda: _float_wav(np.nan), "failed", "non_finite"),
    "some-inf-float.wav": (lambda: _float_wav(np.inf), "failed", "non_finite"),
    "digital-silence.wav": (lambda: audio_bytes(np.zeros(SR * 2, np.float32)), "failed", "silent"),
    "eight-channels.wav": (lambda: audio_bytes(np.tile(pulse_train(seconds=1.0, seed=32)[:, None], (1, 8))), "succeeded", ""),
    "8khz.wav": (lambda: _good(33, seconds=1.0, sr=8000), "succeeded", ""),
    "192khz.wav": (lambda: _good(34, seconds=1.0, sr=192000), "succeeded", ""),
    "streamed-ffffffff.wav": (lambda: _with_data_size(_good(35, seconds=1.0), 0xFFFFFFFF), "succeeded", ""),
    "streamed-7fffffff.wav": (lambda: _with_data_size(_good(36, seconds=1.0), 0x7FFFFFFF), "succeeded", ""),
    "espeak-stdout.wav": (_espeak_stdout, "succeeded", ""),
    "truncated-half.mp3": (lambda: _encoded("MP3", "MPEG_LAYER_III", seconds=3.0)[:-6000], "succeeded", ""),
}


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_worker_fails_bad_data_per_recording(api, celery_worker, settings):
    files = [upload(name, make()) for name, (make, _, _) in WORKER_CASES.items()]
    batch = api.post("/api/v1/batches/", {"name": "bad data", "files": files}, format="multipart").json()
    assert not batch["rejected"], batch["rejected"]  # every header is fine: the upload only probes
    assert len(batch["recordings"]) == len(WORKER_CASES)
    job = api.post("/api/v1/jobs/", {"kind": "features", "batch": batch["id"], "params": {"extractors": ["spectral"]}},
                   format="json").json()
    job = wait_for_job(job["id"], timeout=180)
    assert job.status == "succeeded", job.error
    results = api.get(f"/api/v1/jobs/{job.pk}/results/").json()["results"]
    got = {r["filename"]: (r["status"], r["error_code"]) for r in results}
    assert got == {name: (status, code) for name, (_, status, code) in WORKER_CASES.items()}
    for r in results:
        assert r["status"] == "succeeded" or r["error_message"], r
    assert (job.total, job.done + job.failed) == (len(WORKER_CASES), len(WORKER_CASES))
    # the service keeps serving after the bad batch
    assert api.post("/api/v1/recordings/", {"file": upload("after.wav", _good(40))}, format="multipart").status_code == 201


@pytest.mark.django_db
def test_large_upload_streams_to_a_temporary_file(api, private_media, settings, monkeypatch):
    """Over FILE_UPLOAD_MAX_MEMORY_SIZE (2 MB) an upload is spooled to a temporary file by Django;
    recording_create hashes it in 1 MB blocks and the probe gets that file's path (FFmpeg seeks in it)."""
    from recognition.services import recordings

    settings.AUDIO_MAX_UPLOAD_BYTES = 10 << 20
    seen = {}
    real_probe = recordings.probe_audio

    def spy(fileobj, *, filename="", path=None):
        seen.update(kind=type(fileobj).__name__, path=path, exists=bool(path) and os.path.exists(path))
        return real_probe(fileobj, filename=filename, path=path)

    monkeypatch.setattr(recordings, "probe_audio", spy)
    data = _good(41, seconds=100)  # 3.2 MB
    assert len(data) > settings.FILE_UPLOAD_MAX_MEMORY_SIZE
    response = api.post("/api/v1/recordings/", {"file": upload("long.wav", data)}, format="multipart")
    assert response.status_code == 201, response.content[:300]
    assert seen == {"kind": "TemporaryUploadedFile", "path": seen["path"], "exists": True} and seen["path"]
    assert Recording.objects.get(pk=response.json()["id"]).size_bytes == len(data)
