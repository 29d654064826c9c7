"""Exports: a job's results as one table, written as CSV or Parquet without holding it in memory.

Two halves:

- pure table code (no ORM): :class:`TableSpec` fixes the columns from what a job produced (class
  labels, each extractor's summary keys, the embedding size); :func:`result_row` and
  :func:`window_rows` turn one result (plain mappings) into rows; :func:`csv_chunks` and
  :func:`parquet_spool` write any iterable of rows. ``manage.py classify`` builds its rows with
  the same functions, so a file from the shell and one from the API have the same columns.
- :func:`job_table`: the spec and a lazy row iterator for one job, reading the rows with
  ``.iterator(chunk_size=...)`` so 100,000 results never sit in memory at once.

Columns, per recording: ``recording, filename, label, speaker, corpus, status, error_code,
error_message``, then for classify jobs ``model, outcome, predicted_class, confidence, agreement,
speech_fraction, n_windows, p_<class>`` (calibrated), ``p_raw_<class>`` (before calibration),
``window_pct_<class>`` (percentage of the recording's windows whose top class it is); for
features jobs ``<extractor>.<key>`` for every summary value; for embed jobs ``model,
embedding_dim, embedding`` (Parquet: a list<float32> column; CSV: ``e_0 .. e_<dim-1>``). With
``windows=True`` there is one row per window instead: the first five columns, ``window, start_s,
end_s`` and the window's ``p_<class>`` (classify), ``embedding`` (embed with ``per_window``) or ``speech, language,
probability, top`` (language jobs).
"""
from __future__ import annotations

import csv
import io
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import IO, Any

from django.db.models import Func, IntegerField

BASE_COLUMNS = ("recording", "filename", "label", "speaker", "corpus", "status", "error_code", "error_message")
WINDOW_BASE = ("recording", "filename", "label", "speaker", "corpus", "window", "start_s", "end_s")
_INT_COLUMNS = {"recording", "n_windows", "window", "embedding_dim"}
_FLOAT_COLUMNS = {"confidence", "agreement", "speech_fraction", "start_s", "end_s", "probability"}
_BOOL_COLUMNS = {"speech"}
_FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
#: Rows per Parquet row group and per CSV chunk handed to the response.
ROW_GROUP = 5000
CSV_CHUNK = 500


#: columns of the Whisper job kinds (``shares``: ``"en:0.750 es:0.250"``, the share of speech windows per language)
WHISPER_COLUMNS = {"language": ["language", "language_probability", "language_outcome", "shares"],
                   "transcribe": ["language", "language_probability", "text"]}
#: a language job's window rows (``top``: ``"en:0.970 fr:0.010"``, the window's most likely languages)
LANGUAGE_WINDOW_COLUMNS = ["speech", "language", "probability", "top"]
#: a transcribe job's "window" rows are its segments (each in its own language)
TRANSCRIBE_WINDOW_COLUMNS = ["language", "text", "avg_logprob"]


@dataclass(frozen=True)
class TableSpec:
    """What a job's table holds: fixed before the first row is written, so rows can stream.

    ``labels``: the classify model's classes; ``features``: ``((extractor, (key, ...)), ...)``;
    ``embedding_dim``: the embed model's vector size; ``windows``: one row per window.
    """

    labels: tuple[str, ...] = ()
    features: tuple[tuple[str, tuple[str, ...]], ...] = ()
    embedding_dim: int | None = None
    windows: bool = False
    whisper: str = ""  # "language" | "transcribe": that job kind's columns


    def columns(self) -> list[str]:
        """Column names; ``embedding`` is one list column (CSV expands it, see :meth:`csv_header`)."""
        if self.windows:
            cols = list(WINDOW_BASE) + [f"p_{c}" for c in self.labels]
            cols += {"language": LANGUAGE_WINDOW_COLUMNS, "transcribe": TRANSCRIBE_WINDOW_COLUMNS}.get(self.whisper, [])
            return cols + (["embedding"] if self.embedding_dim else [])
        cols = list(BASE_COLUMNS)
        if self.labels:
            cols += ["model", "outcome", "predicted_class", "confidence", "agreement", "speech_fraction", "n_windows"]
            cols += [f"p_{c}" for c in self.labels] + [f"p_raw_{c}" for c in self.labels]
            cols += [f"window_pct_{c}" for c in self.labels]
        for extractor, keys in self.features:
            cols += [f"{extractor}.{key}" for key in keys]
        if self.embedding_dim:
            cols += ["model", "embedding_dim", "embedding"] if "model" not in cols else ["embedding_dim", "embedding"]
        cols += WHISPER_COLUMNS.get(self.whisper, [])
        return cols

    def csv_header(self) -> list[str]:
        header = self.columns()
        if "embedding" in header:
            i = header.index("embedding")
            header[i : i + 1] = [f"e_{k}" for k in range(self.embedding_dim or 0)]
        return header

    def arrow_schema(self):
        import pyarrow as pa

        def kind(name: str):
            if name == "embedding":
                return pa.list_(pa.float32())
            if name in _INT_COLUMNS:
                return pa.int64()
            if name in _BOOL_COLUMNS:
                return pa.bool_()
            if (name in _FLOAT_COLUMNS or name.startswith(("p_", "window_pct_")) or "." in name
                    or name == "language_probability"):
                return pa.float64()
            return pa.string()

        return pa.schema([(name, kind(name)) for name in self.columns()])


def base_values(*, recording: int | None, filename: str, label: str = "", speaker: str = "", corpus: str = "",
                status: str = "succeeded", error_code: str = "", error_message: str = "") -> dict[str, Any]:
    """The columns every row starts with."""
    return {"recording": recording, "filename": filename, "label": label, "speaker": speaker, "corpus": corpus,
            "status": status, "error_code": error_code, "error_message": error_message}


def _share_pct(share: Mapping[str, float] | None, label: str) -> float | None:
    return None if share is None else round(100.0 * float(share.get(label, 0.0)), 4)


def result_row(spec: TableSpec, base: Mapping[str, Any], *, model: str = "", prediction: Mapping[str, Any] | None = None,
               features: Mapping[str, Mapping[str, Any]] | None = None, embedding: Sequence[float] | None = None) -> dict:
    """One recording's row. ``prediction`` has a classify outcome's keys (``outcome``,
    ``probabilities``, ``probabilities_raw``, ``window_share``, ``windows`` or ``n_windows``, ...),
    ``features`` maps extractor to its summary; absent parts leave their columns empty."""
    row = {name: None for name in spec.columns()}
    row.update({k: base.get(k) for k in BASE_COLUMNS})
    if spec.labels and prediction is not None:
        probs = prediction.get("probabilities") or {}
        raw = prediction.get("probabilities_raw") or {}
        share = prediction.get("window_share")
        n_windows = prediction.get("n_windows")
        row.update({
            "model": model, "outcome": prediction.get("outcome"), "predicted_class": prediction.get("predicted_class") or None,
            "confidence": prediction.get("confidence"), "agreement": prediction.get("agreement"),
            "speech_fraction": prediction.get("speech_fraction"),
            "n_windows": n_windows if n_windows is not None else len(prediction.get("windows") or []),
        })
        for c in spec.labels:
            row[f"p_{c}"] = probs.get(c) if probs else None
            row[f"p_raw_{c}"] = raw.get(c) if raw else None
            row[f"window_pct_{c}"] = _share_pct(share, c) if share else None
    for extractor, keys in spec.features:
        summary = (features or {}).get(extractor) or {}
        for key in keys:
            row[f"{extractor}.{key}"] = summary.get(key)
    if spec.embedding_dim and embedding is not None:
        row.update({"model": model, "embedding_dim": len(embedding), "embedding": [float(v) for v in embedding]})
    return row


def window_rows(spec: TableSpec, base: Mapping[str, Any], windows: Iterable[Mapping[str, Any]]) -> Iterator[dict]:
    """One row per window (``{start_s, end_s, probabilities}``, ``{start_s, end_s, vector}``, a language
    job's ``{start_s, end_s, speech, language, probability, top}`` or a transcribe job's segment
    ``{start_s, end_s, language, text, avg_logprob}``)."""
    for i, w in enumerate(windows):
        row = {k: base.get(k) for k in WINDOW_BASE[:5]}
        row.update({"window": i, "start_s": w.get("start_s"), "end_s": w.get("end_s")})
        probs = w.get("probabilities") or {}
        for c in spec.labels:
            row[f"p_{c}"] = probs.get(c)
        if spec.embedding_dim:
            row["embedding"] = [float(v) for v in w["vector"]] if w.get("vector") is not None else None
        if spec.whisper == "language":
            row.update(speech=bool(w.get("speech", True)), language=w.get("language") or None, probability=w.get("probability"),
                       top=" ".join(f"{code}:{p:.3f}" for code, p in (w.get("top") or {}).items()) or None)
        if spec.whisper == "transcribe":
            row.update(language=w.get("language") or None, text=w.get("text"), avg_logprob=w.get("avg_logprob"))
        yield row


# --- writers -----------------------------------------------------------------------------------


def _csv_cell(value: Any) -> str:
    """A cell as text; strings that a spreadsheet would run as a formula are neutralised."""
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)
    text = str(value)
    return "'" + text if text.startswith(_FORMULA_PREFIXES) else text


def csv_chunks(spec: TableSpec, rows: Iterable[Mapping[str, Any]], chunk_rows: int = CSV_CHUNK) -> Iterator[str]:
    """The CSV text in pieces of ``chunk_rows`` rows (header first): for a StreamingHttpResponse."""
    columns = spec.columns()
    dim = spec.embedding_dim or 0
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(spec.csv_header())
    pending = 0
    for row in rows:
        cells = []
        for name in columns:
            if name == "embedding":
                vector = row.get("embedding")
                cells += [repr(float(v)) for v in vector] if vector is not None else [""] * dim
            else:
                cells.append(_csv_cell(row.get(name)))
        writer.writerow(cells)
        pending += 1
        if pending >= chunk_rows:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
            pending = 0
    yield buffer.getvalue()


def parquet_spool(spec: TableSpec, rows: Iterable[Mapping[str, Any]], row_group: int = ROW_GROUP,
                  max_memory: int = 8 << 20) -> IO[bytes]:
    """Write ``rows`` as Parquet, one row group per ``row_group`` rows, into a spooled temporary file
    (in memory up to ``max_memory`` bytes, then on disk); returned rewound, for streaming."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = spec.arrow_schema()
    names = schema.names
    spool = tempfile.SpooledTemporaryFile(max_size=max_memory)
    with pq.ParquetWriter(spool, schema, compression="zstd") as writer:
        batch: list[Mapping[str, Any]] = []

        def flush() -> None:
            table = pa.Table.from_pydict({n: [r.get(n) for r in batch] for n in names}, schema=schema)
            writer.write_table(table)
            batch.clear()

        for row in rows:
            batch.append(row)
            if len(batch) >= row_group:
                flush()
        if batch:
            flush()
    spool.seek(0)
    return spool


def file_chunks(fh: IO[bytes], block: int = 1 << 20) -> Iterator[bytes]:
    """Read ``fh`` in blocks and close it at the end (or when the client goes away)."""
    try:
        yield from iter(lambda: fh.read(block), b"")
    finally:
        fh.close()


# --- a job's table (reads rows) -------------------------------------------------------------------


def job_table(job, results, *, windows: bool = False, chunk_size: int = 2000,
              batch_labels: Mapping[int, tuple[str, str]] | None = None) -> tuple[TableSpec, Iterator[dict]]:
    """The spec and a lazy iterator of rows for ``results`` (a queryset of the job's results).

    Feature columns come from the first stored summary of each extractor in the job (an
    extractor's summary keys are fixed by its version and configuration, which one job holds
    constant); a key some other summary lacks is an empty cell. ``batch_labels``: ``{recording id: (label,
    speaker)}`` as the job's batch gave them (``services.batch_labels``); the recording's own otherwise.
    """
    from recognition import jobkinds
    from recognition.models import Embedding, FeatureSet

    held = jobkinds.stores(job.kind)
    labels = tuple(job.model_version.labels) if held == "prediction" and job.model_version_id else ()
    features: tuple = ()
    dim = None
    if held == "features" and not windows:
        sets = FeatureSet.objects.filter(result__job=job)
        names = sorted(set(sets.values_list("extractor", flat=True).distinct()))
        features = tuple((name, tuple(sets.filter(extractor=name).values_list("summary", flat=True).first() or {}))
                         for name in names)
    if held == "embedding":
        dim = Embedding.objects.filter(result__job=job).values_list("dim", flat=True).first()
    whisper = job.kind if job.kind in WHISPER_COLUMNS else ""
    if whisper:
        results = results.select_related("language_id" if whisper == "language" else "transcription")
    spec = TableSpec(labels=labels, features=features, embedding_dim=dim, windows=windows, whisper=whisper)
    model = str(job.model_version) if job.model_version_id else ""
    if windows:
        chunk_size = max(1, chunk_size // 20)  # each result brings all its windows
    else:  # a long recording's windows (thousands) are only counted, never loaded
        results = results.defer("prediction__windows", "embedding__windows").annotate(
            n_windows_stored=JSONArrayLength("prediction__windows"))
    return spec, _job_rows(spec, results, model, chunk_size, batch_labels or {})


class JSONArrayLength(Func):
    """Length of a JSON array column, computed by the database (PostgreSQL jsonb, SQLite JSON1)."""

    function = "json_array_length"
    output_field = IntegerField()

    def as_postgresql(self, compiler, connection, **extra):
        return self.as_sql(compiler, connection, function="jsonb_array_length", **extra)


def _job_rows(spec: TableSpec, results, model: str, chunk_size: int,
              labels: Mapping[int, tuple[str, str]]) -> Iterator[dict]:
    for r in results.iterator(chunk_size=chunk_size):
        rec = r.recording
        label, speaker = labels.get(rec.pk, (rec.label, rec.speaker)) if rec else ("", "")
        base = base_values(
            recording=r.recording_id or r.recording_key, filename=r.recording_ref or (rec.original_filename if rec else ""),
            label=label, speaker=speaker,
            corpus=str((rec.metadata or {}).get("corpus", "")) if rec else "",
            status=r.status, error_code=r.error_code, error_message=r.error_message,
        )
        p = getattr(r, "prediction", None)
        e = getattr(r, "embedding", None)
        if spec.windows:
            lang = getattr(r, "language_id", None) if spec.whisper == "language" else None
            said = getattr(r, "transcription", None) if spec.whisper == "transcribe" else None
            yield from window_rows(spec, base, (p.windows if p else None) or (e.windows if e else None)
                                   or (lang.windows if lang else None) or (said.segments if said else None) or [])
            continue
        prediction = None
        if p is not None:
            prediction = {"outcome": p.outcome, "predicted_class": p.predicted_class, "confidence": p.confidence,
                          "probabilities": p.probabilities, "probabilities_raw": p.probabilities_raw,
                          "window_share": p.window_share, "agreement": p.agreement, "speech_fraction": p.speech_fraction,
                          "n_windows": r.n_windows_stored}
        row = result_row(spec, base, model=model, prediction=prediction,
                         features={f.extractor: f.summary for f in r.feature_sets.all()} if spec.features else None,
                         embedding=e.vector if e is not None else None)
        if spec.whisper == "language" and getattr(r, "language_id", None) is not None:
            lang = r.language_id
            row.update(language=lang.language, language_probability=lang.probability, language_outcome=lang.outcome,
                       shares=" ".join(f"{code}:{share:.3f}" for code, share in (lang.shares or {}).items()))
        elif spec.whisper == "transcribe" and getattr(r, "transcription", None) is not None:
            tr = r.transcription
            row.update(language=tr.language, language_probability=tr.language_probability, text=tr.text)
        yield row
