"""Transcription: WER and speed of the service's ``transcribe`` against faster-whisper's own defaults.

    .venv/bin/python -m bench.asr [--split test|train] [--write]

Same run, same clips, one CPU thread, Whisper base int8 (the bundled model): every configuration
transcribes the first ``CHUNK`` clips, then every configuration the next ones, and so on, so a change
in the machine's load falls on all of them alike. faster-whisper is called clip by clip, as its users
call it; the service a chunk at a time, as a transcribe job's worker calls it. Clips: a fixed subset of accent-mini's real read speech with known
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


#: recordings per call of the service, as a transcribe job's chunk holds them (``recognition.jobkinds``)
CHUNK = 16


def configurations(engine) -> dict[str, Callable]:
    """``{name: fn([samples, ...]) -> [(text, language), ...]}``; the first is the baseline.

    The library is called once per clip, as its users call it; the service once per chunk of
    ``CHUNK`` clips, as a transcribe job's worker calls it."""
    from faster_whisper import BatchedInferencePipeline

    from workers.pipeline.whisper_asr import transcribe_many

    model = engine.model
    batched = BatchedInferencePipeline(model)

    def library(**kw):
        def run(xs):
            out = []
            for x in xs:
                segments, info = model.transcribe(x, **kw)
                out.append((" ".join(s.text for s in segments), info.language))
            return out
        return run

    def batched_run(xs):
        out = []
        for x in xs:
            segments, info = batched.transcribe(x, batch_size=8)
            out.append((" ".join(s.text for s in segments), info.language))
        return out

    def service(**kw):
        def run(xs):
            return [(o["text"], o["language"]) for o in transcribe_many(engine, xs, **kw)]
        return run

    return {
        "faster-whisper defaults (beam 5, fallback, no VAD, language from its own pass)": library(),
        "BatchedInferencePipeline (batch 8, beam 5, VAD)": batched_run,
        "**service default** (beam 5, VAD pieces, short pieces packed 29 s to an encoding)": service(),
        "service, packed, greedy (beam 1)": service(beam_size=1),
        "service, unpacked (one 30-s encoding per piece, fallback; the previous default)": service(pack=False),
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
    for fn in configs.values():  # warm-up (VAD model, first allocations, the silence encoding)
        fn([data[0].samples, data[1].samples])
    load_before = os.getloadavg()
    errs = {name: {} for name in configs}
    seconds = dict.fromkeys(configs, 0.0)
    foreign = {name: [] for name in configs}
    for start in range(0, len(data), CHUNK):
        chunk = data[start:start + CHUNK]
        for name, fn in configs.items():
            print(f"clips {start}-{start + len(chunk)}: {name[:50]}", file=sys.stderr, flush=True)
            t0 = time.perf_counter()
            answers = fn([clip.samples for clip in chunk])
            seconds[name] += time.perf_counter() - t0
            for clip, (text, language) in zip(chunk, answers, strict=True):
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
            "(its clips are cut at 8 s). Seconds: wall time over all clips, configurations interleaved chunk by chunk "
            f"({CHUNK} clips, a transcribe job's chunk). "
            "Rule for the service's defaults, fixed before the `test` split was first run: the fastest service configuration whose WER on the "
            "`train` split is at most faster-whisper's defaults' + 0.5 points; the `test` split is the check. Amended on 2026-12-07 "
            "after the train run and before the test split was read: configurations whose speeds differ by under 10 % count as "
            "equally fast (at a load average of 8 on 2 cores, greedy packed decoding was 8 % faster than beam 5), and among "
            "equally fast ones the lower train WER wins. Amended again on 2026-12-07 at about 11:21 UTC, after a train run on a quiet "
            "machine (greedy packed 4.58x at 12.3 %, beam-5 packed 3.22x at 9.9 %) and before the test split was read with "
            "packing: the issue's targets are bounds (WER at most the library's + 0.5 points, at least 2x its speed), so among "
            "the configurations that meet both on `train` the lowest train WER wins; speed beyond 2x is not bought with words.", ""]
    text = "\n".join(out)
    print(text)
    if args.write:
        from bench.run import write_section

        write_section(DOC, f"asr-{args.split}", text)


if __name__ == "__main__":
    main()
