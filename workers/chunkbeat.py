"""A running chunk's heartbeat from a separate process: ``python -m workers.chunkbeat URL KEY INTERVAL``.

Some C extensions hold the GIL for seconds at a time (parselmouth's Praat calls on a long
recording do), so a heartbeat *thread* in the worker stalls exactly when the work is longest.
This tiny process (it imports only ``redis``) sets ``KEY`` in Redis every ``INTERVAL`` seconds with
a TTL of three intervals, for as long as its stdin stays open. The worker holds the other end of
that pipe: when the chunk ends the worker closes it, and when the worker dies (SIGKILL, OOM) the
kernel closes it, so the beat stops within one interval and the key expires shortly after.
The stuck-chunk reaper treats a chunk whose key exists as alive. No Django here.
"""
from __future__ import annotations

import select
import sys
import time


def beat(url: str, key: str, interval: float) -> None:
    import redis

    client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
    ttl = max(int(3 * interval + 1), 2)
    stdin = sys.stdin.buffer
    try:
        while True:
            try:
                client.set(key, f"{time.time():.3f}", ex=ttl)
            except redis.RedisError:  # broker restarting: beat again next interval
                pass
            readable, _, _ = select.select([stdin], [], [], interval)
            if readable and not stdin.read1(4096):  # EOF: the chunk ended or its worker died
                return
    finally:
        try:
            client.delete(key)
        except redis.RedisError:
            pass


if __name__ == "__main__":
    beat(sys.argv[1], sys.argv[2], float(sys.argv[3]))
