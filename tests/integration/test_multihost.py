"""Web and two workers as if on three hosts, sharing only PostgreSQL, Redis and an S3 object store.

Each "host" is its own process with its own MEDIA_ROOT, var/ and temporary folder; storage is
django-storages' S3 backend against a real S3-compatible server (moto's standalone server, started
here as a separate process). The web is gunicorn with two processes; the cpu worker runs features,
the gpu worker runs classify. Nothing may land in any host's local media folder.
"""
from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from accentsite.settings import WHISPER_BUNDLED_SHA256
from tests.conftest import ROOT, WorkerProcess, _database_url, wait_for_job
from tests.factories import audio_bytes, pulse_train
from tests.ops.conftest import other_workers_paused  # noqa: F401  (fixture: this test's workers are the only consumers)

moto = pytest.importorskip("moto", reason="moto[server] not installed (the S3-compatible server of this test)")
requests = pytest.importorskip("requests")

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

BUCKET = "accentsite-multihost"
S3_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_S3_REGION_NAME": "us-east-1",
          "AWS_DEFAULT_REGION": "us-east-1", "AWS_STORAGE_BUCKET_NAME": BUCKET}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_http(url: str, proc: subprocess.Popen, log: Path, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args[:3]} exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            requests.get(url, timeout=10)
            return
        except (requests.ConnectionError, requests.Timeout):  # not listening yet, or still importing Django
            time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer in {timeout} s:\n{log.read_text()[-3000:]}")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@pytest.fixture
def s3_server(tmp_path, monkeypatch):
    """moto's S3-compatible HTTP server in its own process, with the bucket created."""
    port = _free_port()
    log = tmp_path / "moto.log"
    proc = subprocess.Popen([sys.executable, "-c", "from moto.server import main; main()", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=open(log, "ab"), stderr=subprocess.STDOUT)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        _wait_http(endpoint, proc, log)
        for key, value in S3_ENV.items():
            monkeypatch.setenv(key, value)
        import boto3

        client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
        client.create_bucket(Bucket=BUCKET)
        yield endpoint, client
    finally:
        _stop(proc)


@pytest.fixture
def s3_storage(s3_server, settings):
    """This test process stores through the same S3 backend as the three hosts."""
    endpoint, client = s3_server
    settings.STORAGES = {**settings.STORAGES, "default": {"BACKEND": "storages.backends.s3.S3Storage", "OPTIONS": {
        "bucket_name": BUCKET, "endpoint_url": endpoint, "region_name": "us-east-1", "addressing_style": "path",
        "default_acl": None, "querystring_auth": True, "file_overwrite": False}}}
    return endpoint, client


def _host(tmp_path: Path, name: str, base: dict) -> dict:
    """A host's environment: its own media folder, var/ and temporary folder."""
    root = tmp_path / name
    for sub in ("media", "var", "tmp"):
        (root / sub).mkdir(parents=True)
    # the Whisper model is part of each host's install (make setup / the image), like the code: every host
    # reads its own copy, here the one this checkout assembled
    return dict(base, MEDIA_ROOT=str(root / "media"), ACCENTSITE_VAR_DIR=str(root / "var"), TMPDIR=str(root / "tmp"),
                NUMBA_CACHE_DIR=str(root / "tmp" / "numba"),
                WHISPER_MODEL_DIR=str(Path(__file__).resolve().parents[2] / "var" / "models" / "whisper-base"),
                WHISPER_MODEL_SHA256=WHISPER_BUNDLED_SHA256)


def _local_files(tmp_path: Path) -> list[Path]:
    return [p for host in ("web", "cpu-host", "gpu-host") for p in (tmp_path / host / "media").rglob("*") if p.is_file()]


def test_upload_features_classify_report_and_audio_across_three_hosts(
    s3_storage, tiny_classifier, user, worker_env, other_workers_paused, tmp_path  # noqa: F811
):
    from django.core.files.storage import default_storage
    from django.db import connection
    from rest_framework.authtoken.models import Token

    from recognition.models import FeatureSet, JobChunk, Recording

    endpoint, s3 = s3_storage
    assert tiny_classifier.checkpoint.startswith("storage:")
    assert s3.head_object(Bucket=BUCKET, Key=tiny_classifier.checkpoint.removeprefix("storage:"))  # the model is in S3 too

    base = dict(os.environ, **S3_ENV, AWS_S3_ENDPOINT_URL=endpoint, DATABASE_URL=_database_url(connection.settings_dict),
                PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", WORKER_TORCH_THREADS="1", WORKER_HEARTBEAT_S="2")
    base.pop("PROMETHEUS_MULTIPROC_DIR", None)
    web_env = _host(tmp_path, "web", base)
    port = _free_port()
    web_log = tmp_path / "web.log"
    web = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "-b", f"127.0.0.1:{port}", "-w", "2",
                            "accentsite.wsgi:application"],
                           cwd=ROOT, env=dict(web_env, PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "web" / "tmp" / "prom"),
                                              METRICS_TOKEN="multihost-token"),
                           stdout=open(web_log, "ab"), stderr=subprocess.STDOUT)
    cpu = WorkerProcess(_host(tmp_path, "cpu-host", base), tmp_path / "cpu.log", queues="cpu", pool="prefork", prefix="cpu")
    gpu = WorkerProcess(_host(tmp_path, "gpu-host", base), tmp_path / "gpu.log", queues="gpu,interactive", pool="prefork",
                        prefix="gpu")
    try:
        url = f"http://127.0.0.1:{port}"
        _wait_http(f"{url}/healthz/live", web, web_log)
        cpu.start()
        gpu.start()
        http = requests.Session()
        http.headers["Authorization"] = f"Token {Token.objects.create(user=user).key}"

        # upload: a labelled batch through the web host, stored in S3
        rng = np.random.default_rng(0)
        files, rows = [], ["filename,label"]
        for i in range(4):
            name = f"r{i}.wav"
            signal = pulse_train(f0=110 + 20 * i, seconds=1.5, seed=i) + 0.01 * rng.standard_normal(24000).astype(np.float32)
            files.append(("files", (name, audio_bytes(signal.astype(np.float32)), "audio/wav")))
            rows.append(f"{name},{'native' if i % 2 else 'non_native'}")
        files.append(("labels", ("labels.csv", "\n".join(rows).encode(), "text/csv")))
        response = http.post(f"{url}/api/v1/batches/", data={"name": "three hosts"}, files=files, timeout=60)
        assert response.status_code == 201, response.text
        batch = response.json()
        recordings = list(Recording.objects.filter(batches=batch["id"]).order_by("id"))
        assert len(recordings) == 4
        for rec in recordings:
            assert s3.head_object(Bucket=BUCKET, Key=rec.file.name)["ContentLength"] > 0

        # features on the cpu host
        job = http.post(f"{url}/api/v1/jobs/", json={"kind": "features", "batch": batch["id"], "params": {"extractors": ["mfcc"]}},
                        timeout=30).json()
        job = wait_for_job(job["id"], timeout=180)
        assert job.status == "succeeded" and job.done == 4, job.error
        assert {c.worker for c in JobChunk.objects.filter(job=job)} == {cpu.name}
        for fs in FeatureSet.objects.filter(result__job=job):
            assert default_storage.exists(fs.arrays)
            with default_storage.open(fs.arrays, "rb") as fh:
                assert np.load(io.BytesIO(fh.read())).files  # the arrays a worker on another host wrote

        # classify on the gpu host (a small job: the interactive queue), with the model read from S3
        job = http.post(f"{url}/api/v1/jobs/", json={"kind": "classify", "batch": batch["id"], "model": f"tiny@{tiny_classifier.version}",
                                                    "params": {"window_s": 1.0, "hop_s": 0.5}}, timeout=30).json()
        job = wait_for_job(job["id"], timeout=240)
        assert job.status == "succeeded" and (job.done, job.failed) == (4, 0), job.error
        assert {c.worker for c in JobChunk.objects.filter(job=job)} == {gpu.name}

        # the report and the audio, through the web host
        report = http.get(f"{url}/api/v1/jobs/{job.pk}/report/", timeout=30)
        assert report.status_code == 200, report.text
        assert report.json()["confusion_matrix"]["labels"] == ["native", "non_native"]
        audio = http.get(f"{url}/api/v1/recordings/{recordings[0].pk}/audio/", timeout=30)
        assert audio.status_code == 200 and audio.headers["Content-Type"] == "audio/wav"
        with default_storage.open(recordings[0].file.name, "rb") as fh:
            assert audio.content == fh.read()

        # every host is ready (storage: the bucket lists), and nothing was written to a local folder
        ready = requests.get(f"{url}/healthz/ready", timeout=30)
        assert ready.status_code == 200, ready.text
        assert ready.json()["checks"]["storage"]["backend"] == "S3Storage"
        assert _local_files(tmp_path) == []

        # /metrics from any of gunicorn's two processes sums the scrapes of both (multiprocess mode)
        from prometheus_client.parser import text_string_to_metric_families

        scrapes = [requests.get(f"{url}/metrics", headers={"Authorization": "Bearer multihost-token"}, timeout=60) for _ in range(4)]
        assert all(r.status_code == 200 for r in scrapes), scrapes[-1].text
        samples = {(smp.name, tuple(sorted(smp.labels.items()))): smp.value
                   for family in text_string_to_metric_families(scrapes[-1].text) for smp in family.samples}
        assert samples[("accentsite_metrics_scrape_seconds_count", ())] == 3  # the three before this one, whoever served them
        assert samples[("accentsite_jobs", (("kind", "classify"), ("status", "succeeded")))] >= 1
        assert samples[("accentsite_scrape_errors", ())] == 0
    finally:
        for worker in (cpu, gpu):
            worker.stop()
        _stop(web)
