"""Score a classifier on degraded copies of a split of its own training data, beside clean.

    manage.py evaluate_robustness accent-native@2.1.0 --split validation --corpus SAA --limit 60 \\
        [--conditions pink_10db,babble_10db,telephone] [--seed 0] [--engine auto] [--out report.json]

The split is rebuilt from the checkpoint's stored training configuration (same manifest, label map
and seed: the same speakers); ``--limit`` draws that many clips, stratified by label. Conditions are
``workers.pipeline.degrade.CONDITIONS`` (``--list`` prints them). The model runs through the
service's inference path (``classify_batch``, VAD off as in a job by default): the first table gives
every clip its top class (no abstention), the second the share answered at the checkpoint's default
threshold and the accuracy of those answers, per condition. Prints Markdown tables.

An embedding model (``task`` embed) is scored with ``workers.pipeline.embedding_robustness``: each
degraded clip's nearest class centroid (and k-NN vote) among the clean embeddings of
``--reference-split`` (default train, other speakers; the same ``--corpus``), and the cosine between
its clean and degraded embedding.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from recognition.errors import ServiceError

SPLITS = {"test": "test", "validation": "val", "train": "train"}


class Command(BaseCommand):
    help = __doc__.split("\n")[0]

    def add_arguments(self, parser):
        parser.add_argument("model", nargs="?", default=None, help="name, name@version or a checkpoint .pt path")
        parser.add_argument("--split", choices=sorted(SPLITS), default="validation")
        parser.add_argument("--limit", type=int, default=None, help="at most this many clips (stratified by label)")
        parser.add_argument("--corpus", default=None, help="only this corpus's clips (e.g. SAA)")
        parser.add_argument("--conditions", default=None, help="comma-separated condition names (default: a short set)")
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--engine", default="auto", help="whisper_probe encoder engine: auto, torch or ctranslate2")
        parser.add_argument("--reference-split", choices=sorted(SPLITS), default="train",
                            help="embedding models: the split whose clean clips give the centroids and neighbours")
        parser.add_argument("--with-transcripts", action="store_true",
                            help="hand each clip its transcript (the manifest's, or its corpus prompt) to a model that reads one")
        parser.add_argument("--out", default=None, help="write the report as JSON here")
        parser.add_argument("--list", action="store_true", help="print the conditions and exit")

    def handle(self, *args, model, split, limit, corpus, conditions, seed, engine, out, list=False,
               reference_split="train", with_transcripts=False, **options):
        from workers.pipeline.degrade import condition_table, parse_conditions
        from workers.pipeline.robustness import (
            checkpoint_predictor,
            default_threshold,
            evaluate_robustness,
            robustness_caption,
            robustness_markdown,
            robustness_threshold_markdown,
            split_clips,
        )

        if list:
            for row in condition_table():
                self.stdout.write(f"{row['name']}: {row['description']}")
            return
        try:
            names = parse_conditions(conditions)
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        path = self._checkpoint(model)
        from workers import runtime

        runtime.configure_threads()
        from models.checkpoint import read_checkpoint

        if read_checkpoint(path)["spec"].task == "embed":
            return self._embedding(path, split=split, limit=limit, corpus=corpus, names=names, seed=seed,
                                   engine=engine, out=out, reference_split=reference_split)
        predict, loaded = checkpoint_predictor(path, engine=engine)
        if loaded.spec.task != "classify":
            raise CommandError(f"{loaded.spec.name} is neither a classifier nor an embedding model")
        try:
            signals, y, items = split_clips(loaded.meta.get("training_data") or {}, SPLITS[split], limit=limit,
                                            corpus=corpus, seed=seed)
        except (ValueError, FileNotFoundError) as exc:
            raise CommandError(str(exc)) from exc
        if not signals:
            raise CommandError(f"no {split} clips" + (f" from {corpus}" if corpus else ""))
        labels = [str(label) for label in loaded.spec.labels]
        if with_transcripts:  # degrade_all keeps the clips' order, so the k-th transcript is the k-th clip's
            said = [it.transcript or None for it in items]
            base_predict = predict

            def predict(batch):
                return base_predict(batch, said)

        report = evaluate_robustness(predict, signals, y, labels, conditions=names, seed=seed,
                                     progress=lambda name, k, n: print(f"[{k + 1}/{n}] {name}", file=sys.stderr))
        report.update(model=f"{loaded.spec.name}@{loaded.spec.version}", sha256=loaded.sha256, split=split,
                      corpus=corpus, engine=engine, threshold=default_threshold(loaded), with_transcripts=with_transcripts,
                      speakers=[it.speaker for it in items], keys=[it.key for it in items])
        where = f"{split}" + (f" {corpus}" if corpus else "")
        self.stdout.write(robustness_caption(report, where))
        self.stdout.write("\n".join(robustness_markdown(report)))
        at = robustness_threshold_markdown(report)
        if at:
            self.stdout.write("\n" + "\n".join(at))
        if out:
            Path(out).write_text(json.dumps(report, indent=2) + "\n")

    def _embedding(self, path: Path, *, split: str, limit: int | None, corpus: str | None, names: list[str],
                   seed: int, engine: str, out: str | None, reference_split: str) -> None:
        from workers.pipeline.embedding_robustness import (
            checkpoint_embedder,
            embedding_robustness_markdown,
            evaluate_embedding_robustness,
        )
        from workers.pipeline.robustness import split_clips

        if reference_split == split:
            raise CommandError("--reference-split must differ from --split (the centroids come from other speakers)")
        embed, loaded = checkpoint_embedder(path, engine=engine)
        training_data = loaded.meta.get("training_data") or {}
        try:
            signals, y, _items = split_clips(training_data, SPLITS[split], limit=limit, corpus=corpus, seed=seed)
            ref_signals, ref_y, _ref = split_clips(training_data, SPLITS[reference_split], corpus=corpus, seed=seed)
        except (ValueError, FileNotFoundError) as exc:
            raise CommandError(str(exc)) from exc
        if not signals or not ref_signals:
            raise CommandError(f"no {split} or no {reference_split} clips" + (f" from {corpus}" if corpus else ""))
        labels = [str(label) for label in loaded.spec.labels] or sorted(set(y) | set(ref_y))
        print(f"[0] embedding {len(ref_signals)} clean {reference_split} clips", file=sys.stderr)
        reference = embed(ref_signals)
        report = evaluate_embedding_robustness(embed, signals, y, reference, ref_y, labels, conditions=names, seed=seed,
                                               progress=lambda name, k, n: print(f"[{k + 1}/{n}] {name}", file=sys.stderr))
        report.update(model=f"{loaded.spec.name}@{loaded.spec.version}", sha256=loaded.sha256, split=split,
                      reference_split=reference_split, corpus=corpus, engine=engine)
        where = f"{split}" + (f" {corpus}" if corpus else "")
        counts = ", ".join(f"{n} {c}" for c, n in report["class_counts"].items())
        refs = ", ".join(f"{n} {c}" for c, n in report["reference_class_counts"].items())
        self.stdout.write(f"Measured on {report['n']} {where} clips ({counts}) against the clean centroids of "
                          f"{report['n_reference']} {reference_split} clips ({refs}); degraded copies made with seed {seed}.")
        self.stdout.write("\n".join(embedding_robustness_markdown(report)))
        if out:
            Path(out).write_text(json.dumps(report, indent=2) + "\n")

    def _checkpoint(self, model: str | None) -> Path:
        """A .pt path as given, or the registered model's checkpoint file."""
        if model and model.endswith(".pt"):
            if not Path(model).exists():
                raise CommandError(f"no checkpoint {model}")
            return Path(model)
        from django.conf import settings

        from recognition.services.models import model_resolve
        from workers.runtime import _checkpoint_path

        try:
            mv = model_resolve(model, task="classify")
        except ServiceError as exc:
            if not model:
                raise CommandError(exc.message) from exc
            try:  # a named embedding model
                mv = model_resolve(model, task="embed")
            except ServiceError:
                raise CommandError(exc.message) from exc
        return _checkpoint_path(mv.checkpoint, Path(settings.MODELS_DIR))
