"""An OpenAPI fuzz run (schemathesis) over every operation of ``/api/schema/``, as user A and as
user B, each with the other's recording, batch, jobs and private model in the database.

Fails on any 5xx, and on any response that shows the other user's objects (their filenames,
error texts, speakers, model name). Path ids are tried as generated and replaced by the other
user's ids. Examples are bounded (``FUZZ_EXAMPLES`` per operation and user) so it stays a test.
"""
from __future__ import annotations

import io
import os

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from recognition import services
from recognition.models import Batch, Job, ModelVersion, RecordingResult
from tests.factories import audio_bytes, pulse_train

pytestmark = pytest.mark.django_db

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "4"))


@pytest.fixture
def api_schema(db):
    from accentsite.wsgi import application

    return schemathesis.openapi.from_wsgi("/api/schema/", application)


schema = schemathesis.pytest.from_fixture("api_schema")


def _belongings(owner, tag: str, seed: int) -> dict:
    """What one user owns, every piece carrying ``tag`` so a leak shows in any response body."""
    data = audio_bytes(pulse_train(f0=100 + seed, seconds=1.0, seed=seed))
    rec, _ = services.recording_create(owner=owner, fileobj=io.BytesIO(data), filename=f"{tag}.wav",
                                       label=f"{tag}-label", speaker=f"{tag}-speaker")
    batch = Batch.objects.create(owner=owner, name=f"{tag}-batch")
    batch.recordings.add(rec)
    model = ModelVersion.objects.create(name=f"{tag}-model", version="1", family="cnn", task="classify", labels=["a", "b"],
                                        owner=owner, training_data={"speakers": [f"{tag}-speaker"]})
    job = Job.objects.create(owner=owner, kind="classify", batch=batch, model_version=model, total=1, done=0, failed=1,
                             status="succeeded", params={"note": tag})
    job.recordings.add(rec)
    RecordingResult.objects.create(job=job, recording=rec, recording_ref=rec.original_filename, status="failed",
                                   error_code="corrupt", error_message=f"{tag} failed")
    return {"recordings": rec.pk, "batches": batch.pk, "jobs": job.pk, "models": model.pk, "tag": tag}


@pytest.fixture
def fuzz_world(user, other_user, monkeypatch):
    from rest_framework.authtoken.models import Token

    monkeypatch.setattr("recognition.services.jobs._enqueue_chunks", lambda job, ids: None)
    monkeypatch.setattr("workers.tasks.run_predict.apply_async", lambda **kw: None)  # no worker: a quick 503 at most
    monkeypatch.setattr("django.conf.settings.PREDICT_TIMEOUT_S", 1)
    a = _belongings(user, "alpha-secret", 1)
    b = _belongings(other_user, "bravo-secret", 2)
    return [
        {"token": Token.objects.create(user=user).key, "mine": a, "theirs": b},
        {"token": Token.objects.create(user=other_user).key, "mine": b, "theirs": a},
    ]


def _their_ids(case, theirs: dict) -> dict | None:
    """The case's path parameters pointing at the other user's object of that resource."""
    resource = case.path.split("/")[3] if case.path.startswith("/api/v1/") else ""
    params = dict(case.path_parameters or {})
    if not params or resource not in theirs:
        return None
    return {name: theirs["jobs"] if name == "other_id" else theirs[resource] for name in params}


@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
          suppress_health_check=list(HealthCheck))
def test_fuzz_no_5xx_and_no_one_elses_objects(case, fuzz_world):
    generated = dict(case.path_parameters or {})
    for identity in fuzz_world:
        theirs = identity["theirs"]
        for params in (generated, _their_ids(case, theirs)):
            if params is None:
                continue
            case.path_parameters = params
            response = case.call(headers={"Authorization": f"Token {identity['token']}"})
            where = f"{case.method} {case.formatted_path} as {identity['mine']['tag']}"
            assert response.status_code < 500, f"{where}: {response.status_code} {response.text[:500]}"
            assert theirs["tag"] not in response.text, f"{where} shows the other user's objects: {response.text[:500]}"
            if response.status_code >= 400 and response.headers.get("Content-Type", "").startswith("application/json"):
                body = response.json()
                if isinstance(body, dict) and "error" in body:
                    assert body["error"].get("code"), f"{where}: error without a code: {body}"
