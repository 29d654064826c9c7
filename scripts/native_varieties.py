"""Recall of the native class per native English variety (US, UK, Canada, Australia, NZ, Ireland, other,
unlabelled), answering every clip and at the checkpoint's default threshold.

    .venv/bin/python scripts/native_varieties.py models/checkpoints/accent-native.pt [...] [--val] [--corpus SAA] [--out f.json]

Default: the checkpoint's **stored test predictions** (``metrics["test_predictions"]``), joined to the
manifest by path, read as they are (a reported number; nothing is chosen on it). A clip is answered when
its largest stored probability reaches the default threshold (the calibration's ``threshold``; for a
reading fusion, ``fused_threshold`` on the corpora it has a passage for, as the service does).
``--val``: also run the checkpoint on its **validation split**, clean, through the service's path
(``classify_batch``, VAD off, no transcript), since no shipped card stores per-clip validation predictions;
for the whisper probes (2.x) those speakers are in the final fit, so this is in-sample. Varieties come
from the manifest (``workers.pipeline.varieties.native_variety``). Prints Markdown tables.
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


def stored_test(saved: dict, rows_by_path: dict, corpus: str | None) -> tuple[list, float | str]:
    """(varieties, speakers, predicted, answered) of the stored test predictions' native clips."""
    from workers.pipeline.varieties import native_variety

    labels = [str(lab) for lab in saved["spec"].labels]
    native = _native_label(labels)
    cal = saved["calibration"]
    cut = float(cal.get("threshold") or 0.0)
    fused_cut = float(cal.get("fused_threshold") or cut)
    prompts = set((saved["training_data"].get("config") or {}).get("prompts") or {})
    out = []
    for r in saved["metrics"].get("test_predictions") or []:
        if r["label"] != native or (corpus and r["corpus"] != corpus):
            continue
        proba = r["proba"]
        top = max(range(len(proba)), key=lambda j: proba[j])
        thr = fused_cut if r["corpus"] in prompts else cut
        out.append((native_variety(rows_by_path[r["key"]]), r["speaker"], labels[top], proba[top] >= thr))
    return out, (cut if fused_cut == cut else f"{cut:g} ({fused_cut:g} with the passage)")


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


def main(argv: list[str] | None = None) -> int:
    import torch

    from models.checkpoint import read_checkpoint
    from workers.pipeline.varieties import variety_markdown, variety_recall

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("checkpoints", nargs="+")
    p.add_argument("--manifest", default=str(DATA / "manifest.csv"))
    p.add_argument("--corpus", default=None, help="only this corpus's clips (e.g. SAA)")
    p.add_argument("--val", action="store_true", help="also score the validation split clean (runs the model)")
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
            print("\n".join(variety_markdown(entry["test"], cut if isinstance(cut, float) else float(cut.split()[0]))))
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
