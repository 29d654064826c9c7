"""The features job's default extractor set, timed per extractor beside openSMILE's eGeMAPS alone.

    .venv/bin/python -m bench.features                 # 24 clips, 3 rounds, prints the tables
    .venv/bin/python -m bench.features --write         # and writes the ``features`` section of docs/benchmarks.md

Clips: a fixed, corpus-stratified set from accent-mini's **train** split (never its test split)
when the bundle is present, else generated ones (``bench.corpus.generated``: espeak-ng speech or a
synthetic voice), so it runs anywhere. Every clip is decoded once (``load_audio``, timed apart).

Per clip and round, interleaved so the machine's load falls on all of them alike, one process, one
thread:

- ``egemaps alone``: ``opensmile.Smile(eGeMAPSv02, Functionals).process_signal``, what a user of
  openSMILE alone would run;
- ``before``: the default set as it was until 2026-12-07 (``PREVIOUS_DEFAULT``: eGeMAPS, Praat
  formants, log-mel, MFCC, prosody, spectral, Praat voice quality), through ``extract_features``
  (the same sharing of Sound, pitch and spectrogram), then the deflated ``np.savez_compressed``;
- ``now``: ``extract_features`` with the default set (each quantity once: Praat's formants and
  voice report are opt-in, eGeMAPS measures both) and ``result_to_npz_bytes`` (stored, not
  deflated), what ``FeaturesRunner`` runs.

Times are the process's CPU time (``time.process_time``: every thread, and Praat runs its pitch
and harmonicity analyses on two, so a thread's own time would undercount them; not the time spent
waiting for a core on a shared machine; the load still shows through caches and clocks). The best
of the rounds counts; ``uptime`` is recorded before and after. ``--cold`` adds the cold start: a fresh Python process's imports and
first recording, with and without ``features.warm_up()`` first (what a worker now does at start).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from bench import corpus  # noqa: E402

DOC = ROOT / "docs" / "benchmarks.md"
SR = 16000


def train_clips(n: int, root: Path = corpus.ACCENT_MINI, seed: int = 0) -> list[Path]:
    """``n`` accent-mini train-split clips, round-robin over the corpora (a fixed draw per seed)."""
    manifest = root / "manifest.csv"
    if not manifest.exists():
        return []
    by_corpus: dict[str, list[dict]] = {}
    for row in csv.DictReader(open(manifest, newline="")):
        if row["split"] == "train":
            by_corpus.setdefault(row["corpus"], []).append(row)
    rng = np.random.default_rng(seed)
    queues = [[rows[i] for i in rng.permutation(len(rows))] for _, rows in sorted(by_corpus.items())]
    picked: list[Path] = []
    while len(picked) < n and any(queues):
        for q in queues:
            if q and len(picked) < n:
                picked.append(root / q.pop()["path"])
    return picked


def clips(n: int) -> tuple[list[Path], str]:
    paths = train_clips(n)
    if paths:
        return paths, "accent-mini train split"
    folder = Path(tempfile.mkdtemp(prefix="bench-features-"))
    return [c.path for c in corpus.generated(n, folder)], "generated (espeak-ng / synthetic)"


#: The default set until 2026-12-07, for the ``before`` column.
PREVIOUS_DEFAULT = ("egemaps", "formants", "logmel", "mfcc", "prosody", "spectral", "voice_quality")


def run_set(x: np.ndarray, names: list[str] | None, times: dict[str, float], *, deflate: bool) -> None:
    """``extract_features`` over ``names`` (None: the default set) and the ``.npz`` of its arrays,
    deflated as before or stored as now; adds each extractor's and the npz's CPU seconds to ``times``."""
    from workers.pipeline.features import extract_features, result_to_npz_bytes, shared

    shared.forget()  # nothing left over from the other paths on this clip
    per: dict[str, float] = {}
    results = extract_features(x, SR, names, timings=per)
    for name, seconds in per.items():
        times[name] += seconds
    t0 = time.process_time()
    if deflate:
        np.savez_compressed(io.BytesIO(), **{f"{n}/{k}": a for n, r in results.items() for k, a in r.arrays.items()})
    else:
        result_to_npz_bytes(results)
    times["npz"] += time.process_time() - t0


def measure(paths: list[Path], rounds: int) -> dict:
    from workers import runtime
    from workers.pipeline.audio import load_audio
    from workers.pipeline.features import default_extractors, extract_features

    runtime.configure_threads(1)
    import opensmile

    t0 = time.process_time()
    signals = [load_audio(p, SR).samples for p in paths]
    decode_s = time.process_time() - t0
    audio_s = sum(len(s) for s in signals) / SR
    names = default_extractors()
    smile = opensmile.Smile(feature_set=opensmile.FeatureSet.eGeMAPSv02, feature_level=opensmile.FeatureLevel.Functionals)
    extract_features(signals[0], SR, PREVIOUS_DEFAULT)  # warm-up: imports, numba, openSMILE's configuration, FFT plans
    smile.process_signal(signals[0], SR)
    best: dict[str, dict[str, float]] = {}
    for _ in range(rounds):
        times = {"before": dict.fromkeys([*PREVIOUS_DEFAULT, "npz"], 0.0), "now": dict.fromkeys([*names, "npz"], 0.0)}
        times["egemaps alone"] = {"egemaps": 0.0}
        for x in signals:
            t = time.process_time()
            smile.process_signal(x, SR)
            times["egemaps alone"]["egemaps"] += time.process_time() - t
            run_set(x, list(PREVIOUS_DEFAULT), times["before"], deflate=True)
            run_set(x, None, times["now"], deflate=False)
        for mode, per in times.items():
            total = sum(per.values())
            if mode not in best or total < sum(best[mode].values()):
                best[mode] = per
    return {"audio_s": audio_s, "decode_ms_per_s": 1000 * decode_s / audio_s, "names": list(PREVIOUS_DEFAULT),
            "ms_per_s": {m: {k: 1000 * v / audio_s for k, v in per.items()} for m, per in best.items()}}


_COLD = """
import json, sys, time
t0 = time.perf_counter()
import numpy as np
from workers import runtime
runtime.configure_threads(1)
from workers.pipeline.audio import load_audio
from workers.pipeline import features
t1 = time.perf_counter()
warm = 0.0
if sys.argv[2] == "warm":
    features.warm_up()
    warm = time.perf_counter() - t1
x = load_audio(sys.argv[1]).samples
t2 = time.perf_counter()
features.extract_features(x, 16000)
print(json.dumps({"import_s": t1 - t0, "warm_up_s": warm, "first_recording_s": time.perf_counter() - t2}))
"""


def cold_start(path: Path) -> dict:
    """A fresh process's imports and first recording, without and with ``features.warm_up()``."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = {}
    for mode in ("cold", "warm"):
        proc = subprocess.run([sys.executable, "-c", _COLD, str(path), mode], capture_output=True, text=True, env=env, cwd=ROOT)
        if proc.returncode:
            raise RuntimeError(proc.stderr[-2000:])
        out[mode] = json.loads(proc.stdout.strip().splitlines()[-1])
    return out


def _uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def report(m: dict, source: str, n: int, rounds: int, up: tuple[str, str], cold: dict | None) -> str:
    ms = m["ms_per_s"]
    names = [*m["names"], "npz"]
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    lines = [
        f"## Features: the default extractor set beside openSMILE's eGeMAPS alone (`python -m bench.features`, "
        f"{time.strftime('%Y-%m-%d %H:%M')})",
        "",
        f"{n} clips ({m['audio_s']:.0f} s of audio, {source}), one process (one torch and BLAS thread), {os.cpu_count()} cores "
        f"({cpu}); best of {rounds} interleaved rounds. CPU ms of the process (`time.process_time`, all threads: "
        "Praat's pitch analyses use two; time spent waiting for a core on the busy machine is left out) per "
        "second of audio, lower is faster; decoding "
        f"(`load_audio`, once per clip, shared by all extractors) {m['decode_ms_per_s']:.2f} ms/s is not in the totals.",
        "",
        f"`uptime` before: `{up[0]}`; after: `{up[1]}`.",
        "",
        "*before*: the default set until 2026-12-07 (eGeMAPS, Praat formants, log-mel, MFCC, prosody, spectral, Praat "
        "voice quality), through `extract_features` with the same sharing of Sound, pitch and spectrogram, and a deflated "
        "`.npz`; *now*: the default set, which measures each quantity once (eGeMAPS has F1-F3, jitter, shimmer and HNR; "
        "Praat's `formants` and `voice_quality` are opt-in by name) and stores the `.npz` undeflated (float tracks "
        "deflate by ~12 %), as `FeaturesRunner` runs it. '-': not in the set. Values of what both run are the same "
        "(`tests/pipeline/test_features_shared.py`).",
        "",
        "| extractor | before ms/s | now ms/s |",
        "|---|---|---|",
    ]
    for name in names:
        now_ms = f"{ms['now'][name]:.2f}" if name in ms["now"] else "-"
        lines.append(f"| {name} | {ms['before'][name]:.2f} | {now_ms} |")
    tb, tn = sum(ms["before"].values()), sum(ms["now"].values())
    te = ms["egemaps alone"]["egemaps"]
    lines += [
        f"| **total** | **{tb:.1f}** | **{tn:.1f}** |",
        f"| x real time per process | {1000 / tb:.1f} | {1000 / tn:.1f} |",
        f"| cost / eGeMAPS alone | {tb / te:.2f}x | {tn / te:.2f}x |",
        "",
        f"openSMILE's eGeMAPS alone, same clips, same rounds: {te:.2f} ms/s ({1000 / te:.0f}x real time). "
        f"Speed-up now / before: **{tb / tn:.2f}x**. The default set costs {tn / te:.2f}x eGeMAPS alone "
        f"(before: {tb / te:.2f}x).",
        "",
    ]
    egemaps = ms["now"].get("egemaps", 0.0)
    pitch = ms["now"].get("prosody", 0.0)
    lines += [
        f"Where the time goes now: eGeMAPS (openSMILE's C library) {100 * egemaps / tn:.0f} %, prosody (Praat's pitch "
        f"and intensity) {100 * pitch / tn:.0f} %, everything else {100 * (tn - egemaps - pitch) / tn:.0f} %. "
        "With eGeMAPS in the set, no change to the rest can make it more than "
        f"{tb / egemaps:.1f}x faster than before.",
        "",
    ]
    if cold:
        c, w = cold["cold"], cold["warm"]
        lines += [
            "Cold start, a fresh process (one clip): imports "
            f"{c['import_s']:.2f} s, then the first recording {c['first_recording_s']:.2f} s without a warm-up; "
            f"with `features.warm_up()` first ({w['warm_up_s']:.2f} s, run at worker start: the parent before the "
            f"fork, each child after it) the first recording takes {w['first_recording_s']:.2f} s.",
            "",
        ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clips", type=int, default=24)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--cold", action="store_true", help="also time a fresh process's first recording, with and without warm_up")
    p.add_argument("--write", action="store_true", help=f"write the section into {DOC.relative_to(ROOT)}")
    p.add_argument("--json", type=Path, help="also save the raw numbers here")
    args = p.parse_args(argv)
    paths, source = clips(args.clips)
    up_before = _uptime()
    m = measure(paths, args.rounds)
    cold = cold_start(paths[0]) if args.cold else None
    up_after = _uptime()
    text = report(m, source, len(paths), args.rounds, (up_before, up_after), cold)
    print(text)
    if args.json:
        args.json.write_text(json.dumps({**m, "uptime": [up_before, up_after], "cold": cold}, indent=1))
    if args.write:
        from bench.run import write_section

        write_section(DOC, "features", text)


if __name__ == "__main__":
    main()
