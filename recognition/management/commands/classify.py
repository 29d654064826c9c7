"""Classify audio files from the shell (like the old ``predict.py``), writing CSV or JSON.

    manage.py classify a.wav b.flac ... [--model accent-native@1.1.0] [--transcript-file passage.txt] [--threshold 0.8] [--out results.csv]

Files are decoded and classified in groups, with windows from all files of a group packed into
one batched forward pass; a bad file gets its error code in the output, the rest go on.
``--out x.csv`` / ``x.parquet`` write the columns of the API's ``results/?export=`` (built by the
same functions, ``recognition.exports``), ``--windows`` one row per window; ``x.json`` and ``-``
(JSON lines) give each file's outcome under the API's key names (``probabilities``,
``probabilities_raw``, ``reading`` with ``fused``, ...: ``ClassifyOutcome.api_dict``, as in
``/predict`` and a job's results) without its windows, plus ``n_windows``.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from django.core.management.base import BaseCommand, CommandError

from recognition.errors import ServiceError

if TYPE_CHECKING:
    from workers.pipeline.outcomes import ClassifyOutcome

GROUP = 32


class Command(BaseCommand):
    help = __doc__.split("\n")[0]

    def add_arguments(self, parser):
        parser.add_argument("files", nargs="+")
        parser.add_argument("--model", default=None, help="name or name@version (default classify model when omitted)")
        parser.add_argument("--threshold", type=float, default=None)
        parser.add_argument("--vad", action=argparse.BooleanOptionalAction, default=None,
                            help="drop non-speech windows first (default: CLASSIFY_VAD_DEFAULT, as jobs and /predict)")
        parser.add_argument("--classes", default=None,
                            help="zero-shot models (spoken-words): the words to choose among, comma-separated (default: the model's)")
        parser.add_argument("--transcript-file", default=None,
                            help="the text every speaker read (e.g. docs/models/saa_reading_passage.txt); reading models use it")
        parser.add_argument("--out", default="-", help="output .csv, .parquet or .json file ('-' prints JSON lines)")
        parser.add_argument("--windows", action="store_true", help="CSV / Parquet: one row per window")

    def handle(self, *args, files, model, threshold, vad, out, transcript_file=None, windows=False, classes=None, **options):
        from django.conf import settings
        from tqdm import tqdm

        from recognition.services.models import model_resolve
        from workers import runtime
        from workers.pipeline.audio import AudioError, load_audio, validate_audio
        from workers.pipeline.inference import classify_batch

        try:
            mv = model_resolve(model, task="classify")
        except ServiceError as exc:
            raise CommandError(exc.message) from exc
        runtime.configure_threads()
        try:
            loaded = runtime.load_model(mv)
        except runtime.ModelUnavailable as exc:
            raise CommandError(str(exc)) from exc
        if classes:
            from workers.pipeline.spoken_words import bind_classes

            try:
                loaded = bind_classes(loaded, [c.strip() for c in classes.split(",") if c.strip()])
            except ValueError as exc:
                raise CommandError(f"--classes: {exc}") from exc
        use_vad = settings.CLASSIFY_VAD_DEFAULT if vad is None else vad
        transcript = Path(transcript_file).read_text() if transcript_file else None
        rows = []
        bar = tqdm(total=len(files), desc=f"classify ({mv})", unit="file", file=sys.stderr)
        for start in range(0, len(files), GROUP):
            group, signals = [], []
            for path in files[start : start + GROUP]:
                try:
                    audio = load_audio(path, settings.AUDIO_SAMPLE_RATE, max_duration_s=settings.AUDIO_MAX_DURATION_S)
                    validate_audio(audio, min_duration_s=settings.AUDIO_MIN_DURATION_S, max_duration_s=settings.AUDIO_MAX_DURATION_S)
                except AudioError as exc:
                    rows.append({"file": path, "outcome": "error", "error_code": exc.code, "error": exc.message, "result": None})
                    bar.update(1)
                    continue
                group.append(path)
                signals.append(audio.samples)
            if signals:
                outcomes = classify_batch(loaded, signals, threshold=threshold, vad=use_vad,
                                          transcripts=[transcript] * len(signals), min_speech_s=runtime.min_speech_s(loaded),
                                          **runtime.window_params(loaded))
                for path, res in zip(group, outcomes, strict=True):
                    rows.append(self._row(path, res))
                    bar.update(1)
        bar.close()
        self._write(rows, out, list(loaded.spec.labels), str(mv), windows=windows)

    @staticmethod
    def _row(path: str, outcome: ClassifyOutcome) -> dict:
        """A file's JSON row: the API's keys (``ClassifyOutcome.api_dict``, as in ``/predict`` and a
        job's results) without the windows, plus ``n_windows``; ``result`` keeps the whole outcome."""
        fields = {k: v for k, v in outcome.api_dict().items() if k != "windows"}
        return {"file": path, **fields, "n_windows": outcome.n_windows, "result": outcome}

    def _write(self, rows: list[dict], out: str, labels: list[str], model: str, *, windows: bool = False) -> None:
        from recognition import exports

        if out == "-" or out.endswith(".json"):
            plain = [{k: v for k, v in row.items() if k != "result"} for row in rows]
            if out == "-":
                for row in plain:
                    self.stdout.write(json.dumps(dict(row, model=model)))
                return
            Path(out).write_text(json.dumps({"model": model, "results": plain}, indent=2))
        else:
            path = Path(out)
            if path.suffix not in (".csv", ".parquet"):
                raise CommandError(f"--out {out}: use a .csv, .parquet or .json file, or '-'.")
            spec = exports.TableSpec(labels=tuple(labels), windows=windows)
            table = (row for r in rows for row in self._table_rows(spec, r, model))
            if path.suffix == ".csv":
                with path.open("w", newline="") as fh:
                    fh.writelines(exports.csv_chunks(spec, table))
            else:
                with exports.parquet_spool(spec, table) as spool, path.open("wb") as fh:
                    shutil.copyfileobj(spool, fh)
        self.stderr.write(f"wrote {len(rows)} results to {out}")

    @staticmethod
    def _table_rows(spec, row: dict, model: str):
        from recognition import exports

        failed = row["result"] is None
        base = exports.base_values(recording=None, filename=row["file"], status="failed" if failed else "succeeded",
                                   error_code=row.get("error_code", ""), error_message=row.get("error", ""))
        if spec.windows:
            yield from exports.window_rows(spec, base, [] if failed else row["result"].windows)
        else:
            yield exports.result_row(spec, base, model=model, prediction=None if failed else row["result"].as_dict())
