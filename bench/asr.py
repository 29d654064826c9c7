"""Transcription: WER and speed of the service's ``transcribe`` against faster-whisper's own defaults.

    .venv/bin/python -m bench.asr [--split test|train] [--write]

Same run, same clips, one CPU thread, Whisper base int8 (the bundled model): every configuration
transcribes clip 1, then every configuration clip 2, and so on, so a change in the machine's load
falls on all of them alike. Clips: a fixed subset of accent-mini's real read speech with known
text (:mod:`bench.asr_data`: the first 16 speechocean762, 8 SAA and 4 FSDD clips of a split, by
path). The defaults were chosen on ``--split train``; ``--split test`` is the reported check.
``--write`` puts the split's section into docs/benchmarks.md (``bench.run.write_section``, mode
``asr-<split>``). Speed is
reported, never asserted.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "benchmarks.md"


def configurations(engine) -> dict[str, Callable]:
    """``{name: fn(samples) -> (text, language)}``; the first is the baseline."""
    from faster_whisper import BatchedInferencePipeline

    from workers.pipeline.whisper_asr import transcribe

    model = engine.model
    batched = BatchedInferencePipeline(model)

    def library(**kw):
        def run(x):
            segments, info = model.transcribe(x, **kw)
            return " ".join(s.text for s in segments), info.language
        return run

    def batched_run(x):
        segments, info = batched.transcribe(x, batch_size=8)
        return " ".join(s.text for s in segments), info.language

    def service(**kw):
        def run(x):
            out = transcribe(engine, x, **kw)
            return out["text"], out["language"]
        return run

    return {
        "faster-whisper defaults (beam 5, fallback, no VAD, language from its own pass)": library(),
        "previous service (greedy, VAD, language on VAD audio, word times)": library(
            beam_size=1, vad_filter=True, word_timestamps=True, condition_on_previous_text=False),
        "BatchedInferencePipeline (batch 8, beam 5, VAD)": batched_run,
        "**service default** (beam 5, fallback, VAD pieces, one 30-s encoding per piece, word times)": service(),
        "service, 20-s encoding": service(context_s=20.0),
        "service, 20-s encoding, greedy (beam 1)": service(context_s=20.0, beam_size=1),
        "service, no VAD (30-s windows)": service(vad_filter=False),
    }


def measure(split: str) -> list[str]:
    from bench.asr_data import SUBSET, clips, errors
    from models.whisper_probe import find_encoder_dir
    from workers.pipeline.whisper_lang import load_engine

    data = clips(split=split)
    if not data:
        return ["accent-mini is not here (ACCENTMINI): nothing measured."]
    engine = load_engine(find_encoder_dir(), device="cpu", compute_type="int8", cpu_threads=1)
    configs = configurations(engine)
    for fn in configs.values():  # warm-up (VAD model, first allocations)
        fn(data[0].samples)
    load_before = os.getloadavg()
    errs = {name: {} for name in configs}
    seconds = dict.fromkeys(configs, 0.0)
    foreign = {name: [] for name in configs}
    for clip in data:
        for name, fn in configs.items():
            print(f"{clip.path} {name[:40]}", file=sys.stderr, flush=True)
            t0 = time.perf_counter()
            text, language = fn(clip.samples)
            seconds[name] += time.perf_counter() - t0
            e, n = errors(clip, text)
            got = errs[name].setdefault(clip.corpus, [0, 0])
            got[0], got[1] = got[0] + e, got[1] + n
            if language != "en":
                foreign[name].append(language)
    audio_s = sum(c.duration_s for c in data)
    corpora = list(SUBSET)
    base = next(iter(configs))
    head = ("| configuration | WER % | " + " | ".join(f"{c} WER %" for c in corpora)
            + " | seconds | x real time | speed vs defaults | not heard as en |")
    rows = [head, "|" + "---|" * (head.count("|") - 1)]
    for name in configs:
        e = sum(v[0] for v in errs[name].values())
        n = sum(v[1] for v in errs[name].values())
        per = " | ".join(f"{100 * errs[name][c][0] / errs[name][c][1]:.1f}" if c in errs[name] else "-" for c in corpora)
        rows.append(f"| {name} | {100 * e / n:.1f} | {per} | {seconds[name]:.1f} | {audio_s / seconds[name]:.1f} | "
                    f"{seconds[base] / seconds[name]:.2f}x | {', '.join(str(code) for code in foreign[name]) or '-'} |")
    counts = ", ".join(f"{sum(c.corpus == k for c in data)} {k}" for k in corpora)
    return [f"Split `{split}`: {len(data)} clips ({counts}), {audio_s:.0f} s of audio. Load average before "
            f"{tuple(round(v, 2) for v in load_before)}, after {tuple(round(v, 2) for v in os.getloadavg())}.", "", *rows]


def cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--split", default="test", choices=("test", "train"))
    ap.add_argument("--write", action="store_true", help="write the section into docs/benchmarks.md")
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    uptime = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    out = [f"## Transcription, `{args.split}` split ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
           f"`python -m bench.asr --split {args.split}`)", "",
           f"Machine: {cpu_name()}, {os.cpu_count()} cores, Whisper base int8 on one thread; "
           f"`uptime` before: {uptime}.", ""]
    out += measure(args.split)
    out += ["", "WER: lower case, punctuation dropped, digits spelled out; SAA against the passage prefix that fits best "
            "(its clips are cut at 8 s). Seconds: wall time over all clips, configurations interleaved clip by clip. "
            "Rule for the service's defaults, fixed before the `test` split was first run: the fastest service configuration whose WER on the "
            "`train` split is at most faster-whisper's defaults' + 0.5 points; the `test` split is the check.", ""]
    text = "\n".join(out)
    print(text)
    if args.write:
        from bench.run import write_section

        write_section(DOC, f"asr-{args.split}", text)


if __name__ == "__main__":
    main()
