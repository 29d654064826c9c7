"""Load test against a running accentsite: upload N short clips in batches, submit a features job
per batch, while 50 clients poll job status. Asserts no request failed and no job was lost;
prints p50 / p99 latency of the status endpoint and the throughput.

Standard library only (threads + http.client), so it runs from the project's virtualenv as is::

    # a service on its own database, media folder and broker db (see docs/reliability.md)
    .venv/bin/python -m bench.load --url http://127.0.0.1:8011 --username bench --password bench-pass --quick
    .venv/bin/python -m bench.load ... --n 10000 --batch-size 200            # the full run
    .venv/bin/python -m bench.load ... --no-jobs                             # uploads + polling only
"""
from __future__ import annotations

import argparse
import http.client
import io
import json
import random
import statistics
import sys
import threading
import time
import uuid
import wave
from dataclasses import dataclass, field
from urllib.parse import urlparse

import numpy as np

SR = 16000


def clip(index: int, seconds: float = 0.6) -> bytes:
    """A short voiced clip, different for every index (uploads are de-duplicated by sha256)."""
    rng = np.random.default_rng(index)
    t = np.arange(int(seconds * SR)) / SR
    f0 = 90 + (index % 250)
    x = sum((0.5 / k) * np.sin(2 * np.pi * f0 * k * t + rng.uniform(0, 6.28)) for k in range(1, 12))
    x = 0.25 * x + 0.002 * rng.standard_normal(t.size)
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SR)
        w.writeframes((np.clip(x, -1, 1) * 32767).astype("<i2").tobytes())
    return buffer.getvalue()


class Client:
    """One keep-alive HTTP connection per thread."""

    def __init__(self, base: str, token: str | None = None, timeout: float = 120.0) -> None:
        u = urlparse(base)
        self.host, self.port, self.timeout = u.hostname, u.port or 80, timeout
        self.headers = {"Authorization": f"Token {token}"} if token else {}
        self.conn: http.client.HTTPConnection | None = None

    def request(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None) -> tuple[int, bytes]:
        for attempt in (0, 1):  # one reconnect for a keep-alive connection the server closed
            if self.conn is None:
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            try:
                self.conn.request(method, path, body=body, headers={**self.headers, **(headers or {})})
                response = self.conn.getresponse()
                return response.status, response.read()
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                self.conn.close()
                self.conn = None
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def json(self, method: str, path: str, payload=None) -> tuple[int, dict]:
        body = json.dumps(payload).encode() if payload is not None else None
        status, data = self.request(method, path, body, {"Content-Type": "application/json"} if body else None)
        return status, (json.loads(data) if data else {})


def multipart(fields: dict[str, str], files: list[tuple[str, str, bytes]]) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    out = io.BytesIO()
    for name, value in fields.items():
        out.write(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode())
    for field_name, filename, data in files:
        out.write(f'--{boundary}\r\nContent-Disposition: form-data; name="{field_name}"; filename="{filename}"\r\n'
                  f"Content-Type: audio/wav\r\n\r\n".encode())
        out.write(data)
        out.write(b"\r\n")
    out.write(f"--{boundary}--\r\n".encode())
    return out.getvalue(), f"multipart/form-data; boundary={boundary}"


@dataclass
class Stats:
    lock: threading.Lock = field(default_factory=threading.Lock)
    status_latencies: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    jobs: list[int] = field(default_factory=list)
    uploaded: int = 0
    rejected: int = 0
    uploads_done: threading.Event = field(default_factory=threading.Event)

    def fail(self, what: str) -> None:
        with self.lock:
            self.failures.append(what)


def uploader(args, token: str, stats: Stats, batches: list[range], run_id: str) -> None:
    client = Client(args.url, token)
    while True:
        with stats.lock:
            if not batches:
                return
            indices = batches.pop(0)
        files = [("files", f"{run_id}-{i:06d}.wav", clip(args.seed + i)) for i in indices]
        body, ctype = multipart({"name": f"load-{run_id}-{indices.start}"}, files)
        try:
            status, data = client.request("POST", "/api/v1/batches/", body, {"Content-Type": ctype})
        except OSError as exc:
            stats.fail(f"batch upload: {exc!r}")
            continue
        if status == 429:  # throttled: wait and try the same batch again
            time.sleep(2)
            with stats.lock:
                batches.insert(0, indices)
            continue
        if status != 201:
            stats.fail(f"batch upload: HTTP {status} {data[:200]!r}")
            continue
        batch = json.loads(data)
        with stats.lock:
            stats.uploaded += len(batch["recordings"])
            stats.rejected += len(batch["rejected"])
        if args.no_jobs:
            continue
        status, job = client.json("POST", "/api/v1/jobs/", {"kind": "features", "batch": batch["id"],
                                                             "params": {"extractors": args.extractors.split(",")}})
        if status != 202:
            stats.fail(f"job submit: HTTP {status} {job}")
            continue
        with stats.lock:
            stats.jobs.append(job["id"])


def poller(args, token: str, stats: Stats, stop: threading.Event, probe_ids: list[int]) -> None:
    client = Client(args.url, token)
    rng = random.Random()
    while not stop.is_set():
        with stats.lock:
            ids = stats.jobs or probe_ids
            job_id = rng.choice(ids) if ids else None
        t0 = time.perf_counter()
        try:
            if job_id is None:
                status, _ = client.request("GET", "/api/v1/jobs/?page_size=1")
            else:
                status, _ = client.request("GET", f"/api/v1/jobs/{job_id}/")
        except OSError as exc:
            stats.fail(f"status poll: {exc!r}")
            continue
        elapsed = time.perf_counter() - t0
        if status != 200:
            stats.fail(f"status poll: HTTP {status}")
        with stats.lock:
            stats.status_latencies.append(elapsed)
        time.sleep(args.poll_interval)


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=1000, method="inclusive")[int(q * 10) - 1] if len(values) > 1 else values[0]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", default="http://127.0.0.1:8000")
    p.add_argument("--token")
    p.add_argument("--username")
    p.add_argument("--password")
    p.add_argument("--n", type=int, default=10_000, help="recordings to upload")
    p.add_argument("--quick", action="store_true", help="500 recordings")
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--uploaders", type=int, default=2, help="concurrent batch uploads")
    p.add_argument("--pollers", type=int, default=50, help="clients polling job status")
    p.add_argument("--poll-interval", type=float, default=0.2, help="seconds each poller waits between requests")
    p.add_argument("--extractors", default="spectral")
    p.add_argument("--no-jobs", action="store_true", help="upload and poll only; no features jobs")
    p.add_argument("--timeout", type=float, default=3600, help="seconds to wait for every job to finish")
    p.add_argument("--seed", type=int, default=int(time.time()) % 1_000_000 * 100_000, help="clip seed offset (new clips per run)")
    args = p.parse_args(argv)
    n = 500 if args.quick else args.n

    token = args.token
    if not token:
        status, body = Client(args.url).json("POST", "/api/v1/auth/token/", {"username": args.username, "password": args.password})
        if status != 200:
            print(f"could not get a token: HTTP {status} {body}", file=sys.stderr)
            return 2
        token = body["token"]
    run_id = uuid.uuid4().hex[:6]
    stats = Stats()
    batches = [range(s, min(s + args.batch_size, n)) for s in range(0, n, args.batch_size)]
    _, existing = Client(args.url, token).json("GET", "/api/v1/jobs/?page_size=50")
    probe_ids = [j["id"] for j in existing.get("results", [])]

    stop = threading.Event()
    pollers = [threading.Thread(target=poller, args=(args, token, stats, stop, probe_ids), daemon=True) for _ in range(args.pollers)]
    for t in pollers:
        t.start()
    t0 = time.perf_counter()
    uploaders = [threading.Thread(target=uploader, args=(args, token, stats, batches, run_id)) for _ in range(args.uploaders)]
    for t in uploaders:
        t.start()
    for t in uploaders:
        t.join()
    upload_s = time.perf_counter() - t0
    print(f"uploaded {stats.uploaded} recordings in {upload_s:.1f} s ({stats.uploaded / upload_s:.1f}/s), "
          f"{len(stats.jobs)} jobs submitted, {stats.rejected} files rejected", flush=True)

    # wait for every job to finish, checking each one's counters
    client = Client(args.url, token)
    pending = set(stats.jobs)
    finished: dict[int, dict] = {}
    deadline = time.monotonic() + args.timeout
    while pending and time.monotonic() < deadline:
        for job_id in sorted(pending):
            status, job = client.json("GET", f"/api/v1/jobs/{job_id}/")
            if status != 200:
                stats.fail(f"job {job_id}: HTTP {status}")
                pending.discard(job_id)
            elif job["status"] in ("succeeded", "failed", "cancelled"):
                finished[job_id] = job
                pending.discard(job_id)
        if pending:
            time.sleep(1.0)
    total_s = time.perf_counter() - t0
    stop.set()
    for t in pollers:
        t.join(timeout=10)

    processed = sum(j["progress"]["done"] + j["progress"]["failed"] for j in finished.values())
    lost = sorted(pending)
    for job_id, job in finished.items():
        pr = job["progress"]
        if job["status"] != "succeeded" or pr["done"] + pr["failed"] != pr["total"]:
            stats.fail(f"job {job_id}: {job['status']} {pr} {job['error']}")
    lat = sorted(stats.status_latencies)
    print(f"status endpoint: {len(lat)} requests from {args.pollers} clients, "
          f"p50 {1000 * percentile(lat, 50):.1f} ms, p99 {1000 * percentile(lat, 99):.1f} ms, max {1000 * lat[-1]:.1f} ms, "
          f"{len(lat) / total_s:.0f} req/s")
    if not args.no_jobs:
        print(f"jobs: {len(finished)}/{len(stats.jobs)} finished, {processed} recordings processed in {total_s:.1f} s "
              f"({processed / total_s:.1f} recordings/s end to end)")
    print(f"failed requests: {len(stats.failures)}; jobs lost: {len(lost)}")
    for f in stats.failures[:20]:
        print("  ", f)
    ok = not stats.failures and not lost and stats.uploaded + stats.rejected == n and stats.rejected == 0
    print("OK" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
