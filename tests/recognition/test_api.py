"""The REST API: uploads, batches, jobs, errors, access control and the schema."""
import csv
import io
import json
import zipfile

import pytest

from recognition.models import Batch, Job, JobChunk, Recording
from tests.factories import audio_bytes, pulse_train, upload

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _no_broker(monkeypatch):
    """API tests check what is stored and queued in the database; chunks are not sent anywhere."""
    monkeypatch.setattr("recognition.services.jobs._enqueue_chunks", lambda job, ids: None)


def test_upload_recording_returns_header_facts(api):
    data = audio_bytes(pulse_train(seconds=1.5, sr=22050), sr=22050)
    response = api.post("/api/v1/recordings/", {"file": upload("my-interview.wav", data), "label": "native", "speaker": "s1",
                                                "metadata": json.dumps({"corpus": "test"})}, format="multipart")
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["sample_rate"] == 22050 and body["channels"] == 1 and body["format"] == "wav"
    assert body["duration_s"] == pytest.approx(1.5, abs=0.01)
    assert len(body["sha256"]) == 64
    rec = Recording.objects.get(pk=body["id"])
    assert rec.metadata == {"corpus": "test"} and rec.label == "native"
    assert "interview" not in rec.file.name and rec.original_filename == "my-interview.wav"  # keys never come from user input


def test_identical_upload_is_recognised_by_sha256(api):
    data = audio_bytes(pulse_train())
    first = api.post("/api/v1/recordings/", {"file": upload("a.wav", data)}, format="multipart").json()
    second = api.post("/api/v1/recordings/", {"file": upload("b.wav", data)}, format="multipart")
    assert second.status_code == 200 and second.json()["id"] == first["id"] and second.json()["duplicate"]
    assert Recording.objects.count() == 1


@pytest.mark.parametrize(
    "name,data,code",
    [("empty.wav", b"", "empty"), ("noise.wav", bytes(range(256)) * 40, "not_audio"), ("x.mp3", b"ID3" + b"\0" * 50, "not_audio")],
)
def test_bad_audio_is_a_400_with_a_code(api, name, data, code):
    response = api.post("/api/v1/recordings/", {"file": upload(name, data)}, format="multipart")
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == code and error["message"]
    assert Recording.objects.count() == 0


def test_batch_upload_with_files_archive_and_labels(api):
    good = {f"s{i}.wav": audio_bytes(pulse_train(f0=120 + 10 * i, seed=i)) for i in range(3)}
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("inner/z1.flac", audio_bytes(pulse_train(f0=200), fmt="FLAC"))
        zf.writestr("../evil.wav", good["s0.wav"])
        zf.writestr("nested.zip", b"PK")
    archive.seek(0)
    labels = "filename,label,speaker\ns0.wav,native,spk0\ns1.wav,non_native,spk1\nz1.flac,native,spk2\nghost.wav,native,x\ns1.wav,native,dup\n"
    response = api.post(
        "/api/v1/batches/",
        {
            "name": "mixed",
            "files": [upload(n, d) for n, d in good.items()] + [upload("broken.wav", b"not audio at all")],
            "archive": upload("pack.zip", archive.getvalue()),
            "labels": upload("labels.csv", labels.encode()),
        },
        format="multipart",
    )
    assert response.status_code == 201, response.json()
    body = response.json()
    assert {r["original_filename"] for r in body["recordings"]} == {"s0.wav", "s1.wav", "s2.wav", "inner/z1.flac"}
    rejected = {(r["filename"], r["code"]) for r in body["rejected"]}
    assert ("broken.wav", "not_audio") in rejected
    assert ("../evil.wav", "unsafe_path") in rejected
    assert ("nested.zip", "nested_archive") in rejected
    assert ("ghost.wav", "unknown_filename") in rejected
    assert ("s1.wav", "duplicate_label") in rejected
    labels_by_name = dict(Recording.objects.values_list("original_filename", "label"))
    assert labels_by_name == {"s0.wav": "native", "s1.wav": "non_native", "s2.wav": "", "inner/z1.flac": "native"}
    assert Batch.objects.get(pk=body["id"]).recordings.count() == 4


def test_labels_csv_formula_and_encoding_are_refused(api):
    files = [upload("a.wav", audio_bytes(pulse_train()))]
    bad_encoding = api.post("/api/v1/batches/", {"name": "b", "files": files, "labels": upload("l.csv", "a.wav,ñ".encode("latin-1"))},
                            format="multipart")
    assert bad_encoding.status_code == 400 and bad_encoding.json()["error"]["code"] == "bad_labels_csv"
    files = [upload("a.wav", audio_bytes(pulse_train()))]
    formula = api.post("/api/v1/batches/", {"name": "b", "files": files, "labels": upload("l.csv", b"a.wav,=cmd|'/c calc'!A1\n")},
                       format="multipart")
    assert formula.status_code == 201
    assert [r["code"] for r in formula.json()["rejected"]] == ["formula_injection"]
    assert Recording.objects.get().label == ""


def test_zip_bomb_is_refused_whole(api):
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("bomb.wav", b"\0" * (50 * 1024 * 1024))
    response = api.post("/api/v1/batches/", {"name": "bomb", "archive": upload("b.zip", archive.getvalue())}, format="multipart")
    assert response.status_code == 400 and response.json()["error"]["code"] == "zip_bomb"
    assert Batch.objects.count() == 0


def _batch(api, n=3):
    files = [upload(f"r{i}.wav", audio_bytes(pulse_train(f0=110 + 15 * i, seed=i))) for i in range(n)]
    return api.post("/api/v1/batches/", {"name": "b", "files": files}, format="multipart").json()


def test_features_job_is_split_into_chunks(api, settings):
    settings.JOB_CHUNK_SIZE = {"features": 2}
    batch = _batch(api, n=5)
    response = api.post("/api/v1/jobs/", {"kind": "features", "batch": batch["id"], "params": {"extractors": ["prosody"]}},
                        format="json")
    assert response.status_code == 202, response.json()
    body = response.json()
    assert body["status"] == "queued" and body["progress"] == {"total": 5, "done": 0, "failed": 0}
    chunks = JobChunk.objects.filter(job_id=body["id"])
    assert [len(c.recording_ids) for c in chunks] == [2, 2, 1]


@pytest.mark.parametrize(
    "payload,code",
    [
        ({"kind": "features", "batch": "x"}, "invalid"),
        ({"kind": "nope", "batch": 1}, "invalid"),
        ({"kind": "features"}, "invalid"),
        ({"kind": "features", "batch": 1, "params": {"extractors": ["nonsense"]}}, "invalid_params"),
        ({"kind": "features", "batch": 1, "params": {"chunk_size": "big"}}, "invalid_params"),
        ({"kind": "features", "batch": 1, "params": [1, 2]}, "invalid_params"),
    ],
)
def test_job_body_with_wrong_types_is_a_clear_400(api, payload, code):
    batch = _batch(api, n=1)
    if payload.get("batch") == 1:
        payload["batch"] = batch["id"]
    response = api.post("/api/v1/jobs/", payload, format="json")
    assert response.status_code == 400, response.json()
    assert response.json()["error"]["code"] == code


def test_job_detail_cancel_and_results(api):
    batch = _batch(api, n=2)
    job = api.post("/api/v1/jobs/", {"kind": "features", "batch": batch["id"]}, format="json").json()
    detail = api.get(f"/api/v1/jobs/{job['id']}/").json()
    assert detail["kind"] == "features" and detail["status"] == "queued"
    cancelled = api.post(f"/api/v1/jobs/{job['id']}/cancel/")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    assert api.post(f"/api/v1/jobs/{job['id']}/cancel/").status_code == 409
    assert set(JobChunk.objects.filter(job_id=job["id"]).values_list("status", flat=True)) == {"cancelled"}
    results = api.get(f"/api/v1/jobs/{job['id']}/results/").json()
    assert results["count"] == 0


def test_everything_is_owner_scoped(api, other_user):
    from rest_framework.test import APIClient

    batch = _batch(api, n=1)
    rec_id = Recording.objects.get().pk
    job = api.post("/api/v1/jobs/", {"kind": "features", "batch": batch["id"]}, format="json").json()
    other = APIClient()
    other.force_authenticate(other_user)
    for url in [f"/api/v1/recordings/{rec_id}/", f"/api/v1/recordings/{rec_id}/audio/", f"/api/v1/batches/{batch['id']}/",
                f"/api/v1/jobs/{job['id']}/", f"/api/v1/jobs/{job['id']}/results/", f"/api/v1/jobs/{job['id']}/report/"]:
        assert other.get(url).status_code == 404, url
    assert other.post(f"/api/v1/jobs/{job['id']}/cancel/").status_code == 404
    assert other.post("/api/v1/jobs/", {"kind": "features", "batch": batch["id"]}, format="json").status_code == 404
    assert other.post("/api/v1/jobs/", {"kind": "features", "recordings": [rec_id]}, format="json").status_code == 404
    assert other.get("/api/v1/recordings/").json()["count"] == 0
    assert other.get("/api/v1/jobs/").json()["count"] == 0
    assert Job.objects.count() == 1


def test_anonymous_requests_are_refused(client):
    for url in ["/api/v1/recordings/", "/api/v1/batches/", "/api/v1/jobs/", "/api/v1/models/"]:
        assert client.get(url).status_code in (401, 403)


def test_token_auth(client, user):
    token = client.post("/api/v1/auth/token/", {"username": user.username, "password": "pw-123456789"}).json()["token"]
    response = client.get("/api/v1/recordings/", HTTP_AUTHORIZATION=f"Token {token}")
    assert response.status_code == 200


def test_list_filters(api):
    _batch(api, n=2)
    Recording.objects.filter(original_filename="r0.wav").update(label="native")
    assert api.get("/api/v1/recordings/?label=native").json()["count"] == 1
    assert api.get("/api/v1/recordings/?filename=r1").json()["count"] == 1


def test_results_csv_neutralises_formulas(api):
    from recognition import services
    from recognition.models import RecordingResult

    _batch(api, n=1)
    rec = Recording.objects.get()
    job = services.job_submit(owner=api.user, kind="features", recordings=[rec])
    RecordingResult.objects.create(job=job, recording=rec, recording_ref="=HYPERLINK()", status="failed",
                                   error_code="corrupt", error_message="+bad")
    body = b"".join(api.get(f"/api/v1/jobs/{job.pk}/results/?export=csv").streaming_content).decode()
    (row,) = csv.DictReader(io.StringIO(body))
    assert row["filename"] == "'=HYPERLINK()" and row["error_message"] == "'+bad"


def test_openapi_schema_and_docs(api):
    schema = api.get("/api/schema/?format=json")
    assert schema.status_code == 200
    paths = json.loads(schema.content)["paths"]
    for p in ["/api/v1/recordings/", "/api/v1/batches/", "/api/v1/jobs/", "/api/v1/jobs/{id}/results/", "/api/v1/models/"]:
        assert p in paths
    docs = api.get("/api/docs/")
    assert docs.status_code == 200 and b"swagger" in docs.content.lower()


def test_transcripts_are_stored_from_single_and_batch_uploads_and_as_a_job_default(api):
    """What the speaker read: per recording on upload, for every file of a batch, or as a classify
    job's default; reading models use it (the others ignore it)."""
    one = api.post("/api/v1/recordings/", {"file": upload("a.wav", audio_bytes(pulse_train(seed=1))),
                                           "transcript": "  Please call Stella.  "}, format="multipart").json()
    assert one["transcript"] == "Please call Stella." == Recording.objects.get(pk=one["id"]).transcript
    passage = "Ask her to bring these things with her from the store."
    batch = api.post("/api/v1/batches/", {"name": "read", "transcript": passage,
                                          "files": [upload(f"b{i}.wav", audio_bytes(pulse_train(f0=150 + 9 * i, seed=i)))
                                                    for i in range(2, 4)]}, format="multipart").json()
    assert {r["transcript"] for r in batch["recordings"]} == {passage}
    job = api.post("/api/v1/jobs/", {"kind": "classify", "recordings": [one["id"]],
                                     "params": {"transcript": passage}}, format="json")
    assert job.status_code == 202, job.json()
    assert Job.objects.get(pk=job.json()["id"]).params["transcript"] == passage
    for bad in (42, "x" * 20001):
        refused = api.post("/api/v1/jobs/", {"kind": "classify", "recordings": [one["id"]], "params": {"transcript": bad}},
                           format="json")
        assert refused.status_code == 400 and refused.json()["error"]["code"] == "invalid_params"
    assert "transcript" in api.get("/api/schema/").content.decode()
