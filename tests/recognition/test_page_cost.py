"""Per-page cost does not grow with the job: the same number of queries for a results page of a
small and of a large classify job (issue 25's first step: the results list)."""
import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from recognition.models import Batch, BatchMember, Job, ModelVersion, Prediction, Recording, RecordingResult

pytestmark = pytest.mark.django_db


def _job(owner, n: int) -> Job:
    mv = ModelVersion.objects.create(name=f"m{n}", version="1", family="cnn", task="classify", labels=["a", "b"])
    batch = Batch.objects.create(owner=owner, name=f"b{n}")
    recs = Recording.objects.bulk_create([
        Recording(owner=owner, file=f"recordings/x/{n}-{i}.wav", original_filename=f"{i}.wav", sha256=f"{n:08d}{i:056d}",
                  size_bytes=1, format="wav", duration_s=1.0, label="a") for i in range(n)])
    batch.recordings.set(recs)
    BatchMember.objects.bulk_create([BatchMember(batch=batch, recording=r, label="b") for r in recs[: n // 2]])
    job = Job.objects.create(owner=owner, kind="classify", batch=batch, model_version=mv, status="succeeded", total=n, done=n)
    results = RecordingResult.objects.bulk_create([RecordingResult(job=job, recording=r, status="succeeded") for r in recs])
    Prediction.objects.bulk_create([Prediction(result=res, model_version=mv, outcome="ok", predicted_class="a", confidence=0.9,
                                               probabilities={"a": 0.9, "b": 0.1}) for res in results])
    return job


def _queries(api, job) -> tuple[int, int]:
    with CaptureQueriesContext(connection) as ctx:
        response = api.get(f"/api/v1/jobs/{job.pk}/results/?page_size=20")
    assert response.status_code == 200 and len(response.json()["results"]) == 20
    return len(ctx.captured_queries), sum(len(q["sql"]) for q in ctx.captured_queries)


def test_a_results_page_costs_the_same_for_30_and_600_recordings(api):
    small_count, small_sql = _queries(api, _job(api.user, 30))
    large_count, large_sql = _queries(api, _job(api.user, 600))
    assert large_count == small_count <= 8, (small_count, large_count)  # no query per row (was 26), none per size
    assert large_sql - small_sql < 500, (small_sql, large_sql)  # no list of the batch's member ids sent back


def test_sending_a_jobs_chunks_costs_the_same_queries_for_3_and_300_chunks(user, settings):
    """Submission does not grow with the job in database round trips: chunks are sent through one
    producer and their task ids written in bulk."""
    from kombu import Connection

    from accentsite.celery import app
    from recognition import services

    def submit_and_count(n: int) -> tuple[int, set[str]]:
        recs = Recording.objects.bulk_create([
            Recording(owner=user, file=f"recordings/y/{n}-{i}.wav", original_filename=f"{i}.wav", sha256=f"{n:08d}{i:056d}",
                      size_bytes=1, format="wav", duration_s=1.0) for i in range(n)])
        job = services.job_submit(owner=user, kind="features", recordings=recs, params={"chunk_size": 1}, enqueue=False)
        ids = list(job.chunks.values_list("pk", flat=True))
        with CaptureQueriesContext(connection) as ctx:
            services.jobs._enqueue_chunks(job, ids)
        ids_sent = set(job.chunks.exclude(task_id="").values_list("task_id", flat=True))
        assert len(ids_sent) == n and not job.chunks.filter(enqueued_at__isnull=True).exists()
        return len(ctx.captured_queries), ids_sent

    settings.CELERY_TASK_ALWAYS_EAGER = False
    small, _ = submit_and_count(3)
    large, _ = submit_and_count(300)
    assert large == small, (small, large)
    with Connection(app.conf.broker_url) as conn:  # leave the test broker's queue as it was
        conn.default_channel.queue_purge("cpu")


def test_the_admin_batch_page_costs_the_same_queries_for_30_and_600_recordings(client, django_user_model):
    """One page of rows, counts aggregated by the database: the same queries at both sizes, and the
    page shows 100 rows with a pager instead of every recording."""
    staff = django_user_model.objects.create_superuser(username="pager", password="pw-123456789")
    client.force_login(staff)

    def page(n: int, number: int = 1):
        job = _job(staff, n)
        with CaptureQueriesContext(connection) as ctx:
            response = client.get(f"/admin/recognition/batch/{job.batch_id}/change/?page={number}")
        assert response.status_code == 200
        return len(ctx.captured_queries), response.content.decode()

    small, _ = page(30)
    large, html = page(600, number=2)
    assert large == small, (small, large)
    assert html.count('class="num">1.0</td>') == 100 and "101-200 of 600" in html and "page 2 of 6" in html
