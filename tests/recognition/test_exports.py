"""Exports of job results: CSV and Parquet, per recording and per window, streamed; the CLI's columns."""
import csv
import io

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from django.core.management import call_command
from django.http import StreamingHttpResponse

from recognition import exports
from recognition.models import FeatureSet, Job, Prediction, RecordingResult
from tests.recognition.test_review import LABELS, _model, _recording, embedded, two_model_jobs  # noqa: F401  (fixtures)


def _get(api, url):
    response = api.get(url)
    assert response.status_code == 200, url
    assert isinstance(response, StreamingHttpResponse)
    return b"".join(response.streaming_content)


def _csv(api, url) -> list[dict]:
    return list(csv.DictReader(io.StringIO(_get(api, url).decode())))


def _parquet(api, url):
    return pq.read_table(io.BytesIO(_get(api, url)))


@pytest.fixture
def long_recording_job(user):
    """A classify job over one long recording (120 windows: 90 native, 30 non_native) and one failure."""
    mv = _model()
    long, broken = _recording(user, "long.wav", label="native", speaker="s1"), _recording(user, "broken.wav")
    long.metadata = {"corpus": "saa"}
    long.save()
    job = Job.objects.create(owner=user, kind="classify", model_version=mv, status="succeeded", total=2, done=1, failed=1)
    result = RecordingResult.objects.create(job=job, recording=long, recording_ref="long.wav", status="succeeded")
    windows = [{"start_s": 2.0 * i, "end_s": 2.0 * i + 4, "probabilities": {"native": 0.8, "non_native": 0.2} if i % 4
                else {"native": 0.3, "non_native": 0.7}} for i in range(120)]
    Prediction.objects.create(result=result, model_version=mv, checkpoint_sha256="0" * 64, outcome="ok", predicted_class="native",
                              confidence=0.675, probabilities={"native": 0.675, "non_native": 0.325},
                              probabilities_raw={"native": 0.7, "non_native": 0.3}, window_share={"native": 0.75, "non_native": 0.25},
                              agreement=0.75, windows=windows)
    RecordingResult.objects.create(job=job, recording=broken, recording_ref="broken.wav", status="failed", error_code="corrupt",
                                   error_message="cannot decode")
    return job


@pytest.mark.django_db
def test_classify_csv_has_raw_and_calibrated_probabilities_and_window_percentages(api, long_recording_job):
    job = long_recording_job
    rows = _csv(api, f"/api/v1/jobs/{job.pk}/results/?export=csv")
    assert list(rows[0]) == exports.TableSpec(labels=tuple(LABELS)).csv_header()
    ok, failed = rows
    assert (ok["filename"], ok["label"], ok["speaker"], ok["corpus"], ok["outcome"]) == ("long.wav", "native", "s1", "saa", "ok")
    assert float(ok["p_native"]) == 0.675 and float(ok["p_raw_native"]) == 0.7
    assert float(ok["window_pct_native"]) == 75.0 and float(ok["window_pct_non_native"]) == 25.0 and ok["n_windows"] == "120"
    assert ok["model"] == str(job.model_version)
    assert (failed["status"], failed["error_code"], failed["p_native"], failed["outcome"]) == ("failed", "corrupt", "", "")
    only_failed = _csv(api, f"/api/v1/jobs/{job.pk}/results/?export=csv&status=failed")
    assert [r["filename"] for r in only_failed] == ["broken.wav"]


@pytest.mark.django_db
def test_classify_parquet_and_per_window_rows(api, long_recording_job):
    job = long_recording_job
    response = api.get(f"/api/v1/jobs/{job.pk}/results/?export=parquet")
    assert int(response["Content-Length"]) == len(b"".join(response.streaming_content))
    assert response["Content-Disposition"] == f'attachment; filename="job-{job.pk}-results.parquet"'
    table = _parquet(api, f"/api/v1/jobs/{job.pk}/results/?export=parquet")
    assert table.num_rows == 2 and table.schema.names == exports.TableSpec(labels=tuple(LABELS)).columns()
    assert str(table.schema.field("p_native").type) == "double" and str(table.schema.field("recording").type) == "int64"
    assert table.column("window_pct_native").to_pylist() == [75.0, None]
    windows = _parquet(api, f"/api/v1/jobs/{job.pk}/results/?export=parquet&windows=1")
    assert windows.num_rows == 120 and windows.column("window").to_pylist() == list(range(120))
    assert windows.column("p_native").to_pylist()[:2] == [0.3, 0.8] and windows.column("end_s").to_pylist()[-1] == 242.0
    rows = _csv(api, f"/api/v1/jobs/{job.pk}/results/?export=csv&windows=1")
    assert len(rows) == 120 and rows[1]["start_s"] == "2.0" and rows[0]["filename"] == "long.wav"
    bad = api.get(f"/api/v1/jobs/{job.pk}/results/?export=xlsx")
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_params"


@pytest.mark.django_db
def test_embeddings_are_a_list_column_in_parquet_and_columns_in_csv(api, embedded):  # noqa: F811
    _, recs, job = embedded
    table = _parquet(api, f"/api/v1/jobs/{job.pk}/results/?export=parquet")
    field = table.schema.field("embedding").type
    assert pa.types.is_list(field) and field.value_type == pa.float32()
    vectors = np.asarray(table.column("embedding").to_pylist())
    assert vectors.shape == (8, 8) and np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    rows = _csv(api, f"/api/v1/jobs/{job.pk}/results/?export=csv")
    assert [f"e_{k}" for k in range(8)] == [c for c in rows[0] if c.startswith("e_")]
    assert float(rows[0]["e_0"]) == pytest.approx(vectors[0, 0], abs=1e-6) and rows[0]["embedding_dim"] == "8"


@pytest.mark.django_db
def test_features_are_one_tidy_row_per_recording(api, user):
    recs = [_recording(user, f"f{i}.wav") for i in range(2)]
    job = Job.objects.create(owner=user, kind="features", status="succeeded", total=2, done=2)
    for i, rec in enumerate(recs):
        result = RecordingResult.objects.create(job=job, recording=rec, recording_ref=rec.original_filename, status="succeeded")
        FeatureSet.objects.create(result=result, extractor="prosody", extractor_version="1", summary={"f0_mean_hz": 100.0 + i,
                                                                                                   "voiced_fraction": 0.5})
        FeatureSet.objects.create(result=result, extractor="egemaps", extractor_version="1",
                                  summary={"F0semitoneFrom27.5Hz_sma3nz_amean": 20.0 + i} if i == 0 else {})
    rows = _csv(api, f"/api/v1/jobs/{job.pk}/results/?export=csv")
    assert [c for c in rows[0] if "." in c] == ["egemaps.F0semitoneFrom27.5Hz_sma3nz_amean", "prosody.f0_mean_hz",
                                                "prosody.voiced_fraction"]
    assert [r["prosody.f0_mean_hz"] for r in rows] == ["100.0", "101.0"]
    assert rows[1]["egemaps.F0semitoneFrom27.5Hz_sma3nz_amean"] == ""  # a summary without the key: an empty cell
    table = _parquet(api, f"/api/v1/jobs/{job.pk}/results/?export=parquet")
    assert table.column("prosody.voiced_fraction").to_pylist() == [0.5, 0.5]


def _counting(n: int, counter: list):
    for i in range(n):
        counter[0] += 1
        yield exports.result_row(
            exports.TableSpec(labels=("a", "b")), exports.base_values(recording=i, filename=f"r{i}.wav"),
            prediction={"outcome": "ok", "predicted_class": "a", "confidence": 0.9, "probabilities": {"a": 0.9, "b": 0.1},
                        "probabilities_raw": {"a": 0.8, "b": 0.2}, "window_share": {"a": 1.0, "b": 0.0}, "n_windows": 3})


def test_csv_of_100k_rows_streams_in_chunks_as_rows_are_made():
    """What this proves: the writer pulls rows lazily and hands out bounded pieces, so the response
    never holds the table. It does not prove the database side (that is ``.iterator(chunk_size)``)."""
    spec = exports.TableSpec(labels=("a", "b"))
    made = [0]
    chunks = exports.csv_chunks(spec, _counting(100_000, made))
    header_and_first = next(chunks)
    assert made[0] == exports.CSV_CHUNK  # only the first piece's rows exist yet
    assert header_and_first.count("\n") == exports.CSV_CHUNK + 1
    sizes = [len(c) for c in chunks]
    assert made[0] == 100_000 and len(sizes) >= 100_000 // exports.CSV_CHUNK - 1 and max(sizes) < 200_000


def test_parquet_of_100k_rows_is_written_row_group_by_row_group_to_a_spooled_file():
    spec = exports.TableSpec(labels=("a", "b"))
    made = [0]
    spool = exports.parquet_spool(spec, _counting(100_000, made), row_group=10_000, max_memory=1 << 14)
    assert spool._rolled  # past 16 KiB it went to disk, not memory
    data = b"".join(exports.file_chunks(spool, block=1 << 16))
    meta = pq.ParquetFile(io.BytesIO(data)).metadata
    assert (meta.num_rows, meta.num_row_groups) == (100_000, 10)
    assert pq.read_table(io.BytesIO(data)).column("recording").to_pylist()[-1] == 99_999


def test_empty_tables_are_valid_files():
    spec = exports.TableSpec(labels=("a",))
    assert list(csv.reader(io.StringIO("".join(exports.csv_chunks(spec, []))))) == [spec.csv_header()]
    assert pq.read_table(exports.parquet_spool(spec, [])).num_rows == 0


@pytest.mark.django_db
@pytest.mark.parametrize("suffix", ["csv", "parquet"])
def test_cli_writes_the_same_columns_as_the_api(tmp_path, monkeypatch, suffix):
    """manage.py classify builds its rows with recognition.exports: same header as the API's export."""
    from workers import runtime
    from workers.pipeline import audio, inference

    mv = _model()
    monkeypatch.setattr("recognition.services.models.model_resolve", lambda model, task: mv)
    from types import SimpleNamespace

    loaded = SimpleNamespace(spec=SimpleNamespace(labels=tuple(LABELS), extra={}))
    monkeypatch.setattr(runtime, "load_model", lambda mv: loaded)
    monkeypatch.setattr(runtime, "window_params", lambda loaded, params=None: {})
    monkeypatch.setattr(audio, "load_audio", lambda path, sr, max_duration_s=None: type("A", (), {"samples": np.zeros(16000)})())
    monkeypatch.setattr(audio, "validate_audio", lambda a, **kw: None)
    outcome = {"outcome": "uncertain", "predicted_class": "native", "confidence": 0.55,
               "probabilities": {"native": 0.55, "non_native": 0.45}, "probabilities_raw": {"native": 0.6, "non_native": 0.4},
               "window_share": {"native": 0.5, "non_native": 0.5}, "agreement": 0.5, "n_windows": 2,
               "windows": [{"start_s": 0.0, "end_s": 4.0, "probabilities": {"native": 0.6, "non_native": 0.4}}] * 2}
    typed = inference.ClassifyOutcome(**outcome)
    monkeypatch.setattr(inference, "classify_batch", lambda loaded, signals, **kw: [typed] * len(signals))
    out = tmp_path / f"x.{suffix}"
    call_command("classify", "a.wav", "b.wav", "--out", str(out))
    spec = exports.TableSpec(labels=tuple(LABELS))
    if suffix == "csv":
        rows = list(csv.DictReader(out.open()))
        assert list(rows[0]) == spec.csv_header()
        assert rows[0]["filename"] == "a.wav" and rows[0]["window_pct_native"] == "50.0" and rows[0]["p_raw_native"] == "0.6"
    else:
        table = pq.read_table(out)
        assert table.schema.names == spec.columns() and table.column("outcome").to_pylist() == ["uncertain"] * 2
    call_command("classify", "a.wav", "--out", str(tmp_path / f"w.{suffix}"), "--windows")
    n = len(list(csv.DictReader((tmp_path / "w.csv").open()))) if suffix == "csv" else pq.read_table(tmp_path / "w.parquet").num_rows
    assert n == 2


@pytest.mark.django_db
def test_an_egemaps_features_job_exports_one_row_per_recording_with_88_columns(api, monkeypatch):
    """End to end in-process: the API submits a features job naming egemaps, the chunk task runs
    eagerly (no broker), progress counts per recording, the export flattens the 88 functionals."""
    from tests.factories import audio_bytes, pulse_train, upload
    from workers import tasks

    monkeypatch.setattr("recognition.services.jobs._enqueue_chunks", lambda job, ids: None)
    monkeypatch.setattr(tasks, "close_old_connections", lambda: None)  # the test's transaction holds the connection
    files = [upload(f"v{i}.wav", audio_bytes(pulse_train(f0=120 + 40 * i, seed=i))) for i in range(2)]
    batch = api.post("/api/v1/batches/", {"name": "gemaps", "files": files}, format="multipart").json()
    job = api.post("/api/v1/jobs/", {"kind": "features", "batch": batch["id"], "params": {"extractors": ["egemaps"]}},
                   format="json").json()
    tasks.run_features_chunk.apply((Job.objects.get(pk=job["id"]).chunks.get().pk,))
    assert api.get(f"/api/v1/jobs/{job['id']}/").json()["progress"] == {"total": 2, "done": 2, "failed": 0}
    rows = _csv(api, f"/api/v1/jobs/{job['id']}/results/?export=csv")
    columns = [c for c in rows[0] if c.startswith("egemaps.")]
    assert len(columns) == 88 and len(rows) == 2
    f0 = [float(r["egemaps.F0semitoneFrom27.5Hz_sma3nz_amean"]) for r in rows]
    assert f0 == pytest.approx([12 * np.log2(f / 27.5) for f in (120, 160)], abs=0.5)


@pytest.mark.django_db
def test_job_rows_are_read_from_the_database_in_chunks(user):
    """The rows come through ``.iterator(chunk_size)``: the feature sets are fetched once per chunk of
    results, and nothing is read before the response asks for rows."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from recognition import selectors

    job = Job.objects.create(owner=user, kind="features", status="succeeded", total=30, done=30)
    for i in range(30):
        rec = _recording(user, f"k{i}.wav")
        result = RecordingResult.objects.create(job=job, recording=rec, recording_ref=rec.original_filename, status="succeeded")
        FeatureSet.objects.create(result=result, extractor="prosody", extractor_version="1", summary={"f0_mean_hz": float(i)})
    spec, rows = exports.job_table(job, selectors.job_results(job=job), chunk_size=10)
    with CaptureQueriesContext(connection) as queries:
        first = next(rows)
        after_first = len(queries)
        rest = list(rows)
    assert first["prosody.f0_mean_hz"] == 0.0 and [r["prosody.f0_mean_hz"] for r in rest] == [float(i) for i in range(1, 30)]
    prefetches = [q for q in queries.captured_queries if 'FROM "recognition_featureset"' in q["sql"]]
    assert len(prefetches) == 3 and after_first <= 2
