"""In-process speed of classifiers on the same clips, alternating, one thread: the check that a new
default is at least as fast per worker process as the one it replaces.

    .venv/bin/python -m bench.model_speed models/checkpoints/accent-native.pt models/checkpoints/accent-native-2.1.0.pt

Clips: the first ``--clips`` SAA clips of accent-mini's train split (speed only; no accuracy is read),
else espeak-ng speech (``bench.corpus.generated``). Each model is loaded once, attached to its encoder
with ``WHISPER_PROBE_ENGINE``'s rule (``auto``: CTranslate2 int8 on a CPU without AMX), warmed on two
clips, then every round times ``classify_batch`` over all clips for each model in turn, so the machine's
load falls on both alike. Prints the seconds per round, the best round as x real time, and ``uptime``'s load.
"""
from __future__ import annotations

import argparse
import csv
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import corpus  # noqa: E402


def clips(n: int) -> list:
    """``n`` accent-mini SAA train clips as float32 arrays (16 kHz), or generated speech without the bundle."""
    from workers.pipeline.data import TrainItem, load_item_audio

    manifest = corpus.ACCENT_MINI / "manifest.csv"
    if manifest.exists():
        rows = [r for r in csv.DictReader(open(manifest, newline="")) if r["corpus"] == "SAA" and r["split"] == "train"][:n]
        return [load_item_audio(TrainItem(str(corpus.ACCENT_MINI / r["path"]), "x", r["speaker_id"])) for r in rows]
    import tempfile

    from workers.pipeline.audio import load_audio

    return [load_audio(str(c.path), sample_rate=16000).samples for c in corpus.generated(n, Path(tempfile.mkdtemp(prefix="speed-")))]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoints", nargs="+")
    p.add_argument("--clips", type=int, default=40)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--engine", default=os.environ.get("WHISPER_PROBE_ENGINE", "auto"))
    a = p.parse_args(argv)
    import torch

    from models.checkpoint import load_served
    from workers.pipeline.inference import classify_batch

    torch.set_num_threads(1)
    signals = clips(a.clips)
    audio_s = sum(len(s) for s in signals) / 16000
    models = {}
    for path in a.checkpoints:
        loaded, engine = load_served(path, engine=a.engine, threads=1)
        name = f"{loaded.spec.name}@{loaded.spec.version}"
        classify_batch(loaded, signals[:2], vad=False)  # warm
        models[name] = (loaded, engine, [])
    load_before = os.getloadavg()
    for _ in range(a.rounds):
        for loaded, _engine, times in models.values():
            t0 = time.perf_counter()
            classify_batch(loaded, signals, vad=False)
            times.append(time.perf_counter() - t0)
    print(f"{len(signals)} clips, {audio_s:.0f} s of audio, 1 thread; load before {load_before}, after {os.getloadavg()}")
    print("| model | engine | seconds per round | best, x real time |")
    print("|---|---|---|---|")
    for name, (_loaded, engine, times) in models.items():
        print(f"| {name} | {engine or '-'} | {' / '.join(f'{t:.2f}' for t in times)} | {audio_s / min(times):.0f}x |")


if __name__ == "__main__":
    main()
