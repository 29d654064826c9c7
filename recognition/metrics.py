"""Prometheus text exposition (format 0.0.4), written by hand: no client library, no state in the web.

Everything is computed at scrape time from the database and Redis, so any web process answers the
same numbers and counters never reset with a restart:

* ``accentsite_jobs{kind,status}``: jobs by kind and status (gauge).
* ``accentsite_recordings_processed_total{kind,status}``: per-recording results (succeeded / failed).
* ``accentsite_queue_depth{queue}``, ``accentsite_broker_unacked_messages``, ``accentsite_workers_online``.
* ``accentsite_chunk_stage_seconds{kind,stage}``: histogram of seconds per stage per chunk, from
  ``JobChunk.timings`` of finished chunks (decode, features, store, model_load, windowing, vad, forward, ...);
  chunks count once finished ``LAG_S`` ago (see ``_chunk_histograms``).
* ``accentsite_chunk_seconds{kind}``: histogram of a chunk's run time (started -> finished).
* ``accentsite_inference_recordings_per_call{kind}``: histogram of how many recordings one model
  chunk handed to ``classify_batch`` / ``embed_batch`` in one call (the chunk's recordings minus
  those that failed). The windows inside are packed into ``batch_size`` batches by the pipeline;
  those per-forward sizes are not recorded anywhere, so they are not exported.
* ``accentsite_ops_total{action}``: what the reaper, purges and clean-ups did (Redis counters).
"""
from __future__ import annotations

import logging
import math
import threading
from collections import defaultdict
from datetime import timedelta

from django.db.models import Count
from django.utils import timezone

from recognition.models import Job, JobChunk, RecordingResult

logger = logging.getLogger(__name__)

STAGE_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800)
SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1000)


def _escape(value: object) -> str:
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(labels: dict) -> str:
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items()) + "}" if labels else ""


def _num(value: float) -> str:
    if isinstance(value, float):
        if math.isinf(value):
            return "+Inf" if value > 0 else "-Inf"
        return repr(value)
    return str(value)


class Histogram:
    """Cumulative bucket counts, sum and count of observations."""

    def __init__(self, buckets: tuple[float, ...]) -> None:
        self.buckets = buckets
        self.counts = [0] * len(buckets)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        for i, bound in enumerate(self.buckets):
            if value <= bound:
                self.counts[i] += 1
        self.sum += value
        self.count += 1


# Chunk histograms grow incrementally: each scrape reads only chunks finished since the last one
# (per web process), up to LAG_S ago so a chunk whose transaction commits late is not skipped.
# Measured: a full scan costs ~50 us per chunk on PostgreSQL here (1.0 s for 20,000 chunks), paid
# once per web process; later scrapes read only the new chunks.
LAG_S = 30.0
_chunks_lock = threading.Lock()
_chunks: dict = {"upto": None, "stages": {}, "runs": {}, "per_call": {}}


def _chunk_histograms() -> dict:
    with _chunks_lock:
        upto = timezone.now() - timedelta(seconds=LAG_S)
        finished = JobChunk.objects.order_by().filter(
            status__in=[JobChunk.Status.DONE, JobChunk.Status.FAILED], finished_at__lte=upto
        )
        if _chunks["upto"] is not None:
            finished = finished.filter(finished_at__gt=_chunks["upto"])
        rows = list(finished.values_list("job_id", "job__kind", "timings", "started_at", "finished_at", "recording_ids"))
        model_jobs = {job_id for job_id, kind, *_ in rows if kind in (Job.Kind.CLASSIFY, Job.Kind.EMBED)}
        failed = set(
            RecordingResult.objects.filter(status=RecordingResult.Status.FAILED, job_id__in=model_jobs).values_list("job_id", "recording_id")
        ) if model_jobs else set()
        for job_id, kind, timings, started, ended, recording_ids in rows:
            for stage, seconds in (timings or {}).items():
                if isinstance(seconds, (int, float)):
                    _chunks["stages"].setdefault((kind, stage), Histogram(STAGE_BUCKETS)).observe(float(seconds))
            if started and ended:
                _chunks["runs"].setdefault((kind,), Histogram(STAGE_BUCKETS)).observe((ended - started).total_seconds())
            if kind in (Job.Kind.CLASSIFY, Job.Kind.EMBED) and "forward" in (timings or {}):
                n = sum(1 for rid in recording_ids or [] if (job_id, rid) not in failed)
                _chunks["per_call"].setdefault((kind,), Histogram(SIZE_BUCKETS)).observe(n)
        _chunks["upto"] = upto
        return {k: dict(v) for k, v in _chunks.items() if k != "upto"}


class Exposition:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def family(self, name: str, kind: str, help_text: str) -> None:
        self.lines.append(f"# HELP {name} {help_text}")
        self.lines.append(f"# TYPE {name} {kind}")

    def sample(self, name: str, value: float, **labels: object) -> None:
        self.lines.append(f"{name}{_labels(labels)} {_num(value)}")

    def histogram(self, name: str, series: dict[tuple, Histogram], label_names: tuple[str, ...]) -> None:
        for key, hist in sorted(series.items()):
            labels = dict(zip(label_names, key, strict=True))
            for bound, n in zip(hist.buckets, hist.counts, strict=True):
                self.sample(f"{name}_bucket", n, **labels, le=_num(float(bound)))
            self.sample(f"{name}_bucket", hist.count, **labels, le="+Inf")
            self.sample(f"{name}_sum", round(hist.sum, 6), **labels)
            self.sample(f"{name}_count", hist.count, **labels)

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def render() -> str:
    """The whole exposition; a part whose source is down is left out and counted in ``accentsite_scrape_errors``."""
    out = Exposition()
    errors = 0

    out.family("accentsite_jobs", "gauge", "Jobs by kind and status.")
    counts = {(r["kind"], r["status"]): r["n"] for r in Job.objects.order_by().values("kind", "status").annotate(n=Count("id"))}
    for kind in Job.Kind.values:
        for status in Job.Status.values:
            out.sample("accentsite_jobs", counts.get((kind, status), 0), kind=kind, status=status)

    out.family("accentsite_recordings_processed_total", "counter", "Per-recording results by job kind and outcome.")
    results = {(r["job__kind"], r["status"]): r["n"]
               for r in RecordingResult.objects.order_by().values("job__kind", "status").annotate(n=Count("id"))}
    for kind in Job.Kind.values:
        for status in RecordingResult.Status.values:
            out.sample("accentsite_recordings_processed_total", results.get((kind, status), 0), kind=kind, status=status)
    out.family("accentsite_recording_failures_total", "counter", "Failed recordings by error code.")
    failures = RecordingResult.objects.filter(status=RecordingResult.Status.FAILED).values("error_code").annotate(n=Count("id"))
    for row in failures.order_by("error_code"):
        out.sample("accentsite_recording_failures_total", row["n"], code=row["error_code"] or "unknown")

    out.family("accentsite_chunks", "gauge", "Job chunks by status.")
    chunk_counts = dict(JobChunk.objects.order_by().values_list("status").annotate(n=Count("id")))
    for status in JobChunk.Status.values:
        out.sample("accentsite_chunks", chunk_counts.get(status, 0), status=status)

    chunks = _chunk_histograms()
    out.family("accentsite_chunk_stage_seconds", "histogram", "Seconds per stage per finished chunk (JobChunk.timings).")
    out.histogram("accentsite_chunk_stage_seconds", chunks["stages"], ("kind", "stage"))
    out.family("accentsite_chunk_seconds", "histogram", "Run time of finished chunks, started to finished.")
    out.histogram("accentsite_chunk_seconds", chunks["runs"], ("kind",))
    out.family("accentsite_inference_recordings_per_call", "histogram",
               "Recordings one model chunk passed to one classify_batch/embed_batch call.")
    out.histogram("accentsite_inference_recordings_per_call", chunks["per_call"], ("kind",))

    try:
        from recognition import ops

        client = ops.broker_redis()
        depths = ops.queue_depths(client=client)
        unacked = ops.unacked_count(client=client)
        records = ops.worker_records(client=client)
        op_counts = ops.counters(client=client)
    except Exception as exc:  # the broker down must not hide the database numbers
        logger.warning("metrics: broker unreachable: %s", exc)
        errors += 1
    else:
        out.family("accentsite_queue_depth", "gauge", "Messages waiting per queue.")
        for queue, depth in depths.items():
            out.sample("accentsite_queue_depth", depth, queue=queue)
        out.family("accentsite_broker_unacked_messages", "gauge", "Messages delivered to workers, not yet acknowledged.")
        out.sample("accentsite_broker_unacked_messages", unacked)
        out.family("accentsite_workers_online", "gauge", "Workers with a fresh heartbeat, per queue.")
        per_queue: dict[str, int] = defaultdict(int)
        for rec in records.values():
            for queue in rec.get("queues", []):
                per_queue[queue] += 1
        for queue in sorted(set(per_queue) | set(ops.QUEUES)):
            out.sample("accentsite_workers_online", per_queue.get(queue, 0), queue=queue)
        out.family("accentsite_ops_total", "counter", "Operations done: chunks requeued, messages purged, orphans deleted.")
        for action, n in sorted(op_counts.items()):
            out.sample("accentsite_ops_total", n, action=action)

    out.family("accentsite_scrape_errors", "gauge", "Parts of this scrape that could not be collected.")
    out.sample("accentsite_scrape_errors", errors)
    return out.text()
