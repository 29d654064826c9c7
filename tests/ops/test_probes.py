"""Liveness and readiness probes, the Celery app's imports, and the multiprocess /metrics registry."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from recognition import health

ROOT = Path(__file__).resolve().parents[2]
_CLOSED_BROKER = "redis://127.0.0.1:1/0"  # nothing listens on port 1


def test_the_celery_app_imports_no_app_code():
    code = ("import sys, accentsite.celery; "
            "print([m for m in sys.modules if m.split('.')[0] in ('recognition', 'workers', 'models')])")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_worker_receivers_are_connected_once_by_the_app_config():
    from celery.signals import task_prerun, worker_init, worker_process_init, worker_ready

    from recognition import worker_signals

    worker_signals.connect()  # a second ready(): no duplicate receivers
    for signal, receiver in ((worker_ready, "_start_heartbeat"), (task_prerun, "_bind_task_context"),
                             (worker_process_init, "_limit_thread_pools"), (worker_init, "_warm_up_before_fork"),
                             (worker_process_init, "_warm_up_after_fork")):
        uids = [key[0] for key, _ in signal.receivers if key[0] == f"accentsite.{receiver}"]
        assert len(uids) == 1, (signal, uids)


@pytest.mark.django_db
def test_live_touches_no_dependency_and_ignores_host_and_https(client, settings, django_assert_num_queries):
    settings.CELERY_BROKER_URL = _CLOSED_BROKER
    settings.ALLOWED_HOSTS = ["accents.example.com"]
    settings.SECURE_SSL_REDIRECT = True
    with django_assert_num_queries(0):
        response = client.get("/healthz/live", HTTP_HOST="10.1.2.3:8000")
    assert response.status_code == 200
    assert response.json()["status"] == "ok" and response.json()["pid"] == os.getpid()
    assert client.get("/admin/login/", HTTP_HOST="10.1.2.3:8000").status_code == 400  # other paths keep the checks


@pytest.mark.django_db
def test_ready_names_each_failing_part(client, settings, tmp_path):
    settings.CELERY_BROKER_URL = _CLOSED_BROKER
    settings.MEDIA_ROOT = str(tmp_path / "missing-parent" / "media")
    for path in ("/healthz/ready", "/healthz"):
        response = client.get(path)
        body = response.json()
        assert response.status_code == 503, body
        assert body["status"] == "fail" and body["failed"] == ["broker", "storage", "workers"]
        assert body["checks"]["database"]["ok"]
        assert "not a writable directory" in body["checks"]["storage"]["error"]
        assert body["checks"]["workers"]["error"] == "broker unreachable"
        assert body["checks"]["whisper_model"]["ok"]  # the bundled model, assembled by make setup


@pytest.mark.django_db
def test_ready_names_a_missing_or_corrupt_whisper_model(client, settings, tmp_path):
    import shutil

    from workers import runtime

    settings.WHISPER_MODEL_DIR = str(tmp_path / "nowhere")
    body = client.get("/healthz/ready").json()
    assert "whisper_model" in body["failed"] and "does not exist" in body["checks"]["whisper_model"]["error"]
    folder = tmp_path / "fake"
    folder.mkdir()
    for name in ("config.json", "tokenizer.json"):
        shutil.copy(Path(runtime.__file__).resolve().parents[1] / "var" / "models" / "whisper-base" / name, folder / name)
    (folder / "model.bin").write_bytes(b"truncated")
    settings.WHISPER_MODEL_DIR = str(folder)
    body = client.get("/healthz/ready").json()
    assert "whisper_model" in body["failed"] and "sha256" in body["checks"]["whisper_model"]["error"]


@pytest.mark.django_db
def test_the_storage_check_only_reads(monkeypatch, settings, tmp_path):
    from django.core.files.storage import FileSystemStorage

    settings.MEDIA_ROOT = str(tmp_path)

    def refuse(*args, **kwargs):
        raise AssertionError("a probe wrote to storage")

    monkeypatch.setattr(FileSystemStorage, "save", refuse)
    monkeypatch.setattr(FileSystemStorage, "delete", refuse)
    result = health.readiness([c for c in health.READINESS_CHECKS if c.name == "storage"])
    assert result["storage"]["ok"], result
    assert list(tmp_path.iterdir()) == []


@pytest.mark.django_db
def test_a_registered_check_is_reported_by_name(client, monkeypatch, settings):
    monkeypatch.setattr(health, "READINESS_CHECKS", list(health.READINESS_CHECKS))
    monkeypatch.setattr(health, "_workers", lambda: {"workers": ["w@x"]})  # no worker needed for this test
    health.READINESS_CHECKS[:] = [c if c.name != "workers" else health.Check("workers", lambda: {}) for c in health.READINESS_CHECKS]

    def whisper_models():
        raise RuntimeError("Whisper model files missing in ['/models/base']")

    health.register(health.Check("whisper_models", whisper_models))
    body = client.get("/healthz/ready").json()
    assert body["failed"] == ["whisper_models"], body
    assert body["checks"]["whisper_models"]["error"] == "RuntimeError: Whisper model files missing in ['/models/base']"
    health.register(health.Check("whisper_models", lambda: {"models": 1}))  # same name: replaced, not added
    body = client.get("/healthz/ready").json()
    assert body["status"] == "ok" and [n for n in body["checks"] if n == "whisper_models"] == ["whisper_models"]


_SCRAPE = """
import os, sys, django
django.setup()
from recognition import metrics
from prometheus_client.parser import text_string_to_metric_families
text = metrics.render().decode()
for family in text_string_to_metric_families(text):
    for s in family.samples:
        if s.name == "accentsite_metrics_scrape_seconds_count":
            print(int(s.value))
"""


@pytest.mark.django_db(transaction=True)
def test_multiprocess_metrics_sum_over_processes(tmp_path):
    """Under gunicorn each worker process writes its own samples; a scrape of any one sums them."""
    from django.db import connection

    from tests.conftest import _database_url

    env = dict(os.environ, PROMETHEUS_MULTIPROC_DIR=str(tmp_path), DATABASE_URL=_database_url(connection.settings_dict),
               CELERY_BROKER_URL=_CLOSED_BROKER, PYTHONPATH=str(ROOT))
    counts = [subprocess.run([sys.executable, "-c", _SCRAPE], cwd=ROOT, env=env, capture_output=True, text=True,
                             check=True).stdout.split() for _ in range(3)]
    # each process observes its scrape after reading the files: 0, 1, 2 earlier scrapes
    assert counts == [[], ["1"], ["2"]] or counts == [["0"], ["1"], ["2"]], counts
    assert len(list(tmp_path.glob("histogram_*.db"))) == 3
