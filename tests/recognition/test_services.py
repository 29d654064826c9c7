"""Services: the job state machine, idempotent chunk handling and the stuck-chunk reaper's rules."""
from datetime import timedelta

import pytest
from django.utils import timezone

from recognition import services
from recognition.models import Job, JobChunk, RecordingResult
from tests.factories import audio_bytes, pulse_train, upload

pytestmark = pytest.mark.django_db


@pytest.fixture
def sent(monkeypatch):
    """Record what would be sent to the broker instead of sending it."""
    calls = []
    monkeypatch.setattr("recognition.services.jobs._enqueue_chunks", lambda job, ids: calls.append((job.pk, list(ids))))
    return calls


def _recordings(user, n):
    return [services.recording_create(owner=user, fileobj=upload(f"r{i}.wav", audio_bytes(pulse_train(f0=100 + 9 * i, seed=i))),
                                      filename=f"r{i}.wav")[0] for i in range(n)]


def test_state_machine_refuses_illegal_moves(user, sent):
    job = services.job_submit(owner=user, kind="features", recordings=_recordings(user, 1))
    with pytest.raises(Job.IllegalTransition):
        job.mark_finished(Job.Status.SUCCEEDED)  # queued -> succeeded skips running
    job.mark_running()
    job.mark_finished(Job.Status.SUCCEEDED)
    for move in (job.mark_running, lambda: job.mark_finished(Job.Status.FAILED), lambda: job.mark_finished(Job.Status.CANCELLED)):
        with pytest.raises(Job.IllegalTransition):
            move()


def test_redelivered_chunk_skips_stored_results_and_counts_once(user, sent):
    recs = _recordings(user, 3)
    job = services.job_submit(owner=user, kind="features", recordings=recs)
    chunk = job.chunks.get()
    ctx = services.chunk_start(chunk_id=chunk.pk, worker="w1")
    services.result_fail(job=ctx.job, recording=recs[0], code="corrupt", message="x")
    services.result_store_features(job=ctx.job, recording=recs[1], features={}, npz=b"npz", timings={})
    again = services.chunk_start(chunk_id=chunk.pk, worker="w2")  # the broker delivered it twice
    assert [r.pk for r in again.recordings] == [recs[0].pk, recs[2].pk]  # failed ones are retried, stored ones skipped
    services.result_store_features(job=again.job, recording=recs[0], features={}, npz=b"npz", timings={})
    services.result_store_features(job=again.job, recording=recs[2], features={}, npz=b"npz", timings={})
    job = services.chunk_finish(chunk_id=chunk.pk, timings={"features": 1.0})
    services.chunk_finish(chunk_id=chunk.pk, timings={"features": 1.0})
    job.refresh_from_db()
    assert (job.status, job.done, job.failed) == ("succeeded", 3, 0)
    assert RecordingResult.objects.filter(job=job).count() == 3
    assert job.timings == {"features": 1.0}  # a chunk's timings are added once
    assert JobChunk.objects.get(pk=chunk.pk).attempts == 2


def test_recording_deleted_after_its_result_is_not_recorded_twice(user, sent):
    recs = _recordings(user, 2)
    job = services.job_submit(owner=user, kind="features", recordings=recs)
    chunk = job.chunks.get()
    ctx = services.chunk_start(chunk_id=chunk.pk)
    services.result_store_features(job=ctx.job, recording=recs[0], features={}, npz=b"npz", timings={})
    deleted_id = recs[0].pk
    services.recording_delete(recording=recs[0])
    services.chunk_start(chunk_id=chunk.pk)  # redelivered after the deletion
    results = RecordingResult.objects.filter(job=job)
    assert results.count() == 1 and results.get().recording_key == deleted_id and results.get().recording is None


def test_all_failed_job_fails_with_a_reason(user, sent):
    recs = _recordings(user, 2)
    job = services.job_submit(owner=user, kind="features", recordings=recs)
    chunk = job.chunks.get()
    ctx = services.chunk_start(chunk_id=chunk.pk)
    for rec in recs:
        services.result_fail(job=ctx.job, recording=rec, code="corrupt", message="bad")
    job = services.chunk_finish(chunk_id=chunk.pk, timings={})
    assert job.status == "failed" and "All 2 recordings failed" in job.error


def test_retry_failed_makes_a_job_of_only_the_failed(user, sent):
    recs = _recordings(user, 3)
    job = services.job_submit(owner=user, kind="features", recordings=recs, params={"extractors": ["mfcc"]})
    chunk = job.chunks.get()
    ctx = services.chunk_start(chunk_id=chunk.pk)
    services.result_fail(job=ctx.job, recording=recs[1], code="corrupt", message="bad")
    for rec in (recs[0], recs[2]):
        services.result_store_features(job=ctx.job, recording=rec, features={}, npz=b"npz", timings={})
    job = services.chunk_finish(chunk_id=chunk.pk, timings={})
    retry = services.job_retry_failed(job=job)
    assert list(retry.recordings.values_list("pk", flat=True)) == [recs[1].pk]
    assert retry.params == {"extractors": ["mfcc"]}


def test_reaper_requeues_silent_and_lost_chunks_but_not_ones_waiting_in_a_busy_queue(user, sent, monkeypatch):
    old = timezone.now() - timedelta(hours=1)
    jobs = [services.job_submit(owner=user, kind="features", recordings=_recordings(user, 4)[i : i + 1]) for i in range(3)]
    silent, waiting, never = (j.chunks.get() for j in jobs)
    JobChunk.objects.filter(pk=silent.pk).update(status="running", heartbeat_at=old)
    JobChunk.objects.filter(pk=waiting.pk).update(enqueued_at=old)
    Job.objects.filter(pk=never.job_id).update(created_at=old)
    sent.clear()

    monkeypatch.setattr("recognition.services.jobs._empty_queues", lambda: set())  # cpu queue still has messages
    assert sorted(services.job_requeue_stuck(older_than=timedelta(minutes=5))) == sorted([silent.pk, never.pk])

    monkeypatch.setattr("recognition.services.jobs._empty_queues", lambda: {"cpu"})  # the message is gone
    JobChunk.objects.filter(pk__in=[silent.pk, never.pk]).update(enqueued_at=timezone.now())
    assert services.job_requeue_stuck(older_than=timedelta(minutes=5)) == [waiting.pk]


def test_a_newer_shipped_checkpoint_becomes_the_default(tmp_path):
    """Replacing a shipped checkpoint file with a newer version moves the default to it; a version
    someone registered under another file stays the default."""
    import json

    from recognition.models import ModelVersion
    from recognition.services import shipped_models_register

    def ship(version: str, sha: str) -> None:
        (tmp_path / "m-emb.pt").write_bytes(sha.encode())
        spec = {"name": "m-emb", "version": version, "family": "accent_embed", "task": "embed", "labels": []}
        (tmp_path / "m-emb.json").write_text(json.dumps({"spec": spec, "sha256": sha}))

    ship("1.0.0", "a" * 64)
    shipped_models_register(tmp_path)
    assert ModelVersion.objects.get(name="m-emb", is_default=True).version == "1.0.0"
    ship("1.1.0", "b" * 64)
    shipped_models_register(tmp_path)
    assert ModelVersion.objects.get(name="m-emb", is_default=True).version == "1.1.0"
    assert ModelVersion.objects.filter(name="m-emb").count() == 2
    # a user's own default (another checkpoint) is not overridden by the next shipped version
    mine = ModelVersion.objects.create(name="m-emb", version="mine", family="accent_embed", task="embed", labels=[],
                                       checkpoint="storage:models/mine.pt")
    from recognition.services.models import model_version_make_default

    model_version_make_default(model_version=mine)
    ship("1.2.0", "c" * 64)
    shipped_models_register(tmp_path)
    assert ModelVersion.objects.get(name="m-emb", is_default=True).version == "mine"


def test_the_shipped_accent_native_default_is_3_1_and_older_versions_stay_runnable(settings):
    """As committed: accent-native 3.1.0 (accent-native.pt) is the default on a fresh database and on
    ones where 1.1.0, 2.0.0, 2.1.0 or 3.0.0 was the default in that file; those moved to
    accent-native-<version>.pt and still run."""
    from recognition.models import ModelVersion
    from recognition.services import shipped_models_register
    from recognition.services.models import model_resolve, model_version_problem

    ModelVersion.objects.filter(name="accent-native").delete()
    shipped_models_register()
    native = ModelVersion.objects.filter(name="accent-native")
    assert native.get(is_default=True).version == "3.1.0" and native.get(is_default=True).family == "whisper_probe"
    assert model_resolve(None, task="classify").version == "3.1.0"
    old_versions = ("1.1.0", "2.0.0", "2.1.0", "3.0.0")
    for version in old_versions:
        old = native.get(version=version)
        assert old.checkpoint == f"accent-native-{version}.pt" and model_version_problem(old) == ""
    # older databases: each older version registered in accent-native.pt and default there
    for version in old_versions:
        native.exclude(version=version).exclude(version="1.1.0").delete()
        ModelVersion.objects.filter(name="accent-native", version=version).update(checkpoint="accent-native.pt", is_default=True)
        ModelVersion.objects.filter(name="accent-native").exclude(version=version).update(is_default=False)
        shipped_models_register()
        assert native.get(is_default=True).version == "3.1.0"
        assert native.get(version=version).checkpoint == f"accent-native-{version}.pt"


def test_a_superseded_shipped_version_is_refused_with_the_version_to_use(tmp_path, settings, api):
    """When a newer shipped version takes over a checkpoint file, asking for the old version is a
    clear 409, not a silent run of other weights under the old version's name and hash."""
    import hashlib
    import json

    from recognition.errors import ServiceError
    from recognition.services import shipped_models_register
    from recognition.services.models import model_resolve

    settings.MODELS_DIR = tmp_path

    def ship(version: str, weights: bytes) -> None:
        (tmp_path / "m-cls.pt").write_bytes(weights)
        spec = {"name": "m-cls", "version": version, "family": "cnn", "task": "classify", "labels": ["a", "b"]}
        (tmp_path / "m-cls.json").write_text(json.dumps({"spec": spec, "sha256": hashlib.sha256(weights).hexdigest()}))

    ship("1.0.0", b"first weights")
    shipped_models_register(tmp_path)
    assert model_resolve("m-cls@1.0.0", task="classify").version == "1.0.0"
    ship("1.1.0", b"second weights")
    shipped_models_register(tmp_path)
    assert model_resolve("m-cls", task="classify").version == "1.1.0"
    with pytest.raises(ServiceError) as refused:
        model_resolve("m-cls@1.0.0", task="classify")
    assert refused.value.code == "model_unavailable" and refused.value.status_code == 409
    assert "m-cls@1.1.0" in refused.value.message
    listed = {m["version"]: m["unavailable_reason"] for m in api.get("/api/v1/models/?name=m-cls").json()["results"]}
    assert listed["1.1.0"] == "" and "m-cls@1.1.0" in listed["1.0.0"]
    batch = api.post("/api/v1/batches/", {"name": "b", "files": [upload("r.wav", audio_bytes(pulse_train(f0=120)))]},
                     format="multipart").json()
    answer = api.post("/api/v1/jobs/", {"kind": "classify", "batch": batch["id"], "model": "m-cls@1.0.0"}, format="json")
    assert answer.status_code == 409 and answer.json()["error"]["code"] == "model_unavailable"
    (tmp_path / "m-cls.pt").unlink()
    with pytest.raises(ServiceError, match="missing"):
        model_resolve("m-cls", task="classify")


def test_a_worker_fails_each_recording_when_the_weights_are_not_the_registered_ones(user, sent, tiny_classifier,
                                                                                     monkeypatch):
    """The worker checks the loaded checkpoint's sha256 against the registry; a mismatch fails the
    chunk's recordings with the reason instead of storing results under the wrong hash."""
    from workers import tasks

    monkeypatch.setattr(tasks, "close_old_connections", lambda: None)  # in-process, inside the test's transaction
    recs = _recordings(user, 2)
    job = services.job_submit(owner=user, kind="classify", recordings=recs, model=f"tiny@{tiny_classifier.version}")
    type(tiny_classifier).objects.filter(pk=tiny_classifier.pk).update(sha256="0" * 64)
    tasks.run_model_chunk.apply(args=[job.chunks.get().pk])
    job.refresh_from_db()
    assert (job.status, job.failed) == ("failed", 2)
    results = RecordingResult.objects.filter(job=job)
    assert {r.error_code for r in results} == {"model_unavailable"}
    assert all("other weights" in r.error_message for r in results)


def test_train_jobs_refuse_unknown_families_and_fail_once_with_the_reason(user, sent, monkeypatch):
    """Bad training input is refused at submission; an error during training fails the job once,
    with its reason, instead of leaving it running for the reaper to requeue forever."""
    from recognition.errors import ServiceError
    from workers import tasks

    recs = _recordings(user, 2)
    with pytest.raises(ServiceError, match="Unknown family 'bogus'"):
        services.job_submit(owner=user, kind="train", recordings=recs, params={"family": "bogus"})
    with pytest.raises(ServiceError, match="epochs"):
        services.job_submit(owner=user, kind="train", recordings=recs, params={"epochs": 0})
    job = services.job_submit(owner=user, kind="train", recordings=recs, params={"family": "cnn", "hparams": {"x": 1}})

    def broken(**kwargs):
        raise ValueError("window longer than every recording")

    monkeypatch.setattr("recognition.services.training.train_job_run", broken)
    monkeypatch.setattr(tasks, "close_old_connections", lambda: None)  # in-process, inside the test's transaction
    tasks.run_train_job.apply(args=[job.chunks.get().pk])
    job.refresh_from_db()
    assert job.status == "failed"
    assert job.error == "Training failed: ValueError: window longer than every recording"


def test_a_model_chunk_stores_each_group_of_recordings_before_running_the_next(user, sent, tiny_classifier,
                                                                             monkeypatch, settings):
    """A classify chunk runs its recordings in groups of about MODEL_GROUP_AUDIO_S of audio and
    stores each group's results before the next inference: progress moves within a chunk."""
    from workers import tasks
    from workers.pipeline import inference

    monkeypatch.setattr(tasks, "close_old_connections", lambda: None)  # in-process, inside the test's transaction
    recs = _recordings(user, 3)
    job = services.job_submit(owner=user, kind="classify", recordings=recs, model=f"tiny@{tiny_classifier.version}")
    assert job.chunks.count() == 1
    settings.MODEL_GROUP_AUDIO_S = 0.01  # every recording closes its group
    stored_before: list[tuple[int, int]] = []
    real = inference.classify_batch

    def counting(loaded, signals, **kwargs):
        stored_before.append((len(signals), RecordingResult.objects.filter(job=job, status="succeeded").count()))
        return real(loaded, signals, **kwargs)

    monkeypatch.setattr(inference, "classify_batch", counting)
    tasks.run_model_chunk.apply(args=[job.chunks.get().pk])
    job.refresh_from_db()
    assert (job.status, job.done) == ("succeeded", 3)
    assert stored_before == [(1, 0), (1, 1), (1, 2)]

    # one group when the chunk's audio is under the setting: one batched inference
    settings.MODEL_GROUP_AUDIO_S = 600.0
    stored_before.clear()
    again = services.job_submit(owner=user, kind="classify", recordings=recs, model=f"tiny@{tiny_classifier.version}")
    tasks.run_model_chunk.apply(args=[again.chunks.get().pk])
    assert [n for n, _ in stored_before] == [3]


def test_retry_failed_keeps_the_batch_and_its_labels(user, sent):
    """The retry is a job of the same batch, over the failed recordings only, so its report reads the
    batch's labels (before, the retry lost its batch)."""
    files = [(f"b{i}.wav", upload(f"b{i}.wav", audio_bytes(pulse_train(f0=120 + 11 * i, seed=40 + i)))) for i in range(3)]
    batch, recs, _ = services.batch_create(owner=user, name="retry", files=files, labels_csv=b"b0.wav,x\nb1.wav,y\nb2.wav,x\n")
    job = services.job_submit(owner=user, kind="features", batch=batch)
    job.mark_running()
    job.save()
    services.result_fail(job=job, recording=recs[1], code="corrupt", message="broken")
    job.mark_finished(Job.Status.SUCCEEDED)
    job.save()
    retry = services.job_retry_failed(job=job)
    assert retry.batch_id == batch.pk and list(retry.recordings.all()) == [recs[1]] and retry.total == 1


def test_a_job_over_recordings_of_a_batch_refuses_ones_outside_it(user, sent):
    from recognition.errors import ServiceError

    files = [("in.wav", upload("in.wav", audio_bytes(pulse_train(f0=130, seed=50))))]
    batch, recs, _ = services.batch_create(owner=user, name="b", files=files)
    outside = _recordings(user, 1)
    with pytest.raises(ServiceError) as caught:
        services.job_submit(owner=user, kind="features", batch=batch, recordings=outside)
    assert caught.value.status_code == 404


def test_a_failed_results_message_never_carries_a_server_path(user, sent, settings):
    job = services.job_submit(owner=user, kind="features", recordings=_recordings(user, 1))
    rec = job.recordings.get()
    exc = FileNotFoundError(2, "No such file or directory", f"{settings.MEDIA_ROOT}/recordings/ab/{rec.uuid.hex}.wav")
    result = services.result_fail(job=job, recording=rec, code="processing_error", message=f"Processing failed with {exc}.")
    assert settings.MEDIA_ROOT not in result.error_message and "recordings/ab" not in result.error_message
    assert "<path>" in result.error_message and "No such file or directory" in result.error_message


def test_a_review_label_gets_the_formula_check_uploads_get(user, sent):
    from recognition.errors import ServiceError

    rec = _recordings(user, 1)[0]
    with pytest.raises(ServiceError) as caught:
        services.label_review_create(recording=rec, new_label="=HYPERLINK(\"http://x\")", reviewer=user)
    assert caught.value.code == "formula_injection"
    assert not rec.label_reviews.exists()


def test_labels_match_files_whose_names_the_server_cleans(api, sent):
    """A zero-width mark or an RTL mark in a name, and a name over 255 characters (Django cuts it on
    upload): the stored name is cleaned, and the labels CSV row written with the name as it was on
    the sender's disk still finds its file."""
    long_name = "x" * 300 + ".wav"
    names = ["a\u200b.wav", "b\u200f.wav", long_name]
    files = [upload(n, audio_bytes(pulse_train(f0=140 + 7 * i, seed=60 + i))) for i, n in enumerate(names)]
    csv = "\n".join(f"{n},lab{i}" for i, n in enumerate(names)).encode()
    body = api.post("/api/v1/batches/", {"name": "clean", "files": files, "labels": upload("l.csv", csv)}, format="multipart").json()
    assert body["rejected"] == [] and body["rejected_count"] == 0, body["rejected"]
    assert sorted(r["label"] for r in body["recordings"]) == ["lab0", "lab1", "lab2"]


def test_code_version_is_baked_in_where_there_is_no_git(monkeypatch):
    from recognition.services.training import code_version

    code_version.cache_clear()
    monkeypatch.setenv("ACCENTSITE_CODE_VERSION", "abc123def456")
    try:
        assert code_version() == "abc123def456"
    finally:
        code_version.cache_clear()
