"""Accuracy and speed of the zero-shot ``spoken-words`` model on speech anyone can inspect.

    .venv/bin/python -m bench.spoken_words [--min-audio-s 3] [--split train|test|all] [--json out.json]

1. **FSDD digit strings** from accent-mini (``ACCENTMINI``; 60 clips, 6 speakers, each clip the ten
   digits 0-9 of one speaker concatenated with 150-ms gaps): every clip is cut at its pauses
   (``split_at_pauses``); a clip that does not give exactly ten pieces is skipped and counted. Each
   piece is labelled with its digit by its position.
2. **espeak-ng voices**: each digit word said alone by every English voice espeak-ng ships (no data
   folder needed).

The ``--json`` file holds, per set, an evaluation report (``workers.pipeline.evaluation``; the
checkpoint script stores FSDD test as the card's ``test``) beside the figures printed here.

Every piece goes through the service's path, ``classify_batch`` over the shipped checkpoint (no VAD,
the ten digits as classes, threshold 0.8), on one thread, one clip at a time as ``/predict`` runs
it. Prints accuracy, coverage and accuracy at the threshold, the confusions, and seconds per clip.
Settings are chosen on accent-mini's ``train`` speakers (``--split train``); ``test`` is reported.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import shutil
import subprocess
import time
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("ACCENTMINI", ROOT.parent / "shared" / "data" / "accent-mini"))
VOICES = ("en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-029", "en-gb-x-gbclan", "en-gb-x-gbcwmd", "en-us-nyc")
THRESHOLD = 0.8


def _cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def fsdd_pieces(split: str) -> tuple[list[tuple[str, str, np.ndarray]], int]:
    """``[(speaker, digit word, samples)]`` from the FSDD clips of ``split`` (``all``: both), and the
    number of clips skipped because they did not cut into ten pieces."""
    from models.spoken_words import DIGITS
    from workers.pipeline.audio import load_audio
    from workers.pipeline.spoken_words import split_at_pauses

    rows = [r for r in csv.DictReader(open(DATA / "manifest.csv")) if r["corpus"] == "FSDD"
            and (split == "all" or r["split"] == split)]
    out, skipped = [], 0
    for r in sorted(rows, key=lambda r: r["path"]):
        x = load_audio(str(DATA / r["path"]), 16000).samples
        spans = split_at_pauses(x, 16000)
        if len(spans) != 10:
            skipped += 1
            continue
        out += [(r["speaker_id"], DIGITS[k], x[a:b]) for k, (a, b) in enumerate(spans)]
    return out, skipped


def espeak_pieces() -> list[tuple[str, str, np.ndarray]]:
    """Each digit word said alone by each English espeak-ng voice, 16 kHz."""
    import io
    from math import gcd

    import soundfile as sf
    from scipy.signal import resample_poly

    from models.spoken_words import DIGITS

    if shutil.which("espeak-ng") is None:
        return []
    out = []
    for voice in VOICES:
        for word in DIGITS:
            wav = subprocess.run(["espeak-ng", "-v", voice, "--stdout", word], check=True, capture_output=True).stdout
            x, sr = sf.read(io.BytesIO(wav), dtype="float32")
            g = gcd(16000, sr)
            out.append((voice, word, resample_poly(x, 16000 // g, sr // g).astype(np.float32)))
    return out


def score(loaded, pieces: list[tuple[str, str, np.ndarray]], corpus: str, n_boot: int = 1000) -> dict:
    """Run every piece through ``classify_batch`` one at a time; accuracy, selective figures, timings."""
    from workers.pipeline.evaluation import evaluation_report
    from workers.pipeline.inference import classify_batch

    right, ok, ok_right, secs, conf, proba = [], [], [], [], Counter(), []
    per_speaker: dict[str, list[bool]] = {}
    for speaker, word, x in pieces:
        t0 = time.perf_counter()
        (o,) = classify_batch(loaded, [x], vad=False, threshold=THRESHOLD, window_s=30.0, hop_s=30.0)
        secs.append(time.perf_counter() - t0)
        proba.append([o.probabilities[c] for c in loaded.spec.labels])
        hit = o.predicted_class == word
        right.append(hit)
        ok.append(o.outcome == "ok")
        if o.outcome == "ok":
            ok_right.append(hit)
        if not hit:
            conf[(word, o.predicted_class)] += 1
        per_speaker.setdefault(speaker, []).append(hit)
    n = len(pieces)
    report = evaluation_report([w for _, w, _ in pieces], np.asarray(proba), list(loaded.spec.labels),
                               speakers=[sp for sp, _, _ in pieces], corpora=[corpus] * n, n_boot=n_boot) if n else {}
    return {
        "report": report,
        "n": n, "accuracy": float(np.mean(right)) if n else None, "coverage": float(np.mean(ok)) if n else None,
        "accuracy_answered": float(np.mean(ok_right)) if ok_right else None, "answered": len(ok_right),
        "answered_wrong": int(len(ok_right) - sum(ok_right)),
        "per_speaker": {s: f"{sum(v)}/{len(v)}" for s, v in sorted(per_speaker.items())},
        "confusions": {f"{a}->{b}": c for (a, b), c in conf.most_common()},
        "seconds_per_clip": {"median": float(np.median(secs)) if secs else None,
                             "p90": float(np.percentile(secs, 90)) if secs else None,
                             "mean_duration_s": float(np.mean([len(x) / 16000 for *_, x in pieces])) if n else None},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", default=str(ROOT / "models" / "checkpoints" / "spoken-words.pt"))
    ap.add_argument("--min-audio-s", type=float, default=None, help="override the checkpoint's padding (for the choice)")
    ap.add_argument("--split", default="all", choices=("train", "test", "all"))
    ap.add_argument("--no-espeak", action="store_true")
    ap.add_argument("--json")
    args = ap.parse_args()

    import torch

    from models.checkpoint import load_checkpoint

    torch.set_num_threads(1)
    loaded = load_checkpoint(args.checkpoint)
    loaded.model.attach_encoder(threads=1)
    if args.min_audio_s is not None:
        loaded.model.min_audio_s = args.min_audio_s
    results = {"machine": f"{_cpu_name()}, {os.cpu_count()} cores",
               "load": os.getloadavg(), "min_audio_s": loaded.model.min_audio_s, "threshold": THRESHOLD}
    if (DATA / "manifest.csv").exists():
        splits = ("train", "test") if args.split == "all" else (args.split,)
        for split in splits:
            pieces, skipped = fsdd_pieces(split)
            results[f"fsdd_{split}"] = dict(score(loaded, pieces, "FSDD"), clips_skipped=skipped)
    if not args.no_espeak:
        results["espeak"] = score(loaded, espeak_pieces(), "espeak-ng", n_boot=0)
    results["load_after"] = os.getloadavg()
    text = json.dumps(results, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")


if __name__ == "__main__":
    main()
