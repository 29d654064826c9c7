"""The admin: batch upload page, job list with progress, actions."""
import pytest

from recognition.models import Batch, Job, Recording
from tests.factories import audio_bytes, pulse_train, upload

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff_client(client, django_user_model):
    admin = django_user_model.objects.create_superuser("boss", "boss@example.com", "pw-123456789")
    client.force_login(admin)
    client.user = admin
    return client


def test_admin_batch_upload_shows_rejections(staff_client):
    response = staff_client.post(
        "/admin/recognition/batch/upload/",
        {
            "name": "admin batch",
            "files": [upload("a.wav", audio_bytes(pulse_train(f0=130))), upload("b.wav", b"garbage")],
            "labels": upload("labels.csv", b"a.wav,native\nb.wav,native\n"),
        },
    )
    assert response.status_code == 200
    page = response.content.decode()
    assert "1 stored, 1 rejected" in page and "not_audio" in page
    batch = Batch.objects.get(name="admin batch")
    assert list(batch.recordings.values_list("original_filename", "label")) == [("a.wav", "native")]


def test_admin_pages_render(staff_client, monkeypatch):
    monkeypatch.setattr("recognition.services.jobs._enqueue_chunks", lambda job, ids: None)
    staff_client.post("/admin/recognition/batch/upload/", {"name": "b", "files": [upload("a.wav", audio_bytes(pulse_train()))]})
    batch = Batch.objects.get()
    rec = Recording.objects.get()
    response = staff_client.post("/admin/recognition/batch/", {"action": "run_features", "_selected_action": [batch.pk]})
    assert response.status_code == 302
    job = Job.objects.get()
    for url in ["/admin/recognition/batch/", f"/admin/recognition/batch/{batch.pk}/change/", "/admin/recognition/job/",
                f"/admin/recognition/job/{job.pk}/change/", f"/admin/recognition/recording/{rec.pk}/change/",
                "/admin/recognition/modelversion/", "/admin/recognition/job/?status__exact=queued"]:
        assert staff_client.get(url).status_code == 200, url
    assert b"<audio" in staff_client.get(f"/admin/recognition/recording/{rec.pk}/change/").content
    audio = staff_client.get(f"/media/recordings/{rec.pk}/")
    assert audio.status_code == 200 and audio["Content-Type"] == "audio/wav"
    staff_client.post("/admin/recognition/job/", {"action": "cancel_jobs", "_selected_action": [job.pk]})
    assert Job.objects.get().status == "cancelled"


def test_media_is_not_public(client, user, other_user):
    from recognition import services

    rec, _ = services.recording_create(owner=user, fileobj=upload("a.wav", audio_bytes(pulse_train())), filename="a.wav")
    assert client.get(f"/media/recordings/{rec.pk}/").status_code == 302  # login first
    client.force_login(other_user)
    assert client.get(f"/media/recordings/{rec.pk}/").status_code == 404
    assert client.get(f"/media/{rec.file.name}").status_code == 404


def test_admin_model_list_flags_a_replaced_version_and_will_not_make_it_default(staff_client, tmp_path, settings):
    import hashlib
    import json

    from recognition.models import ModelVersion
    from recognition.services import shipped_models_register

    settings.MODELS_DIR = tmp_path
    for version, weights in (("1.0.0", b"old weights"), ("1.1.0", b"new weights")):
        (tmp_path / "m.pt").write_bytes(weights)
        spec = {"name": "m", "version": version, "family": "cnn", "task": "classify", "labels": ["a", "b"]}
        (tmp_path / "m.json").write_text(json.dumps({"spec": spec, "sha256": hashlib.sha256(weights).hexdigest()}))
        shipped_models_register(tmp_path)
    old = ModelVersion.objects.get(name="m", version="1.0.0")
    from django.contrib import admin

    page = staff_client.get("/admin/recognition/modelversion/").content.decode()
    assert "Installed" in page
    model_admin = admin.site._registry[ModelVersion]
    assert model_admin.installed(old) is False
    assert model_admin.installed(ModelVersion.objects.get(name="m", version="1.1.0")) is True
    assert model_admin.margin(old) == "-"  # no references in its report
    old.metrics = {"references": {"speaker_encoder_logreg": {"paired": {"all": {
        "difference": 0.0583, "low": -0.0351, "high": 0.1421}}}}}
    assert model_admin.margin(old) == "+0.058 (-0.035 to +0.142)"
    assert "Over encoder reference (test)" in page
    response = staff_client.post("/admin/recognition/modelversion/", {"action": "make_default", "_selected_action": [old.pk]},
                                 follow=True)
    assert "no longer installed" in response.content.decode()
    assert ModelVersion.objects.get(name="m", is_default=True).version == "1.1.0"
