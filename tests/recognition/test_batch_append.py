"""Issue 25, getting many recordings in: a batch grows over several upload requests
(``POST /api/v1/batches/<id>/recordings/``), each file judged as on the first upload, owner only."""
import io
import zipfile

import pytest

from recognition.models import Batch, BatchMember
from tests.factories import audio_bytes, pulse_train, upload

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _no_throttle(settings):
    rest = dict(settings.REST_FRAMEWORK)
    rest["DEFAULT_THROTTLE_RATES"] = {**rest.get("DEFAULT_THROTTLE_RATES", {}), "uploads": "1000/min"}
    settings.REST_FRAMEWORK = rest


def _wav(seed: int) -> bytes:
    return audio_bytes(pulse_train(120.0 + seed, seconds=1.5, seed=seed))


def test_a_batch_grows_over_several_requests_with_the_same_rejections(api):
    first = api.post("/api/v1/batches/", {"name": "big", "files": [upload("a.wav", _wav(1))]}, format="multipart").json()
    batch = first["id"]
    api.post("/api/v1/batches/", {"name": "earlier", "files": [upload("d.wav", _wav(6))]}, format="multipart")
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("more/c.wav", _wav(3))
        zf.writestr("more/notes.txt", b"not audio")
        zf.writestr("../evil.wav", _wav(4))
    labels = upload("labels.csv", b"filename,label,speaker\nb.wav,native,s2\nc.wav,non_native,s3\nmissing.wav,native,s9\n")
    response = api.post(f"/api/v1/batches/{batch}/recordings/",
                        {"files": [upload("b.wav", _wav(2)), upload("a-again.wav", _wav(1)), upload("d.wav", _wav(6))],
                         "archive": upload("more.zip", archive.getvalue()), "labels": labels}, format="multipart")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["id"] == batch and body["name"] == "big" and body["recording_count"] == 4
    assert sorted(r["original_filename"] for r in body["recordings"]) == ["a.wav", "b.wav", "d.wav", "more/c.wav"]
    assert body["rejected_by_code"] == {"unsafe_path": 1, "unknown_filename": 1, **{k: v for k, v in body["rejected_by_code"].items()
                                                                                  if k not in ("unsafe_path", "unknown_filename")}}
    assert {r["filename"] for r in body["rejected"]} >= {"more/notes.txt", "../evil.wav", "missing.wav"}
    # d.wav was stored by another batch: a duplicate; a.wav was in this batch already: still one member
    assert [d["filename"] for d in body["duplicates"]] == ["d.wav"]
    members = {m.recording.original_filename: (m.label, m.speaker) for m in BatchMember.objects.filter(batch_id=batch)
               .select_related("recording")}
    assert members == {"a.wav": ("", ""), "b.wav": ("native", "s2"), "more/c.wav": ("non_native", "s3"), "d.wav": ("", "")}
    assert Batch.objects.get(pk=batch).recordings.count() == 4
    listed = api.get(f"/api/v1/recordings/?batch={batch}").json()
    assert listed["count"] == 4


def test_only_the_owner_appends(api, other_user):
    from rest_framework.test import APIClient

    batch = api.post("/api/v1/batches/", {"name": "mine", "files": [upload("a.wav", _wav(1))]}, format="multipart").json()["id"]
    other = APIClient()
    other.force_authenticate(other_user)
    response = other.post(f"/api/v1/batches/{batch}/recordings/", {"files": [upload("x.wav", _wav(5))]}, format="multipart")
    assert response.status_code == 404
    assert Batch.objects.get(pk=batch).recordings.count() == 1


def test_an_append_needs_files(api):
    batch = api.post("/api/v1/batches/", {"name": "mine", "files": [upload("a.wav", _wav(1))]}, format="multipart").json()["id"]
    response = api.post(f"/api/v1/batches/{batch}/recordings/", {"transcript": "hello"}, format="multipart")
    assert response.status_code == 400


def test_batch_append_service_refuses_another_users_batch(user, other_user):
    from recognition import services
    from recognition.errors import NotFound

    batch = Batch.objects.create(owner=user, name="b")
    with pytest.raises(NotFound):
        services.batch_append(owner=other_user, batch=batch, files=[("a.wav", io.BytesIO(_wav(1)))])


def test_import_recordings_streams_a_folder_in_groups(user, tmp_path):
    from django.core.management import call_command

    (tmp_path / "sub").mkdir()
    (tmp_path / "a.wav").write_bytes(_wav(1))
    (tmp_path / "sub" / "b.wav").write_bytes(_wav(2))
    (tmp_path / "sub" / "c.flac").write_bytes(_wav(3))
    (tmp_path / "broken.wav").write_bytes(b"not audio at all")
    (tmp_path / ".hidden.wav").write_bytes(_wav(4))
    out, err = io.StringIO(), io.StringIO()
    call_command("import_recordings", str(tmp_path), batch="study", owner=user.username, group=2, stdout=out, stderr=err)
    batch = Batch.objects.get(owner=user, name="study")
    assert sorted(batch.recordings.values_list("original_filename", flat=True)) == ["a.wav", "sub/b.wav", "sub/c.flac"]
    assert "rejected broken.wav:" in err.getvalue()
    lines = out.getvalue().splitlines()
    assert lines[0].startswith(f"Batch #{batch.pk} 'study' created") and "2 read:" in lines[1]
    assert "4 read: 3 in the batch, 1 rejected" in lines[2]
    # a second run adds to the same batch: the files already in it stay one member each
    (tmp_path / "d.wav").write_bytes(_wav(5))
    call_command("import_recordings", str(tmp_path), batch="study", owner=user.username, stdout=io.StringIO(), stderr=io.StringIO())
    assert batch.recordings.count() == 4 and Batch.objects.filter(name="study").count() == 1


def test_import_recordings_reads_a_manifest_with_labels(user, tmp_path):
    from django.core.management import call_command

    (tmp_path / "clips").mkdir()
    (tmp_path / "clips" / "a.wav").write_bytes(_wav(1))
    (tmp_path / "clips" / "b.wav").write_bytes(_wav(2))
    (tmp_path.parent / "outside.wav").write_bytes(_wav(3))
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("filename,label,speaker,corpus\nclips/a.wav,native,s1,saa\nclips/b.wav,non_native,s2,l2arctic\n"
                        "clips/gone.wav,native,s3,saa\n../outside.wav,native,s4,saa\nclips/a.wav,=cmd,s5,saa\n")
    err = io.StringIO()
    call_command("import_recordings", str(manifest), batch="m", owner=user.username, group=10, stdout=io.StringIO(), stderr=err)
    batch = Batch.objects.get(owner=user, name="m")
    members = {m.recording.original_filename: (m.label, m.speaker, m.recording.metadata.get("corpus"))
               for m in BatchMember.objects.filter(batch=batch).select_related("recording")}
    assert members == {"clips/a.wav": ("native", "s1", "saa"), "clips/b.wav": ("non_native", "s2", "l2arctic")}
    text = err.getvalue()
    assert "rejected clips/gone.wav: missing_file" in text and "rejected ../outside.wav: unsafe_path" in text
    assert "formula_injection" in text and "unknown_filename" not in text


def test_import_recordings_needs_a_known_owner(tmp_path):
    from django.core.management import call_command
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="No user"):
        call_command("import_recordings", str(tmp_path), batch="x", owner="nobody")


def test_the_admin_upload_page_adds_files_to_one_of_your_batches(client, django_user_model, other_user):
    staff = django_user_model.objects.create_superuser("adder", "adder@example.com", "pw-123456789")
    client.force_login(staff)
    client.post("/admin/recognition/batch/upload/", {"name": "grow", "files": [upload("a.wav", _wav(1))]})
    batch = Batch.objects.get(name="grow")
    assert 'id="add-recordings-link"' in client.get(f"/admin/recognition/batch/{batch.pk}/change/").content.decode()
    page = client.get(f"/admin/recognition/batch/upload/?batch={batch.pk}").content.decode()
    assert f'<option value="{batch.pk}" selected>' in page
    response = client.post("/admin/recognition/batch/upload/", {
        "add_to": batch.pk, "files": [upload("b.wav", _wav(2)), upload("bad.wav", b"garbage")],
        "labels": upload("labels.csv", b"b.wav,native\n")})
    assert "1 stored, 1 rejected" in response.content.decode() and "not_audio" in response.content.decode()
    assert batch.recordings.count() == 2 and Batch.objects.filter(name="grow").count() == 1
    assert BatchMember.objects.get(batch=batch, recording__original_filename="b.wav").label == "native"
    theirs = Batch.objects.create(owner=other_user, name="theirs")
    refused = client.post("/admin/recognition/batch/upload/", {"add_to": theirs.pk, "files": [upload("c.wav", _wav(3))]})
    assert "Select a valid choice" in refused.content.decode() and theirs.recordings.count() == 0
