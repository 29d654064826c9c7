"""Reference baselines on accent-mini: native_english vs the rest, train split -> test split.

Prints balanced accuracy (with a speaker-bootstrap 95 % CI) of the two reference baselines
(MFCC statistics + logistic regression, resemblyzer GE2E embedding + logistic regression) on the
whole test split, on the SAA test slice (the honest test bed, see the data README) and per corpus.
Every signal is band-limited to 4 kHz (most SAA clips are 8 kHz-sourced).

    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 .venv/bin/python bench/reference_baselines.py \
        [--data /work/shared/data/accent-mini] [--cache-dir var/cache/baselines] [--C 0.1|cv] [--json out.json]

Feature extraction takes a few minutes on one core the first time; features are cached.

With ``--model CHECKPOINT`` (a checkpoint trained on the same manifest split, whose metrics keep its
test predictions, as every checkpoint ``workers.pipeline.training`` writes does) it also prints the
model's balanced accuracy minus each reference's on the same test clips, with a paired speaker
bootstrap (``evaluation.paired_difference``): whether the model beats a reference by a clear margin.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import soundfile as sf  # noqa: E402

from workers.pipeline.baselines import reference_baselines  # noqa: E402

LABELS = ["native_english", "non_native"]


def load(data: Path) -> dict[str, list]:
    """Signals and metadata of every manifest row, grouped by split."""
    rows = list(csv.DictReader(open(data / "manifest.csv", newline="")))
    out: dict[str, dict[str, list]] = {s: {"x": [], "y": [], "spk": [], "corpus": [], "path": []} for s in ("train", "test")}
    for r in rows:
        x, sr = sf.read(data / r["path"], dtype="float32", always_2d=False)
        if x.ndim > 1:
            x = x.mean(axis=1)
        if sr != 16000:
            raise SystemExit(f"{r['path']}: expected 16 kHz, got {sr}")
        d = out[r["split"]]
        d["x"].append(x)
        d["y"].append("native_english" if r["accent_group"] == "native_english" else "non_native")
        d["spk"].append(r["speaker_id"])
        d["corpus"].append(r["corpus"])
        d["path"].append(r["path"])
    return out


def ci(rep: dict, metric: str = "balanced_accuracy") -> str:
    c = rep["ci"][metric]
    if c["low"] is None:  # fewer than 2 speakers
        return f"{rep[metric]:.3f} [no interval]"
    return f"{rep[metric]:.3f} [{c['low']:.3f}, {c['high']:.3f}]"


def compare(checkpoint: Path, test: dict, reports: dict, n_boot: int) -> None:
    """The model's test predictions against each reference's, paired by clip, per slice."""
    import numpy as np

    from models.checkpoint import read_checkpoint
    from workers.pipeline.evaluation import paired_by_corpus

    raw = read_checkpoint(str(checkpoint))
    rows = {r["key"]: r for r in raw["metrics"].get("test_predictions", [])}
    missing = [p for p in test["path"] if p not in rows]
    if missing:
        raise SystemExit(f"{checkpoint}: no test prediction for {len(missing)} test clips (e.g. {missing[0]}); "
                         "was it trained on this manifest's split?")
    classes = list(raw["spec"].labels)  # the model's first class is the native one, as LABELS[0] is
    if len(classes) != 2 or classes[1] != LABELS[1]:
        raise SystemExit(f"{checkpoint}: a native / {LABELS[1]} model is needed, this one has {classes}")
    model_proba = np.array([rows[p]["proba"] for p in test["path"]], dtype=np.float64)
    name = f"{raw['spec'].name}@{raw['spec'].version}"
    print(f"\n{name} minus each reference, same clips (balanced accuracy; paired speaker bootstrap, {n_boot} draws):")
    paired = {ref: paired_by_corpus(test["y"], model_proba, rep["test_proba"], LABELS, speakers=test["spk"],
                                    corpora=test["corpus"], n_boot=n_boot) for ref, rep in reports.items()}
    for slice_name, pick in (("SAA test", lambda p: p["per_corpus"].get("SAA")), ("all test", lambda p: p["all"])):
        for ref, p in paired.items():
            d = pick(p)
            if d and d["low"] is not None:
                print(f"  {slice_name:<9} vs {ref:<24} {d['a']:.3f} - {d['b']:.3f} = {d['difference']:+.3f} "
                      f"[{d['low']:+.3f}, {d['high']:+.3f}]  replicates where the model is not better: {d['share_not_better']:.3f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path("/work/shared/data/accent-mini"))
    ap.add_argument("--cache-dir", type=Path, default=Path("var/cache/baselines"))
    ap.add_argument("--bandlimit-hz", type=float, default=4000.0)
    ap.add_argument("--n-boot", type=int, default=1000)
    ap.add_argument(
        "--C",
        default="0.1",
        help="logistic-regression C, or 'cv' for speaker-grouped 5-fold CV on train (default 0.1, the library default)",
    )
    ap.add_argument("--json", type=Path, default=None, help="also write the full reports here")
    ap.add_argument("--model", type=Path, default=None, help="a binary native / non-native checkpoint to compare, paired, with both references")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    d = load(args.data)
    print(f"loaded {len(d['train']['x'])} train / {len(d['test']['x'])} test clips in {time.perf_counter() - t0:.1f} s")
    t0 = time.perf_counter()
    reports = reference_baselines(
        d["train"]["x"],
        d["train"]["y"],
        d["test"]["x"],
        d["test"]["y"],
        LABELS,
        test_speakers=d["test"]["spk"],
        test_corpora=d["test"]["corpus"],
        train_speakers=d["train"]["spk"],
        C=None if args.C == "cv" else float(args.C),
        bandlimit_hz=args.bandlimit_hz or None,
        cache_dir=args.cache_dir,
        n_boot=args.n_boot,
        keep_proba=args.model is not None,
    )
    print(f"features + fits + reports in {time.perf_counter() - t0:.1f} s (band limit {args.bandlimit_hz:g} Hz)\n")

    names = list(reports)
    for n in names:
        meta = reports[n]["baseline"]
        cv = {k: round(v, 3) for k, v in (meta["C_cv_scores"] or {}).items()}
        how = f"speaker-grouped 5-fold CV on train, balanced acc by C: {cv}" if cv else "fixed"
        print(f"{n}: C={meta['C']:g} ({how})")
    print()
    print("balanced accuracy, 95 % CI by speaker bootstrap; native_english vs non_native\n")
    print(f"{'slice':<16} {'n':>5} {'spk':>5}  " + "  ".join(f"{n:<28}" for n in names))
    first = reports[names[0]]
    print(f"{'ALL test':<16} {first['n']:>5} {first['ci']['n_units']:>5}  " + "  ".join(f"{ci(reports[n]):<28}" for n in names))
    for corpus in first["per_corpus"]:
        pc = first["per_corpus"][corpus]
        cells = []
        for n in names:
            rep = reports[n]["per_corpus"][corpus]
            cells.append(ci(rep) if rep["balanced_accuracy"] is not None and rep["ci"]["balanced_accuracy"]["low"] is not None else "n/a")
        one_class = sum(1 for v in pc["support"].values() if v) == 1
        tag = f"{corpus}{'*' if one_class else ''}"
        print(f"{tag:<16} {pc['n']:>5} {pc['n_speakers']:>5}  " + "  ".join(f"{c:<28}" for c in cells))
    print("* one class only in this slice: balanced accuracy is that class's recall")
    print("\nSAA test (the honest slice):")
    for n in names:
        saa = reports[n]["per_corpus"].get("SAA")
        if saa:
            print(
                f"  {n:<24} balanced acc {ci(saa)}  acc {saa['accuracy']:.3f}  AUC {saa['roc_auc']:.3f}  "
                f"recall native {saa['recall']['native_english']:.3f} non-native {saa['recall']['non_native']:.3f}"
            )
    print("\nwhole test split:")
    for n in names:
        r = reports[n]
        print(f"  {n:<24} balanced acc {ci(r)}  macro-F1 {r['macro_f1']:.3f}  AUC {r['roc_auc']['value']:.3f}  ECE {r['ece']:.3f}")
    if args.model:
        compare(args.model, d["test"], reports, args.n_boot)
    if args.json:
        for r in reports.values():
            r.pop("test_proba", None)
        args.json.write_text(json.dumps(reports, indent=1, allow_nan=False))
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
