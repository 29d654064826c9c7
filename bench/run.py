"""The throughput benchmark: the whole path, a seed-style baseline, the hardware ceiling, scaling.

(One linear script, over 500 lines on purpose: it writes docs/benchmarks.md top to bottom.)

    .venv/bin/python -m bench.run --quick     # make bench       (~2 min on 2 cores)
    .venv/bin/python -m bench.run --full      # make bench-full

What it does (all in one run, tables printed and written to docs/benchmarks.md):

1. End to end. Recordings (generated espeak-ng speech and a synthetic voice, 2-20 s, wav/flac/mp3,
   plus accent-mini test clips when the bundle is present) are uploaded through ``POST
   /api/v1/batches/`` with Django's test client in this process, against a fresh PostgreSQL
   database ``accentsite_bench`` (SQLite when PostgreSQL does not answer) and Redis db 11. Real
   ``celery worker --pool=solo`` processes (one process each, started like tests/conftest.py's
   WorkerProcess) run a classify job (the shipped default model, then a random-weight
   ResNet18-shaped one), an embed job and features jobs, and, without a GPU, the default model's
   classify job again on one process per core (what ``make run`` starts on a CPU-only host), and,
   when the default is a reading_fusion model, its classify job with the passage it reads as the
   job's transcript (the forced-alignment path); each is timed from ``POST
   /api/v1/jobs/`` until its last row is in the database. Stage seconds come from Job.timings.
2. Baseline: the seed-script way (bench/baseline.py) in a fresh process with default threads.
3. Ceiling: FLOPs per window (FlopCounterMode) against timed conv2d / matmul GFLOP/s.
4. Scaling: features jobs on 1, 2 and 4 worker processes; the inference path against batch size;
   worker RSS from /proc.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # this process: librosa/numpy single-threaded like a worker
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import corpus  # noqa: E402

NO_GPU = "not measured: no GPU in this session"
MODES = {
    "quick": dict(
        n_gen=6,
        n_mini=10,
        baseline_n=8,
        procs=(1, 2, 4),
        batch_sizes=(1, 16),
        threads=(1,),
        repeat=1,
        hw_repeat=1,
        feat_n=4,
        agree_n=10,
        vad_e2e=False,
        resnet_batches=(1, 2, 16),
        resnet_clips=2,
        resnet_e2e_n=8,
    ),
    "full": dict(
        n_gen=24,
        n_mini=120,
        baseline_n=None,
        procs=(1, 2, 4),
        batch_sizes=(1, 4, 16, 64, 128),
        threads=(1, 2),
        repeat=2,
        hw_repeat=3,
        feat_n=30,
        agree_n=None,
        vad_e2e=True,
        resnet_batches=(1, 2, 4, 16, 64),
        resnet_clips=8,
        resnet_e2e_n=48,
    ),
}


def machine() -> dict:
    cpu = "unknown"
    flags = ""
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name") and cpu == "unknown":
            cpu = line.split(":", 1)[1].strip()
        if line.startswith("flags") and not flags:
            flags = line
    mem_kb = next(int(line.split()[1]) for line in open("/proc/meminfo") if line.startswith("MemTotal"))
    import torch

    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "ram_gib": round(mem_kb / 2**20, 1),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "avx512_bf16": "avx512_bf16" in flags,
        "amx": "amx_bf16" in flags,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "date": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
    }


def loadavg() -> str:
    return " ".join(open("/proc/loadavg").read().split()[:3])


def table(headers: list[str], rows: list[list]) -> str:
    def cell(v):
        if isinstance(v, float):
            return f"{v:.3g}" if abs(v) < 100 else f"{v:.0f}"
        return str(v)

    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in r) + " |" for r in rows]
    return "\n".join(lines)


class Report:
    def __init__(self) -> None:
        self.parts: list[str] = []

    def add(self, text: str = "") -> None:
        print(text, flush=True)
        self.parts.append(text)

    def text(self) -> str:
        return "\n".join(self.parts) + "\n"


STAGES = [
    ("decode", "decode+resample"),
    ("vad", "VAD"),
    ("features", "features"),
    ("windowing", "windowing"),
    ("forward", "model forward"),
    ("aggregate", "aggregate"),
    ("reading", "reading alignment (transcript)"),
    ("store", "database writes"),
    ("model_load", "model load"),
]


def stage_rows(job: dict, audio_s: float, procs: int) -> tuple[list[list], str]:
    """Rows ``stage, seconds, share of wall`` and the stage that holds the job back."""
    t = dict(job["timings"])
    t["queue_wait"] = job["queue_wait_s"] * procs
    t["finalize"] = job["finalize_s"] * procs
    stages = STAGES + [("queue_wait", "queue wait (submit -> first chunk claimed)"), ("finalize", "job finalize (recount, report)")]
    busy = sum(t.get(k, 0.0) for k, _ in stages)
    overhead = max(0.0, job["wall_s"] - busy / procs)
    rows = [[label, t[k], 100 * t[k] / procs / job["wall_s"]] for k, label in stages if t.get(k)]
    rows.append(["other queue + bookkeeping (wall - the above / processes)", overhead * procs, 100 * overhead / job["wall_s"]])
    worst = max(rows, key=lambda r: r[1])[0]
    return rows, worst


def main() -> None:  # noqa: C901, PLR0915 - one linear script
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--quick", action="store_true")
    g.add_argument("--full", action="store_true")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks.md")
    ap.add_argument(
        "--redis",
        default="private",
        help="broker URL, or 'private' (default): a redis-server of its own on a free port, so nobody's FLUSHALL on the "
        "shared server empties the queues mid-run (that happened with redis://127.0.0.1:6379/11)",
    )
    ap.add_argument("--db", choices=("auto", "postgres", "sqlite"), default="auto")
    ap.add_argument("--no-write", action="store_true", help="print only")
    args = ap.parse_args()
    mode = "full" if args.full else "quick"
    cfg = MODES[mode]
    t_start = time.perf_counter()
    rep = Report()
    info = machine()
    load_start = loadavg()
    work = Path(tempfile.mkdtemp(prefix="accentsite-bench-"))

    # -- corpus ---------------------------------------------------------------------------------
    gen = corpus.generated(cfg["n_gen"], work / "generated")
    mini = corpus.accent_mini(cfg["n_mini"])
    clips = gen + mini
    audio_s = sum(c.duration_s for c in clips)

    # -- service: database, workers, uploads ----------------------------------------------------
    from bench import service

    redis_proc = None
    if args.redis == "private":
        redis_proc, args.redis = service.private_redis(work)
    worker_env = service.configure(work, args.redis, args.db)
    from accentsite.celery import app

    app.control.purge()
    n_workers = max(cfg["procs"])
    workers = [service.Worker(worker_env, work / f"worker{i}.log").start() for i in range(n_workers)]
    from django.conf import settings
    from django.core.files.base import ContentFile
    from django.core.files.storage import default_storage

    from bench import micro
    from recognition.services.models import model_version_from_sidecar, shipped_models_register

    shipped = [mv for mv in shipped_models_register() if mv.task == "classify"]
    default_cls = next((mv for mv in shipped if mv.is_default and mv.name == settings.DEFAULT_MODELS["classify"]), None)
    default_cls = default_cls or (shipped[0] if shipped else None)
    resnet_path, resnet_meta = micro.resnet_checkpoint(work)
    key = default_storage.save("models/bench-resnet18.pt", ContentFile(resnet_path.read_bytes()))
    resnet_mv = model_version_from_sidecar(resnet_meta, checkpoint=f"storage:{key}")
    models = [(default_cls, "shipped default"), (resnet_mv, "random-weight ResNet18-shaped (built by the bench)")]
    models = [(mv, why) for mv, why in models if mv is not None]

    batch_ids, upload_s = service.upload(clips, "bench")
    rec_ids = service.merge_batches(batch_ids, "bench")
    for w in workers:
        w.wait_ready()
    t_ready = time.perf_counter()

    # -- model jobs on one worker process (the gpu-queue worker; CPU here) ---------------------
    w0 = workers[0]
    w0.consume("gpu", "interactive")
    # Warm-up: load each model once (a worker keeps it), first torch calls; reported apart.
    cold = {mv.name: service.run_job("classify", rec_ids[:2], model=f"{mv.name}@{mv.version}")["wall_s"] for mv, _ in models}
    cold["embed"] = service.run_job("embed", rec_ids[:2])["wall_s"]
    jobs = {}
    for mv, _ in models:
        ids = rec_ids if mv is default_cls else rec_ids[: cfg["resnet_e2e_n"]]
        jobs[f"classify:{mv.name}"] = service.run_job("classify", ids, model=f"{mv.name}@{mv.version}")
        jobs[f"classify:{mv.name}"]["audio_s"] = audio_s if mv is default_cls else sum(c.duration_s for c in clips[: len(ids)])
        jobs[f"classify:{mv.name}"]["n"] = len(ids)
    passage = ROOT / "docs" / "models" / "saa_reading_passage.txt"
    if default_cls is not None and default_cls.family == "reading_fusion" and passage.exists():
        # every recording given the passage the model reads: the aligner runs on each (the SAA clips read
        # it; for the others this is the cost of a transcript that matches the model's passage)
        name = f"classify:{default_cls.name} + passage transcript"
        jobs[name] = service.run_job("classify", rec_ids, model=f"{default_cls.name}@{default_cls.version}",
                                     params={"transcript": passage.read_text().strip()})
        jobs[name].update(audio_s=audio_s, n=len(rec_ids))
    if cfg["vad_e2e"] and default_cls is not None:
        jobs["classify+vad"] = service.run_job("classify", rec_ids, model=f"{default_cls.name}@{default_cls.version}", params={"vad": True})
    jobs["embed"] = service.run_job("embed", rec_ids)
    mem = {"model worker (after classify + embed)": w0.memory()}
    w0.stop_consuming()
    # -- the CPU-only deployment: `make run` starts the gpu-queue worker with one process per core
    cores = os.cpu_count() or 1
    deployed = None
    import torch

    if cores > 1 and default_cls is not None and not torch.cuda.is_available():
        deployed = f"classify:{default_cls.name}, {cores} processes"
        for w in workers[:cores]:
            w.consume("gpu", "interactive")
        spec = f"{default_cls.name}@{default_cls.version}"
        service.run_job("classify", rec_ids[: 2 * cores], model=spec, params={"chunk_size": 1})  # each process loads it
        chunk = max(1, math.ceil(len(rec_ids) / (2 * cores)))
        jobs[deployed] = service.run_job("classify", rec_ids, model=spec, params={"chunk_size": chunk})
        jobs[deployed].update(audio_s=audio_s, n=len(rec_ids), procs=cores)
        for w in workers[:cores]:
            w.stop_consuming()

    # -- features jobs on 1, 2, 4 processes -----------------------------------------------------
    # Warm-up first: each worker's first features chunk pays imports and JIT caches (reported apart).
    for w in workers:
        w.consume("cpu")
    warm = service.run_job("features", rec_ids[: 2 * len(workers)], params={"chunk_size": 1})
    for w in workers:
        w.stop_consuming()
    scaling = {}
    for p in cfg["procs"]:
        for w in workers[:p]:
            w.consume("cpu")
        chunk = max(1, min(settings.JOB_CHUNK_SIZE.get("features", 8), math.ceil(len(rec_ids) / (3 * p))))
        scaling[p] = service.run_job("features", rec_ids, params={"chunk_size": chunk})
        scaling[p].update(chunk_size=chunk, procs=p)
        for i, w in enumerate(workers[:p]):
            w.stop_consuming()
            mem[f"features worker {i} (after {p}-process run)"] = w.memory()
    for w in workers:
        w.stop()
    t_service = time.perf_counter()

    # -- in-process measurements (workers stopped, so they do not compete) -------------------------

    from models.checkpoint import load_checkpoint
    from workers import runtime
    from workers.pipeline.audio import load_audio

    runtime.configure_threads(1)
    signals = [load_audio(str(c.path)).samples for c in clips]
    loaded = {}
    for mv, _ in models:
        path = settings.MODELS_DIR / mv.checkpoint if not mv.checkpoint.startswith("storage:") else resnet_path
        loaded[mv.name] = load_checkpoint(path)
    flops = {name: micro.flops_per_window(lm) for name, lm in loaded.items()}
    hw = micro.hardware(cfg["threads"], cfg["hw_repeat"])
    micro.threads(1)
    bsig = signals[:4] if mode == "quick" else signals[:30]
    batch = {
        name: micro.batch_table(lm, bsig, cfg["batch_sizes"], cfg["threads"], (False, True), cfg["repeat"])
        if name == default_cls.name
        else micro.batch_table(lm, bsig[: cfg["resnet_clips"]], cfg["resnet_batches"], (1,), (False, True), cfg["repeat"])
        for name, lm in loaded.items()
    }
    micro.threads(1)
    agree_idx = [i for i, c in enumerate(clips) if c.label][: cfg["agree_n"]]
    agreement = (
        micro.bf16_agreement(loaded[default_cls.name], [clips[i] for i in agree_idx], [signals[i] for i in agree_idx])
        if agree_idx and default_cls
        else None
    )
    # the frontend's share of the conv model's forward pass, at the worker's batch size and bf16 setting
    front = {
        name: micro.frontend_share(lm, bsig, runtime.default_batch_size(lm), runtime.use_autocast(lm), cfg["repeat"])
        for name, lm in loaded.items()
        if name != default_cls.name
    }
    vad_ms = 1000 * micro.vad_cost(signals[: cfg["feat_n"]], cfg["repeat"])
    feats = micro.feature_breakdown(signals[: cfg["feat_n"]])
    # the machine's own scaling for the same work, without the service (the ceiling for section 4)
    machine_scaling = micro.process_scaling(signals[: cfg["feat_n"]], [p for p in cfg["procs"] if p <= 2 * info["cores"]])
    t_micro = time.perf_counter()

    # -- baseline ---------------------------------------------------------------------------------
    base_clips = clips if cfg["baseline_n"] is None else (gen[: cfg["baseline_n"] // 2] + mini[: cfg["baseline_n"] - cfg["baseline_n"] // 2])
    files_json = work / "baseline-files.json"
    files_json.write_text(json.dumps([str(c.path) for c in base_clips]))
    base_env = {k: v for k, v in os.environ.items() if not k.endswith("_NUM_THREADS") and k != "WORKER_TORCH_THREADS"}
    base_env["PYTHONPATH"] = str(ROOT)
    base_out = work / "baseline.json"
    ckpt = settings.MODELS_DIR / default_cls.checkpoint
    subprocess.run([sys.executable, "-m", "bench.baseline", str(ckpt), str(files_json), str(base_out)], env=base_env, cwd=ROOT, check=True)
    base = json.loads(base_out.read_text())
    service.drop_database()
    if redis_proc is not None:
        redis_proc.terminate()
        redis_proc.wait(timeout=30)
    t_end = time.perf_counter()

    # =============================================================================================
    # report
    # =============================================================================================
    n = len(clips)
    rep.add(f"## {mode.capitalize()} mode\n")
    rep.add(
        f"Written by `.venv/bin/python -m bench.run --{mode}` (`make {'bench' if mode == 'quick' else 'bench-full'}`); do not edit by hand.\n"
    )
    rep.add(
        table(
            ["machine", ""],
            [
                [
                    "CPU",
                    f"{info['cpu']} ({info['cores']} cores; AVX-512 bf16: {'yes' if info['avx512_bf16'] else 'no'}, "
                    f"AMX: {'yes' if info['amx'] else 'no'})",
                ],
                ["RAM", f"{info['ram_gib']} GiB"],
                ["GPU", info["gpu"] or NO_GPU],
                ["torch / Python", f"{info['torch']} / {info['python']}"],
                ["date", info["date"]],
                ["load average (1/5/15 min) at start / end", f"{load_start} / {loadavg()}"],
                [
                    "database / broker",
                    ("PostgreSQL " + os.environ["DATABASE_URL"].split("@")[-1] if "postgres" in os.environ["DATABASE_URL"] else "SQLite")
                    + f" / {args.redis}",
                ],
                [
                    "run time",
                    f"{t_end - t_start:.0f} s (corpus+setup {t_ready - t_start:.0f} s, jobs {t_service - t_ready:.0f} s, "
                    f"in-process {t_micro - t_service:.0f} s, baseline {t_end - t_micro:.0f} s)",
                ],
            ],
        )
    )
    rep.add(
        "\nThe machine is shared: other processes ran during the measurement (the load average above). "
        "Timings on a quiet machine are better; ratios measured in the same run are the fairer numbers.\n"
    )
    by_src = {}
    for c in clips:
        by_src.setdefault(c.source, []).append(c.duration_s)
    rep.add(
        f"**Recordings**: {n} ({audio_s:.0f} s of audio): "
        + ", ".join(f"{k} {len(v)} ({sum(v):.0f} s, {min(v):.1f}-{max(v):.1f} s)" for k, v in by_src.items())
        + "; generated clips cycle wav / flac / mp3 at 16 / 22.05 / 44.1 kHz. Uploaded through `POST /api/v1/batches/` "
        f"(Django test client in this process, ≤40 files per request): **{upload_s:.1f} s, {audio_s / upload_s:.0f}x real time**.\n"
    )
    rep.add(
        "**Models**: "
        + "; ".join(
            f"`{mv.name}@{mv.version}` ({mv.family}, {why}, {flops[mv.name] / 1e9:.2f} GFLOP per {loaded[mv.name].spec.window_s:g}-s window)"
            for mv, why in models
        )
        + ".\n"
    )
    rep.add(
        f"Worker settings: solo-pool processes, torch threads = `runtime.default_torch_threads()` "
        f"({runtime.default_torch_threads()} here), BLAS 1, bf16 autocast `WORKER_AUTOCAST={settings.WORKER_AUTOCAST}`, "
        "batch `WORKER_BATCH_SIZE` default on CPU by family (`runtime.default_batch_size`: small for conv nets only under bf16; "
        + ", ".join(f"{n} {runtime.default_batch_size(lm)}" for n, lm in loaded.items())
        + "), "
        f"classify VAD default `CLASSIFY_VAD_DEFAULT={settings.CLASSIFY_VAD_DEFAULT}`.\n"
    )

    rep.add("## 1. End to end\n")
    rows = []
    for name, j in list(jobs.items()) + [(f"features, {p} process{'es' if p > 1 else ''}", s) for p, s in scaling.items()]:
        procs = j.get("procs", 1)
        rows.append(
            [
                name,
                j["model"] or "-",
                procs,
                f"{j['done']}/{j.get('n', n)}" + (f" ({j['failed']} failed)" if j["failed"] else ""),
                j["chunks"],
                j["wall_s"],
                j.get("audio_s", audio_s) / j["wall_s"],
                j.get("audio_s", audio_s) / j["wall_s"] / procs,
                j.get("n", n) / j["wall_s"],
            ]
        )
    rep.add(
        table(
            [
                "job",
                "model",
                "worker processes",
                "done",
                "chunks",
                "wall s (submit -> last row)",
                "x real time",
                "x real time per process",
                "recordings/s",
            ],
            rows,
        )
    )
    for name, j in jobs.items():
        if j["failed_examples"]:
            rep.add(f"\n{name}: failures {j['failed_examples']}")
    rep.add(
        f"\nCold start (not in the table): the first features chunks of the {len(workers)} fresh worker processes "
        f"(imports, JIT caches) took {warm['wall_s']:.1f} s for {warm['done']} recordings; the model worker's first 2-recording "
        "jobs (model load, first torch calls) took "
        + ", ".join(f"{k} {v:.1f} s" for k, v in cold.items())
        + ". The jobs above run on warm workers.\n"
    )
    rep.add(
        "\nStage time per job (seconds summed over the processes; % of wall per process). Upload is above. "
        "Queue + bookkeeping = wall minus the summed stages divided by the processes: broker round trips, "
        "chunk claim / finish transactions, the classify report, polling.\n"
    )
    holders = {}
    for name, j in list(jobs.items()) + [(f"features, {p} proc", s) for p, s in scaling.items()]:
        procs = j.get("procs", 1)
        srows, worst = stage_rows(j, audio_s, procs)
        holders[name] = worst
        rep.add(f"**{name}** ({j['model'] or 'features: all six extractors'}): holds back: **{worst}**\n")
        rep.add(table(["stage", "seconds", "% of wall"], srows) + "\n")

    with_passage = next((name for name in jobs if name.endswith("+ passage transcript")), None)
    if with_passage:
        jp, j0 = jobs[with_passage], jobs[f"classify:{default_cls.name}"]
        align_s = jp["timings"].get("reading", 0.0)
        rep.add(
            f"**The passage path.** `{with_passage}` is the same job with the Stella passage as the job's transcript, "
            f"so the reading fusion force-aligns every recording to it ({jp['fused']} of {jp['done']} were fused: the "
            "ones whose audio the aligner could follow). Alignment and word features took "
            f"{align_s:.2f} s for {audio_s:.0f} s of audio ({1000 * align_s / audio_s:.0f} ms per second of audio, "
            f"{audio_s / align_s if align_s else float('nan'):.0f}x real time on one process); the job's wall went from "
            f"{j0['wall_s']:.2f} s to {jp['wall_s']:.2f} s. Recordings without a transcript (every other job here) do not pay it.\n"
        )

    rep.add("## 2. Baseline: the seed-script way\n")
    b = base
    b_rt = b["audio_s"] / b["wall_s"]
    one_proc = jobs[f"classify:{default_cls.name}"]
    # the job as the service runs it on this machine: one process per core on a CPU-only host
    cls_job = jobs[deployed] if deployed else one_proc
    svc_rt = audio_s / cls_job["wall_s"]
    rep.add(
        f"`bench/baseline.py` in a fresh process with the default thread settings ({b['torch_threads']} torch threads, "
        "OpenBLAS default): one file at a time, `librosa.load(sr=16000)`, a librosa 80-bin log-mel, one forward pass of "
        f"the whole clip at batch 1 with `{default_cls.name}`. {b['files']} files, {b['audio_s']:.0f} s of audio.\n"
    )
    rep.add(
        table(
            ["", "wall s", "x real time", "load (decode+resample) s", "log-mel s", "forward s"],
            [
                ["baseline", b["wall_s"], b_rt, b["stages"]["load"], b["stages"]["logmel"], b["stages"]["forward"]],
                *[
                    [
                        f"service classify job ({default_cls.name}, {j.get('procs', 1)} worker process"
                        f"{'es' if j.get('procs', 1) > 1 else ''})",
                        j["wall_s"],
                        audio_s / j["wall_s"],
                        j["timings"].get("decode", 0),
                        "-",
                        j["timings"].get("forward", 0),
                    ]
                    for j in ([one_proc, cls_job] if cls_job is not one_proc else [one_proc])
                ],
            ],
        )
    )
    if cls_job is not one_proc:
        rep.add(
            f"\nThe ratio below uses the {cls_job['procs']}-process job: on a machine without a GPU `make run` starts the "
            "gpu-queue worker with one process per core, as the baseline's torch uses every core.\n"
        )
    ratio = svc_rt / b_rt
    no_report = audio_s / (cls_job["wall_s"] - cls_job["finalize_s"]) / b_rt
    rep.add(
        f"\n**service / baseline = {ratio:.1f}x** (audio seconds per wall second; the service's wall runs from the job "
        "submit to its last row: queueing, decoding, database writes and the evaluation report over the labelled clips "
        f"(job finalize, {cls_job['finalize_s']:.1f} s) included; without that report: {no_report:.1f}x).\n"
    )

    rep.add("## 3. Ceiling: what fraction of the hardware the model stage uses\n")
    rep.add(
        table(
            ["torch threads", "conv2d fp32 GFLOP/s", "conv2d bf16 GFLOP/s", "matmul fp32 GFLOP/s", "matmul bf16 GFLOP/s"],
            [[r["threads"], r["conv_fp32"], r["conv_bf16"], r["matmul_fp32"], r["matmul_bf16"]] for r in hw],
        )
    )
    rep.add(
        "\nconv2d: 3x3, C->C channels on [b, C, H, W] for the layers of ResNet stages 1-3 ("
        + ", ".join(f"{c}x{h}x{w}" for c, h, w in micro.CONV_SHAPES)
        + "), batch 2 and 16, default and channels-last layout: the best of them "
        "(bf16: "
        + ", ".join(f"{r['threads']} thread(s) batch 2 {r['conv_batch2_bf16']:.0f} / batch 16 {r['conv_batch16_bf16']:.0f}" for r in hw)
        + " GFLOP/s); matmul 1024^3. GPU: " + NO_GPU + ".\n"
    )
    hw1 = next(r for r in hw if r["threads"] == 1)
    crow = []
    fractions = {}
    for mv, _ in models:
        j = jobs[f"classify:{mv.name}"]
        fw = j["timings"].get("forward", 0.0)
        achieved = flops[mv.name] * j["n_windows"] / fw / 1e9 if fw else float("nan")
        is_lstm = mv.family in ("speaker_head", "speaker_encoder")
        bf16 = runtime.use_autocast(loaded[mv.name])
        ref_key = ("matmul" if is_lstm else "conv") + ("_bf16" if bf16 else "_fp32")
        frac = achieved / hw1[ref_key]
        fractions[mv.name] = (frac, ref_key)
        best = max(batch[mv.name], key=lambda r: r["windows_per_s"] if r["threads"] == 1 else 0)
        best_gf = flops[mv.name] * best["windows_per_s"] / 1e9
        crow.append(
            [
                mv.name,
                flops[mv.name] / 1e9,
                j["n_windows"],
                fw,
                achieved,
                f"{ref_key} 1 thread: {hw1[ref_key]:.0f}",
                f"{100 * frac:.0f} %",
                f"{best_gf:.0f} GFLOP/s = {100 * best_gf / hw1[ref_key.split('_')[0] + '_bf16']:.0f} % of bf16 "
                f"(bf16={best['bf16']}, batch {best['batch']})",
            ]
        )
    rep.add(
        table(
            [
                "model",
                "GFLOP / window",
                "windows (e2e job)",
                "forward s (e2e job)",
                "achieved GFLOP/s",
                "ceiling GFLOP/s",
                "fraction",
                "best in-process setting (1 thread)",
            ],
            crow,
        )
    )
    rep.add(
        "\nThe LSTM model (GE2E encoder) is measured against the matmul ceiling, the CNNs against the conv ceiling. "
        "'forward' includes the model's own frontend (band-limit, STFT, log-mel), which the FLOP count mostly leaves out.\n"
    )

    rep.add("## 4. Scaling\n")
    s1 = audio_s / scaling[1]["wall_s"]
    srows = [
        [p, s["chunk_size"], s["wall_s"], audio_s / s["wall_s"], audio_s / s["wall_s"] / p, f"{100 * audio_s / s['wall_s'] / (p * s1):.0f} %"]
        for p, s in scaling.items()
    ]
    rep.add(f"Features jobs (all six extractors) over the same {n} recordings, cpu queue, N solo worker processes on {info['cores']} cores:\n")
    rep.add(table(["processes", "chunk size", "wall s", "x real time", "x real time per process", "scaling efficiency"], srows))
    rep.add(
        "\nCeiling: the same extraction (all six extractors, one thread each) in N plain processes started together, "
        f"no service, database or broker ({cfg['feat_n']} clips each): "
        + ", ".join(f"{p} processes {100 * e:.0f} %" for p, e in machine_scaling.items())
        + " efficiency (one process's time / the mean time of N at once). What N processes can get on this machine "
        "at all; the service's efficiency is read against it.\n"
    )
    rep.add("\nInference path (`classify_batch`, no VAD, in process) against batch size, CPU; GPU column: " + NO_GPU + ".\n")
    for name, rows_ in batch.items():
        rep.add(f"**{name}** ({len(bsig)} clips, {rows_[0]['windows']} windows)\n")
        rep.add(
            table(
                ["torch threads", "bf16 autocast", "batch", "windows/s", "x real time (CPU)", "GPU"],
                [[r["threads"], r["bf16"], r["batch"], r["windows_per_s"], r["x_rt"], NO_GPU] for r in rows_],
            )
            + "\n"
        )
    rep.add("Memory per worker process (from /proc/<pid>/status):\n")
    rep.add(
        table(["process", "RSS MiB", "peak RSS MiB"], [[k, v.get("VmRSS", float("nan")), v.get("VmHWM", float("nan"))] for k, v in mem.items()])
    )

    rep.add("\n## 5. Decisions behind the defaults\n")
    if agreement:
        txt = (
            f"**bf16 autocast** on `{default_cls.name}`: {agreement['n']} real clips, prediction agreement with fp32 "
            f"{100 * agreement['agreement']:.1f} %, |Δp| mean {agreement['mean_abs_dp']:.4f} max {agreement['max_abs_dp']:.4f}"
        )
        if "balanced_acc_fp32" in agreement:
            txt += f"; balanced accuracy fp32 {agreement['balanced_acc_fp32']:.3f} vs bf16 {agreement['balanced_acc_bf16']:.3f}"
        rep.add(txt + ".\n")
    fwd_ms = 1000 * cls_job["timings"].get("forward", 0) / audio_s
    rep.add(
        f"**VAD on the classify path**: silero VAD costs {vad_ms:.1f} ms per audio second (in process, 1 thread) against "
        f"{fwd_ms:.1f} ms for `{default_cls.name}`'s forward pass in the classify job"
        + (
            f"; end to end the classify job with `vad: true` ran at {audio_s / jobs['classify+vad']['wall_s']:.0f}x real time "
            f"against {svc_rt:.0f}x without"
            if "classify+vad" in jobs
            else ""
        )
        + '. It runs only when a job asks (`params: {"vad": true}`) or `CLASSIFY_VAD_DEFAULT=true`.\n'
    )
    fe = feats
    rep.add(
        f"**Feature extractors** in process, ms per audio second ({fe['audio_s']:.0f} s of audio, 1 thread); seed = every "
        "parselmouth extractor builds its own Sound and Pitch, HNR every 10 ms; current = one shared Sound + Pitch "
        "(`features/praat_shared.py`), HNR every 20 ms:\n"
    )
    names = [k for k in fe["current"] if k != "total"]
    rep.add(
        table(
            ["extractor", "seed ms/s", "current ms/s"],
            [[k, fe["seed"][k], fe["current"][k]] for k in names + ["total"]]
            + [["x real time (1 process)", 1000 / fe["seed"]["total"], 1000 / fe["current"]["total"]]],
        )
    )
    he = fe["hnr_effect"]
    if he["n"]:
        rep.add(
            f"\nEffect of the 20-ms HNR step on `hnr_mean_db` over {he['n']} clips: mean {he['mean_diff_db']:+.3f} dB, "
            f"mean |Δ| {he['mean_abs_diff_db']:.3f} dB, max |Δ| {he['max_abs_diff_db']:.3f} dB, correlation {he['corr']:.4f} "
            f"(between-clip spread: std {he['between_clip_std_db']:.2f} dB). Pitch sharing changes no value (same Praat call, same settings).\n"
        )

    rep.add("## 6. Targets\n")
    feat_holder = max(names, key=lambda k: fe["current"][k])
    f1 = audio_s / scaling[1]["wall_s"]
    eff2 = audio_s / scaling[2]["wall_s"] / (2 * f1) if 2 in scaling else float("nan")
    trows = [
        [
            "CPU classify end to end ≥ 3x the seed-style baseline",
            f"{ratio:.1f}x" + (f" ({cls_job['procs']} processes; 1 process: {audio_s / one_proc['wall_s'] / b_rt:.1f}x)"
                               if cls_job is not one_proc else ""),
            "met" if ratio >= 3 else "missed",
            holders[deployed or f"classify:{default_cls.name}"],
        ],
    ]
    if resnet_mv.name in fractions:
        frac, ref = fractions[resnet_mv.name]
        trows.append(
            [
                "model stage ≥ 80 % of the measured conv ceiling (ResNet18-shaped)",
                f"{100 * frac:.0f} % of {ref}",
                "met" if frac >= 0.8 else "missed",
                resnet_holder(front.get(resnet_mv.name), frac),
            ]
        )
    trows += [
        [
            "features job ≥ 35x real time per worker process",
            f"{f1:.1f}x (in process {1000 / fe['current']['total']:.1f}x)",
            "met" if f1 >= 35 else "missed",
            f"{holders['features, 1 proc']} (largest extractor: {feat_holder})",
        ],
        [
            "features scale linearly with processes (2 processes on 2 cores)",
            f"{100 * eff2:.0f} % efficiency",
            "met" if eff2 >= 0.85 else "missed",
            scaling_holder(eff2, machine_scaling.get(2), holders.get("features, 2 proc", "-")),
        ],
    ]
    rep.add(table(["target", "measured", "status", "held back by"], trows))
    rep.add(f"\nGPU: {NO_GPU}.\n")
    if not args.no_write:
        write_section(args.out, mode, rep.text())
        print(f"wrote the {mode} section of {args.out}", flush=True)


def resnet_holder(front: dict | None, frac: float) -> str:
    """What keeps the conv model's stage under the ceiling: the frontend (not in the FLOP count)
    or the network body itself."""
    if front is None:
        return "model forward"
    body = frac / max(1e-9, 1.0 - front["share"])
    return (
        f"model forward: the band-limit + log-mel frontend is {100 * front['share']:.0f} % of it "
        f"({front['windows']} windows in process), the network body alone runs at about {100 * body:.0f} % of the ceiling"
    )


def scaling_holder(service_eff: float, machine_eff: float | None, stage: str) -> str:
    """Why the features jobs do not scale linearly: the machine itself (plain processes do no
    better), or the service (queue, database, the largest stage)."""
    if service_eff >= 0.85:
        return "-"
    if machine_eff is not None and service_eff >= machine_eff - 0.05:
        return f"the machine: 2 plain processes doing the same extraction reach only {100 * machine_eff:.0f} % (section 4)"
    ceiling = f" (plain processes: {100 * machine_eff:.0f} %)" if machine_eff is not None else ""
    return f"the service{ceiling}: {stage}, queue and database overhead per process (section 1 stage tables)"


HEADER = """# Throughput benchmarks

Written by `bench/run.py`: `make bench` (quick mode) and `make bench-full` (full mode) each replace
their own section below and keep the other; the replaced section's headline joins "Earlier runs" at
the end. What is measured and how: the docstring of `bench/run.py`. Do not edit by hand; rerun the
benchmark.
"""


def _cells(line: str) -> list[str]:
    """A Markdown table row's cells."""
    return [c.strip() for c in line.strip().strip("|").split("|")]


def _headline(section: str) -> dict[str, str] | None:
    """A replaced section's machine, date and default classify job (1 worker process), for the
    history table; None when the section does not have them."""
    cells = {}
    for line in section.splitlines():
        parts = _cells(line)
        if len(parts) == 2 and parts[0] in ("CPU", "GPU", "date", "torch / Python"):
            cells[parts[0]] = parts[1]
    header = next((line for line in section.splitlines() if line.startswith("| job | model | worker processes")), None)
    if header is None or "CPU" not in cells or "date" not in cells:
        return None
    names = _cells(header)
    start = section.index(header)
    for line in section[start:].splitlines()[2:]:
        if not line.startswith("|"):
            break
        row = dict(zip(names, _cells(line), strict=False))
        if row.get("job", "").startswith("classify:") and row.get("worker processes") == "1":
            return {"date": cells["date"], "CPU": cells["CPU"], "GPU": cells.get("GPU", ""), "model": row.get("model", ""),
                    "x": row.get("x real time per process", ""), "torch": cells.get("torch / Python", "")}
    return None


HISTORY_HEAD = """## Earlier runs

Each row is a quick or full section this file held before a rerun replaced it (taken from that
section by `bench/run.py`), so numbers measured on other machines stay on record. Compare rows of
the same machine only.

| date | mode | CPU | GPU | torch / Python | default classify model | x real time per worker process |
|---|---|---|---|---|---|---|
"""


def write_section(path: Path, mode: str, text: str) -> None:
    """Replace the ``mode`` section of the report at ``path`` (between markers), keep the rest;
    the replaced quick / full section's headline joins the history section."""
    start, end = f"<!-- bench:{mode} -->", f"<!-- /bench:{mode} -->"
    old = path.read_text() if path.exists() else ""
    sections = {}
    order = ("quick", "full", "whisper", "spoken-words", "language_id", "asr-train", "asr-test", "history")
    # whisper, spoken-words, language_id, asr-*: the sections of bench/whisper.py, bench/spoken_words.py,
    # bench/language_id.py and bench/asr.py, kept as they are
    for m in order:
        a, b = f"<!-- bench:{m} -->", f"<!-- /bench:{m} -->"
        if a in old and b in old:
            sections[m] = old[old.index(a) : old.index(b) + len(b)]
    rows = [line for line in sections.get("history", "").splitlines() if line.startswith("| 20")]
    head = _headline(sections.get(mode, "")) if mode in ("quick", "full") else None
    if head:
        row = (f"| {head['date']} | {mode} | {head['CPU']} | {head['GPU']} | {head['torch']} | {head['model']} | "
               f"{head['x']} |")
        if row not in rows:
            rows.append(row)
    if rows:
        sections["history"] = "<!-- bench:history -->\n" + HISTORY_HEAD + "\n".join(rows) + "\n<!-- /bench:history -->"
    sections[mode] = f"{start}\n{text}{end}"
    body = HEADER + "".join(f"\n{sections[m]}\n" for m in order if m in sections)
    path.write_text(body)


if __name__ == "__main__":
    main()
