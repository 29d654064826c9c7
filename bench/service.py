"""The service end to end: a throwaway database, real Celery worker processes, uploads through
the REST API (Django's test client, in process) and jobs timed until their last row is written.

Call :func:`configure` before anything imports Django.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH_DB = "accentsite_bench"


def _pg_alive(host: str = "127.0.0.1", port: int = 5432) -> bool:
    try:
        import psycopg

        psycopg.connect(f"host={host} port={port} user=postgres dbname=postgres", connect_timeout=3).close()
        return True
    except Exception:
        return False


def private_redis(workdir: Path) -> tuple[subprocess.Popen, str]:
    """Start a redis-server of the benchmark's own on a free local port; ``(process, url)``."""
    import shutil
    import socket

    exe = shutil.which("redis-server")
    if exe is None:
        return None, "redis://127.0.0.1:6379/11"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [exe, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no", "--dir", str(workdir)],
        stdout=open(workdir / "redis.log", "ab"),
        stderr=subprocess.STDOUT,
    )
    import redis

    client = redis.Redis(host="127.0.0.1", port=port)
    for _ in range(100):
        try:
            client.ping()
            break
        except redis.ConnectionError:
            time.sleep(0.1)
    return proc, f"redis://127.0.0.1:{port}/0"


def configure(workdir: Path, redis_url: str, db: str = "auto") -> dict:
    """Point this process (and the workers it starts) at a fresh bench database, Redis db and media folder.

    Returns the environment for worker processes. ``db``: ``postgres``, ``sqlite`` or ``auto``.
    """
    media = workdir / "media"
    media.mkdir(parents=True, exist_ok=True)
    use_pg = db == "postgres" or (db == "auto" and _pg_alive())
    if use_pg:
        import psycopg

        with psycopg.connect("host=127.0.0.1 port=5432 user=postgres dbname=postgres", autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {BENCH_DB} WITH (FORCE)")
            conn.execute(f"CREATE DATABASE {BENCH_DB}")
        url = f"postgres://postgres@127.0.0.1:5432/{BENCH_DB}"
    else:
        url = f"sqlite:///{workdir / 'bench.sqlite3'}"
    env = {
        "DATABASE_URL": url,
        "REDIS_URL": redis_url,
        "CELERY_BROKER_URL": redis_url,
        "MEDIA_ROOT": str(media),
        "DJANGO_SETTINGS_MODULE": "accentsite.settings",
        "UPLOAD_THROTTLE_RATE": "100000/minute",
        "ACCENTSITE_MODEL_CACHE": str(workdir / "model-cache"),
    }
    os.environ.update(env)
    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command

    # Register only checkpoint + sidecar pairs (other .json files may sit in models/checkpoints,
    # e.g. evaluation reports, which shipped_models_register would read as sidecars). Workers
    # still load the files from the real MODELS_DIR by the same names.
    shipped = workdir / "shipped-models"
    shipped.mkdir(exist_ok=True)
    for pt in Path(settings.MODELS_DIR).glob("*.pt"):
        if pt.with_suffix(".json").exists():
            for f in (pt, pt.with_suffix(".json")):
                (shipped / f.name).unlink(missing_ok=True)
                (shipped / f.name).symlink_to(f)
    settings.MODELS_DIR = shipped

    call_command("migrate", verbosity=0)
    import logging
    import warnings

    logging.disable(logging.INFO)  # the bench prints tables, not per-recording log lines
    warnings.filterwarnings("ignore", message="No directory at")
    worker_env = os.environ.copy()
    worker_env["PYTHONPATH"] = str(ROOT)
    return worker_env


def drop_database() -> None:
    from django.db import connections

    connections.close_all()
    if os.environ.get("DATABASE_URL", "").startswith("postgres"):
        import psycopg

        with psycopg.connect("host=127.0.0.1 port=5432 user=postgres dbname=postgres", autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {BENCH_DB} WITH (FORCE)")


@dataclass
class Worker:
    """One ``celery worker --pool=solo`` process (one process: its RSS is the worker's), started
    on an idle queue; :meth:`consume` / :meth:`stop_consuming` move it onto real queues."""

    env: dict
    log: Path
    torch_threads: int | None = None
    name: str = field(default_factory=lambda: f"bench-{uuid.uuid4().hex[:6]}@localhost")
    proc: subprocess.Popen | None = None
    queues: set = field(default_factory=set)

    def start(self) -> Worker:
        env = dict(self.env)
        if self.torch_threads:
            env["WORKER_TORCH_THREADS"] = str(self.torch_threads)
        cmd = [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "accentsite",
            "worker",
            "-Q",
            "bench-idle",
            "--pool=solo",
            "-n",
            self.name,
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
            "--loglevel=WARNING",
        ]
        self.proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=open(self.log, "ab"), stderr=subprocess.STDOUT)
        return self

    def wait_ready(self, timeout: float = 120) -> None:
        from accentsite.celery import app

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker exited with {self.proc.returncode}; log:\n{self.log.read_text()[-3000:]}")
            if app.control.ping(destination=[self.name], timeout=0.5):
                return
        raise RuntimeError(f"worker did not answer within {timeout} s; log:\n{self.log.read_text()[-3000:]}")

    def consume(self, *queues: str) -> None:
        from accentsite.celery import app

        for q in queues:
            if q not in self.queues:
                app.control.add_consumer(q, destination=[self.name], reply=True, timeout=10)
                self.queues.add(q)

    def stop_consuming(self) -> None:
        from accentsite.celery import app

        for q in list(self.queues):
            app.control.cancel_consumer(q, destination=[self.name], reply=True, timeout=10)
            self.queues.discard(q)

    def memory(self) -> dict:
        """RSS and peak RSS (MiB) of the worker process, from /proc."""
        out = {}
        try:
            for line in open(f"/proc/{self.proc.pid}/status"):
                if line.startswith(("VmRSS", "VmHWM")):
                    key, value = line.split(":")
                    out[key] = int(value.split()[0]) / 1024
        except FileNotFoundError:
            pass
        return out

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def bench_user():
    from django.contrib.auth import get_user_model

    user, _ = get_user_model().objects.get_or_create(username="bench")
    return user


def upload(clips, name: str, per_request: int = 40) -> tuple[int, float]:
    """Upload the clips as one batch through ``POST /api/v1/batches/`` (multipart, with a labels
    CSV); more than ``per_request`` files go in several batches. Returns ``(batch ids, seconds)``."""
    from rest_framework.test import APIClient

    client = APIClient()
    client.force_authenticate(bench_user())
    batch_ids = []
    t0 = time.perf_counter()
    for start in range(0, len(clips), per_request):
        part = clips[start : start + per_request]
        labels = "filename,label,speaker\n" + "".join(f"{c.path.name},{c.label},{c.speaker}\n" for c in part if c.label)
        files = [open(c.path, "rb") for c in part]
        try:
            data = {"name": f"{name}-{start}", "files": files}
            if labels.count("\n") > 1:
                from django.core.files.uploadedfile import SimpleUploadedFile

                data["labels"] = SimpleUploadedFile("labels.csv", labels.encode(), content_type="text/csv")
            resp = client.post("/api/v1/batches/", data, format="multipart")
        finally:
            for f in files:
                f.close()
        if resp.status_code != 201:
            raise RuntimeError(f"upload failed: {resp.status_code} {resp.content[:500]!r}")
        if resp.data.get("rejected"):
            raise RuntimeError(f"upload rejected files: {resp.data['rejected']}")
        batch_ids.append(resp.data["id"])
    return batch_ids, time.perf_counter() - t0


def merge_batches(batch_ids: list[int], name: str) -> list[int]:
    """Recording ids of several batches (a job is submitted over explicit recordings then)."""
    from recognition.models import Recording

    return list(Recording.objects.filter(batches__in=batch_ids).distinct().order_by("id").values_list("id", flat=True))


def run_job(kind: str, recording_ids: list[int], *, model: str | None = None, params: dict | None = None, timeout: float = 3600) -> dict:
    """Submit a job through ``POST /api/v1/jobs/`` and wait until it is terminal; its numbers."""
    from django.db import close_old_connections
    from rest_framework.test import APIClient

    from recognition.models import Job, Prediction, RecordingResult

    client = APIClient()
    client.force_authenticate(bench_user())
    body = {"kind": kind, "recordings": recording_ids, "params": params or {}}
    if model:
        body["model"] = model
    t_submit = time.time()
    resp = client.post("/api/v1/jobs/", body, format="json")
    if resp.status_code != 202:
        raise RuntimeError(f"job submit failed: {resp.status_code} {resp.content[:500]!r}")
    job_id = resp.data["id"]
    deadline = time.monotonic() + timeout
    while True:
        close_old_connections()
        job = Job.objects.get(pk=job_id)
        if job.is_terminal:
            break
        if time.monotonic() > deadline:
            raise RuntimeError(f"job {job_id} ({kind}) still {job.status} after {timeout} s")
        time.sleep(0.05)
    from django.db.models import Max, Min

    span = job.chunks.aggregate(first=Min("started_at"), last=Max("finished_at"))
    results = RecordingResult.objects.filter(job=job)
    failed = list(results.filter(status=RecordingResult.Status.FAILED).values_list("error_code", "error_message")[:5])
    n_windows = sum(len(w or []) for w in Prediction.objects.filter(result__job=job).values_list("windows", flat=True))
    outcomes = {}
    fused = 0
    for o, reading in Prediction.objects.filter(result__job=job).values_list("outcome", "reading"):
        outcomes[o] = outcomes.get(o, 0) + 1
        fused += bool(reading and reading.get("fused"))
    return {
        "job_id": job_id,
        "kind": kind,
        "status": job.status,
        "done": job.done,
        "failed": job.failed,
        "failed_examples": failed,
        "wall_s": job.finished_at.timestamp() - t_submit,
        "run_s": (job.finished_at - job.started_at).total_seconds() if job.started_at else None,
        "timings": dict(job.timings),
        # submit -> first chunk claimed (broker + worker pick-up), last chunk closed -> job finished (finalize, report)
        "queue_wait_s": span["first"].timestamp() - t_submit if span["first"] else 0.0,
        "finalize_s": (job.finished_at - span["last"]).total_seconds() if span["last"] else 0.0,
        "chunks": job.chunks.count(),
        "n_windows": n_windows,
        "outcomes": outcomes,
        "fused": fused,  # predictions a reading_fusion model fused with the transcript's reading features
        "model": f"{job.model_version.name}@{job.model_version.version}" if job.model_version_id else None,
    }
