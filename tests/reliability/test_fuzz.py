"""An OpenAPI fuzz run (schemathesis) over every operation of ``/api/schema/``, as user A and as
user B, each with the other's recording, batch, jobs and private model in the database. Path ids
are tried as generated, as the caller's own objects and as the other user's.

Fails on any 5xx, and on any response that shows the other user's objects (their filenames,
error texts, speakers, model name), and on a JSON error without a code. Examples are bounded
(``FUZZ_EXAMPLES`` per operation, default 4) so it stays a test: about 400 requests, 30 s.
"""
from __future__ import annotations

import io
import os
from collections import Counter

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
    """The schema, served by the real WSGI application. Like Django's test client, the requests
    must not close the test's database connection at their start and end (its transaction holds
    the fixtures)."""
    from django.core import signals
    from django.db import close_old_connections

    from accentsite.wsgi import application

    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    try:
        yield schemathesis.openapi.from_wsgi("/api/schema/", application)
    finally:
        signals.request_started.connect(close_old_connections)
        signals.request_finished.connect(close_old_connections)


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
        {"token": Token.objects.create(user=user).key, "mine": a, "theirs": b, "statuses": Counter()},
        {"token": Token.objects.create(user=other_user).key, "mine": b, "theirs": a},
    ]


def _their_ids(case, theirs: dict) -> dict | None:
    """The case's path parameters pointing at ``theirs``' object of that resource (one's own, or
    the other user's)."""
    resource = case.path.split("/")[3] if case.path.startswith("/api/v1/") else ""
    params = dict(case.path_parameters or {})
    if not params or resource not in theirs:
        return None
    return {name: theirs["jobs"] if name == "other_id" else theirs[resource] for name in params}


def test_fuzz_no_5xx_and_no_one_elses_objects(api_schema, fuzz_world):
    """Every operation, ``EXAMPLES`` generated cases each (schemathesis strategies driven by
    hypothesis here, since its pytest plugin's lazy loader does not run on pytest 9)."""
    from hypothesis import given

    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) >= 20
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
        def fuzz(case):
            _check(case, fuzz_world)

        fuzz()
    statuses = fuzz_world[0]["statuses"]
    print(f"fuzz: {sum(statuses.values())} requests, by status {dict(sorted(statuses.items()))}")
    assert sum(statuses.values()) >= 4 * len(operations)  # both users, at least once each way, per operation


def _check(case, fuzz_world) -> None:
    generated = dict(case.path_parameters or {})
    for identity in fuzz_world:
        theirs = identity["theirs"]
        for params in (generated, _their_ids(case, identity["mine"]), _their_ids(case, theirs)):
            if params is None:
                continue
            case.path_parameters = params
            response = case.call(headers={"Authorization": f"Token {identity['token']}"})
            fuzz_world[0]["statuses"][response.status_code] += 1
            where = f"{case.method} {case.formatted_path} as {identity['mine']['tag']}"
            body_bytes = response.content  # bytes: an export may be Parquet
            assert response.status_code < 500, f"{where}: {response.status_code} {body_bytes[:500]!r}"
            assert theirs["tag"].encode() not in body_bytes, f"{where} shows the other user's objects: {body_bytes[:500]!r}"
            if response.status_code >= 400 and response.headers.get("Content-Type", "").startswith("application/json"):
                body = response.json()
                if isinstance(body, dict) and "error" in body:
                    assert body["error"].get("code"), f"{where}: error without a code: {body}"


def test_fuzz_responses_conform_to_the_schema(api_schema, fuzz_world):
    """The same cases, judged by schemathesis's response checks: every status code, content type and
    body a response has is one the schema declares (so a generated client can handle it)."""
    from hypothesis import given
    from schemathesis.checks import content_type_conformance, response_schema_conformance, status_code_conformance

    failures: list[str] = []
    for operation in [result.ok() for result in api_schema.get_all_operations()]:

        @given(case=operation.as_strategy())
        @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
        def fuzz(case):
            identity = fuzz_world[0]
            for params in (dict(case.path_parameters or {}), _their_ids(case, identity["mine"])):
                if params is None:
                    continue
                case.path_parameters = params
                response = case.call(headers={"Authorization": f"Token {identity['token']}"})
                try:
                    case.validate_response(response, checks=[status_code_conformance, content_type_conformance,
                                                             response_schema_conformance])
                except BaseException as exc:  # noqa: BLE001 - schemathesis raises a FailureGroup: collected, reported below
                    failures.append(f"{case.method} {case.formatted_path} -> {response.status_code}: {str(exc)[:300]}")

        fuzz()
    assert not failures, f"{len(failures)} responses outside the schema:\n" + "\n".join(sorted(set(failures))[:40])
