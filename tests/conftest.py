"""Shared fixtures: a temporary MEDIA_ROOT for every test, users, API clients, and (for
integration tests) a real Celery worker process on the test database."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def media_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("media")


@pytest.fixture(autouse=True)
def _media_root(request, media_root):
    """Every Django test writes media under one temporary folder shared with the test worker."""
    if not request.config.pluginmanager.hasplugin("django"):
        yield
        return
    settings = request.getfixturevalue("settings")
    settings.MEDIA_ROOT = str(media_root)
    yield


def throttle_reset() -> None:
    """Forget upload-throttle counts (the cache may be the shared Redis: never ``cache.clear()`` it,
    that would flush the broker's database)."""
    from django.core.cache import cache

    client = getattr(getattr(cache, "_cache", None), "get_client", None)
    if client is None:
        cache.clear()  # locmem: this process only
        return
    redis = client(None, write=True)
    keys = list(redis.scan_iter(match="*:throttle_*", count=1000))
    if keys:
        redis.delete(*keys)


@pytest.fixture(autouse=True)
def _throttle_reset(request):
    """Database ids repeat between tests (SQLite reuses them after a rollback): start each test with
    no upload counted, so throttling depends on the test alone."""
    uses_db = request.node.get_closest_marker("django_db") or {"db", "transactional_db", "api"} & set(request.fixturenames)
    if request.config.pluginmanager.hasplugin("django") and uses_db:
        try:
            throttle_reset()
        except Exception as exc:  # no Redis here: the tests that need it say so themselves
            print(f"throttle reset skipped: {exc}")
    yield


@pytest.fixture
def user(django_user_model):
    return django_user_model.objects.create_user(username=f"u-{uuid.uuid4().hex[:8]}", password="pw-123456789")


@pytest.fixture
def logged_in_superuser(client, django_user_model):
    """A superuser, logged in on the test ``client`` (the admin pages' reader)."""
    admin = django_user_model.objects.create_superuser(username="staff-reader", password="pw-123456789")
    client.force_login(admin)
    return admin


@pytest.fixture
def other_user(django_user_model):
    return django_user_model.objects.create_user(username=f"o-{uuid.uuid4().hex[:8]}", password="pw-123456789")


@pytest.fixture
def api(user):
    from rest_framework.test import APIClient

    client = APIClient()
    client.force_authenticate(user)
    client.user = user
    return client


def _database_url(db: dict) -> str:
    if db["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{db['NAME']}"
    auth = db["USER"] + (f":{db['PASSWORD']}" if db.get("PASSWORD") else "")
    return f"postgres://{auth}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


class WorkerProcess:
    """A real ``celery worker`` subprocess on the test database and media folder."""

    def __init__(self, env: dict, log: Path, queues: str = "cpu,gpu,interactive", pool: str = "solo", prefix: str = "test") -> None:
        self.name = f"{prefix}-{uuid.uuid4().hex[:6]}@localhost"
        self.log = log
        self.env = env
        self.queues = queues
        self.pool = pool  # solo starts fastest (one process); prefork, as deployed, where time limits must be enforced
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 90) -> WorkerProcess:
        from accentsite.celery import app

        cmd = [sys.executable, "-m", "celery", "-A", "accentsite", "worker", "-Q", self.queues, f"--pool={self.pool}",
               "--concurrency=1", "-n", self.name, "--without-gossip", "--without-mingle", "--loglevel=INFO"]
        self.proc = subprocess.Popen(cmd, env=self.env, cwd=ROOT, stdout=open(self.log, "ab"), stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker exited with {self.proc.returncode}; log:\n{self.log.read_text()[-3000:]}")
            if app.control.ping(destination=[self.name], timeout=0.5):
                return self
        raise RuntimeError(f"worker did not answer within {timeout} s; log:\n{self.log.read_text()[-3000:]}")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=60)

    def stop(self) -> None:
        self.kill(signal.SIGTERM)


@pytest.fixture(scope="session")
def worker_env(django_db_setup, django_db_blocker, media_root, tmp_path_factory) -> dict:
    from django.db import connection

    env = os.environ.copy()
    env.update(
        DATABASE_URL=_database_url(connection.settings_dict),
        MEDIA_ROOT=str(media_root),
        WORKER_TORCH_THREADS="1",
        OMP_NUM_THREADS="1",
        PYTHONPATH=str(ROOT),
    )
    return env


@pytest.fixture(scope="session")
def celery_worker(worker_env, tmp_path_factory):
    """One worker process for the session, consuming every queue (solo pool: one process, quick to start)."""
    from accentsite.celery import app

    app.control.purge()
    worker = WorkerProcess(worker_env, tmp_path_factory.mktemp("worker") / "worker.log").start()
    yield worker
    worker.stop()


def wait_until(predicate, timeout: float = 60.0, interval: float = 0.05, what: str = "condition"):
    """Poll ``predicate`` until it returns something truthy; return that."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def wait_for_job(job_id: int, timeout: float = 120.0):
    """Poll the database until the job is terminal; return it."""
    from recognition.models import Job

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = Job.objects.get(pk=job_id)
        if job.is_terminal:
            return job
        time.sleep(0.3)
    raise AssertionError(f"job {job_id} still {Job.objects.get(pk=job_id).status} after {timeout} s")


@pytest.fixture
def tiny_classifier(db, tmp_path):
    """A small CNN classifier (random weights, fixed seed) stored in storage and registered.

    Its numbers mean nothing; it exercises the real checkpoint, loading and inference paths.
    """
    import json

    import torch
    from django.core.files.base import ContentFile
    from django.core.files.storage import default_storage

    from models.checkpoint import build_model, save_checkpoint
    from models.specs import ModelSpec
    from recognition.services.models import model_version_from_sidecar

    torch.manual_seed(0)
    version = uuid.uuid4().hex[:8]
    spec = ModelSpec(name="tiny", version=version, family="cnn", task="classify", labels=("native", "non_native"),
                     window_s=1.0, hop_s=0.5)
    hparams = {"frontend": "logmel", "n_mels": 32, "channels": 4, "embedding_dim": 16, "band_limit_hz": 4000.0,
               "dropout": 0.0, "specaug": False}
    model = build_model(spec, hparams)
    path = tmp_path / f"tiny-{version}.pt"
    save_checkpoint(path, model=model, spec=spec, hparams=hparams,
                    calibration={"temperature": 1.0, "train_prior": [0.5, 0.5], "deploy_prior": None, "threshold": 0.0})
    key = default_storage.save(f"models/tiny/{path.name}", ContentFile(path.read_bytes()))
    meta = json.loads(path.with_suffix(".json").read_text())
    return model_version_from_sidecar(meta, checkpoint=f"storage:{key}")


@pytest.fixture
def tiny_reading_classifier(db, tmp_path):
    """A ``reading_fusion`` model around a small random CNN, its logistic layer set by hand (poor
    goodness of pronunciation pushes towards ``non_native``), stored and registered."""
    import json

    import numpy as np
    import torch
    from django.core.files.base import ContentFile
    from django.core.files.storage import default_storage

    from models.checkpoint import build_model, save_checkpoint
    from models.phonetic_fusion import ReadingFusion
    from models.specs import ModelSpec
    from recognition.services.models import model_version_from_sidecar
    from workers.pipeline.reading import FEATURE_NAMES

    torch.manual_seed(0)
    version = uuid.uuid4().hex[:8]
    spec = ModelSpec(name="tiny-reading", version=version, family="reading_fusion", task="classify",
                     labels=("native", "non_native"), window_s=1.0, hop_s=0.5)
    base_hp = {"frontend": "logmel", "n_mels": 32, "channels": 4, "embedding_dim": 16, "band_limit_hz": 4000.0,
               "dropout": 0.0, "specaug": False}
    model = ReadingFusion(build_model(ModelSpec(**{**spec.__dict__, "family": "cnn"}), base_hp), 2, len(FEATURE_NAMES))
    n = 2 + len(FEATURE_NAMES)
    coef = np.zeros((1, n))
    coef[0, :2] = [-1.0, 1.0]
    coef[0, 2 + FEATURE_NAMES.index("gop_mean")] = -1.0
    model.set_fusion(np.zeros(n), np.ones(n), coef, np.array([-20.0]))
    path = tmp_path / f"tiny-reading-{version}.pt"
    save_checkpoint(path, model=model, spec=spec, hparams={"base_family": "cnn", "base": base_hp,
                                                           "n_features": len(FEATURE_NAMES)},
                    calibration={"temperature": 1.0, "train_prior": [0.5, 0.5], "deploy_prior": None, "threshold": 0.0,
                                 "fused_threshold": 0.0})
    key = default_storage.save(f"models/tiny/{path.name}", ContentFile(path.read_bytes()))
    meta = json.loads(path.with_suffix(".json").read_text())
    return model_version_from_sidecar(meta, checkpoint=f"storage:{key}")


@pytest.fixture
def tiny_whisper_probe(db, tmp_path):
    """A ``whisper_probe`` classifier on the bundled Whisper base encoder with a random linear head
    (fixed seed), stored in storage and registered: the real encoder, checkpoint and inference path."""
    import json

    import numpy as np
    from django.core.files.base import ContentFile
    from django.core.files.storage import default_storage

    from models.checkpoint import build_model, save_checkpoint
    from models.specs import ModelSpec
    from models.whisper_encoder import file_sha256
    from models.whisper_probe import find_encoder_dir
    from recognition.services.models import model_version_from_sidecar

    sha = file_sha256(find_encoder_dir() / "model.bin")
    version = uuid.uuid4().hex[:8]
    spec = ModelSpec(name="tiny-whisper", version=version, family="whisper_probe", task="classify",
                     labels=("native", "non_native"), window_s=20.0, hop_s=20.0, embedding_dim=2)
    hparams = {"states": [4], "pooling": "mean", "d_model": 512, "band_limit_hz": 4000.0, "encoder_sha256": sha}
    model = build_model(spec, hparams)
    rng = np.random.default_rng(0)
    model.set_head(np.zeros(512), np.ones(512), rng.standard_normal((2, 512)) * 0.05, np.zeros(2))
    path = tmp_path / f"tiny-whisper-{version}.pt"
    save_checkpoint(path, model=model, spec=spec, hparams=hparams,
                    calibration={"temperature": 1.0, "train_prior": [0.5, 0.5], "deploy_prior": None, "threshold": 0.0})
    key = default_storage.save(f"models/tiny/{path.name}", ContentFile(path.read_bytes()))
    meta = json.loads(path.with_suffix(".json").read_text())
    return model_version_from_sidecar(meta, checkpoint=f"storage:{key}")


def speech(text: str, voice: str = "en-us", speed: int = 150) -> bytes:
    """Real speech-like audio from espeak-ng as wav bytes (skips the test when it is missing)."""
    import shutil

    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng not installed (apt-get install espeak-ng)")
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "speech.wav"
        subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-w", str(path), text], capture_output=True, check=True)
        return path.read_bytes()
