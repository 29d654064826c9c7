"""The throughput benchmark: the whole path, a seed-style baseline, the hardware ceiling, scaling.

(One function per measurement here and one per report section in ``bench/run_report.py``; ``main``
runs them in order, each reading and adding to one namespace of measurements, and writes
docs/benchmarks.md top to bottom.)

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
from types import SimpleNamespace

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # this process: librosa/numpy single-threaded like a worker
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import corpus, run_report  # noqa: E402
from bench.run_report import Report, loadavg  # noqa: E402
from models.registry import FAMILIES  # noqa: E402

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


def measure_service_setup(m: SimpleNamespace) -> None:
    """Start the database, broker and worker processes; upload the corpus; register the models."""
    args, cfg, clips, work = m.args, m.cfg, m.clips, m.work
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
    m.default_cls, m.models, m.rec_ids, m.redis_proc = default_cls, models, rec_ids, redis_proc
    m.resnet_mv, m.resnet_path = resnet_mv, resnet_path
    m.t_ready, m.upload_s, m.workers = t_ready, upload_s, workers


def measure_model_jobs(m: SimpleNamespace) -> None:
    """Model jobs on one worker process (the gpu-queue worker; CPU here), after a warm-up reported apart."""
    from bench import service

    audio_s, cfg, clips, default_cls, models, rec_ids = m.audio_s, m.cfg, m.clips, m.default_cls, m.models, m.rec_ids
    workers = m.workers
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
    if default_cls is not None and FAMILIES[default_cls.family].uses_transcript and passage.exists():
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
    m.cold, m.jobs, m.mem = cold, jobs, mem


def measure_deployed(m: SimpleNamespace) -> None:
    """The CPU-only deployment: `make run` starts the gpu-queue worker with one process per core."""
    from bench import service

    audio_s, default_cls, jobs, rec_ids, workers = m.audio_s, m.default_cls, m.jobs, m.rec_ids, m.workers
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

    m.deployed = deployed


def measure_features_jobs(m: SimpleNamespace) -> None:
    """Features jobs on 1, 2, 4 processes, after a warm-up reported apart; then the workers stop."""
    from django.conf import settings

    from bench import service

    cfg, mem, rec_ids, workers = m.cfg, m.mem, m.rec_ids, m.workers
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

    m.scaling, m.t_service, m.warm = scaling, t_service, warm


def measure_in_process(m: SimpleNamespace) -> None:
    """In-process measurements (workers stopped, so they do not compete): FLOPs, hardware, batch sizes, bf16, VAD, features."""
    from django.conf import settings

    from bench import micro

    cfg, clips, default_cls, info, mode, models = m.cfg, m.clips, m.default_cls, m.info, m.mode, m.models
    resnet_path = m.resnet_path

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

    m.agreement, m.batch, m.bsig, m.feats, m.flops, m.front = agreement, batch, bsig, feats, flops, front
    m.hw, m.loaded, m.machine_scaling, m.t_micro, m.vad_ms = hw, loaded, machine_scaling, t_micro, vad_ms


def measure_baseline(m: SimpleNamespace) -> None:
    """The seed-script way (bench/baseline.py) in a fresh process; then the database and broker go."""
    from django.conf import settings

    from bench import service

    cfg, clips, default_cls, gen, mini, redis_proc = m.cfg, m.clips, m.default_cls, m.gen, m.mini, m.redis_proc
    work = m.work
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

    m.base, m.t_end = base, t_end


def main() -> None:
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
    # what the sections read and add to: each measurement sets what the report sections read
    m = SimpleNamespace(args=args, audio_s=audio_s, cfg=cfg, clips=clips, gen=gen, info=info,
                        load_start=load_start, mini=mini, mode=mode, rep=rep, t_start=t_start, work=work)
    measure_service_setup(m)
    measure_model_jobs(m)
    measure_deployed(m)
    measure_features_jobs(m)
    measure_in_process(m)
    measure_baseline(m)
    run_report.report_header(m)
    run_report.report_end_to_end(m)
    run_report.report_baseline(m)
    run_report.report_ceiling(m)
    run_report.report_scaling(m)
    run_report.report_decisions(m)
    run_report.report_targets(m)
    args, mode, rep = m.args, m.mode, m.rep
    if not args.no_write:
        write_section(args.out, mode, rep.text())
        print(f"wrote the {mode} section of {args.out}", flush=True)


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
    order = ("quick", "full", "whisper", "spoken-words", "language_id", "asr-train", "asr-test", "scale", "scale-pgvector",
             "features", "model-speed", "history")
    # whisper, spoken-words, language_id, asr-*, scale*, features: the sections of bench/whisper.py, bench/spoken_words.py,
    # bench/language_id.py, bench/asr.py, bench/scale.py and bench/features.py, kept as they are; model-speed: the
    # hand-written reading of a bench/model_speed.py run
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
