"""Nobody sees or touches what is not theirs: every API route under /api/v1/ (enumerated from the
URL resolver, so a new route is covered the day it is added) is walked as another user and as
nobody, with every HTTP method. Upload throttling per user gives 429.
"""
from __future__ import annotations

import io
import re

import pytest
from django.contrib.admindocs.views import extract_views_from_urlpatterns, simplify_regex
from django.urls import get_resolver
from rest_framework.test import APIClient

from recognition import services
from recognition.models import Batch, Embedding, Job, ModelVersion, Recording, RecordingResult
from tests.factories import audio_bytes, pulse_train, upload

pytestmark = pytest.mark.django_db

METHODS = ("get", "post", "put", "patch", "delete")
# Routes that hold no one's data: the token endpoint (public by design) and the synchronous
# predict endpoint (it stores nothing). Their anonymous answers are still checked below.
NOT_OWNED = {"/api/v1/", "/api/v1/auth/token/", "/api/v1/predict/"}


def api_routes() -> list[str]:
    """Every URL pattern under /api/v1/, e.g. ``/api/v1/jobs/<pk>/compare/<other_id>/``."""
    routes = set()
    for _, regex, _, _ in extract_views_from_urlpatterns(get_resolver().url_patterns):
        path = simplify_regex(regex)
        if path.startswith("/api/v1/") and "format>" not in path:  # format-suffix twins: same views
            routes.add(path)
    return sorted(routes)


def _recording(owner, seed: int, name: str) -> Recording:
    data = audio_bytes(pulse_train(f0=100 + seed, seconds=1.0, seed=seed))
    rec, _ = services.recording_create(owner=owner, fileobj=io.BytesIO(data), filename=name)
    return rec


@pytest.fixture
def world(user, other_user, monkeypatch):
    """A victim (other_user) with a recording, batch, finished jobs of every kind, results,
    a report and embeddings; the attacker (user) with the same kinds of things of their own."""
    monkeypatch.setattr("recognition.services.jobs._enqueue_chunks", lambda job, ids: None)
    mv = ModelVersion.objects.create(name="emb-acl", version="1", family="test", task="embed")
    cls = ModelVersion.objects.create(name="cls-acl", version="1", family="test", task="classify", labels=["a", "b"])
    out = {}
    for who, owner, seed in (("victim", other_user, 1), ("attacker", user, 50)):
        rec = _recording(owner, seed, f"{who}.wav")
        batch = Batch.objects.create(owner=owner, name=f"{who}-batch")
        batch.recordings.add(rec)
        jobs = {}
        for kind, model in (("features", None), ("classify", cls), ("embed", mv)):
            job = Job.objects.create(owner=owner, kind=kind, batch=batch, model_version=model, total=1, done=1, status="succeeded",
                                     report={"accuracy": 1.0} if kind == "classify" else None)
            job.recordings.add(rec)
            result = RecordingResult.objects.create(job=job, recording=rec, recording_ref=rec.original_filename, status="failed",
                                                    error_code="corrupt", error_message=f"{who} secret")
            jobs[kind] = job
        embed_result = RecordingResult.objects.create(job=jobs["embed"], recording=None, recording_ref="x", status="succeeded")
        # the same vector for both users: a leak would rank the victim's recording first
        Embedding.objects.create(result=embed_result, recording=rec, model_version=mv, checkpoint_sha256="0" * 64, dim=3,
                                 vector=[1.0, 0.0, 0.0])
        out[who] = {"recording": rec, "batch": batch, "jobs": jobs, "result": result}
    out["attacker"]["recording2"] = _recording(user, 60, "attacker2.wav")
    e2 = RecordingResult.objects.create(job=out["attacker"]["jobs"]["embed"], recording=None, recording_ref="y", status="succeeded")
    Embedding.objects.create(result=e2, recording=out["attacker"]["recording2"], model_version=mv, checkpoint_sha256="0" * 64, dim=3,
                             vector=[0.9, 0.1, 0.0])
    out["model"] = mv
    # a finished /predict of the victim's, its answer in Redis as the worker leaves it
    import json
    import uuid

    from recognition.broker import broker_redis
    from recognition.services.predict import request_key

    out["predict"] = uuid.uuid4().hex
    broker_redis().hset(request_key(out["predict"]), mapping={
        "owner": other_user.pk, "status": "done", "body": json.dumps({"result": {"text": "victim secret"}})})
    broker_redis().expire(request_key(out["predict"]), 300)
    return out


def _urls_for(route: str, world) -> list[str]:
    """Concrete URLs of one route pointing at the victim's objects (and, for a second id, both ways)."""
    victim, attacker = world["victim"], world["attacker"]
    resource = route.split("/")[3]
    params = re.findall(r"<(\w+)>", route)
    unknown = set(params) - {"pk", "other_id"}
    assert not unknown, f"route {route} has parameters {unknown}: teach this test what they point to"
    victim_pk = {"recordings": victim["recording"].pk, "batches": victim["batch"].pk,
                 "jobs": victim["jobs"]["classify"].pk, "models": world["model"].pk, "predict": world["predict"]}.get(resource)
    own_pk = {"recordings": attacker["recording"].pk, "batches": attacker["batch"].pk,
              "jobs": attacker["jobs"]["classify"].pk}.get(resource)
    if "pk" in params:
        assert victim_pk is not None, f"route {route}: unknown resource '{resource}'"
    if "other_id" in params:
        # victim's job first, or the attacker's own job compared with the victim's
        return [route.replace("<pk>", str(victim_pk)).replace("<other_id>", str(own_pk)),
                route.replace("<pk>", str(own_pk)).replace("<other_id>", str(victim_pk))]
    return [route.replace("<pk>", str(victim_pk))]


def test_routes_are_enumerated():
    routes = api_routes()
    assert "/api/v1/jobs/<pk>/results/" in routes and "/api/v1/recordings/<pk>/audio/" in routes
    assert len(routes) >= 15


def test_every_route_as_another_user_finds_nothing(api, world):
    victim = world["victim"]
    victim_ids = {"recordings": {victim["recording"].pk}, "batches": {victim["batch"].pk},
                  "jobs": {j.pk for j in victim["jobs"].values()}}
    before = (Recording.objects.count(), Job.objects.count(), list(Job.objects.order_by("id").values_list("status", flat=True)))
    checked = 0
    for route in api_routes():
        if route in NOT_OWNED:
            continue
        for url in _urls_for(route, world):
            for method in METHODS:
                response = getattr(api, method)(url, {}, format="json")
                checked += 1
                body = response.content.decode(errors="replace")
                assert "victim secret" not in body and "victim.wav" not in body, (method, url, body[:300])
                if "<pk>" not in route:  # list routes: only the attacker's own rows
                    if method == "get":
                        assert response.status_code == 200, (url, response.status_code)
                        ids = {row["id"] for row in response.json().get("results", [])}
                        assert not ids & victim_ids.get(route.split("/")[3], set()), (url, ids)
                    continue
                if route.startswith("/api/v1/models/"):  # the model catalogue is shared, read-only
                    assert response.status_code == (200 if method == "get" else 405), (method, url, response.status_code)
                    continue
                assert response.status_code in (403, 404, 405), (method, url, response.status_code, body[:300])
    assert checked > 60
    # nothing of the victim's changed: no job cancelled or retried, nothing deleted
    assert (Recording.objects.count(), Job.objects.count(),
            list(Job.objects.order_by("id").values_list("status", flat=True))) == before


def test_new_jobs_over_someone_elses_data_are_refused(api, world):
    victim = world["victim"]
    for body in ({"kind": "features", "batch": victim["batch"].pk},
                 {"kind": "features", "recordings": [victim["recording"].pk]},
                 {"kind": "features", "recordings": [world["attacker"]["recording"].pk, victim["recording"].pk]},
                 {"kind": "embed", "batch": victim["batch"].pk, "model": "emb-acl@1"}):
        response = api.post("/api/v1/jobs/", body, format="json")
        assert response.status_code == 404, (body, response.json())
    assert not Job.objects.filter(owner=api.user, status="queued").exists()


def test_similar_search_never_returns_another_users_recordings(api, world):
    mine = world["attacker"]
    response = api.get(f"/api/v1/recordings/{mine['recording'].pk}/similar/?k=100&model=emb-acl@1")
    assert response.status_code == 200, response.json()
    found = [row["recording"]["id"] for row in response.json()["results"]]
    assert found == [mine["recording2"].pk]  # the victim's identical vector is not there
    assert api.get(f"/api/v1/recordings/{world['victim']['recording'].pk}/similar/").status_code == 404


def test_every_route_anonymously_is_refused(client, world):
    anonymous = APIClient()
    for route in api_routes():
        for url in _urls_for(route, world) if "<" in route else [route]:
            for method in METHODS:
                response = getattr(anonymous, method)(url, {}, format="json")
                if route == "/api/v1/auth/token/":
                    assert response.status_code in (400, 405), (method, url, response.status_code)
                else:
                    assert response.status_code in (401, 403), (method, url, response.status_code)
    media = client.get(f"/media/recordings/{world['victim']['recording'].pk}/")
    assert media.status_code == 302 and "/login/" in media["Location"]


def test_authorised_media_view_is_owner_only(client, user, world):
    client.force_login(user)
    assert client.get(f"/media/recordings/{world['victim']['recording'].pk}/").status_code == 404
    assert client.get(f"/media/recordings/{world['attacker']['recording'].pk}/").status_code == 200


def test_uploads_are_throttled_per_user(api, other_user, monkeypatch):
    from rest_framework.throttling import ScopedRateThrottle

    from tests.conftest import throttle_reset

    monkeypatch.setattr(ScopedRateThrottle, "THROTTLE_RATES", {"uploads": "2/minute"})
    throttle_reset()
    statuses = [api.post("/api/v1/recordings/", {"file": upload(f"t{i}.wav", audio_bytes(pulse_train(seed=200 + i)))},
                         format="multipart").status_code for i in range(3)]
    assert statuses == [201, 201, 429]
    throttled = api.post("/api/v1/batches/", {"name": "b", "files": [upload("b.wav", audio_bytes(pulse_train(seed=210)))]},
                         format="multipart")
    assert throttled.status_code == 429 and throttled.json()["error"]["code"] == "throttled"
    assert "Retry-After" in throttled
    assert api.get("/api/v1/recordings/").status_code == 200  # reading is not throttled
    other = APIClient()
    other.force_authenticate(other_user)
    assert other.post("/api/v1/recordings/", {"file": upload("o.wav", audio_bytes(pulse_train(seed=220)))},
                      format="multipart").status_code == 201  # per user, not global
    throttle_reset()
