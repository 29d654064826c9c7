"""The admin job page of language, transcribe and features jobs lists their results recording by recording,
a page at a time; a language job's windows export has one row per window."""
from __future__ import annotations

import csv
import io
import re

import pyarrow.parquet as pq
import pytest

from recognition import job_results, services
from recognition.models import FeatureSet, Job, RecordingResult
from tests.recognition.test_whisper_job_api import ENGINE, _language_outcome, _recording, _transcript

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff(client, django_user_model):
    boss = django_user_model.objects.create_superuser("boss", "boss@example.com", "pw-123456789")
    client.force_login(boss)
    return client


def _page(client, job: Job, page: int | None = None) -> str:
    response = client.get(f"/admin/recognition/job/{job.pk}/change/" + (f"?page={page}" if page else ""))
    assert response.status_code == 200
    return response.content.decode()


def _rows(html: str) -> int:
    return html.count('class="result-row"')


def test_language_job_page_shows_each_recording_with_its_bar_a_page_at_a_time(staff, user) -> None:
    recs = [_recording(user, f"r{i:02d}.wav") for i in range(job_results.PAGE_SIZE + 3)]
    job = services.job_submit(owner=user, kind="language", recordings=recs, enqueue=False)
    for i, rec in enumerate(recs):
        outcome = _language_outcome()
        if i == 1:
            outcome.update(outcome="uncertain", language="th", probability=0.31, scored="whole", min_probability=0.5)
        services.result_store_language(job=job, recording=rec, outcome=outcome, model=ENGINE, timings={})
    first = _page(staff, job)
    assert _rows(first) == job_results.PAGE_SIZE and f"Results by recording ({len(recs)})" in first
    assert "r00.wav" in first and "r27.wav" not in first
    assert 'class="langbar"' in first and 'data-language="es"' in first and "en 50.0 %" in first
    assert '<span class="pill uncertain">uncertain</span>' in first and '<td class="language">th</td>' in first
    assert 'href="?page=2#job-results"' in first
    second = _page(staff, job, 2)
    assert _rows(second) == 3 and "r27.wav" in second and "r00.wav" not in second
    assert _rows(_page(staff, job, 99)) == 3  # past the end: the last page


def test_transcribe_job_page_marks_weak_words(staff, user) -> None:
    rec = _recording(user)
    job = services.job_submit(owner=user, kind="transcribe", recordings=[rec], enqueue=False)
    services.result_store_transcript(job=job, recording=rec, transcript=_transcript(), model=ENGINE, timings={})
    html = _page(staff, job)
    assert _rows(html) == 1
    words = re.findall(r'<span class="word( low)?"[^>]*>([^<]+)</span>', html)
    assert words == [("", "Please"), (" low", "call"), ("", "Stella.")]  # "call" at 0.3


def test_features_job_page_shows_the_summary(staff, user) -> None:
    rec = _recording(user)
    job = Job.objects.create(owner=user, kind="features", status="succeeded", total=1, done=1)
    result = RecordingResult.objects.create(job=job, recording=rec, recording_ref=rec.original_filename, status="succeeded")
    summary = {f"k{i}": float(i) / 3 for i in range(job_results.FEATURE_VALUES_SHOWN + 2)}
    FeatureSet.objects.create(result=result, extractor="prosody", extractor_version="2", summary=summary)
    failed = _recording(user, "bad.wav")
    RecordingResult.objects.create(job=job, recording=failed, recording_ref="bad.wav", status="failed", error_code="silent",
                                   error_message="digital silence")
    html = _page(staff, job)
    assert _rows(html) == 2 and "<strong>prosody</strong>" in html and "k1 0.3333" in html
    assert "2 more</summary>" in html and "silent" in html


def test_other_kinds_have_no_results_table() -> None:
    assert job_results.job_results_page(job=Job(kind="classify")) is None


def test_language_windows_export_has_one_row_per_window(api, user) -> None:
    recs = [_recording(user, "a.wav"), _recording(user, "b.wav")]
    job = services.job_submit(owner=user, kind="language", recordings=recs, enqueue=False)
    for rec in recs:
        services.result_store_language(job=job, recording=rec, outcome=_language_outcome(), model=ENGINE, timings={})
    body = b"".join(api.get(f"/api/v1/jobs/{job.pk}/results/?export=csv&windows=1").streaming_content).decode()
    rows = list(csv.DictReader(io.StringIO(body)))
    assert len(rows) == 6  # three windows each
    assert list(rows[0])[-4:] == ["speech", "language", "probability", "top"]
    assert [(r["filename"], r["window"], r["speech"], r["language"]) for r in rows[:3]] == [
        ("a.wav", "0", "True", "en"), ("a.wav", "1", "False", ""), ("a.wav", "2", "True", "es")]
    assert rows[0]["top"] == "en:0.900 es:0.050" and float(rows[2]["probability"]) == 0.8 and rows[2]["end_s"] == "12.0"
    table = pq.read_table(io.BytesIO(b"".join(api.get(f"/api/v1/jobs/{job.pk}/results/?export=parquet&windows=1").streaming_content)))
    assert table.num_rows == 6 and table.column("speech").to_pylist() == [True, False, True] * 2
    assert table.column("language").to_pylist()[:3] == ["en", None, "es"]


def test_transcribe_windows_export_has_one_row_per_segment(api, user) -> None:
    rec = _recording(user, "a.wav")
    job = services.job_submit(owner=user, kind="transcribe", recordings=[rec], enqueue=False)
    transcript = _transcript()
    segment = {**transcript["segments"][0], "language": "en"}
    transcript["segments"] = [segment, {**segment, "start_s": 3.0, "end_s": 4.5, "text": "Hola.", "language": "es", "words": []}]
    services.result_store_transcript(job=job, recording=rec, transcript=transcript, model=ENGINE, timings={})
    rows = list(csv.DictReader(io.StringIO(b"".join(
        api.get(f"/api/v1/jobs/{job.pk}/results/?export=csv&windows=1").streaming_content).decode())))
    assert [(r["window"], r["language"], r["text"], r["end_s"]) for r in rows] == [
        ("0", "en", segment["text"], str(segment["end_s"])), ("1", "es", "Hola.", "4.5")]
    assert list(rows[0])[-3:] == ["language", "text", "avg_logprob"]
