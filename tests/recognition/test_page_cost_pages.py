"""Issue 25, flat per-page cost: the admin job and recording pages, the recording change list with
its filters and the API lists run the same number of queries for a batch of 30 and of 300
recordings (rows made by bench.scale_data with bulk_create)."""
import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from bench.scale_data import build
from recognition.models import Recording

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff(logged_in_superuser):
    return logged_in_superuser


def _get(client, url: str) -> tuple[int, str]:
    with CaptureQueriesContext(connection) as ctx:
        response = client.get(url)
    assert response.status_code == 200, (url, response.status_code)
    return len(ctx.captured_queries), response.content.decode()


@pytest.mark.parametrize("kind", ["classify", "embed", "language", "transcribe", "features"])
def test_the_admin_job_page_costs_the_same_queries_for_30_and_300_recordings(client, staff, kind):
    small = build(owner=staff, n=30, kinds=(kind,))["jobs"][kind]
    large = build(owner=staff, n=300, kinds=(kind,))["jobs"][kind]
    n_small, _ = _get(client, f"/admin/recognition/job/{small.pk}/change/")
    n_large, html = _get(client, f"/admin/recognition/job/{large.pk}/change/?page=2")
    assert n_large == n_small, (kind, n_small, n_large)
    if kind == "classify":  # 300 rows: every 4th wrong, every 7th uncertain -> 75 + 43 - 11 = 107 to listen to
        assert "wrong or unsure (107)" in html and "51-100 of 107" in html and "page 2 of 3" in html
        assert html.count('<span class="pill uncertain">') + html.count('<span class="pill ok">') == 50
    if kind in ("language", "transcribe", "features"):
        assert "recordings 26-50 of 300" in html


def test_the_wrong_or_unsure_filter_agrees_with_reading_each_prediction(staff):
    """The database filter picks the rows the per-row rule (review._truth) calls wrong or unsure."""
    from recognition import job_pages, review

    job = build(owner=staff, n=60, kinds=("classify",))["jobs"]["classify"]
    rows = review.job_wrong_or_unsure(job=job)
    expected = {i for i in range(60) if i % 4 == 0 or i % 7 == 0}
    assert sorted(int(r["filename"][-10:-4]) for r in rows) == sorted(expected)
    assert all(("wrong" in r["reasons"]) == (int(r["filename"][-10:-4]) % 4 == 0) for r in rows)
    job.params = {"label_map": {"native": "non_native", "non_native": "native"}}  # the truth flips: right becomes wrong
    flipped = {i for i in range(60) if i % 4 != 0 or i % 7 == 0}
    page = job_pages.wrong_or_unsure_page(job=job, page=1, per_page=100)
    assert page["count"] == len(flipped) and sorted(int(r["filename"][-10:-4]) for r in page["rows"]) == sorted(flipped)


def test_the_projection_picture_reads_a_bounded_sample(staff):
    from recognition import review

    job = build(owner=staff, n=300, kinds=("embed",))["jobs"]["embed"]
    projection = review.job_projection(job=job, limit=100)
    assert projection["total"] == 300 and 90 <= len(projection["points"]) <= 100
    assert len(review.job_projection(job=job)["points"]) == 300  # the API's projection: every vector


def test_the_admin_recording_page_costs_the_same_queries_in_batches_of_30_and_300(client, staff, monkeypatch):
    from recognition import review, vectorindex

    monkeypatch.setattr(review, "SIMILAR_SCAN_LIMIT", 100)
    vectorindex.backend()  # whether pgvector is there is asked once per process
    counts = []
    for n in (30, 300):
        made = build(owner=staff, n=n, kinds=("classify", "embed"))
        if n == 300:  # every recording a member (300 rows, over the 200 choices read), the last one's label unique
            from recognition.models import BatchMember

            batch = made["batch"]
            BatchMember.objects.bulk_create([BatchMember(batch=batch, recording_id=pk, label="native")
                                             for pk in batch.recordings.exclude(memberships__batch=batch).values_list("pk", flat=True)])
            batch.members.filter(pk=batch.members.order_by("id").last().pk).update(label="rare")
        rec = made["recordings"][1]
        count, html = _get(client, f"/admin/recognition/recording/{rec}/change/?batch={made['batch'].pk}")
        counts.append(count)
        assert f"2 of {n} in" in html
        assert 'value="rare"' in html or n == 30  # a label given only to the batch's last member is offered
        capped = "Nearest among the newest 100 embeddings only" in html
        assert capped == (n == 300), n
    assert counts[0] == counts[1], counts


def test_the_recording_change_list_and_its_filters_cost_the_same_queries_at_30_and_300(client, staff):
    urls = ["", "?predicted=native", "?outcome=uncertain", "?confidence=low", "?label=native", "?format=wav&sample_rate=16000"]
    build(owner=staff, n=30, kinds=("classify",))
    small = [_get(client, f"/admin/recognition/recording/{q}")[0] for q in urls]
    build(owner=staff, n=270, kinds=("classify",))  # 300 recordings in all
    large, pages = zip(*(_get(client, f"/admin/recognition/recording/{q}") for q in urls), strict=True)
    assert list(large) == small, (small, large)
    assert "native" in pages[0] and 'href="?predicted=non_native"' in pages[0]  # classes from the model, labels by skip scan
    uncertain = Recording.objects.filter(results__prediction__outcome="uncertain").distinct().count()
    assert uncertain == 5 + 39 and f"{uncertain} recordings" in pages[2]


def test_the_admin_job_and_batch_lists_cost_the_same_queries_for_small_and_large_batches(client, staff):
    build(owner=staff, n=30)
    small = [_get(client, url)[0] for url in ("/admin/recognition/job/", "/admin/recognition/batch/")]
    build(owner=staff, n=300)
    large = [_get(client, url)[0] for url in ("/admin/recognition/job/", "/admin/recognition/batch/")]
    assert large == small, (small, large)


@pytest.mark.parametrize("url", ["/api/v1/jobs/", "/api/v1/batches/", "/api/v1/recordings/?page_size=50",
                                 "/api/v1/recordings/?batch={batch}&page_size=50", "/api/v1/models/"])
def test_api_lists_cost_the_same_queries_for_small_and_large_batches(api, url):
    def count(n: int) -> tuple[int, dict]:
        made = build(owner=api.user, n=n)
        api.get(url.format(batch=made["batch"].pk))  # the user's permissions are read once, then cached on it
        with CaptureQueriesContext(connection) as ctx:
            response = api.get(url.format(batch=made["batch"].pk))
        assert response.status_code == 200
        return len(ctx.captured_queries), response.json()

    small, _ = count(30)
    large, body = count(300)
    assert large == small, (url, small, large)
    if url == "/api/v1/batches/":
        assert sorted(b["recording_count"] for b in body["results"]) == [30, 300]


def test_the_train_page_counts_labels_in_the_database_with_reviews_winning(client, staff):
    """The train page's label counts: the same queries at 30 and 300 recordings, and the newest review
    of a recording (in the batch or without one) wins as services.label_corrections says."""
    from recognition import batch_pages
    from recognition.models import LabelReview

    counts = []
    for n in (30, 300):
        made = build(owner=staff, n=n, kinds=())
        batch = made["batch"]
        first, second = (Recording.objects.get(pk=pk) for pk in made["recordings"][:2])  # native, non_native
        LabelReview.objects.create(recording=first, batch=batch, original_label="native", new_label="accented", reviewer=staff)
        LabelReview.objects.create(recording=second, batch=None, original_label="non_native", new_label="native", reviewer=staff)
        labels, total = batch_pages.batch_train_labels(batch=batch)
        assert total == n and labels == {"native": n // 2, "non_native": n // 2 - 1, "accented": 1}
        count, html = _get(client, f"/admin/recognition/batch/{batch.pk}/train/")
        counts.append(count)
        assert "accented" in html
    assert counts[0] == counts[1], counts
