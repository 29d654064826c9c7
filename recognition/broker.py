"""The broker's Redis and kombu primitives, below every service that talks to the broker.

``recognition.ops`` (fleet views, reaper, recovery commands) and ``recognition.services`` (jobs,
/predict) both import from here; nothing here imports them, so neither imports the other.
"""
from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

from django.conf import settings

from recognition import jobkinds

logger = logging.getLogger(__name__)

QUEUES = tuple(jobkinds.QUEUES)  # ("cpu", "gpu", "interactive"), declared in recognition.jobkinds
COUNTERS_KEY = "accentsite:counters"


def broker_redis(url: str | None = None, *, wait_s: float | None = None):
    """A client on the broker's Redis (``CELERY_BROKER_URL``).

    Commands answer within 2 s or raise (a down broker is said at once). ``wait_s``: the client
    is for a blocking command (``BLPOP``) that may wait that long, so its socket timeout is the
    wait plus a margin: a slow answer is never mistaken for a dead broker.
    """
    import redis

    timeout = 2.0 if wait_s is None else float(wait_s) + 5.0
    return redis.Redis.from_url(url or settings.CELERY_BROKER_URL, socket_timeout=timeout, socket_connect_timeout=2)


def broker_errors() -> tuple[type[BaseException], ...]:
    """The exceptions that mean "the broker (or the cache on the same Redis) cannot be reached"."""
    import kombu.exceptions
    import redis

    return (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, kombu.exceptions.OperationalError,
            ConnectionError, TimeoutError)


@contextlib.contextmanager
def broker_connection(connection=None) -> Iterator[Any]:
    """A kombu connection to the broker (``CELERY_BROKER_URL``) that gives up after one failed
    attempt, so a probe or a scrape answers in seconds when the broker is down."""
    if connection is not None:
        yield connection
        return
    from accentsite.celery import app

    with app.connection_for_read(url=settings.CELERY_BROKER_URL) as conn:
        conn.ensure_connection(max_retries=1, timeout=2)
        yield conn


def queue_depths(*, queues: tuple[str, ...] = QUEUES, connection=None) -> dict[str, int]:
    """Messages waiting in each queue (all priority levels), not counting those a worker holds.

    Asked through kombu (a passive ``queue_declare`` reports the message count), not by reading the
    transport's own key layout; a queue nobody declared yet holds nothing.
    """
    from kombu.exceptions import ChannelError

    depths = {}
    with broker_connection(connection) as conn:
        channel = conn.default_channel
        for queue in queues:
            try:
                depths[queue] = int(channel.queue_declare(queue=queue, passive=True).message_count)
            except ChannelError:  # NOT_FOUND: never declared, or empty (Redis keeps no empty lists)
                depths[queue] = 0
    return depths


def unacked_count(*, connection=None) -> int:
    """Messages delivered to workers and not yet acknowledged (in hand, or of a worker that died).

    Redis transport only: its unacked hash, under the key kombu is configured with.
    """
    with broker_connection(connection) as conn:
        channel = conn.default_channel
        return int(channel.client.hlen(channel.unacked_key))


def counter_incr(name: str, amount: int = 1) -> None:
    """Bump an operations counter (exposed on /metrics); never fails the caller."""
    try:
        broker_redis().hincrby(COUNTERS_KEY, name, amount)
    except Exception:  # counting must not break housekeeping
        logger.warning("could not count %s", name)


def counters(*, client=None) -> dict[str, int]:
    raw = (client or broker_redis()).hgetall(COUNTERS_KEY)
    return {k.decode(): int(v) for k, v in raw.items()}
