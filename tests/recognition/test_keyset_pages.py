"""Deep pages cost what the first one does (issue 25): ``?after=<id>`` pages every list of rows by id,
through the index from where the last page ended, with no ``OFFSET`` and no count."""
import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from recognition.models import Recording
from tests.recognition.test_page_cost import _job

pytestmark = pytest.mark.django_db


def _get(api, url):
    with CaptureQueriesContext(connection) as ctx:
        response = api.get(url)
    assert response.status_code == 200, response.content
    return response.json(), [q["sql"] for q in ctx.captured_queries]


def test_a_deep_results_page_costs_the_queries_of_the_first(api):
    job = _job(api.user, 600)
    ids = list(job.results.order_by("id").values_list("id", flat=True))
    first, first_sql = _get(api, f"/api/v1/jobs/{job.pk}/results/?page_size=50&after=")
    deep, deep_sql = _get(api, f"/api/v1/jobs/{job.pk}/results/?page_size=50&after={ids[549]}")
    assert [r["id"] for r in first["results"]] == ids[:50] and [r["id"] for r in deep["results"]] == ids[550:600]
    assert len(deep_sql) == len(first_sql) and "count" not in deep
    assert not any("OFFSET" in sql.upper() or "COUNT(" in sql.upper() for sql in deep_sql), deep_sql
    assert deep["next"] is None and f"after={ids[49]}" in first["next"]
    # page numbers still work as before, with their count
    numbered = api.get(f"/api/v1/jobs/{job.pk}/results/?page_size=50&page=12").json()
    assert numbered["count"] == 600 and [r["id"] for r in numbered["results"]] == ids[550:600]


def test_following_next_visits_every_result_once_with_the_filters(api):
    job = _job(api.user, 130)
    job.results.filter(id__in=job.results.order_by("id").values("id")[:40]).update(status="failed")
    seen, url, pages = [], f"/api/v1/jobs/{job.pk}/results/?status=succeeded&page_size=25&after=", 0
    while url:
        body = api.get(url).json()
        seen += [r["id"] for r in body["results"]]
        url, pages = body["next"], pages + 1
    assert seen == list(job.results.filter(status="succeeded").order_by("id").values_list("id", flat=True))
    assert len(seen) == 90 and pages == 4


def test_newest_first_lists_page_down_by_id(api):
    Recording.objects.bulk_create([
        Recording(owner=api.user, file=f"recordings/k/{i}.wav", original_filename=f"{i}.wav", sha256=f"{i:064d}",
                  size_bytes=1, format="wav", duration_s=1.0) for i in range(7)])
    ids = sorted(Recording.objects.filter(owner=api.user).values_list("id", flat=True), reverse=True)
    first = api.get("/api/v1/recordings/?page_size=3&after=").json()
    second = api.get(first["next"]).json()
    third = api.get(second["next"]).json()
    assert [r["id"] for r in first["results"] + second["results"] + third["results"]] == ids and third["next"] is None


def test_a_bad_after_is_a_400_with_a_code(api):
    job = _job(api.user, 5)
    bad = api.get(f"/api/v1/jobs/{job.pk}/results/?after=x")
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_params"
