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
- ``before``: the path as it was before the shared-spectrogram work (each extractor called on its
  own, in the default order, with the Praat Sound / Pitch sharing it already had but no shared
  power spectrogram and no cached torchaudio transforms, then ``np.savez_compressed``);
- ``now``: ``extract_features`` (per-extractor seconds from its ``timings``) and
  ``result_to_npz_bytes``, what ``FeaturesRunner`` runs.

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


def _forget_new_sharing() -> None:
    """Drop what the newer path shares between extractors: the power spectrogram and the torchaudio
    transforms kept per process (the Praat Sound and Pitch were shared before too)."""
    from workers.pipeline.features import spectrogram_shared

    spectrogram_shared.forget()
    spectrogram_shared.mel_spectrogram.cache_clear()
    spectrogram_shared.mfcc.cache_clear()


def before(x: np.ndarray, names: list[str], times: dict[str, float]) -> None:
    """The earlier path: each extractor alone, no shared spectrogram, default npz compression."""
    from workers.pipeline.features import get_extractor, shared

    shared.forget()  # nothing left over from the other paths on this clip
    results = {}
    for name in names:
        _forget_new_sharing()
        t0 = time.process_time()
        results[name] = get_extractor(name).extract(x, SR)
        times[name] += time.process_time() - t0
    t0 = time.process_time()
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **{f"{n}/{k}": a for n, r in results.items() for k, a in r.arrays.items()})
    times["npz"] += time.process_time() - t0


def now(x: np.ndarray, times: dict[str, float]) -> None:
    """``extract_features`` + ``result_to_npz_bytes``, as the features runner calls them."""
    from workers.pipeline.features import extract_features, result_to_npz_bytes, shared

    shared.forget()  # nothing left over from the other paths on this clip
    per: dict[str, float] = {}
    results = extract_features(x, SR, timings=per)
    for name, seconds in per.items():
        times[name] += seconds
    t0 = time.process_time()
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
    extract_features(signals[0], SR)  # warm-up: imports, numba, openSMILE's configuration, FFT plans
    smile.process_signal(signals[0], SR)
    best: dict[str, dict[str, float]] = {}
    for _ in range(rounds):
        times = {m: dict.fromkeys([*names, "npz"], 0.0) for m in ("before", "now")}
        times["egemaps alone"] = {"egemaps": 0.0}
        for x in signals:
            t = time.process_time()
            smile.process_signal(x, SR)
            times["egemaps alone"]["egemaps"] += time.process_time() - t
            before(x, names, times["before"])
            now(x, times["now"])
        for mode, per in times.items():
            total = sum(per.values())
            if mode not in best or total < sum(best[mode].values()):
                best[mode] = per
    return {"audio_s": audio_s, "decode_ms_per_s": 1000 * decode_s / audio_s, "names": names,
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
        "*before*: each extractor called alone, as the features job ran until the shared spectrogram (Praat Sound and "
        "pitch already shared; no shared power spectrogram; torchaudio transforms built per call); *now*: "
        "`extract_features` + `result_to_npz_bytes`, as `FeaturesRunner` runs them. Values are the same "
        "(`tests/pipeline/test_features_shared.py`).",
        "",
        "| extractor | before ms/s | now ms/s |",
        "|---|---|---|",
    ]
    for name in names:
        lines.append(f"| {name} | {ms['before'][name]:.2f} | {ms['now'][name]:.2f} |")
    tb, tn = sum(ms["before"].values()), sum(ms["now"].values())
    te = ms["egemaps alone"]["egemaps"]
    lines += [
        f"| **total** | **{tb:.1f}** | **{tn:.1f}** |",
        f"| x real time per process | {1000 / tb:.1f} | {1000 / tn:.1f} |",
        "",
        f"openSMILE's eGeMAPS alone, same clips, same rounds: {te:.2f} ms/s ({1000 / te:.0f}x real time). "
        f"Speed-up now / before: {tb / tn:.2f}x. The default set costs {tn / te:.1f}x eGeMAPS alone.",
        "",
    ]
    praat = sum(ms["now"][k] for k in ("formants", "voice_quality", "prosody") if k in ms["now"])
    egemaps = ms["now"].get("egemaps", 0.0)
    lines += [
        f"Where the time goes now: eGeMAPS (openSMILE's C library) {100 * egemaps / tn:.0f} %, the Praat analyses "
        f"(formants, voice quality, prosody: Burg formants after Praat's resampling to 11 kHz, cross-correlation "
        f"harmonicity, one pitch track shared by the three) {100 * praat / tn:.0f} %, everything else "
        f"{100 * (tn - egemaps - praat) / tn:.0f} %. Nothing is computed twice between extractors any more, so "
        "a further large step per process needs fewer analyses or cheaper settings, which change values.",
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
