"""Training pipeline for the model families in ``models/``: speaker-disjoint splits, windowed
training with augmentation and class balancing, early stopping on validation balanced accuracy,
calibration on validation, evaluation on the test split and a model card.

Usage (CLI)::

    python -m workers.pipeline.training --manifest /work/shared/data/accent-mini/manifest.csv \\
        --family speaker_head --label-column accent_group \\
        --label-map native_english=native,mandarin_l1=non_native,other_l1=non_native \\
        --name accent-native --out models/checkpoints/accent-native.pt

The Django ``manage.py train`` command and the ``train`` Celery job call :func:`train_model`
with the same :class:`TrainConfig`, either with a manifest or with a list of :class:`TrainItem`.
Pure Python / numpy / torch: no Django import.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from workers.pipeline.data import (
    parse_label_map,
)
from workers.pipeline.degrade import parse_conditions
from workers.pipeline.train_config import (  # noqa: F401 - the package's training API, re-exported
    DEFAULT_HPARAMS,
    DEFAULT_WINDOW,
    TRAINABLE_FAMILIES,
    ProgressFn,
    TrainConfig,
    TrainResult,
    emit_progress,
    replace_items,
)
from workers.pipeline.train_data import load_items, make_splits  # noqa: F401
from workers.pipeline.train_report import (  # noqa: F401
    evaluation_rows,
    prediction_key,
    reference_reports,
    report_for,
    write_model_card,
)
from workers.pipeline.trainers import cross_validate, train_model  # noqa: F401

# ---------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------


def _parse_hparam(text: str) -> tuple[str, Any]:
    k, _, v = text.partition("=")
    try:
        return k, json.loads(v)
    except json.JSONDecodeError:
        return k, v


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point (see the module docstring)."""
    p = argparse.ArgumentParser(prog="python -m workers.pipeline.training", description=__doc__.split("\n")[0])
    p.add_argument("--manifest", required=True)
    p.add_argument("--family", required=True, choices=sorted(TRAINABLE_FAMILIES),
                   help="phonetic_fusion / reading_fusion: the window model of --hparam base_family (default "
                        "speaker_head), or of --hparam base_checkpoint=PATH as it is, stacked with phone features / "
                        "with reading features of each recording's transcript")
    p.add_argument("--label-column", default="accent_group")
    p.add_argument("--label-map", default=None, help="raw=target,raw=target")
    p.add_argument("--labels", default=None, help="class order, comma-separated")
    p.add_argument("--name", required=True)
    p.add_argument("--version", default="1.0.0")
    p.add_argument("--task", default=None, choices=["classify", "embed"])
    p.add_argument("--out", default=None)
    p.add_argument("--card", default=None, help="write a model card here")
    p.add_argument("--window-s", type=float, default=None)
    p.add_argument("--hop-s", type=float, default=None)
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--steps-per-epoch", type=int, default=None)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--weight-decay", type=float, default=1e-3)
    p.add_argument("--patience", type=int, default=8)
    p.add_argument("--n-aug-copies", type=int, default=2)
    p.add_argument("--no-augment", action="store_true")
    p.add_argument("--hparam", action="append", default=[], help="key=json-value (repeatable)")
    p.add_argument("--deploy-prior", default=None, help="comma-separated, in class order")
    p.add_argument("--corpora", default=None, help="comma-separated corpora to use")
    p.add_argument("--prompt", action="append", default=[], metavar="CORPUS=FILE",
                   help="every clip of CORPUS read the text in FILE (repeatable; a manifest 'transcript' column wins)")
    p.add_argument("--loco", action="append", default=[], help="also run leave-this-corpus-out (repeatable)")
    p.add_argument("--balance", default="speaker", choices=["speaker", "corpus"])
    p.add_argument("--select-corpus", default=None, help="early-stop on this corpus's validation items")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default=None)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--cache-dir", default=os.environ.get("ACCENTSITE_CACHE", "/tmp/accentsite-cache"))
    p.add_argument("--n-boot", type=int, default=500)
    p.add_argument("--no-references", action="store_true",
                   help="skip the two reference baselines (MFCC / speaker encoder + logistic regression) of the report")
    p.add_argument("--no-test", action="store_true",
                   help="choose, fit and save the model without reading the test split (no test report, no references)")
    p.add_argument("--cv-folds", type=int, default=0,
                   help="instead of training one model: speaker-grouped k-fold cross-validation over train+val "
                        "(the test split is not touched), to compare configurations; prints the fold scores")
    p.add_argument("--robustness", nargs="?", const="", default=None, metavar="CONDITIONS",
                   help="also score the saved model on degraded copies of its test clips: comma-separated condition "
                        "names of workers/pipeline/degrade.py (alone: its default set); the table goes into the card")
    p.add_argument("--robustness-limit", type=int, default=300, help="at most this many test clips for --robustness")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    prompts = {}
    for entry in args.prompt:
        corpus, sep, file = entry.partition("=")
        if not sep or not corpus or not file:
            p.error(f"--prompt {entry!r}: expected CORPUS=FILE")
        prompts[corpus] = Path(file).read_text().strip()

    config = TrainConfig(
        name=args.name, family=args.family, manifest=args.manifest, label_column=args.label_column,
        label_map=parse_label_map(args.label_map), labels=args.labels.split(",") if args.labels else None,
        task=args.task, out=args.out, version=args.version, window_s=args.window_s, hop_s=args.hop_s,
        epochs=args.epochs, batch_size=args.batch_size, steps_per_epoch=args.steps_per_epoch, lr=args.lr,
        weight_decay=args.weight_decay, patience=args.patience, n_aug_copies=args.n_aug_copies,
        augment=not args.no_augment, hparams=dict(_parse_hparam(h) for h in args.hparam),
        deploy_prior=[float(x) for x in args.deploy_prior.split(",")] if args.deploy_prior else None,
        corpora=args.corpora.split(",") if args.corpora else None, seed=args.seed,
        balance=args.balance, select_corpus=args.select_corpus, device=args.device,
        num_threads=args.threads, cache_dir=args.cache_dir, n_boot=args.n_boot, references=not args.no_references, prompts=prompts or None,
        evaluate=not args.no_test,
        robustness=parse_conditions(args.robustness) if args.robustness is not None else None,
        robustness_limit=args.robustness_limit,
    )
    bar = tqdm_progress()
    if args.cv_folds:
        print(json.dumps(cross_validate(config, args.cv_folds, progress=bar), indent=2, default=str))
        return 0
    result = train_model(config, progress=bar)
    loco: dict[str, Any] = {}
    for corpus in args.loco:
        c = copy.copy(config)
        c.out, c.test_corpora, c.n_boot = None, [corpus], min(config.n_boot, 200)
        if c.select_corpus == corpus:  # the held-out corpus cannot also choose the model
            c.select_corpus = None
        c.references = False  # the card shows the held-out corpus's score only
        r = train_model(c, progress=bar)
        loco[corpus] = (r.metrics.get("test") or {})
    test = result.metrics.get("test") or {}
    summary = {"checkpoint": result.checkpoint, "sha256": result.sha256, "best_epoch": result.best_epoch,
               "val_balanced_accuracy": result.metrics.get("val_balanced_accuracy"),
               "test_balanced_accuracy": test.get("balanced_accuracy"),
               "per_corpus": {k: v.get("balanced_accuracy") for k, v in (test.get("per_corpus") or {}).items()},
               "loco": {k: v.get("balanced_accuracy") for k, v in loco.items()}}
    if result.metrics.get("robustness"):
        summary["robustness"] = {row["name"]: row["balanced_accuracy"] for row in result.metrics["robustness"]["conditions"]}
    if args.out and loco:
        side = Path(args.out).with_suffix(".loco.json")
        side.write_text(json.dumps(loco, indent=1, default=str))
    if args.card:
        import shlex
        import sys

        cmd = "python -m workers.pipeline.training " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
        side = json.loads(Path(args.out).with_suffix(".json").read_text()) if args.out else {}
        write_model_card(result.metrics, spec=result.spec, path=args.card, command=cmd, calibration=result.calibration,
                         sha256=result.sha256, loco=loco or None, training_data=side.get("training_data"),
                         hparams=side.get("hparams"))
    print(json.dumps(summary, indent=2, default=str))
    return 0


def tqdm_progress() -> ProgressFn:
    """A tqdm bar per stage for the CLI."""
    from tqdm import tqdm

    bars: dict[str, Any] = {}

    def progress(stage: str, done: int, total: int, info: dict[str, Any]) -> None:
        bar = bars.get(stage)
        if bar is None or bar.total != total or done < bar.n:
            if bar is not None:
                bar.close()
            bar = bars[stage] = tqdm(total=total, desc=stage, leave=stage == "train", mininterval=2.0)
        bar.update(done - bar.n)
        if stage == "train" and info:
            bar.set_postfix(loss=f"{info.get('loss', 0):.3f}", val_bacc=f"{info.get('val_balanced_accuracy', 0):.3f}")

    return progress


if __name__ == "__main__":
    raise SystemExit(main())
