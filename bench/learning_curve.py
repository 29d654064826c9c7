"""A learning curve on real accents: native vs non-native on the Speech Accent Archive (SAA) slice of
accent-mini, trained from a few speakers per class as a user's train job would be.

    python -m bench.learning_curve --family whisper_probe --speakers 4 8 16 32 64 --seeds 0 1 2 \\
        --cache-dir /work/cache --out var/exp/lc-probe.json

Evaluation: the SAA speakers of the shipped accent-native 2.1.0's **validation** split (its stored
training configuration rebuilds it: 51 speakers, one clip each), the same for every row; the test split
is never read. Training: for each size ``n`` and seed, ``n`` native and ``n`` non-native SAA speakers
drawn (seeded, without replacement) from that configuration's train split, all their clips; the train
job then carves its own validation speakers out of them (``val_fraction``, as a train job does) to
choose its epoch, calibration and threshold. Rows print as JSON lines and, at the end, as a Markdown
table (mean and range over seeds). Needs accent-mini (``ACCENTMINI`` or ``../shared/data/accent-mini``).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
NATIVE_MAP = {"mandarin_l1": "non_native", "native_english": "native", "other_l1": "non_native"}
LABELS = ["native", "non_native"]


def saa_pools(checkpoint: str | Path) -> tuple[dict[str, list[str]], list[Any], list[Any]]:
    """``(train speakers per label, train items, validation items)`` of the SAA slice of the split that
    ``checkpoint``'s training run made (manifest, label map and seed from its stored configuration)."""
    from models.checkpoint import read_checkpoint
    from workers.pipeline.train_config import TrainConfig

    stored = dict((read_checkpoint(checkpoint)["training_data"].get("config")) or {})
    manifest = os.environ.get("ACCENTMINI")
    if manifest:
        stored["manifest"] = str(Path(manifest) / "manifest.csv")
    fields = set(TrainConfig.__dataclass_fields__)
    return config_pools(TrainConfig(**{k: v for k, v in stored.items() if k in fields and k != "items"}))


def config_pools(config: Any) -> tuple[dict[str, list[str]], list[Any], list[Any]]:
    """:func:`saa_pools` of a ``TrainConfig``."""
    from workers.pipeline.train_data import load_items, make_splits

    items = [it for it in load_items(config) if it.label in LABELS]
    splits = make_splits(items, config)
    train = [items[i] for i in splits["train"] if items[i].corpus == "SAA"]
    val = [items[i] for i in splits["val"] if items[i].corpus == "SAA"]
    speakers = {label: sorted({it.speaker for it in train if it.label == label}) for label in LABELS}
    return speakers, train, val


def draw(speakers: dict[str, list[str]], n: int, seed: int) -> set[str]:
    """``n`` speakers per label, drawn without replacement with ``seed`` (a draw for ``n`` does not depend
    on the other sizes)."""
    rng = np.random.default_rng([seed, n])
    out: set[str] = set()
    for label in LABELS:
        pool = speakers[label]
        if n > len(pool):
            raise ValueError(f"{n} {label} speakers asked for, {len(pool)} in the train split")
        out |= {pool[int(i)] for i in rng.choice(len(pool), size=n, replace=False)}
    return out


def run(family: str, sizes: list[int], seeds: list[int], *, checkpoint: str, cache_dir: str, threads: int = 1,
        epochs: int | None = None, hparams: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Train ``family`` once per (size, seed); the balanced accuracy on the fixed SAA validation speakers."""
    from workers.pipeline.train_config import TrainConfig
    from workers.pipeline.trainers import train_model

    speakers, train, val = saa_pools(checkpoint)
    evaluation = [replace(it, split="test") for it in val]
    rows = []
    for n in sizes:
        for seed in seeds:
            chosen = draw(speakers, n, seed)
            items = [replace(it, split="train") for it in train if it.speaker in chosen] + evaluation
            kw: dict[str, Any] = {"epochs": epochs} if epochs else {}
            config = TrainConfig(name="learning-curve", family=family, items=items, labels=LABELS, n_boot=0,
                                 references=False, num_threads=threads, seed=seed, cache_dir=cache_dir,
                                 val_fraction=0.25, hparams=hparams or {}, **kw)
            t0 = time.time()
            result = train_model(config)
            test = result.metrics["test"]
            rows.append({"family": family, "speakers_per_class": n, "seed": seed,
                         "train_clips": sum(it.split == "train" for it in items), "eval_clips": test["n"],
                         "eval_speakers": len({it.speaker for it in evaluation}),
                         "balanced_accuracy": test["balanced_accuracy"],
                         "recall": {c: v.get("recall") for c, v in (test.get("per_class") or {}).items()}, "seconds": round(time.time() - t0, 1),
                         "load": os.getloadavg()[0]})
            print(json.dumps(rows[-1]), flush=True)
    return rows


def table(rows: list[dict[str, Any]]) -> list[str]:
    """Markdown: one line per family, one column per size: mean balanced accuracy (min-max over seeds)."""
    sizes = sorted({r["speakers_per_class"] for r in rows})
    families = list(dict.fromkeys(r["family"] for r in rows))
    lines = ["| family | " + " | ".join(f"{n} per class" for n in sizes) + " |", "|---|" + "---|" * len(sizes)]
    for fam in families:
        cells = []
        for n in sizes:
            v = [r["balanced_accuracy"] for r in rows if r["family"] == fam and r["speakers_per_class"] == n]
            if not v:
                cells.append("-")
            elif len(v) == 1:
                cells.append(f"{v[0]:.3f} (1 seed)")
            else:
                cells.append(f"{np.mean(v):.3f} ({min(v):.2f}-{max(v):.2f}, {len(v)} seeds)")
        lines.append(f"| `{fam}` | " + " | ".join(cells) + " |")
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--family", default="whisper_probe")
    p.add_argument("--speakers", type=int, nargs="+", default=[4, 8, 16, 32, 64], help="training speakers per class")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--checkpoint", default=str(ROOT / "models" / "checkpoints" / "accent-native-2.1.0.pt"),
                   help="whose stored configuration gives the split (default: accent-native 2.1.0)")
    p.add_argument("--cache-dir", default=os.environ.get("ACCENTSITE_CACHE", "/tmp/accentsite-cache"))
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--hparams", default="{}", help="JSON object merged over the family's defaults")
    p.add_argument("--out", default=None)
    p.add_argument("--table", nargs="*", default=None, help="only print the table of these saved JSON files")
    args = p.parse_args(argv)
    if args.table is not None:
        rows = [r for f in args.table for r in json.loads(Path(f).read_text())]
        print("\n".join(table(rows)))
        return 0
    import torch

    torch.set_num_threads(args.threads)
    rows = run(args.family, args.speakers, args.seeds, checkpoint=args.checkpoint, cache_dir=args.cache_dir,
               threads=args.threads, epochs=args.epochs, hparams=json.loads(args.hparams))
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=1) + "\n")
    print("\n".join(table(rows)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
