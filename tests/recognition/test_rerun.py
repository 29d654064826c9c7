"""The admin's "Re-run" does not load the job's recordings (issue 25): the planning service counts and
reads them in the database, so re-running a job of 30 or of 300 recordings costs the same queries."""
import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from recognition import services
from recognition.models import Job
from recognition.services import planning
from tests.recognition.test_planning import _batch, _chunks

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff(logged_in_superuser):
    return logged_in_superuser


def _rerun(client, job: Job) -> tuple[Job, int]:
    before = set(Job.objects.values_list("id", flat=True))
    with CaptureQueriesContext(connection) as ctx:
        response = client.post("/admin/recognition/job/", {"action": "rerun", "_selected_action": [job.pk]})
    assert response.status_code == 302, response.content[:500]
    (new_id,) = set(Job.objects.values_list("id", flat=True)) - before
    return Job.objects.get(pk=new_id), len(ctx.captured_queries)


@pytest.mark.parametrize("inline_max", [1000, 10])  # planned in the request, or by the plan task
def test_rerun_costs_the_same_queries_for_30_and_300_recordings(client, staff, settings, monkeypatch, inline_max):
    monkeypatch.setattr("recognition.services.jobs._enqueue_chunks", lambda job, ids: None)
    monkeypatch.setattr(planning, "chunks_send", lambda job, ids: None)
    costs = []
    for n in (30, 300):
        batch = _batch(staff, n, tag=f"r{inline_max}-")
        settings.JOB_PLAN_INLINE_MAX = 1000
        old = services.job_submit(owner=staff, kind="features", batch=batch, params={"chunk_size": 7}, enqueue=False)
        batch.recordings.remove(*batch.recordings.all()[:3])  # the re-run is over the job's recordings, not the batch's now
        settings.JOB_PLAN_INLINE_MAX = inline_max
        new, queries = _rerun(client, old)
        costs.append(queries)
        if new.planning:
            assert new.plan["job"] == old.pk and not new.chunks.exists()
            planning.job_plan(job_id=new.pk)
            new.refresh_from_db()
        assert (new.kind, new.batch_id, new.params, new.total) == (old.kind, old.batch_id, old.params, n)
        assert _chunks(new) == _chunks(old)
        assert set(new.recordings.values_list("id", flat=True)) == set(old.recordings.values_list("id", flat=True))
    assert costs[0] == costs[1], costs


def test_rerun_of_a_job_whose_recordings_are_gone_says_why(client, staff, monkeypatch):
    monkeypatch.setattr("recognition.services.jobs._enqueue_chunks", lambda job, ids: None)
    batch = _batch(staff, 4, tag="gone")
    old = services.job_submit(owner=staff, kind="features", batch=batch, enqueue=False)
    batch.recordings.all().delete()
    response = client.post("/admin/recognition/job/", {"action": "rerun", "_selected_action": [old.pk]}, follow=True)
    assert "no recordings to run on" in response.content.decode() and Job.objects.count() == 1
