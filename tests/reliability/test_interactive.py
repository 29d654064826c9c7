"""The interactive path under the conditions people meet, in the real stack: gunicorn (gthread, as
deployed) on the test database, a private Redis as broker and cache, real worker processes that are
slow (a sleep before the task, loaded from ``slow_hooks/sitecustomize.py``) or cold (a fresh
process that loads Whisper on its first request), a flood from one user, Redis killed mid-use.

No assertion here is a latency budget: where order matters (a liveness probe answered while a flood
holds its slots) the test compares events against the worker's deliberate delay, never against a
timeout shorter than the failure.
"""
from __future__ import annotations

import io
import os
import subprocess
import sys
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tests.conftest import ROOT, wait_until
from tests.reliability.conftest import _free_port

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

HOOKS = Path(__file__).parent / "slow_hooks"
RUN_PREDICT = "workers.tasks.run_predict"


def _wav(seed: int, seconds: float = 1.0) -> bytes:
    rng = np.random.default_rng(seed)
    t = np.arange(int(16000 * seconds)) / 16000
    x = 0.3 * np.sin(2 * np.pi * (180 + 40 * rng.random()) * t) + 0.02 * rng.standard_normal(t.size)
    buf = io.BytesIO()
    sf.write(buf, x.astype(np.float32), 16000, format="WAV")
    return buf.getvalue()


class WebServer:
    """``gunicorn -c gunicorn.conf.py accentsite.wsgi`` on a free port (gthread, as deployed)."""

    def __init__(self, env: dict, log: Path) -> None:
        self.port = _free_port()
        self.env = env
        self.log = log
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> WebServer:
        import requests

        cmd = [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "accentsite.wsgi", "--bind", f"127.0.0.1:{self.port}"]
        self.proc = subprocess.Popen(cmd, env=self.env, cwd=ROOT, stdout=open(self.log, "ab"), stderr=subprocess.STDOUT)

        def up():
            if self.proc.poll() is not None:
                raise RuntimeError(f"gunicorn exited; log:\n{self.log.read_text()[-3000:]}")
            try:
                return requests.get(f"{self.url}/healthz/live", timeout=2).status_code == 200
            except requests.RequestException:
                return False

        wait_until(up, timeout=90, interval=0.2, what="gunicorn")
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()


@pytest.fixture
def stack(broker, worker_env, tmp_path):
    """``start_web(**env)`` / ``start_worker(delay_s, **env)`` on the test's private broker."""
    servers: list[WebServer] = []

    def start_web(**env: str) -> WebServer:
        full = dict(worker_env, CELERY_BROKER_URL=broker.redis.url, CACHE_URL=broker.redis.url, GUNICORN_WORKERS="2",
                    GUNICORN_THREADS="8", **env)
        server = WebServer(full, tmp_path / f"web-{len(servers)}.log").start()
        servers.append(server)
        return server

    def start_worker(delay_s: float = 0.0, pool: str = "solo", queues: str = "cpu,gpu,interactive", slow: str = RUN_PREDICT,
                     **env: str):
        extra = dict(env)
        if delay_s:
            extra.update(PYTHONPATH=f"{HOOKS}{os.pathsep}{ROOT}", ACCENTSITE_TEST_TASK_DELAY_S=str(delay_s),
                         ACCENTSITE_TEST_SLOW_TASKS=slow)
        return broker.worker(pool=pool, queues=queues, **extra).start()

    yield start_web, start_worker
    for server in servers:
        server.stop()


def _token(user) -> dict:
    from rest_framework.authtoken.models import Token

    return {"Authorization": f"Token {Token.objects.get_or_create(user=user)[0].key}"}


def _predict(web: WebServer, headers: dict, model: str, seed: int = 1, **fields):
    import requests

    return requests.post(f"{web.url}/api/v1/predict/", headers=headers, files={"file": ("p.wav", _wav(seed))},
                         data={"model": model, **fields}, timeout=120)


def _stored_predict_files(media_root: Path) -> list[Path]:
    folder = media_root / "predict"
    return sorted(folder.iterdir()) if folder.exists() else []


def test_a_worker_that_takes_5_s_is_heard(stack, user, tiny_classifier, media_root):
    """The old web gave up at the broker client's 2-s socket timeout and answered 503."""
    start_web, start_worker = stack
    worker = start_worker(delay_s=5)
    web = start_web(PREDICT_TIMEOUT_S="30")
    response = _predict(web, _token(user), f"tiny@{tiny_classifier.version}")
    assert response.status_code == 200, response.text[:500]
    body = response.json()
    assert body["worker"] == worker.name and set(body["probabilities"]) == {"native", "non_native"}
    assert body["timings"]["wait"] >= 5  # it waited out the slow worker instead of giving up
    assert _stored_predict_files(media_root) == []  # the worker deleted the upload


def test_an_answer_later_than_the_wait_is_fetched_at_its_url(stack, user, other_user, tiny_classifier, media_root):
    import requests

    start_web, start_worker = stack
    start_worker(delay_s=4)
    web = start_web(PREDICT_TIMEOUT_S="1")
    headers = _token(user)
    first = _predict(web, headers, f"tiny@{tiny_classifier.version}")
    assert first.status_code == 202, first.text[:500]
    pending = first.json()
    assert pending["status"] in ("queued", "running") and first.headers["Location"] == pending["url"]
    assert int(first.headers["Retry-After"]) >= 1
    # someone else cannot read it
    assert requests.get(web.url + pending["url"], headers=_token(other_user), timeout=30).status_code == 404

    def answered():
        r = requests.get(web.url + pending["url"], headers=headers, timeout=30)
        assert r.status_code in (200, 202), r.text[:300]
        return r if r.status_code == 200 else None

    done = wait_until(answered, timeout=120, interval=0.5, what="the predict's answer")
    body = done.json()
    assert body["id"] == pending["id"] and set(body["probabilities"]) == {"native", "non_native"}
    assert _stored_predict_files(media_root) == []


def test_a_cold_worker_transcribes_within_the_wait(stack, user):
    """A fresh worker loads Whisper on its first request and transcribes: several seconds, over the
    2 s that used to turn every ``task=transcribe`` into a 503."""
    from workers.runtime import whisper_model_problem

    if whisper_model_problem():
        pytest.skip(f"no Whisper model here: {whisper_model_problem()}")
    import requests

    from tests.conftest import speech

    start_web, start_worker = stack
    start_worker()
    web = start_web(PREDICT_TIMEOUT_S="120")
    response = requests.post(f"{web.url}/api/v1/predict/", headers=_token(user), timeout=180,
                             files={"file": ("s.wav", speech("Please call Stella and ask her to bring these things."))},
                             data={"task": "transcribe", "language": "en"})
    assert response.status_code == 200, response.text[:500]
    body = response.json()
    assert "bring these things" in body["text"].lower()
    print(f"cold worker: transcribe answered after waiting {body['timings']['wait']:.1f} s")


def test_a_flood_from_one_user_gets_429s_and_never_stalls_anyone_else(stack, user, other_user, tiny_classifier):
    """24 concurrent predicts from one user against a worker that needs 10 s each: exactly
    PREDICT_MAX_CONCURRENT_PER_USER are taken, the rest answer 429 with Retry-After at once, and a
    liveness probe, another user's job list and another user's predict are all answered while the
    flood's first answer is still being computed."""
    import requests

    start_web, start_worker = stack
    start_worker(delay_s=10)
    web = start_web(PREDICT_TIMEOUT_S="12", PREDICT_MAX_CONCURRENT_PER_USER="4")
    model = f"tiny@{tiny_classifier.version}"
    flooder, other = _token(user), _token(other_user)
    done: dict[str, float] = {}

    def flood(i: int):
        r = _predict(web, flooder, model, seed=i)
        return r, time.monotonic()

    with ThreadPoolExecutor(max_workers=24) as pool:
        t0 = time.monotonic()
        futures = [pool.submit(flood, i) for i in range(24)]
        time.sleep(1.0)
        live = requests.get(f"{web.url}/healthz/live", timeout=60)
        done["live"] = time.monotonic()
        jobs = requests.get(f"{web.url}/api/v1/jobs/", headers=other, timeout=60)
        done["jobs"] = time.monotonic()
        theirs = _predict(web, other, model, seed=99, wait="false")
        done["other_predict"] = time.monotonic()
        results = [f.result() for f in futures]
    codes = sorted(r.status_code for r, _ in results)
    admitted = [(r, t) for r, t in results if r.status_code in (200, 202)]
    refused = [r for r, _ in results if r.status_code == 429]
    assert len(admitted) == 4 and len(refused) == 20, codes
    assert all(r.json()["error"]["code"] == "too_many_predicts" and int(r.headers["Retry-After"]) >= 1 for r in refused)
    assert live.status_code == 200 and jobs.status_code == 200
    assert theirs.status_code == 202, theirs.text[:300]  # admitted: the flooder's cap is theirs alone
    first_answer = min(t for _, t in admitted)
    assert first_answer - t0 >= 10  # the worker's delay: every admitted predict was still running ...
    assert max(done.values()) < first_answer, (done, first_answer - t0)  # ... while the others were answered
    print(f"flood of 24: liveness {done['live'] - t0 - 1.0:.2f} s after sending, job list "
          f"{done['jobs'] - done['live']:.2f} s, first flood answer {first_answer - t0:.1f} s")


def test_redis_down_uploads_go_on_predicts_say_unavailable_and_jobs_are_sent_after(stack, broker, user, tiny_classifier,
                                                                                   media_root, settings):
    import requests

    from recognition.models import Job, JobChunk

    start_web, start_worker = stack
    web = start_web()
    headers = _token(user)
    broker.redis.kill()
    before = _stored_predict_files(media_root)
    predict = _predict(web, headers, f"tiny@{tiny_classifier.version}")
    assert predict.status_code == 503 and predict.json()["error"]["code"] == "predict_unavailable", predict.text[:300]
    assert _stored_predict_files(media_root) == before  # nothing left behind
    upload = requests.post(f"{web.url}/api/v1/recordings/", headers=headers, files={"file": ("r.wav", _wav(7, 2.0))},
                           timeout=60)
    assert upload.status_code == 201, upload.text[:300]  # the throttle fails open
    job = requests.post(f"{web.url}/api/v1/jobs/", headers=headers, timeout=60,
                        json={"kind": "classify", "recordings": [upload.json()["id"]], "model": f"tiny@{tiny_classifier.version}"})
    assert job.status_code in (201, 202), job.text[:300]
    job_id = job.json()["id"]
    assert JobChunk.objects.filter(job_id=job_id, enqueued_at__isnull=True).exists()  # never sent: Redis is down
    broker.redis.start()
    start_worker()
    settings.JOB_UNSENT_GRACE_S = 0
    from recognition.ops import chunks_reap

    assert chunks_reap()  # the first pass sends them, not one after JOB_QUEUED_LOST_AFTER_S (600 s)
    wait_until(lambda: Job.objects.get(pk=job_id).is_terminal, timeout=120, what="the job")
    assert Job.objects.get(pk=job_id).status == Job.Status.SUCCEEDED


def test_an_archive_of_20000_members_is_refused_before_any_work(stack, user, media_root):
    import requests

    start_web, _ = stack
    web = start_web()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        for i in range(20_000):
            z.writestr(f"m/{i}.wav", b"x")
    stored_before = sum(1 for _ in media_root.rglob("*") if _.is_file())
    r = requests.post(f"{web.url}/api/v1/batches/", headers=_token(user), data={"name": "big"},
                      files={"archive": ("big.zip", buf.getvalue())}, timeout=120)
    assert r.status_code == 400 and r.json()["error"]["code"] == "too_many_members", r.text[:300]
    assert sum(1 for _ in media_root.rglob("*") if _.is_file()) == stored_before


def test_a_small_job_starts_at_once_beside_a_busy_model_pool(stack, user, tiny_classifier, settings):
    """The gpu worker is busy with a long batch (its chunk takes 20 s more than its model needs); a
    one-recording job goes to the interactive queue, which its own worker serves, and finishes while
    the batch is still running (before, both queues shared one pool and the small job waited)."""
    from recognition import services
    from recognition.models import Job

    _, start_worker = stack
    start_worker(delay_s=20, queues="cpu,gpu", slow="workers.tasks.run_model_chunk")
    start_worker(queues="interactive")
    settings.INTERACTIVE_MAX_RECORDINGS = 1
    recs = [services.recording_create(owner=user, fileobj=io.BytesIO(_wav(20 + i, 2.0)), filename=f"{i}.wav")[0]
            for i in range(3)]
    model = f"tiny@{tiny_classifier.version}"
    batch_job = services.job_submit(owner=user, kind="classify", recordings=recs[:2], model=model)
    assert {c.queue for c in batch_job.chunks.all()} == {"gpu"}
    small = services.job_submit(owner=user, kind="classify", recordings=recs[2:], model=model)
    assert {c.queue for c in small.chunks.all()} == {"interactive"}
    wait_until(lambda: Job.objects.get(pk=small.pk).is_terminal, timeout=120, what="the small job")
    assert Job.objects.get(pk=small.pk).status == Job.Status.SUCCEEDED
    assert not Job.objects.get(pk=batch_job.pk).is_terminal  # the batch still holds the model pool
