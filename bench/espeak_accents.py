"""A small accent-like data set made by espeak-ng, for measuring how families learn from little data.

Each class is one espeak-ng English voice (an accent: ``en-us``, ``en-gb-scotland``, ...); each
"speaker" is a voice variant (``+m3``, ``+f2``, ...: another timbre) with its own pitch and rate, the
same variants in every class, so only the accent tells the classes apart. Splits are by speaker:
the test speakers are variants no training clip used.

    python -m bench.espeak_accents --family cnn --train-speakers 4 8 12 --out var/exp/espeak-cnn.json

trains the family on growing numbers of training speakers per class and prints the balanced accuracy
on the held-out speakers (the learning curve in docs/models/cnn-small-data.md).
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np

SENTENCES = (
    "Please call Stella.",
    "Ask her to bring these things with her from the store.",
    "Six spoons of fresh snow peas, five thick slabs of blue cheese.",
    "Maybe a snack for her brother Bob.",
    "We also need a small plastic snake and a big toy frog for the kids.",
    "She can scoop these things into three red bags.",
    "And we will go meet her Wednesday at the train station.",
    "The birch canoe slid on the smooth planks.",
    "Glue the sheet to the dark blue background.",
    "It's easy to tell the depth of a well.",
    "These days a chicken leg is a rare dish.",
    "Rice is often served in round bowls.",
    "The juice of lemons makes fine punch.",
    "The box was thrown beside the parked truck.",
    "Four hours of steady work faced us.",
    "A large size in stockings is hard to sell.",
)
VARIANTS = ("m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5", "klatt", "klatt2", "klatt3",
            "klatt4", "croak", "whisperf")
ACCENTS = {"us": "en-us", "scottish": "en-gb-scotland"}
#: every accent this script knows (``--accents``)
VOICES = {"us": "en-us", "scottish": "en-gb-scotland", "rp": "en-gb-x-rp", "caribbean": "en-029"}


def available() -> bool:
    """Whether espeak-ng is installed."""
    return shutil.which("espeak-ng") is not None


def synthesise(text: str, voice: str, *, pitch: int = 50, rate: int = 160, sample_rate: int = 16000) -> np.ndarray:
    """espeak-ng speech ``[time]`` float32 at ``sample_rate``."""
    import soundfile as sf
    from scipy.signal import resample_poly

    wav = subprocess.run(["espeak-ng", "-v", voice, "-p", str(pitch), "-s", str(rate), "--stdout", text],
                         check=True, capture_output=True).stdout
    x, sr = sf.read(io.BytesIO(wav), dtype="float32")
    g = np.gcd(int(sr), sample_rate)
    return resample_poly(x, sample_rate // g, int(sr) // g).astype(np.float32)


def speakers(n: int, seed: int = 0) -> list[tuple[str, int, int]]:
    """``n`` speakers: (variant, pitch 30-70, rate 140-185), variants in a seeded order."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(VARIANTS))
    if n > len(VARIANTS):
        raise ValueError(f"at most {len(VARIANTS)} speakers")
    return [(VARIANTS[int(k)], int(rng.integers(30, 71)), int(rng.integers(140, 186))) for k in order[:n]]


def make_items(cache: str | Path, *, accents: dict[str, str] | None = None, n_train: int = 8, n_test: int = 4,
               n_sentences: int = 8, seed: int = 0) -> list[Any]:
    """TrainItems (``workers.pipeline.data.TrainItem``) of ``n_train`` + ``n_test`` speakers per class,
    ``n_sentences`` sentences each, written once as FLAC under ``cache``. The test speakers are the same
    variants in every class (and the same for every ``n_train``), none of them speaks a training clip;
    a variant's pitch and rate differ between classes."""
    import soundfile as sf

    from workers.pipeline.data import TrainItem

    accents = accents or ACCENTS
    cache = Path(cache)
    cache.mkdir(parents=True, exist_ok=True)
    people = speakers(n_train + n_test, seed)
    items = []
    for c, (label, voice) in enumerate(accents.items()):
        rng = np.random.default_rng([seed, c])
        for s, (variant, pitch, rate) in enumerate(people):
            pitch_c = int(np.clip(pitch + rng.integers(-8, 9), 0, 99))
            rate_c = int(np.clip(rate + rng.integers(-10, 11), 80, 450))
            split = "test" if s < n_test else "train"  # the first voices: the same test set for any n_train
            for k in range(n_sentences):
                text = SENTENCES[(k + s) % len(SENTENCES)]
                path = cache / f"{label}-{variant}-{pitch_c}-{rate_c}-{(k + s) % len(SENTENCES)}.flac"
                if not path.exists():
                    sf.write(path, synthesise(text, f"{voice}+{variant}", pitch=pitch_c, rate=rate_c), 16000)
                items.append(TrainItem(str(path), label, f"{label}-{variant}", "espeak", split, key=path.name,
                                       transcript=text))
    return items


def learning_curve(family: str, train_speakers: list[int], *, cache: str, n_test: int = 4, n_sentences: int = 8,
                   seed: int = 0, epochs: int | None = None, threads: int = 1,
                   hparams: dict[str, Any] | None = None, min_steps_per_epoch: int | None = None,
                   accents: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """Train ``family`` with each number of training speakers per class; held-out-speaker balanced accuracy."""
    from workers.pipeline.train_config import TrainConfig
    from workers.pipeline.trainers import train_model

    rows = []
    for n in train_speakers:
        accents = accents or ACCENTS
        items = make_items(cache, accents=accents, n_train=n, n_test=n_test, n_sentences=n_sentences, seed=seed)
        kw: dict[str, Any] = {"epochs": epochs} if epochs else {}
        if min_steps_per_epoch is not None:  # 1: the loop as it was before the floor (an epoch = one pass)
            kw["min_steps_per_epoch"] = min_steps_per_epoch
        config = TrainConfig(name="espeak", family=family, items=items, labels=list(accents), n_boot=0,
                             references=False, num_threads=threads, seed=seed, cache_dir=f"{cache}/features",
                             val_fraction=0.25, hparams=hparams or {}, **kw)
        t0 = time.time()
        result = train_model(config)
        test = result.metrics["test"]
        rows.append({"family": family, "classes": list(accents), "train_speakers_per_class": n, "min_steps_per_epoch": min_steps_per_epoch,
                     "train_clips": sum(it.split == "train" for it in items), "test_clips": test["n"],
                     "balanced_accuracy": test["balanced_accuracy"], "best_epoch": result.best_epoch,
                     "seconds": round(time.time() - t0, 1)})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--family", default="cnn")
    p.add_argument("--train-speakers", type=int, nargs="+", default=[4, 8, 12])
    p.add_argument("--test-speakers", type=int, default=4)
    p.add_argument("--sentences", type=int, default=8)
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--hparams", default="{}", help="JSON object merged over the family's defaults")
    p.add_argument("--accents", default="us,scottish", help=f"comma-separated, of {', '.join(VOICES)}")
    p.add_argument("--min-steps-per-epoch", type=int, default=None, help="1: the generic loop before its floor")
    p.add_argument("--cache", default="var/exp/espeak-accents")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    rows = learning_curve(args.family, args.train_speakers, cache=args.cache, n_test=args.test_speakers,
                          n_sentences=args.sentences, seed=args.seed, epochs=args.epochs, threads=args.threads,
                          hparams=json.loads(args.hparams), min_steps_per_epoch=args.min_steps_per_epoch,
                          accents={a: VOICES[a] for a in args.accents.split(",")})
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
