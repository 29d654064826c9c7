"""The API does what its schema says: filters, pagination, error shapes, examples, progress."""
import json

import pytest

from recognition import services
from recognition.jobkinds import KINDS
from recognition.models import Job, Recording, RecordingResult
from tests.recognition.test_review import _recording, embedded, two_model_jobs  # noqa: F401  (fixtures)

_PARAM_TYPES = {name: kind.params for name, kind in KINDS.items()}

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _no_broker(monkeypatch):
    monkeypatch.setattr("recognition.services.jobs._enqueue_chunks", lambda job, ids: None)


def _job_with_results(user, n_ok=2, n_failed=3):
    recs = [_recording(user, f"c{i}.wav") for i in range(n_ok + n_failed)]
    job = services.job_submit(owner=user, kind="features", recordings=recs)
    for i, rec in enumerate(recs):
        if i < n_ok:
            RecordingResult.objects.create(job=job, recording=rec, recording_ref=rec.original_filename, status="succeeded")
        else:
            RecordingResult.objects.create(job=job, recording=rec, recording_ref=rec.original_filename, status="failed",
                                           error_code="corrupt", error_message="bad")
    return job


def test_results_status_filter_filters_results_not_the_job(api):
    job = _job_with_results(api.user)
    failed = api.get(f"/api/v1/jobs/{job.pk}/results/?status=failed")
    assert failed.status_code == 200, failed.json()
    assert failed.json()["count"] == 3 and {r["status"] for r in failed.json()["results"]} == {"failed"}
    assert api.get(f"/api/v1/jobs/{job.pk}/results/?status=succeeded").json()["count"] == 2
    assert api.get(f"/api/v1/jobs/{job.pk}/results/?error_code=corrupt").json()["count"] == 3
    past = api.get(f"/api/v1/jobs/{job.pk}/results/?page=9")
    assert past.status_code == 404 and past.json()["error"]["code"] == "not_found"
    bad = api.get(f"/api/v1/jobs/{job.pk}/results/?status=nonsense")
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid"
    # the job detail ignores list filters; the list still filters jobs
    assert api.get(f"/api/v1/jobs/{job.pk}/?status=failed").status_code == 200
    assert api.get("/api/v1/jobs/?status=failed").json()["count"] == 0
    assert api.get("/api/v1/jobs/?status=queued").json()["count"] == 1


def test_page_size_is_honoured_and_bounded(api):
    from recognition.api.pagination import Pagination

    for i in range(5):
        _recording(api.user, f"p{i}.wav")
    page = api.get("/api/v1/recordings/?page_size=2").json()
    assert page["count"] == 5 and len(page["results"]) == 2 and page["next"]
    assert len(api.get("/api/v1/recordings/?page_size=2&page=3").json()["results"]) == 1
    assert len(api.get("/api/v1/recordings/?page_size=999999").json()["results"]) == 5
    assert Pagination.max_page_size == 1000


def test_similar_is_paginated_like_the_schema_says(api, embedded):  # noqa: F811
    _, recs, _ = embedded
    response = api.get(f"/api/v1/recordings/{recs[0].pk}/similar/?k=5&page_size=2")
    assert response.status_code == 200 and response["X-Similarity-Backend"]
    body = response.json()
    assert body["count"] == 5 and len(body["results"]) == 2 and body["next"]
    assert set(body["results"][0]) == {"recording", "similarity"}
    schema = json.loads(api.get("/api/schema/?format=json").content)
    ok = schema["paths"]["/api/v1/recordings/{id}/similar/"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert ok["$ref"].endswith("PaginatedSimilarList")


def _schema(api) -> dict:
    response = api.get("/api/schema/?format=json")
    assert response.status_code == 200
    return json.loads(response.content)


def test_every_operation_declares_its_errors_in_the_error_shape(api):
    schema = _schema(api)
    error = schema["components"]["schemas"]["Error"]
    assert error["properties"]["error"]["$ref"].endswith("ErrorDetail")
    assert set(schema["components"]["schemas"]["ErrorDetail"]["properties"]) == {"code", "message", "fields"}
    ops = {(path, method): op for path, item in schema["paths"].items() for method, op in item.items()}
    for (path, method), op in ops.items():
        responses = op["responses"]
        if not path.startswith("/api/v1/auth/"):
            assert {"401", "403"} <= set(responses), (path, method)
        if "{" in path or any(p["name"] == "page" for p in op.get("parameters", [])):
            assert "404" in responses, (path, method)
        if method in ("post", "put", "patch"):
            assert "400" in responses, (path, method)
        for code, response in responses.items():
            if code >= "400":
                assert response["description"], (path, method, code)
                assert response["content"]["application/json"]["schema"]["$ref"].endswith("/Error"), (path, method, code)
    for path in ("/api/v1/recordings/", "/api/v1/batches/", "/api/v1/predict/"):
        assert {"413", "429"} <= set(ops[(path, "post")]["responses"]), path
    for path in ("/api/v1/jobs/", "/api/v1/jobs/{id}/cancel/", "/api/v1/jobs/{id}/retry-failed/", "/api/v1/predict/"):
        assert "409" in ops[(path, "post")]["responses"], path
    results_params = {p["name"] for p in ops[("/api/v1/jobs/{id}/results/", "get")]["parameters"]}
    assert {"status", "error_code", "outcome", "export", "windows", "page", "page_size"} <= results_params


def test_every_job_kind_and_parameter_is_in_the_schema_with_an_example(api):
    schema = _schema(api)
    create = schema["paths"]["/api/v1/jobs/"]["post"]
    examples = create["requestBody"]["content"]["application/json"]["examples"]
    kinds = {e["value"]["kind"] for e in examples.values()}
    assert kinds == set(Job.Kind.values)
    train = next(e["value"] for e in examples.values() if e["value"]["kind"] == "train")
    assert set(train["params"]) <= set(_PARAM_TYPES["train"]) and {"family", "name", "hparams"} <= set(train["params"])
    for example in examples.values():  # every example is a body the API accepts
        assert set(example["value"].get("params", {})) <= set(_PARAM_TYPES[example["value"]["kind"]])
    help_text = schema["components"]["schemas"]["JobCreateRequest"]["properties"]["params"]["description"]
    for kind, params in _PARAM_TYPES.items():
        assert f"{kind}:" in help_text
        for name in params:
            assert name in help_text, (kind, name)


def test_classify_accepts_label_map_like_the_readme_says(api):
    rec = _recording(api.user, "l.wav")
    response = api.post("/api/v1/jobs/", {"kind": "classify", "recordings": [rec.pk],
                                          "params": {"label_map": {"native_english": "native"}}}, format="json")
    assert response.status_code == 202, response.json()


def test_progress_moves_per_recording_not_per_chunk(user):
    recs = [_recording(user, f"g{i}.wav") for i in range(3)]
    job = services.job_submit(owner=user, kind="features", recordings=recs, params={"chunk_size": 3})
    ctx = services.chunk_start(chunk_id=job.chunks.get().pk)
    feats = {"prosody": {"version": "1", "config": {}, "summary": {"f0_mean_hz": 120.0}, "array_names": []}}
    services.result_store_features(job=ctx.job, recording=recs[0], features=feats, npz=b"", timings={})
    job.refresh_from_db()
    assert (job.done, job.failed) == (1, 0)
    services.result_fail(job=ctx.job, recording=recs[1], code="corrupt", message="bad")
    job.refresh_from_db()
    assert (job.done, job.failed) == (1, 1)
    # a redelivered recording replaces its result and does not count twice
    services.result_store_features(job=ctx.job, recording=recs[0], features=feats, npz=b"", timings={})
    services.result_store_features(job=ctx.job, recording=recs[1], features=feats, npz=b"", timings={})
    job.refresh_from_db()
    assert (job.done, job.failed) == (2, 0)
    services.chunk_finish(chunk_id=ctx.chunk.pk, timings={})
    job.refresh_from_db()
    assert (job.done, job.failed, job.status) == (2, 0, "succeeded")
    assert Recording.objects.filter(results__job=job).count() == 2
