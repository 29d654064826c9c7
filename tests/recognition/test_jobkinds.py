"""The job-kind registry: one declaration per kind drives routing, chunking and parameters."""
from __future__ import annotations

import pytest

from recognition import jobkinds, ops
from recognition.models import Job


def test_every_job_kind_is_declared_and_every_declaration_is_a_job_kind():
    assert sorted(jobkinds.KINDS) == sorted(Job.Kind.values)


def test_declared_tasks_exist_and_queues_are_known():
    from accentsite.celery import app

    for kind in jobkinds.KINDS.values():
        assert jobkinds.load_task(kind.name).name == kind.task
        assert kind.queue in jobkinds.QUEUES
        assert app.amqp.router.route({}, kind.task)["queue"].name == kind.queue
    assert app.amqp.router.route({}, "workers.maintenance.reap_stuck_chunks")["queue"].name == "cpu"
    assert ops.QUEUES == ("cpu", "gpu", "interactive")
    assert set(jobkinds.REQUIRED_QUEUES) <= set(jobkinds.QUEUES)
    assert jobkinds.chunk_task_names() == {"workers.tasks.run_features_chunk", "workers.tasks.run_model_chunk",
                                           "workers.tasks.run_train_job", "workers.tasks.run_whisper_chunk"}


def test_queue_for_sends_small_model_jobs_to_interactive(settings):
    settings.INTERACTIVE_MAX_RECORDINGS = 8
    assert [jobkinds.queue_for(k, 8) for k in ("features", "classify", "embed", "train")] == ["cpu", "interactive", "interactive", "gpu"]
    assert [jobkinds.queue_for(k, 9) for k in ("features", "classify", "embed", "train")] == ["cpu", "gpu", "gpu", "gpu"]


def test_queue_for_weighs_audio_seconds_not_just_recordings(settings):
    """One two-hour recording is not a small job (it held the interactive worker for 14 min), and a
    minute of transcription costs what ten minutes of classification do."""
    settings.INTERACTIVE_MAX_RECORDINGS, settings.INTERACTIVE_MAX_WORK_S = 8, 15.0
    assert jobkinds.queue_for("classify", 1, 60.0) == "interactive"
    assert jobkinds.queue_for("classify", 1, 7200.0) == "gpu"
    assert jobkinds.queue_for("transcribe", 1, 20.0) == "interactive"
    assert jobkinds.queue_for("transcribe", 1, 120.0) == "gpu"


def test_a_long_chunks_time_limit_grows_with_its_audio(settings):
    settings.CELERY_TASK_SOFT_TIME_LIMIT, settings.CELERY_TASK_TIME_LIMIT = 1500, 1800
    assert jobkinds.time_limits("classify", 60.0) == (1500.0, 1800.0)
    soft, hard = jobkinds.time_limits("transcribe", 7200.0)  # two hours at ~0.45 s per audio second: ~54 min of work
    assert soft >= 3 * 7200 * 0.45 and hard > soft
    assert soft <= settings.TRAIN_SOFT_TIME_LIMIT_S and hard <= settings.TRAIN_TIME_LIMIT_S


def test_chunk_sizes_follow_declaration_setting_and_param(settings):
    settings.JOB_CHUNK_SIZE = {"features": 3}
    assert jobkinds.chunk_size_for("features", {}) == 3
    assert jobkinds.chunk_size_for("features", {"chunk_size": 5}) == 5
    assert jobkinds.chunk_size_for("classify", {}) == 64
    assert jobkinds.chunk_size_for("train", {}) is None  # one chunk, whatever the size


@pytest.mark.parametrize(("kind", "params", "message"), [
    ("features", [], "'params' must be a JSON object."),
    ("features", {"nope": 1}, "Unknown parameter 'nope' for features jobs; allowed: ['chunk_size', 'extractors']."),
    ("classify", {"vad": 1}, "Parameter 'vad' has the wrong type (int)."),
    ("classify", {"batch_size": True}, "Parameter 'batch_size' has the wrong type (bool)."),
    ("features", {"extractors": ["nope"]}, "Unknown extractors ['nope']"),
    ("train", {"epochs": 0}, "'epochs' must be between 1 and 1000."),
    ("embed", {"window_s": 90}, "'window_s' must be between 0.1 and 60 seconds."),
    ("classify", {"threshold": 2}, "'threshold' must be between 0 and 1."),
])
def test_params_are_checked_against_the_declaration(kind, params, message):
    with pytest.raises(jobkinds.ParamsError) as err:
        jobkinds.validate_params(kind, params)
    assert err.value.message.startswith(message)


def test_a_new_kind_is_one_declaration(monkeypatch, settings):
    monkeypatch.setattr(jobkinds, "KINDS", dict(jobkinds.KINDS))
    jobkinds.register(jobkinds.JobKind(name="diarize", task="workers.tasks.run_model_chunk", queue="gpu",
                                       interactive=True, params={"speakers": int}))
    settings.INTERACTIVE_MAX_RECORDINGS = 2
    assert jobkinds.queue_for("diarize", 2) == "interactive" and jobkinds.queue_for("diarize", 3) == "gpu"
    assert jobkinds.validate_params("diarize", {"speakers": 2}) == {"speakers": 2}
    with pytest.raises(ValueError, match="declared twice"):
        jobkinds.register(jobkinds.JobKind(name="diarize", task="x.y", queue="gpu", params={}))
    with pytest.raises(ValueError, match="unknown queue"):
        jobkinds.JobKind(name="other", task="x.y", queue="tpu", params={})


@pytest.mark.django_db
def test_a_train_job_is_one_chunk_over_all_its_recordings(user, monkeypatch):
    import io

    from recognition import services
    from tests.factories import audio_bytes, pulse_train

    monkeypatch.setattr("recognition.services.jobs._enqueue_chunks", lambda job, ids: None)
    recs = [services.recording_create(owner=user, fileobj=io.BytesIO(audio_bytes(pulse_train(f0=100 + i, seconds=0.6))),
                                      filename=f"t{i}.wav")[0] for i in range(20)]
    job = services.job_submit(owner=user, kind="train", recordings=recs, params={"epochs": 1})
    assert [len(c.recording_ids) for c in job.chunks.all()] == [20]


def test_a_train_job_that_names_no_family_gets_the_one_that_learns_best_on_little_data(user, monkeypatch):
    """The registry's recommended family (whisper_probe: docs/models/small-data.md), not speaker_head as before."""
    import io

    from models.registry import default_train_family
    from recognition import services
    from tests.factories import audio_bytes, pulse_train

    assert default_train_family() == "whisper_probe"
    monkeypatch.setattr("recognition.services.jobs._enqueue_chunks", lambda job, ids: None)
    recs = [services.recording_create(owner=user, fileobj=io.BytesIO(audio_bytes(pulse_train(f0=100 + i, seconds=0.6))),
                                      filename=f"d{i}.wav")[0] for i in range(2)]
    job = services.job_submit(owner=user, kind="train", recordings=recs, params={})
    assert job.params["name"].endswith("-whisper_probe")


def test_admin_actions_come_from_the_declarations(monkeypatch):
    """The batch and recording change lists offer one action per kind that declares ``admin_action``
    (and a chosen-model action for model kinds); a new declaration adds its action, nothing else does."""
    from django.contrib import admin

    from recognition.admin import kind_actions
    from recognition.models import Batch, Recording

    declared = [k for k in jobkinds.KINDS.values() if k.admin_action]
    expected = [n for k in declared for n in ([f"run_{k.name}"] + ([f"{k.name}_with_model"] if k.model_task else []))]
    assert expected == ["run_features", "run_classify", "classify_with_model", "run_embed", "embed_with_model",
                        "run_language", "run_transcribe"]
    for model, what in ((Batch, "batches"), (Recording, "recordings")):
        actions = [a.__name__ for a in admin.site._registry[model].actions]
        assert actions == expected
        labels = {a.__name__: a.short_description for a in kind_actions(what)}
        assert labels["run_classify"] == f"Classify selected {what} (default model)"
        assert labels["embed_with_model"] == f"Embed selected {what} with a chosen model..."

    monkeypatch.setitem(jobkinds.KINDS, "diarize", jobkinds.JobKind(
        name="diarize", task="workers.tasks.run_model_chunk", queue="gpu", params={}, admin_action="Diarize selected {what}"))
    assert [a.__name__ for a in kind_actions("batches")][-1] == "run_diarize"
