"""Similarity and projection without pgvector read a bounded number of embeddings (issue 25): the exact
search streams the user's newest ``SIMILAR_EXACT_MAX`` in slices with a running top-k and says how far it
looked; the API's projection draws a bounded sample. Same queries and rows read at two sizes."""
import numpy as np
import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from recognition import selectors
from recognition.models import Embedding, Job, ModelVersion, Recording, RecordingResult

pytestmark = pytest.mark.django_db

DIM = 6


@pytest.fixture(autouse=True)
def _exact(settings, monkeypatch):
    settings.SIMILARITY_BACKEND = "exact"  # the fallback, also where the test database has pgvector
    monkeypatch.setattr(selectors, "EXACT_SLICE", 16)  # several slices: the running top-k is what is tested


def _embedded(owner, n: int, tag: str, *, seed: int = 0, twice: int = 0) -> tuple[Job, list[Recording], np.ndarray]:
    """An embed job over ``n`` recordings with random unit vectors; the first ``twice`` recordings get a
    second, newer embedding (another job of the same model) that must win over their first."""
    mv, _ = ModelVersion.objects.get_or_create(name=f"emb-{tag}", version="1", defaults={"family": "cnn", "task": "embed"})
    rng = np.random.default_rng(seed)
    recs = Recording.objects.bulk_create([
        Recording(owner=owner, file=f"recordings/s/{tag}-{i}.wav", original_filename=f"{i}.wav",
                  sha256=f"{tag}{i:062d}"[-64:], size_bytes=1, format="wav", duration_s=1.0) for i in range(n)])
    vectors = rng.standard_normal((n, DIM))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    job = None
    for rows, vecs in ((recs, vectors), (recs[:twice], None)):
        if not rows:
            continue
        job = Job.objects.create(owner=owner, kind="embed", model_version=mv, status="succeeded", total=len(rows))
        results = RecordingResult.objects.bulk_create([RecordingResult(job=job, recording=r, status="succeeded") for r in rows])
        if vecs is None:  # the newer embeddings of the first `twice` recordings
            vecs = rng.standard_normal((len(rows), DIM))
            vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
            vectors[: len(rows)] = vecs
        Embedding.objects.bulk_create([Embedding(result=res, recording=r, model_version=mv, checkpoint_sha256="0" * 64, dim=DIM,
                                                 vector=v.tolist()) for res, r, v in zip(results, rows, vecs, strict=True)])
    return job, recs, vectors


def _brute(recs, vectors, anchor: int, k: int, among: list[int] | None = None) -> list[int]:
    """The top-k recording ids by a plain dot product over ``among`` (indexes), the anchor left out."""
    among = [i for i in (among if among is not None else range(len(recs))) if i != anchor]
    scores = vectors[among] @ vectors[anchor]
    return [recs[among[j]].pk for j in np.argsort(-scores, kind="stable")[:k]]


def _search(user, rec, **kw):
    with CaptureQueriesContext(connection) as ctx:
        found = selectors.similar_search(user=user, recording=rec, **kw)
    return found, len(ctx.captured_queries)


def test_the_exact_search_is_the_true_top_k_across_slices_and_prefers_the_newest_embedding(user):
    _, recs, vectors = _embedded(user, 70, "all", twice=10)
    found, _ = _search(user, recs[3], k=7, limit=1000)
    assert found.backend == "exact" and found.exact and found.searched == 69  # each recording once, newest vector
    assert [r.pk for r, _ in found.pairs] == _brute(recs, vectors, 3, 7)
    expected = sorted((float(vectors[i] @ vectors[3]) for i in range(70) if i != 3), reverse=True)[:7]
    assert np.allclose([sim for _, sim in found.pairs], expected, atol=1e-5)


def test_the_exact_search_reads_the_newest_cap_rows_whatever_the_user_holds(user, settings):
    """Same queries and the same number of embeddings compared for 80 and 400 recordings; only the newest
    SIMILAR_EXACT_MAX are read, and the answer says it stopped there."""
    settings.SIMILAR_EXACT_MAX = 50
    costs = []
    for n, tag in ((80, "small"), (400, "large")):
        _, recs, vectors = _embedded(user, n, tag, seed=n)
        anchor = n - 1  # the newest: the 50 rows read are the 50 before it
        found, queries = _search(user, recs[anchor], k=5)
        assert found.backend == "exact" and not found.exact and found.searched == 50
        assert [r.pk for r, _ in found.pairs] == _brute(recs, vectors, anchor, 5, among=list(range(n - 51, n - 1)))
        costs.append(queries)
    assert costs[0] == costs[1] <= 4, costs


def test_the_api_says_how_far_the_search_looked(api, settings):
    settings.SIMILAR_EXACT_MAX = 20
    _, recs, _ = _embedded(api.user, 30, "api")
    body = api.get(f"/api/v1/recordings/{recs[0].pk}/similar/?k=5").json()
    assert (body["backend"], body["exact"], body["searched"], body["count"]) == ("exact", False, 20, 5)
    settings.SIMILAR_EXACT_MAX = 1000
    body = api.get(f"/api/v1/recordings/{recs[0].pk}/similar/?k=5&page_size=2").json()
    assert (body["exact"], body["searched"], len(body["results"])) == (True, 29, 2) and body["next"]
    ranked = api.get(f"/api/v1/recordings/{recs[0].pk}/similar/?k=5&after=")  # a ranked list has no id order to page by
    assert ranked.status_code == 400 and ranked.json()["error"]["code"] == "invalid_params"


def test_the_api_projection_draws_a_bounded_sample_at_two_sizes(api, settings):
    settings.PROJECTION_MAX_POINTS = 25
    costs = []
    for n, tag in ((60, "p-small"), (300, "p-large")):
        job, _, _ = _embedded(api.user, n, tag, seed=n)
        with CaptureQueriesContext(connection) as ctx:
            body = api.get(f"/api/v1/jobs/{job.pk}/projection/?method=pca").json()
        assert body["total"] == n and body["sampled"] is True and 0 < len(body["points"]) <= 25
        costs.append(len(ctx.captured_queries))
    assert costs[0] == costs[1], costs
    job, _, _ = _embedded(api.user, 12, "p-few")
    body = api.get(f"/api/v1/jobs/{job.pk}/projection/?method=pca").json()
    assert body["total"] == 12 and body["sampled"] is False and len(body["points"]) == 12
