"""Recall of the native class per native English variety (US, UK, Canada, Australia, NZ, Ireland, other,
unlabelled), answering every clip and at the checkpoint's default threshold.

    .venv/bin/python scripts/native_varieties.py models/checkpoints/accent-native.pt [...] [--val] [--corpus SAA] \\
        [--min-speakers 10] [--out f.json]

Default: the checkpoint's **stored test predictions** (``metrics["test_predictions"]``), joined to the
manifest by path, read as they are (a reported number; nothing is chosen on it). A clip is answered when
its largest stored probability reaches the default threshold (the calibration's ``threshold``; for a
reading fusion, ``fused_threshold`` on the corpora it has a passage for, as the service does).
``--val``: also run the checkpoint on its **validation split**, clean, through the service's path
(``classify_batch``, VAD off, no transcript), since no shipped card stores per-clip validation predictions;
for the whisper probes (2.x) those speakers are in the final fit, so this is in-sample. Varieties come
from the manifest (``workers.pipeline.varieties.native_variety``). Prints Markdown tables.

With the stored test predictions it also prints the **per-L1 table** (manifest ``l1``, every test clip, not only the
native ones): for each L1 with at least ``--min-speakers`` (10) test speakers in the slice, the share of its clips given
each class when every clip is answered, and at the default threshold the share answered as the right class
(``workers.pipeline.varieties.right_class``), ``uncertain`` and answered as another class. When no L1 reaches the
count it lists the five largest with a warning.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
DATA = Path(os.environ.get("ACCENTMINI", ROOT.parent / "shared" / "data" / "accent-mini"))
NATIVE = ("native", "native_english")


def _native_label(labels: list[str]) -> str:
    found = [lab for lab in labels if lab in NATIVE]
    if not found:
        raise SystemExit(f"no native class among {labels}")
    return found[0]


def _first(cut: float | str) -> float:
    """The window threshold of a threshold as the card states it (``0.6`` or ``"0.6 (0.55 with the passage)"``)."""
    return cut if isinstance(cut, float) else float(cut.split()[0])


def _stored_answers(saved: dict, corpus: str | None) -> tuple[list, float | str]:
    """(stored row, top class, answered) of every stored test prediction (of ``corpus`` when given), and the
    threshold as the card states it."""
    labels = [str(lab) for lab in saved["spec"].labels]
    cal = saved["calibration"]
    cut = float(cal.get("threshold") or 0.0)
    fused_cut = float(cal.get("fused_threshold") or cut)
    prompts = set((saved["training_data"].get("config") or {}).get("prompts") or {})
    out = []
    for r in saved["metrics"].get("test_predictions") or []:
        if corpus and r["corpus"] != corpus:
            continue
        proba = r["proba"]
        top = max(range(len(proba)), key=lambda j: proba[j])
        thr = fused_cut if r["corpus"] in prompts else cut
        out.append((r, labels[top], proba[top] >= thr))
    return out, (cut if fused_cut == cut else f"{cut:g} ({fused_cut:g} with the passage)")


def stored_test(saved: dict, rows_by_path: dict, corpus: str | None) -> tuple[list, float | str]:
    """(varieties, speakers, predicted, answered) of the stored test predictions' native clips."""
    from workers.pipeline.varieties import native_variety

    native = _native_label([str(lab) for lab in saved["spec"].labels])
    answers, cut = _stored_answers(saved, corpus)
    return [(native_variety(rows_by_path[r["key"]]), r["speaker"], top, ok)
            for r, top, ok in answers if r["label"] == native], cut


def stored_l1(saved: dict, rows_by_path: dict, corpus: str | None) -> list:
    """(l1, speakers, predicted, answered) of every stored test prediction; the L1 from the manifest's ``l1``."""
    answers, _ = _stored_answers(saved, corpus)
    return [(rows_by_path[r["key"]]["l1"], r["speaker"], top, ok) for r, top, ok in answers]


def validation(path: str, rows_by_path: dict, corpus: str | None) -> list:
    from workers.pipeline.robustness import checkpoint_predictor, split_clips
    from workers.pipeline.varieties import native_variety

    predict, loaded = checkpoint_predictor(path)
    native = _native_label([str(lab) for lab in loaded.spec.labels])
    signals, y, items = split_clips(loaded.meta.get("training_data") or {}, "val", corpus=corpus)
    keep = [k for k, lab in enumerate(y) if lab == native]
    answers = predict([signals[k] for k in keep])
    return [(native_variety(rows_by_path[items[k].key or str(items[k].path_or_loader)]), items[k].speaker, lab, ok)
            for k, (lab, ok) in zip(keep, answers, strict=True)]


def _print_l1(name: str, saved: dict, clips: list, cut: float | str, args: argparse.Namespace) -> dict:
    """Print and return the per-L1 table of the stored test predictions."""
    from workers.pipeline.varieties import l1_markdown, l1_recall

    labels = [str(lab) for lab in saved["spec"].labels]
    rows, warning = l1_recall(*zip(*clips, strict=True), labels=labels, min_speakers=args.min_speakers)
    where = f" ({args.corpus})" if args.corpus else ""
    print(f"\n## {name}: per L1 with >= {args.min_speakers} test speakers, stored test predictions{where}, threshold {cut}\n")
    if warning:
        print(f"**Warning:** {warning}.\n")
    print("\n".join(l1_markdown(rows, labels, _first(cut))))
    return {"rows": rows, "warning": warning, "min_speakers": args.min_speakers}


def main(argv: list[str] | None = None) -> int:
    import torch

    from models.checkpoint import read_checkpoint
    from workers.pipeline.varieties import variety_markdown, variety_recall

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("checkpoints", nargs="+")
    p.add_argument("--manifest", default=str(DATA / "manifest.csv"))
    p.add_argument("--corpus", default=None, help="only this corpus's clips (e.g. SAA)")
    p.add_argument("--val", action="store_true", help="also score the validation split clean (runs the model)")
    p.add_argument("--min-speakers", type=int, default=10, help="per-L1 table: L1s with at least this many test speakers")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    base = Path(args.manifest).parent
    rows_by_path = {}
    for row in csv.DictReader(open(args.manifest, newline="")):
        rows_by_path[row["path"]] = row
        rows_by_path[str(base / row["path"])] = row
        rows_by_path[str((base / row["path"]).resolve())] = row
    report = {}
    for path in args.checkpoints:
        saved = read_checkpoint(path)
        name = f"{saved['spec'].name}@{saved['spec'].version}"
        native = _native_label([str(lab) for lab in saved["spec"].labels])
        entry = {}
        test, cut = stored_test(saved, rows_by_path, args.corpus)
        if test:
            entry["test"] = variety_recall(*zip(*test, strict=True), native=native)
            print(f"\n## {name}: stored test predictions{' (' + args.corpus + ')' if args.corpus else ''}, threshold {cut}\n")
            print("\n".join(variety_markdown(entry["test"], _first(cut))))
            entry["l1"] = _print_l1(name, saved, stored_l1(saved, rows_by_path, args.corpus), cut, args)
        if args.val:
            val = validation(path, rows_by_path, args.corpus)
            entry["val"] = variety_recall(*zip(*val, strict=True), native=native)
            thr = float(saved["calibration"].get("threshold") or 0.0)
            print(f"\n## {name}: validation split, clean, run now (no transcript), threshold {thr:g}\n")
            print("\n".join(variety_markdown(entry["val"], thr)))
        entry["threshold"] = cut
        report[f"{name} {Path(path).name}"] = entry
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
