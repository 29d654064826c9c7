"""Submission does not grow with the job (issue 25, item 2): a job above ``JOB_PLAN_INLINE_MAX`` is
counted, saved and handed to one plan task; the task writes the same chunks the inline path would."""
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from recognition import services
from recognition.models import Batch, Job, JobChunk, Recording
from recognition.services import planning

pytestmark = pytest.mark.django_db

# durations that make audio-cut chunks uneven: a few long files among short clips
DURATIONS = [3.0, 400.0, 12.5, None, 700.0, 1.0, 950.0, 30.0, 2.0, 88.0]


def _batch(owner, n: int, tag: str = "") -> Batch:
    batch = Batch.objects.create(owner=owner, name=f"b{tag}{n}")
    recs = Recording.objects.bulk_create([
        Recording(owner=owner, file=f"recordings/p/{tag}{n}-{i}.wav", original_filename=f"{i}.wav",
                  sha256=f"{tag}{n:08d}{i:056d}"[-64:], size_bytes=1, format="wav",
                  duration_s=DURATIONS[i % len(DURATIONS)]) for i in range(n)])
    batch.recordings.set(recs)
    return batch


def _chunks(job: Job) -> list[tuple[int, list[int], str, float]]:
    return [(c.index, c.recording_ids, c.queue, round(c.audio_s, 3)) for c in job.chunks.order_by("index")]


@pytest.fixture
def small_cap(settings):
    settings.JOB_PLAN_INLINE_MAX = 10
    return settings


def _submit(user, batch, kind="features", **kw):
    with CaptureQueriesContext(connection) as ctx:
        job = services.job_submit(owner=user, kind=kind, batch=batch, **kw)
    return job, len(ctx.captured_queries), sum(len(q["sql"]) for q in ctx.captured_queries)


def test_submitting_a_large_job_costs_the_same_queries_for_30_and_300_recordings(user, small_cap):
    small, small_count, small_sql = _submit(user, _batch(user, 30))
    large, large_count, large_sql = _submit(user, _batch(user, 300))
    assert large_count == small_count, (small_count, large_count)
    assert abs(large_sql - small_sql) < 200, (small_sql, large_sql)  # no id list sent to the database
    for job, n in ((small, 30), (large, 300)):
        job.refresh_from_db()
        assert job.status == "queued" and job.planning and job.total == n and job.plan["batch_upto"]
        assert not job.chunks.exists() and not job.recordings.exists()  # the plan task writes them


def test_a_job_at_the_cap_is_planned_in_the_request(user, small_cap, monkeypatch):
    monkeypatch.setattr("recognition.services.jobs._enqueue_chunks", lambda job, ids: None)
    job, _, _ = _submit(user, _batch(user, 10))
    assert not job.planning and job.plan is None
    assert job.chunks.count() == 2 and job.recordings.count() == 10  # features: 8 a chunk


@pytest.mark.parametrize("kind, params", [("features", {}), ("features", {"chunk_size": 7}), ("classify", {}),
                                          ("embed", {"chunk_size": 5})])
def test_the_plan_task_writes_the_chunks_the_inline_path_writes(user, settings, monkeypatch, kind, params,
                                                                django_capture_on_commit_callbacks):
    """Same groups, queue, audio seconds and recording rows whichever path plans the job."""
    from recognition.services.models import shipped_models_register

    if kind in ("classify", "embed"):
        shipped_models_register()
    monkeypatch.setattr("recognition.services.jobs._enqueue_chunks", lambda job, ids: None)
    sent = []
    monkeypatch.setattr(planning, "chunks_send", lambda job, ids: sent.append(list(ids)))
    batch = _batch(user, 137, tag=kind[:2])
    settings.JOB_PLAN_INLINE_MAX = 1000
    inline = services.job_submit(owner=user, kind=kind, batch=batch, params=dict(params))
    settings.JOB_PLAN_INLINE_MAX = 10
    planned = services.job_submit(owner=user, kind=kind, batch=batch, params=dict(params))
    assert planned.planning and not planned.chunks.exists()

    with CaptureQueriesContext(connection) as ctx, django_capture_on_commit_callbacks(execute=True):
        planning.job_plan(job_id=planned.pk)
    planned.refresh_from_db()
    assert sent == [list(planned.chunks.order_by("index").values_list("id", flat=True))]  # sent once committed
    assert not planned.planning and planned.total == inline.total == 137
    assert _chunks(planned) == _chunks(inline) and len(_chunks(planned)) > 1
    assert set(planned.recordings.values_list("id", flat=True)) == set(inline.recordings.values_list("id", flat=True))
    assert len(ctx.captured_queries) < 20  # rows read and written in pages, not one by one


def test_a_redelivered_plan_task_makes_no_duplicates(user, small_cap, monkeypatch):
    monkeypatch.setattr(planning, "chunks_send", lambda job, ids: None)
    job = services.job_submit(owner=user, kind="features", batch=_batch(user, 50))
    planning.job_plan(job_id=job.pk)
    first = _chunks(job)
    planning.job_plan(job_id=job.pk)  # acks_late: the task runs again after its worker died
    assert _chunks(job) == first and len(first) == 7
    assert job.recordings.count() == 50
    assert planning.job_plan(job_id=10**9) is None  # the job was deleted meanwhile


def test_recordings_appended_while_planning_are_not_in_the_job(user, small_cap, monkeypatch):
    monkeypatch.setattr(planning, "chunks_send", lambda job, ids: None)
    batch = _batch(user, 40)
    job = services.job_submit(owner=user, kind="features", batch=batch)
    late = _batch(user, 5, tag="late").recordings.all()
    batch.recordings.add(*late)
    planning.job_plan(job_id=job.pk)
    job.refresh_from_db()
    assert job.total == 40 and job.recordings.count() == 40
    assert not job.recordings.filter(pk__in=[r.pk for r in late]).exists()


def test_a_job_of_chosen_recordings_is_planned_too(user, small_cap, monkeypatch):
    monkeypatch.setattr(planning, "chunks_send", lambda job, ids: None)
    recs = list(_batch(user, 25).recordings.all())
    job = services.job_submit(owner=user, kind="features", recordings=recs[:20])
    assert job.planning and job.total == 20
    Recording.objects.filter(pk=recs[0].pk).delete()  # deleted before the plan ran: the total says so
    planning.job_plan(job_id=job.pk)
    job.refresh_from_db()
    assert job.total == 19 and sorted(i for c in job.chunks.all() for i in c.recording_ids) == sorted(r.pk for r in recs[1:20])


def test_cancelling_a_planning_job_leaves_it_without_chunks(user, small_cap, monkeypatch):
    monkeypatch.setattr(planning, "chunks_send", lambda job, ids: None)
    job = services.job_submit(owner=user, kind="features", batch=_batch(user, 30))
    services.job_cancel(job=job)
    planning.job_plan(job_id=job.pk)
    job.refresh_from_db()
    assert job.status == "cancelled" and not job.planning and not job.chunks.exists()


def test_the_reaper_resends_a_plan_task_that_was_never_sent_or_lost(user, small_cap, monkeypatch):
    sent = []
    monkeypatch.setattr(planning, "plan_send", lambda job_id: sent.append(job_id) or True)
    job = services.job_submit(owner=user, kind="features", batch=_batch(user, 30))
    now = timezone.now()
    assert planning.plans_resend(now=now) == []  # within JOB_UNSENT_GRACE_S of its submission
    later = now + timedelta(seconds=small_cap.JOB_UNSENT_GRACE_S + 1)
    assert planning.plans_resend(now=later) == [job.pk]  # never sent (broker down at submit)
    Job.objects.filter(pk=job.pk).update(plan={**job.plan, "sent_at": later.isoformat()})
    assert planning.plans_resend(now=later) == []  # sent, and not yet lost
    lost = later + timedelta(seconds=small_cap.JOB_PLAN_LOST_AFTER_S + 1)
    assert planning.plans_resend(now=lost) == [job.pk]
    monkeypatch.setattr(planning, "chunks_send", lambda job, ids: None)
    planning.job_plan(job_id=job.pk)
    assert planning.plans_resend(now=lost) == []  # planned: nothing to resend
    assert JobChunk.objects.filter(job=job).count() == 4


def test_the_api_answers_a_large_job_at_once_and_says_it_is_planning(api, small_cap):
    batch = _batch(api.user, 40)
    response = api.post("/api/v1/jobs/", {"kind": "features", "batch": batch.pk}, format="json")
    assert response.status_code == 202, response.content
    body = response.json()
    assert body["status"] == "queued" and body["planning"] is True and body["progress"]["total"] == 40
    assert api.get(f"/api/v1/jobs/{body['id']}/").json()["planning"] is True


def test_the_admin_job_pages_say_a_job_is_planning(client, django_user_model, small_cap):
    staff = django_user_model.objects.create_superuser(username="planner", password="pw-123456789")
    client.force_login(staff)
    job = services.job_submit(owner=staff, kind="features", batch=_batch(staff, 30))
    for url in (f"/admin/recognition/job/{job.pk}/change/", f"/admin/recognition/job/{job.pk}/timeline/"):
        response = client.get(url)
        assert response.status_code == 200 and "planning" in response.content.decode(), url


def test_the_reaper_leaves_a_just_planned_jobs_chunks_to_its_plan_task(user, small_cap, monkeypatch):
    """The plan task sends the chunks after its commit (seconds for thousands): the reaper does not
    send them again meanwhile, however old the job is, but does once JOB_PLAN_LOST_AFTER_S has passed."""
    monkeypatch.setattr(planning, "chunks_send", lambda job, ids: None)  # its worker died before sending
    resent = []
    monkeypatch.setattr("recognition.services.jobs._enqueue_chunks", lambda job, ids: resent.extend(ids))
    job = services.job_submit(owner=user, kind="features", batch=_batch(user, 30))
    Job.objects.filter(pk=job.pk).update(created_at=timezone.now() - timedelta(hours=1))  # it waited to be planned
    planning.job_plan(job_id=job.pk)
    job.refresh_from_db()
    assert job.planned_at is not None
    reap = dict(older_than=timedelta(seconds=60), queued_older_than=timedelta(minutes=10))
    assert services.job_requeue_stuck(**reap) == [] and resent == []
    Job.objects.filter(pk=job.pk).update(planned_at=job.planned_at - timedelta(seconds=small_cap.JOB_PLAN_LOST_AFTER_S + 1))
    assert sorted(services.job_requeue_stuck(**reap)) == sorted(job.chunks.values_list("id", flat=True)) == sorted(resent)


def test_the_plan_task_goes_to_the_interactive_queue_or_waits_for_the_reaper(user, small_cap, monkeypatch):
    """Sent to the real test broker: one message on ``interactive`` and its send time noted; with the
    broker refusing, the job keeps planning with no send time (plans_resend's case)."""
    from kombu import Connection

    from accentsite.celery import app
    from workers.tasks import plan_job

    small_cap.CELERY_TASK_ALWAYS_EAGER = False
    with Connection(app.conf.broker_url) as conn:
        conn.default_channel.queue_purge("interactive")
        job = services.job_submit(owner=user, kind="features", batch=_batch(user, 30))
        assert planning.plan_send(job.pk) is True
        job.refresh_from_db()
        assert job.plan["sent_at"] and conn.default_channel.queue_purge("interactive") == 1

    def refuse(*args, **kwargs):
        raise ConnectionError("broker down")

    other = services.job_submit(owner=user, kind="features", batch=_batch(user, 20, tag="x"))
    monkeypatch.setattr(plan_job, "apply_async", refuse)
    assert planning.plan_send(other.pk) is False
    other.refresh_from_db()
    assert other.planning and "sent_at" not in other.plan


@pytest.mark.parametrize("kind, params", [("features", {}), ("classify", {}), ("embed", {"chunk_size": 5})])
def test_a_plan_in_slices_writes_the_inline_chunks_and_each_slice_costs_the_same(user, settings, monkeypatch, kind, params,
                                                                                 django_capture_on_commit_callbacks):
    """JOB_PLAN_SLICE recordings per plan task, each sending the next slice's task: the same chunks as
    the inline path (a slice ends on a chunk boundary), a constant number of queries per slice, and a
    redelivered slice does nothing."""
    from recognition.services.models import shipped_models_register

    if kind in ("classify", "embed"):
        shipped_models_register()
    monkeypatch.setattr("recognition.services.jobs._enqueue_chunks", lambda job, ids: None)
    sent, steps = [], []
    monkeypatch.setattr(planning, "chunks_send", lambda job, ids: sent.append(list(ids)))
    monkeypatch.setattr(planning, "plan_send", lambda job_id, step=None: steps.append(step) or True)
    batch = _batch(user, 137, tag=f"s{kind[:2]}")
    settings.JOB_PLAN_INLINE_MAX = 1000
    inline = services.job_submit(owner=user, kind=kind, batch=batch, params=dict(params))
    settings.JOB_PLAN_INLINE_MAX, settings.JOB_PLAN_SLICE = 10, 20
    planned = services.job_submit(owner=user, kind=kind, batch=batch, params=dict(params))
    settings.JOB_PLAN_SLICE = 5000  # the slice was fixed at submit: the plan carries it
    assert planned.plan["slice"] == 20

    costs, step = [], None
    while True:
        with CaptureQueriesContext(connection) as ctx, django_capture_on_commit_callbacks(execute=True):
            planning.job_plan(job_id=planned.pk, step=step)
        costs.append(len(ctx.captured_queries))
        planned.refresh_from_db()
        if planned.plan is None:
            break
        assert planned.planning and steps[-1] == planned.plan["step"] == len(costs)  # the next slice's task was sent
        if len(costs) == 2:  # the task of slice 1 delivered again: nothing happens
            before = _chunks(planned)
            planning.job_plan(job_id=planned.pk, step=1)
            assert _chunks(planned) == before
        step = steps[-1]
    assert len(costs) >= 3 and len(set(costs[:-1])) == 1, costs  # 137 recordings, 20 (or a chunk cap) a slice; same queries each
    assert _chunks(planned) == _chunks(inline) and planned.total == inline.total == 137
    assert [i for ids in sent for i in ids] == list(planned.chunks.order_by("index").values_list("id", flat=True))
    assert planned.recordings.count() == 137


def test_a_job_planned_in_slices_does_not_finish_before_its_last_slice(user, small_cap, monkeypatch):
    """Chunks of the first slices run while later slices wait: closing them all does not finish the job."""
    monkeypatch.setattr(planning, "chunks_send", lambda job, ids: None)
    monkeypatch.setattr(planning, "plan_send", lambda job_id, step=None: True)
    small_cap.JOB_PLAN_SLICE = 16
    job = services.job_submit(owner=user, kind="features", batch=_batch(user, 30, tag="fin"))
    planning.job_plan(job_id=job.pk)
    job.refresh_from_db()
    assert job.planning and job.chunks.count() == 2  # 16 recordings: two chunks of 8
    for chunk in job.chunks.all():
        services.chunk_finish(chunk_id=chunk.pk, timings={})
    job.refresh_from_db()
    assert job.status == "queued" and job.planning
    assert planning.plans_resend(now=timezone.now() + timedelta(seconds=small_cap.JOB_UNSENT_GRACE_S + 1)) == [job.pk]
    planning.job_plan(job_id=job.pk)  # the resent task (no step): the next slice, here the last
    job.refresh_from_db()
    assert not job.planning and job.total == 30 and job.chunks.count() == 4
    for chunk in job.chunks.filter(status="queued"):
        services.chunk_finish(chunk_id=chunk.pk, timings={})
    job.refresh_from_db()
    assert job.status == "succeeded"
