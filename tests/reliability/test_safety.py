"""Safe for many users (issue 14): privacy of trained models, permissions instead of the staff flag,
names that cannot be paths, hostile requests that get a 4xx in the API's JSON shape, batches that
keep their own labels, one model version per train job, heartbeats, a delivery cap, a shared
throttle, checkpoints that are hashed before anything in them is unpickled.

Each test here failed on the code before the change (a leak, a 500, a second model version, ...).
"""
from __future__ import annotations

import io
import json
import struct
import threading
import zipfile
from pathlib import Path

import pytest
from django.contrib.auth.models import Permission
from rest_framework.test import APIClient

from recognition import selectors, services
from recognition.models import Batch, BatchMember, Job, JobChunk, ModelVersion, Prediction, Recording, RecordingResult
from tests.factories import audio_bytes, pulse_train, upload

pytestmark = pytest.mark.django_db

SECRET_SHA = "f" * 64


def _wav(seed: int, seconds: float = 1.0) -> bytes:
    return audio_bytes(pulse_train(f0=110 + seed % 150, seconds=seconds, seed=seed))


def _client(user) -> APIClient:
    c = APIClient()
    c.force_authenticate(user)
    c.user = user
    return c


def _stored_files(media: Path) -> set[str]:
    root = media / "recordings"
    return {str(p.relative_to(media)) for p in root.rglob("*") if p.is_file()} if root.exists() else set()


# --- 1. models have an owner ------------------------------------------------------------------

@pytest.fixture
def private_model(other_user):
    """The victim's trained model, with a report that names recordings, speakers and a server path."""
    return ModelVersion.objects.create(
        name="victim-model", version="1", family="speaker_head", task="classify", labels=["a", "b"], owner=other_user,
        checkpoint="storage:models/secret/victim.pt", sha256="1" * 64,
        metrics={"test": {"balanced_accuracy": 0.9, "n": 4},
                 "test_predictions": [{"key": f"recording-{SECRET_SHA}", "speaker": "victim-speaker", "label": "a",
                                       "probabilities": [0.1, 0.9]}]},
        training_data={"source": "/srv/accentsite/var/media/secret-manifest.csv", "n_items": 4,
                       "speakers": ["victim-speaker"], "recordings": [SECRET_SHA]},
        hyperparameters={"cache_dir": "/tmp/accentsite-cache/victim"},
    )


@pytest.fixture
def public_model():
    return ModelVersion.objects.create(
        name="shipped-model", version="1", family="cnn", task="classify", labels=["a", "b"], is_default=True,
        metrics={"test": {"balanced_accuracy": 0.8, "accuracy": 0.81, "n": 10, "per_corpus": {"x": {}}},
                 "test_predictions": [{"key": f"recording-{SECRET_SHA}", "speaker": "corpus-speaker"}]},
        training_data={"source": "/work/shared/data/manifest.csv", "n_items": 10, "class_counts": {"train": {"a": 5}},
                       "base_config": {"manifest": "/work/shared/data/manifest.csv"}},
    )


def test_another_users_model_is_a_404_everywhere(api, private_model, user, monkeypatch):
    monkeypatch.setattr("recognition.services.jobs._enqueue_chunks", lambda job, ids: None)
    listed = api.get("/api/v1/models/").json()["results"]
    assert private_model.pk not in {m["id"] for m in listed}
    body = api.get("/api/v1/models/").content.decode()
    assert SECRET_SHA not in body and "victim-speaker" not in body
    assert api.get(f"/api/v1/models/{private_model.pk}/").status_code == 404
    rec, _ = services.recording_create(owner=user, fileobj=io.BytesIO(_wav(1)), filename="mine.wav")
    for model in ("victim-model", "victim-model@1"):
        job = api.post("/api/v1/jobs/", {"kind": "classify", "recordings": [rec.pk], "model": model}, format="json")
        assert job.status_code == 404 and job.json()["error"]["code"] == "unknown_model", job.json()
        predict = api.post("/api/v1/predict/", {"file": upload("p.wav", _wav(2)), "model": model}, format="multipart")
        assert predict.status_code == 404, predict.content[:300]
        assert "victim-model" not in json.dumps(predict.json()["error"]["message"].split("Known:")[-1])
    assert not Job.objects.filter(owner=user).exists()


def test_the_owner_sees_the_whole_report_but_never_server_paths(private_model, other_user):
    owner = _client(other_user)
    body = owner.get(f"/api/v1/models/{private_model.pk}/").json()
    assert body["details"] is True and body["public"] is False
    assert body["metrics"]["test_predictions"][0]["speaker"] == "victim-speaker"
    text = json.dumps(body)
    assert "/srv/" not in text and "/tmp/" not in text and "secret-manifest.csv" in text
    assert "checkpoint" not in body


def test_a_public_models_report_shows_headline_numbers_only(api, public_model):
    body = api.get(f"/api/v1/models/{public_model.pk}/").json()
    assert body["public"] is True and body["details"] is False
    assert body["metrics"] == {"test": {"balanced_accuracy": 0.8, "accuracy": 0.81, "n": 10}}
    assert body["training_data"] == {"n_items": 10, "class_counts": {"train": {"a": 5}}}
    text = json.dumps(body)
    assert SECRET_SHA not in text and "corpus-speaker" not in text and "/work/" not in text


def test_the_model_permission_sees_every_model(api, user, private_model):
    user.user_permissions.add(Permission.objects.get(codename="view_modelversion"))
    user = type(user).objects.get(pk=user.pk)  # drop the permission cache
    assert selectors.model_list(user=user).filter(pk=private_model.pk).exists()
    assert selectors.model_details_visible(user=user, model_version=private_model)


def test_a_train_job_registers_a_private_model_of_its_owner(user, other_user, monkeypatch):
    _fake_training(monkeypatch, [])
    job = _train_job(user, monkeypatch, n=4)
    mv = _run_train(job)
    assert mv.owner_id == user.pk and mv.train_job_id == job.pk
    assert mv.checkpoint.startswith(f"storage:models/{user.pk}/mine/")
    assert not selectors.model_list(user=other_user).filter(pk=mv.pk).exists()
    assert selectors.model_list(user=user).filter(pk=mv.pk).exists()


# --- 2. staff flag alone is not a permission ------------------------------------------------------

@pytest.fixture
def staff_only(django_user_model):
    return django_user_model.objects.create_user("staffer", password="pw-123456789", is_staff=True)


def test_the_staff_flag_alone_reaches_no_one_elses_audio_timeline_or_workers(client, staff_only, other_user, monkeypatch):
    monkeypatch.setattr("recognition.services.jobs._enqueue_chunks", lambda job, ids: None)
    rec, _ = services.recording_create(owner=other_user, fileobj=io.BytesIO(_wav(3)), filename="victim.wav")
    job = services.job_submit(owner=other_user, kind="features", recordings=[rec])
    client.force_login(staff_only)
    assert client.get(f"/media/recordings/{rec.pk}/").status_code == 404
    assert client.get(f"/admin/recognition/job/{job.pk}/timeline/").status_code == 404
    assert client.get("/admin/recognition/workers/").status_code == 403
    assert client.get("/metrics").status_code == 403
    # a real permission opens them
    staff_only.user_permissions.add(*Permission.objects.filter(codename__in=["view_recording", "view_job", "view_workers"]))
    monkeypatch.setattr("recognition.ops.workers_overview", lambda timeout=1.0: [])
    assert client.get(f"/media/recordings/{rec.pk}/").status_code == 200
    assert client.get(f"/admin/recognition/job/{job.pk}/timeline/").status_code == 200
    assert client.get("/admin/recognition/workers/").status_code == 200


def test_the_owner_sees_their_own_timeline_without_permissions(client, other_user, monkeypatch):
    monkeypatch.setattr("recognition.services.jobs._enqueue_chunks", lambda job, ids: None)
    other_user.is_staff = True
    other_user.save()
    rec, _ = services.recording_create(owner=other_user, fileobj=io.BytesIO(_wav(4)), filename="mine.wav")
    job = services.job_submit(owner=other_user, kind="features", recordings=[rec])
    client.force_login(other_user)
    assert client.get(f"/admin/recognition/job/{job.pk}/timeline/").status_code == 200


# --- 3. names that become storage keys ----------------------------------------------------------

@pytest.mark.parametrize("name", ["../../../../../tmp/x", "a/b", "", "x" * 65, ".hidden", "a\x00b", "a b", "..", "é"])
def test_a_train_jobs_name_must_be_a_slug(api, name, monkeypatch):
    monkeypatch.setattr("recognition.services.jobs._enqueue_chunks", lambda job, ids: None)
    batch = Batch.objects.create(owner=api.user, name="b")
    response = api.post("/api/v1/jobs/", {"kind": "train", "batch": batch.pk, "params": {"name": name}}, format="json")
    assert response.status_code == 400, response.json()
    assert response.json()["error"]["code"] in ("invalid_name", "invalid", "nul_character")
    assert not Job.objects.exists()


def test_model_names_are_per_owner_nobody_can_squat_or_probe_a_name(api, public_model, private_model, monkeypatch):
    """A shipped model's name is refused (it is public); another user's private name is neither
    refused nor told (no squatting of someone's ``batch-<id>-<family>``, no probing of private names),
    and each user's name resolves to their own model."""
    monkeypatch.setattr("recognition.services.jobs._enqueue_chunks", lambda job, ids: None)
    batch = Batch.objects.create(owner=api.user, name="b")
    shipped = api.post("/api/v1/jobs/", {"kind": "train", "batch": batch.pk, "params": {"name": public_model.name}}, format="json")
    assert shipped.status_code == 400 and shipped.json()["error"]["code"] == "name_taken"
    same = api.post("/api/v1/jobs/", {"kind": "train", "batch": batch.pk, "params": {"name": private_model.name}}, format="json")
    assert same.status_code == 202, same.content[:300]
    mine = ModelVersion.objects.create(name=private_model.name, version="1", family="cnn", task="classify", labels=["x", "y"],
                                       owner=api.user)
    from recognition.services.models import model_resolve

    assert model_resolve(f"{private_model.name}@1", task="classify", user=api.user) == mine
    assert model_resolve(f"{private_model.name}@1", task="classify", user=private_model.owner) == private_model


def test_a_train_jobs_default_name_is_settled_at_submit(api, monkeypatch):
    monkeypatch.setattr("recognition.services.jobs._enqueue_chunks", lambda job, ids: None)
    batch = Batch.objects.create(owner=api.user, name="b")
    job = api.post("/api/v1/jobs/", {"kind": "train", "batch": batch.pk, "params": {"family": "cnn"}}, format="json").json()
    assert Job.objects.get(pk=job["id"]).params["name"] == f"batch-{batch.pk}-cnn"


# --- 4. hostile requests: 4xx with the JSON error shape, nothing left behind ---------------------

def _zip_with(members: list[tuple[str, bytes]], patch=None) -> bytes:
    """A stored zip; ``patch(central_entry: bytearray, index)`` edits each central-directory entry."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
        for name, data in members:
            zf.writestr(name, data)
    data = bytearray(buf.getvalue())
    if patch is not None:
        at, index = data.find(b"PK\x01\x02"), 0
        while at != -1:
            patch(data, at, index)
            at, index = data.find(b"PK\x01\x02", at + 4), index + 1
    return bytes(data)


def _bad_crc(data, at, index):
    if index == 0:
        data[at + 16 : at + 20] = struct.pack("<I", (struct.unpack("<I", data[at + 16 : at + 20])[0] ^ 0xFFFF))


def _lying_size(data, at, index):
    if index == 0:
        size = struct.unpack("<I", data[at + 20 : at + 24])[0]
        data[at + 20 : at + 28] = struct.pack("<II", size + 5000, size + 5000)


def _encrypted(data, at, index):
    if index == 0:
        data[at + 8 : at + 10] = struct.pack("<H", struct.unpack("<H", data[at + 8 : at + 10])[0] | 0x1)


def _unsupported(data, at, index):
    if index == 0:
        data[at + 10 : at + 12] = struct.pack("<H", 99)


ZIP_CASES = [("bad_crc", _bad_crc, "bad_member"), ("lying_size", _lying_size, "bad_member"),
             ("encrypted", _encrypted, "encrypted"), ("unsupported", _unsupported, "unsupported_compression")]


@pytest.mark.parametrize("case,patch,code", ZIP_CASES, ids=[c[0] for c in ZIP_CASES])
def test_a_broken_zip_member_is_rejected_with_a_reason(api, settings, tmp_path, case, patch, code):
    settings.MEDIA_ROOT = str(tmp_path / "media")
    archive = _zip_with([("broken.wav", _wav(10)), ("fine.wav", _wav(11))], patch)
    response = api.post("/api/v1/batches/", {"name": case, "archive": upload("a.zip", archive)}, format="multipart")
    assert response.status_code == 201, response.content[:500]
    body = response.json()
    assert [(r["filename"], r["code"]) for r in body["rejected"]] == [("broken.wav", code)]
    assert [r["original_filename"] for r in body["recordings"]] == ["fine.wav"]
    assert len(_stored_files(tmp_path / "media")) == Recording.objects.count() == 1


@pytest.mark.parametrize("case,patch,code", ZIP_CASES, ids=[c[0] for c in ZIP_CASES])
def test_a_broken_zip_member_in_the_admin_form_is_rejected_too(client, django_user_model, settings, tmp_path, case, patch,
                                                              code):
    settings.MEDIA_ROOT = str(tmp_path / "media")
    client.force_login(django_user_model.objects.create_superuser("root", "r@example.com", "pw-123456789"))
    archive = _zip_with([("broken.wav", _wav(12)), ("fine.wav", _wav(13))], patch)
    response = client.post("/admin/recognition/batch/upload/", {"name": case, "archive": upload("a.zip", archive)})
    assert response.status_code == 200
    assert code in response.content.decode()
    assert Recording.objects.count() == 1


def test_a_refused_batch_leaves_no_row_and_no_file(api, settings, tmp_path, monkeypatch):
    """A failure part-way through a batch (here the third file's row cannot be written) rolls the
    whole batch back and deletes what it stored."""
    settings.MEDIA_ROOT = str(tmp_path / "media")
    from recognition.services import recordings

    real, calls = recordings._join, []

    def join(batch, recording, **kw):
        calls.append(recording.pk)
        if len(calls) == 3:
            raise RuntimeError("disk full")
        return real(batch, recording, **kw)

    monkeypatch.setattr(recordings, "_join", join)
    with pytest.raises(RuntimeError):
        services.batch_create(owner=api.user, name="b", files=[(f"{i}.wav", io.BytesIO(_wav(20 + i))) for i in range(4)])
    assert not Batch.objects.exists() and not Recording.objects.exists() and not BatchMember.objects.exists()
    assert _stored_files(tmp_path / "media") == set()


@pytest.mark.parametrize("field,value", [
    ("labels", "filename,label\na.wav,nat\x00ive\n"),
    ("metadata", json.dumps({"corpus": "x\u0000y"})),
    ("metadata", json.dumps({"k\u0000": 1})),
])
def test_nul_characters_in_uploads_are_refused(api, field, value):
    if field == "labels":
        response = api.post("/api/v1/batches/", {"name": "b", "files": [upload("a.wav", _wav(30))],
                                                 "labels": upload("l.csv", value.encode())}, format="multipart")
    else:
        response = api.post("/api/v1/recordings/", {"file": upload("a.wav", _wav(31)), "metadata": value}, format="multipart")
    assert response.status_code == 400, response.content[:300]
    assert "error" in response.json() and response.json()["error"]["code"]
    assert not Recording.objects.exists() and not Batch.objects.exists()


def test_nul_characters_in_job_params_are_refused(api, monkeypatch):
    monkeypatch.setattr("recognition.services.jobs._enqueue_chunks", lambda job, ids: None)
    rec, _ = services.recording_create(owner=api.user, fileobj=io.BytesIO(_wav(32)), filename="a.wav")
    for params in ({"transcript": "a\u0000b"}, {"extractors": ["mfcc\u0000"]}, {"label_map": {"a\u0000": "b"}}):
        kind = "train" if "label_map" in params else ("features" if "extractors" in params else "classify")
        body = {"kind": kind, "params": params, **({"batch": Batch.objects.create(owner=api.user, name="t").pk}
                                                    if kind == "train" else {"recordings": [rec.pk]})}
        response = api.post("/api/v1/jobs/", body, format="json")
        assert response.status_code == 400, (params, response.content[:300])
        assert response.json()["error"]["code"] in ("invalid", "nul_character"), response.json()
    assert not Job.objects.exists()


def test_json_nested_100000_deep_is_a_400(api):
    deep = "[" * 100_000 + "]" * 100_000
    response = api.generic("POST", "/api/v1/jobs/", f'{{"kind": "features", "params": {deep}, "recordings": [1]}}',
                           content_type="application/json")
    assert response.status_code == 400 and response.json()["error"]["code"] == "parse_error", response.content[:300]
    metadata = api.post("/api/v1/recordings/", {"file": upload("a.wav", _wav(33)), "metadata": '{"a":' * 100_000 + "1" +
                                                "}" * 100_000}, format="multipart")
    assert metadata.status_code == 400 and metadata.json()["error"]["code"] == "invalid"
    nested = {"a": 1}
    for _ in range(40):
        nested = {"a": nested}
    fine_json_too_deep = api.post("/api/v1/recordings/", {"file": upload("a.wav", _wav(34)), "metadata": json.dumps(nested)},
                                  format="multipart")
    assert fine_json_too_deep.status_code == 400
    assert not Recording.objects.exists()


def test_django_request_errors_come_back_as_api_json(api, settings):
    settings.DATA_UPLOAD_MAX_NUMBER_FILES = 2
    many = api.post("/api/v1/batches/", {"name": "b", "files": [upload(f"{i}.wav", _wav(40 + i)) for i in range(3)]},
                    format="multipart")
    assert many.status_code == 400 and many["Content-Type"].startswith("application/json"), many.content[:200]
    assert many.json()["error"]["code"] == "too_many_files"
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    big = api.post("/api/v1/batches/", {"name": "b", "description": "x" * 5000, "files": [upload("a.wav", _wav(45))]},
                   format="multipart")
    assert big.status_code == 413 and big.json()["error"]["code"] == "request_too_large", big.content[:200]
    assert not Batch.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_concurrent_identical_uploads_all_succeed_as_one_recording(user, settings, tmp_path):
    settings.MEDIA_ROOT = str(tmp_path / "media")
    data, statuses, barrier = _wav(50), [], threading.Barrier(8)

    def send(i: int) -> None:
        from django.db import connection

        try:
            barrier.wait()
            statuses.append(_client(user).post("/api/v1/recordings/", {"file": upload(f"same-{i}.wav", data)},
                                               format="multipart").status_code)
        finally:
            connection.close()

    threads = [threading.Thread(target=send, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(statuses) == 8 and set(statuses) <= {200, 201}, statuses
    assert statuses.count(201) == 1
    assert Recording.objects.filter(owner=user).count() == 1
    assert len(_stored_files(tmp_path / "media")) == 1


# --- 5. batches keep their own labels -------------------------------------------------------------

def test_a_reupload_never_relabels_the_existing_recording(api, monkeypatch):
    data = _wav(60)
    first = api.post("/api/v1/batches/", {"name": "one", "files": [upload("a.wav", data)],
                                          "labels": upload("l.csv", b"a.wav,native,s1\n")}, format="multipart").json()
    second = api.post("/api/v1/batches/", {"name": "two", "files": [upload("again.wav", data)],
                                           "labels": upload("l.csv", b"again.wav,non_native,s2\n")}, format="multipart").json()
    rec = Recording.objects.get()
    assert (rec.label, rec.speaker) == ("native", "s1")
    assert second["duplicates"] == [{"recording": rec.pk, "filename": "a.wav", "label": "non_native", "speaker": "s2"}]
    assert first["duplicates"] == []
    from recognition.services.recordings import batch_labels

    assert batch_labels(batch=Batch.objects.get(pk=second["id"])) == {rec.pk: ("non_native", "s2")}
    assert batch_labels(batch=Batch.objects.get(pk=first["id"])) == {rec.pk: ("native", "s1")}
    single = api.post("/api/v1/recordings/", {"file": upload("b.wav", data), "label": "other"}, format="multipart")
    assert single.status_code == 200 and single.json()["duplicate"] is True
    rec.refresh_from_db()
    assert rec.label == "native"
    # each batch's classify report is judged by the labels that batch gave
    monkeypatch.setattr("recognition.services.jobs._enqueue_chunks", lambda job, ids: None)
    mv = ModelVersion.objects.create(name="m", version="1", family="cnn", task="classify", labels=["native", "non_native"])
    from recognition.services.reports import classify_report

    truths = {}
    for b in (first, second):
        job = Job.objects.create(owner=api.user, kind="classify", batch_id=b["id"], model_version=mv, total=1)
        result = RecordingResult.objects.create(job=job, recording=rec, recording_ref="a.wav", status="succeeded")
        Prediction.objects.create(result=result, model_version=mv, checkpoint_sha256="0", outcome="ok",
                                  predicted_class="native", confidence=0.9, probabilities={"native": 0.9, "non_native": 0.1})
        truths[b["name"]] = classify_report(job=job)["accuracy"]
        job.refresh_from_db()
        listed = api.get(f"/api/v1/jobs/{job.pk}/results/").json()["results"]
        csv_text = b"".join(api.get(f"/api/v1/jobs/{job.pk}/results/?export=csv").streaming_content).decode()
        truths[b["name"] + " label"] = (listed[0]["label"], csv_text.splitlines()[1].split(",")[2])
    assert truths == {"one": 1.0, "two": 0.0, "one label": ("native", "native"), "two label": ("non_native", "non_native")}


# --- 6. train jobs: one unit of work, one model version, heartbeats ------------------------------

def _train_job(user, monkeypatch, n: int) -> Job:
    monkeypatch.setattr("recognition.services.jobs._enqueue_chunks", lambda job, ids: None)
    batch = Batch.objects.create(owner=user, name="train")
    for i in range(n):
        rec, _ = services.recording_create(owner=user, fileobj=io.BytesIO(_wav(100 + i, 0.6)), filename=f"{i}.wav",
                                           label="a" if i % 2 else "b", speaker=f"s{i}", batch=batch)
    return services.job_submit(owner=user, kind="train", batch=batch, params={"family": "speaker_head", "name": "mine"})


def _fake_training(monkeypatch, calls: list):
    from models.checkpoint import save_checkpoint

    def train_model(config, progress=None):
        import torch

        calls.append(config.name)
        model = torch.nn.Linear(2, 2)
        from models.specs import ModelSpec

        spec = ModelSpec(name=config.name, version=config.version, family="cnn", task="classify", labels=("a", "b"))
        monkeypatch.setattr("models.checkpoint.build_model", lambda *a, **k: torch.nn.Linear(2, 2))
        save_checkpoint(config.out, model=model, spec=spec, calibration={}, hparams={}, metrics={"test": {"n": 1}})

    monkeypatch.setattr("workers.pipeline.training.train_model", train_model)


def _run_train(job: Job):
    from recognition.services.training import train_job_run

    return train_job_run(job=job)


def test_a_train_job_is_one_chunk_whatever_its_size(user, monkeypatch, settings):
    settings.JOB_CHUNK_SIZE = {**settings.JOB_CHUNK_SIZE, "train": 16}
    job = _train_job(user, monkeypatch, n=31)
    chunks = list(job.chunks.all())
    assert len(chunks) == 1 and len(chunks[0].recording_ids) == 31


def test_at_most_one_model_version_per_train_job(user, monkeypatch):
    from django.db import IntegrityError, transaction

    calls: list = []
    _fake_training(monkeypatch, calls)
    job = _train_job(user, monkeypatch, n=4)
    first = _run_train(job)
    again = _run_train(job)  # a redelivered message
    assert again.pk == first.pk and calls == ["mine"]
    assert ModelVersion.objects.filter(train_job=job).count() == 1
    with pytest.raises(IntegrityError), transaction.atomic():
        ModelVersion.objects.create(name="mine", version="other", family="cnn", task="classify", train_job=job, owner=user)


@pytest.mark.django_db(transaction=True)
def test_a_chunk_heartbeats_while_it_works_and_the_reaper_leaves_it_alone(user, monkeypatch, settings):
    import time
    from datetime import timedelta

    from django.utils import timezone

    from workers.tasks import _heartbeating

    job = _train_job(user, monkeypatch, n=2)
    chunk = job.chunks.get()
    JobChunk.objects.filter(pk=chunk.pk).update(status="running", heartbeat_at=timezone.now() - timedelta(hours=1))
    Job.objects.filter(pk=job.pk).update(status="running")
    requeued = []
    monkeypatch.setattr("recognition.services.jobs._enqueue_chunks", lambda job, ids: requeued.extend(ids))
    with _heartbeating(chunk.pk, every_s=0.2):
        time.sleep(1.0)  # "training"
        assert services.job_requeue_stuck(older_than=timedelta(seconds=0.8)) == []
    assert requeued == []
    time.sleep(1.0)  # silent now: the worker is "gone"
    assert services.job_requeue_stuck(older_than=timedelta(seconds=0.8)) == [chunk.pk]


def test_shipped_silence_limit_recovers_within_two_minutes(settings):
    assert settings.JOB_STUCK_AFTER_S + settings.CELERY_BEAT_SCHEDULE["reap-stuck-chunks"]["schedule"] <= 120
    assert settings.CHUNK_HEARTBEAT_S * 3 <= settings.JOB_STUCK_AFTER_S


# --- 7. delivery cap ---------------------------------------------------------------------------

def test_a_chunk_delivered_too_often_fails_its_recordings_with_worker_lost(user, monkeypatch, settings):
    monkeypatch.setattr("recognition.services.jobs._enqueue_chunks", lambda job, ids: None)
    settings.JOB_MAX_DELIVERIES = 3
    recs = [services.recording_create(owner=user, fileobj=io.BytesIO(_wav(200 + i)), filename=f"{i}.wav")[0] for i in range(3)]
    job = services.job_submit(owner=user, kind="features", recordings=recs, params={"chunk_size": 2})
    first, second = job.chunks.order_by("index")
    done = services.chunk_start(chunk_id=first.pk)
    services.result_fail(job=job, recording=done.recordings[0], code="corrupt", message="bad")
    JobChunk.objects.filter(pk=first.pk).update(attempts=3)
    assert services.chunk_start(chunk_id=first.pk) is None  # the 4th delivery does no work
    results = dict(RecordingResult.objects.filter(job=job).values_list("recording_id", "error_code"))
    assert results == {recs[0].pk: "corrupt", recs[1].pk: "worker_lost"}
    first.refresh_from_db()
    assert first.status == "failed" and first.error == "worker_lost"
    # the reaper gives up the same way on a silent chunk that used its deliveries
    from datetime import timedelta

    JobChunk.objects.filter(pk=second.pk).update(status="running", attempts=3, heartbeat_at="2000-01-01T00:00:00Z")
    Job.objects.filter(pk=job.pk).update(status="running")
    assert services.job_requeue_stuck(older_than=timedelta(seconds=60)) == []
    job.refresh_from_db()
    assert job.is_terminal and job.failed == 3 and job.done == 0


def test_a_train_job_past_its_deliveries_fails_with_the_reason(user, monkeypatch, settings):
    job = _train_job(user, monkeypatch, n=2)
    JobChunk.objects.filter(job=job).update(attempts=settings.JOB_MAX_DELIVERIES)
    assert services.chunk_start(chunk_id=job.chunks.get().pk) is None
    job.refresh_from_db()
    assert job.status == "failed" and "worker was lost" in job.error


# --- 8. shared throttle -----------------------------------------------------------------------

def test_the_throttle_counts_in_redis_shared_by_every_process(api, monkeypatch, settings):
    from django.core.cache import caches
    from rest_framework.throttling import ScopedRateThrottle

    assert settings.CACHES["default"]["BACKEND"] == "django.core.cache.backends.redis.RedisCache"
    monkeypatch.setattr(ScopedRateThrottle, "THROTTLE_RATES", {"uploads": "3/minute"})
    assert api.post("/api/v1/recordings/", {"file": upload("t.wav", _wav(300))}, format="multipart").status_code == 201
    # another web process = another connection to the same cache: it sees this user's upload
    other_process = caches.create_connection("default")
    assert len(other_process.get(f"throttle_uploads_{api.user.pk}") or []) == 1


def test_settings_use_redis_for_the_cache_and_locmem_only_without_redis(tmp_path):
    import subprocess
    import sys

    code = "import django;django.setup();from django.conf import settings;print(settings.CACHES['default']['BACKEND'])"
    base = {"DJANGO_SETTINGS_MODULE": "accentsite.settings", "PATH": "/usr/bin:/bin", "ACCENTSITE_VAR_DIR": str(tmp_path)}
    root = Path(__file__).resolve().parents[2]
    shared = subprocess.run([sys.executable, "-c", code], env={**base, "REDIS_URL": "redis://127.0.0.1:6379/11"},
                            cwd=root, capture_output=True, text=True, check=True).stdout.strip()
    alone = subprocess.run([sys.executable, "-c", code], env={**base, "CACHE_URL": ""}, cwd=root, capture_output=True,
                           text=True, check=True).stdout.strip()
    assert shared.endswith("RedisCache") and alone.endswith("LocMemCache")


# --- 9. checkpoints: hash first, then weights_only ------------------------------------------------

class _Evil:
    def __reduce__(self):
        return (Path("/tmp/accentsite-pwned").touch, ())


def test_a_checkpoint_with_pickled_objects_is_refused(tmp_path):
    import torch

    from models.checkpoint import CheckpointRefused, load_checkpoint

    path = tmp_path / "evil.pt"
    torch.save({"format": 1, "spec": {}, "payload": _Evil()}, path)
    with pytest.raises(CheckpointRefused, match="not a plain checkpoint"):
        load_checkpoint(path)
    assert not Path("/tmp/accentsite-pwned").exists()


def test_a_checkpoint_with_the_wrong_hash_is_never_unpickled(tmp_path, monkeypatch):
    import torch

    from models.checkpoint import CheckpointRefused, load_checkpoint

    path = tmp_path / "other.pt"
    torch.save({"format": 1}, path)
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("unpickled before the hash was checked"))
    with pytest.raises(CheckpointRefused, match="is not the registered"):
        load_checkpoint(path, expected_sha256="0" * 64)


def test_shipped_checkpoints_load_with_weights_only():
    import torch

    for path in sorted(Path(__file__).resolve().parents[2].glob("models/checkpoints/*.pt")):
        payload = torch.load(path, map_location="cpu", weights_only=True)
        assert "state_dict" in payload


# --- 10. /predict: VAD off by default, like jobs --------------------------------------------------

def test_predict_vad_default_matches_jobs(api, monkeypatch, settings):
    seen = {}

    from recognition.services.predict import PredictAnswer

    def fake(**kwargs):
        seen.update(kwargs)
        return PredictAnswer(200, {"predicted_class": "a", "confidence": 1.0, "all_predictions": {"a": 1.0},
                                   "calibrated": False, "outcome": "ok", "windows": [], "model": "m@1"})

    monkeypatch.setattr("recognition.services.predict.predict_submit", fake)
    assert api.post("/api/v1/predict/", {"file": upload("p.wav", _wav(400))}, format="multipart").status_code == 200
    assert seen["vad"] is settings.CLASSIFY_VAD_DEFAULT is False


@pytest.mark.django_db(transaction=True)
def test_predict_runs_on_a_worker_of_the_interactive_queue_never_in_the_web_process(api, tiny_classifier, celery_worker,
                                                                                     monkeypatch):
    from workers import runtime

    monkeypatch.setattr(runtime, "load_model", lambda mv: pytest.fail("the web process loaded a model"))
    response = api.post("/api/v1/predict/", {"file": upload("p.wav", _wav(401, 2.0)), "model": f"tiny@{tiny_classifier.version}"},
                        format="multipart")
    assert response.status_code == 200, response.content[:400]
    body = response.json()
    assert body["worker"] == celery_worker.name and set(body["all_predictions"]) == {"native", "non_native"}


def test_predict_refuses_audio_over_its_limit_with_a_hint(api, settings, tiny_classifier):
    settings.PREDICT_MAX_DURATION_S = 1.0
    response = api.post("/api/v1/predict/", {"file": upload("long.wav", _wav(402, 2.0)), "model": f"tiny@{tiny_classifier.version}"},
                        format="multipart")
    assert response.status_code == 400 and response.json()["error"]["code"] == "too_long"
    assert "classify job" in response.json()["error"]["message"]


def test_predict_without_a_worker_answers_202_and_its_url_says_so(api, settings, tiny_classifier, monkeypatch):
    """No worker serves the queue: after the wait a 202 with the request's URL (nothing lost, nothing
    deleted), and once the queue's expiry passes that URL says predict_expired."""
    settings.PREDICT_TIMEOUT_S = 1
    monkeypatch.setattr("workers.tasks.run_predict.apply_async", lambda **kw: None)  # nobody serves the queue
    response = api.post("/api/v1/predict/", {"file": upload("p.wav", _wav(403)), "model": f"tiny@{tiny_classifier.version}"},
                        format="multipart")
    assert response.status_code == 202, response.content[:300]
    body = response.json()
    assert body["status"] == "queued" and response["Location"] == body["url"] and int(response["Retry-After"]) >= 1
    assert api.get(body["url"]).status_code == 202
    from recognition.broker import broker_redis
    from recognition.services.predict import request_key

    broker_redis().hset(request_key(body["id"]), "expires", 0)  # as if the queue's expiry had passed
    expired = api.get(body["url"])
    assert expired.status_code == 503 and expired.json()["error"]["code"] == "predict_expired"
    # a request whose worker died while running it says so instead of "running" for an hour
    broker_redis().hset(request_key(body["id"]), mapping={"status": "running", "started": 0})
    lost = api.get(body["url"])
    assert lost.status_code == 503 and lost.json()["error"]["code"] == "predict_lost"


def test_model_chunks_are_cut_by_audio_seconds(user, monkeypatch, settings):
    monkeypatch.setattr("recognition.services.jobs._enqueue_chunks", lambda job, ids: None)
    settings.JOB_CHUNK_AUDIO_S = 3.0
    settings.INTERACTIVE_MAX_RECORDINGS = 0
    mv = ModelVersion.objects.create(name="emb-chunks", version="1", family="cnn", task="embed", labels=[])
    recs = [services.recording_create(owner=user, fileobj=io.BytesIO(_wav(500 + i, s)), filename=f"{i}.wav")[0]
            for i, s in enumerate([2.0, 2.0, 1.0, 0.6, 2.5])]
    job = services.job_submit(owner=user, kind="embed", recordings=recs, model="emb-chunks@1")
    assert [len(c.recording_ids) for c in job.chunks.order_by("index")] == [1, 2, 1, 1]  # 2 | 2+1 | 0.6 | 2.5
    fixed = services.job_submit(owner=user, kind="embed", recordings=recs, model="emb-chunks@1", params={"chunk_size": 2})
    assert [len(c.recording_ids) for c in fixed.chunks.order_by("index")] == [2, 2, 1]
    assert mv.pk
