"""Prometheus metrics through prometheus-client: a custom collector reads the database and the
broker at scrape time, so any web process answers the same numbers and counters never reset with
a restart:

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
* ``accentsite_metrics_scrape_seconds``: how long this collector took (a process-local histogram).

Under gunicorn set ``PROMETHEUS_MULTIPROC_DIR`` (an empty folder per host, emptied at start by
gunicorn.conf.py): process-local metrics of every web process are then summed by
``MultiProcessCollector``; without it the default registry (process and Python metrics) answers.
"""
from __future__ import annotations

import logging
import os
import threading
from collections import defaultdict
from datetime import timedelta

from django.db.models import Count
from django.utils import timezone
from prometheus_client import CONTENT_TYPE_PLAIN_0_0_4, REGISTRY, CollectorRegistry, Histogram, generate_latest, multiprocess
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from recognition import jobkinds
from recognition.models import Job, JobChunk, RecordingResult

logger = logging.getLogger(__name__)

STAGE_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800)
SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1000)


CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4
# Process-local: in the default registry, so PROMETHEUS_MULTIPROC_DIR mode sums it over processes.
SCRAPE_SECONDS = Histogram("accentsite_metrics_scrape_seconds", "Seconds the accentsite collector took per scrape.")


class _Counts:
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
        model_kinds = {k.name for k in jobkinds.KINDS.values() if k.model_task}
        model_jobs = {job_id for job_id, kind, *_ in rows if kind in model_kinds}
        failed = set(
            RecordingResult.objects.filter(status=RecordingResult.Status.FAILED, job_id__in=model_jobs).values_list("job_id", "recording_id")
        ) if model_jobs else set()
        for job_id, kind, timings, started, ended, recording_ids in rows:
            for stage, seconds in (timings or {}).items():
                if isinstance(seconds, (int, float)):
                    _chunks["stages"].setdefault((kind, stage), _Counts(STAGE_BUCKETS)).observe(float(seconds))
            if started and ended:
                _chunks["runs"].setdefault((kind,), _Counts(STAGE_BUCKETS)).observe((ended - started).total_seconds())
            if kind in model_kinds and "forward" in (timings or {}):
                n = sum(1 for rid in recording_ids or [] if (job_id, rid) not in failed)
                _chunks["per_call"].setdefault((kind,), _Counts(SIZE_BUCKETS)).observe(n)
        _chunks["upto"] = upto
        return {k: dict(v) for k, v in _chunks.items() if k != "upto"}


def _histogram(name: str, help_text: str, series: dict[tuple, _Counts], label_names: list[str]) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, help_text, labels=label_names)
    for key, counts in sorted(series.items()):
        buckets = [(floatToGoString(bound), n) for bound, n in zip(counts.buckets, counts.counts, strict=True)]
        family.add_metric(list(key), [*buckets, ("+Inf", counts.count)], sum_value=round(counts.sum, 6))
    return family


class AccentsiteCollector(Collector):
    """Everything about jobs, chunks, queues and workers, read at scrape time.

    A part whose source is down is left out and counted in ``accentsite_scrape_errors``.
    """

    def describe(self):
        return []  # computed at scrape time: do not run queries when the collector is registered

    def collect(self):
        with SCRAPE_SECONDS.time():
            yield from self._collect()

    def _collect(self):
        errors = 0
        jobs = GaugeMetricFamily("accentsite_jobs", "Jobs by kind and status.", labels=["kind", "status"])
        counts = {(r["kind"], r["status"]): r["n"] for r in Job.objects.order_by().values("kind", "status").annotate(n=Count("id"))}
        for kind in Job.Kind.values:
            for status in Job.Status.values:
                jobs.add_metric([kind, status], counts.get((kind, status), 0))
        yield jobs

        processed = CounterMetricFamily("accentsite_recordings_processed", "Per-recording results by job kind and outcome.",
                                        labels=["kind", "status"])
        results = {(r["job__kind"], r["status"]): r["n"]
                   for r in RecordingResult.objects.order_by().values("job__kind", "status").annotate(n=Count("id"))}
        for kind in Job.Kind.values:
            for status in RecordingResult.Status.values:
                processed.add_metric([kind, status], results.get((kind, status), 0))
        yield processed
        failures = CounterMetricFamily("accentsite_recording_failures", "Failed recordings by error code.", labels=["code"])
        rows = RecordingResult.objects.filter(status=RecordingResult.Status.FAILED).values("error_code").annotate(n=Count("id"))
        for row in rows.order_by("error_code"):
            failures.add_metric([row["error_code"] or "unknown"], row["n"])
        yield failures

        chunks_by_status = GaugeMetricFamily("accentsite_chunks", "Job chunks by status.", labels=["status"])
        chunk_counts = dict(JobChunk.objects.order_by().values_list("status").annotate(n=Count("id")))
        for status in JobChunk.Status.values:
            chunks_by_status.add_metric([status], chunk_counts.get(status, 0))
        yield chunks_by_status

        chunks = _chunk_histograms()
        yield _histogram("accentsite_chunk_stage_seconds", "Seconds per stage per finished chunk (JobChunk.timings).",
                         chunks["stages"], ["kind", "stage"])
        yield _histogram("accentsite_chunk_seconds", "Run time of finished chunks, started to finished.", chunks["runs"], ["kind"])
        yield _histogram("accentsite_inference_recordings_per_call",
                         "Recordings one model chunk passed to one classify_batch/embed_batch call.", chunks["per_call"], ["kind"])

        try:
            from recognition import ops

            with ops.broker_connection() as conn:
                depths = ops.queue_depths(connection=conn)
                unacked = ops.unacked_count(connection=conn)
            client = ops.broker_redis()
            records = ops.worker_records(client=client)
            op_counts = ops.counters(client=client)
        except Exception as exc:  # the broker down must not hide the database numbers
            logger.warning("metrics: broker unreachable: %s", exc)
            errors += 1
        else:
            depth = GaugeMetricFamily("accentsite_queue_depth", "Messages waiting per queue.", labels=["queue"])
            for queue, n in depths.items():
                depth.add_metric([queue], n)
            yield depth
            yield GaugeMetricFamily("accentsite_broker_unacked_messages", "Messages delivered to workers, not yet acknowledged.",
                                    value=unacked)
            online = GaugeMetricFamily("accentsite_workers_online", "Workers with a fresh heartbeat, per queue.", labels=["queue"])
            per_queue: dict[str, int] = defaultdict(int)
            for rec in records.values():
                for queue in rec.get("queues", []):
                    per_queue[queue] += 1
            for queue in sorted(set(per_queue) | set(jobkinds.QUEUES)):
                online.add_metric([queue], per_queue.get(queue, 0))
            yield online
            done = CounterMetricFamily("accentsite_ops", "Operations done: chunks requeued, messages purged, orphans deleted.",
                                       labels=["action"])
            for action, n in sorted(op_counts.items()):
                done.add_metric([action], n)
            yield done

        yield GaugeMetricFamily("accentsite_scrape_errors", "Parts of this scrape that could not be collected.", value=errors)


_COLLECTOR = AccentsiteCollector()


def registry() -> CollectorRegistry:
    """The registry a scrape reads: this collector beside the process-local metrics, summed over
    every process that wrote to ``PROMETHEUS_MULTIPROC_DIR`` when it is set (gunicorn)."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        reg = CollectorRegistry(auto_describe=False)
        multiprocess.MultiProcessCollector(reg)
        reg.register(_COLLECTOR)
        return reg
    global _in_default_registry
    with _register_lock:
        if not _in_default_registry:
            REGISTRY.register(_COLLECTOR)
            _in_default_registry = True
    return REGISTRY


_register_lock = threading.Lock()
_in_default_registry = False


def render() -> bytes:
    """The whole exposition, Prometheus text format 0.0.4 (``CONTENT_TYPE``)."""
    return generate_latest(registry())
