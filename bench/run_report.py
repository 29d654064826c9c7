"""The report of :mod:`bench.run`: one function per section of docs/benchmarks.md, each reading the
measurements ``bench.run.main`` gathered on ``m`` (a ``SimpleNamespace``) and adding its tables to
``m.rep``, plus the table helpers. Imports nothing from ``bench.run``."""

from __future__ import annotations

import os
from types import SimpleNamespace

from models.registry import FAMILIES

NO_GPU = "not measured: no GPU in this session"


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


def default_set_ms(per_extractor: dict[str, float]) -> float:
    """ms per audio second of the features job's default extractor set, from ``micro.feature_breakdown``'s
    per-extractor figures (which time every registered extractor, the opt-in ones too)."""
    from workers.pipeline.features import default_extractors

    return sum(per_extractor[name] for name in default_extractors())


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


def report_header(m: SimpleNamespace) -> None:
    """The machine, the load, the recordings, the models and the worker settings."""
    from django.conf import settings

    from workers import runtime

    args, audio_s, clips, flops, info, load_start = m.args, m.audio_s, m.clips, m.flops, m.info, m.load_start
    loaded, mode, models, rep, t_end, t_micro = m.loaded, m.mode, m.models, m.rep, m.t_end, m.t_micro
    t_ready, t_service, t_start, upload_s = m.t_ready, m.t_service, m.t_start, m.upload_s
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

    m.n = n


def report_end_to_end(m: SimpleNamespace) -> None:
    """Section 1: every job's wall time and its stages."""
    audio_s, cold, default_cls, jobs, n, rep = m.audio_s, m.cold, m.default_cls, m.jobs, m.n, m.rep
    scaling, warm, workers = m.scaling, m.warm, m.workers
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
        rep.add(f"**{name}** ({j['model'] or 'features: the default extractor set'}): holds back: **{worst}**\n")
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

    m.holders = holders


def report_baseline(m: SimpleNamespace) -> None:
    """Section 2: the service against the seed-script way."""
    audio_s, base, default_cls, deployed, jobs, rep = m.audio_s, m.base, m.default_cls, m.deployed, m.jobs, m.rep
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

    m.b_rt, m.cls_job, m.one_proc, m.ratio, m.svc_rt = b_rt, cls_job, one_proc, ratio, svc_rt


def report_ceiling(m: SimpleNamespace) -> None:
    """Section 3: what fraction of the hardware the model stage uses."""
    from bench import micro
    from workers import runtime

    batch, flops, hw, jobs, loaded, models = m.batch, m.flops, m.hw, m.jobs, m.loaded, m.models
    rep = m.rep
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
        is_lstm = FAMILIES[mv.family].recurrent
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

    m.fractions = fractions


def report_scaling(m: SimpleNamespace) -> None:
    """Section 4: features jobs on N processes, batch sizes, memory."""
    audio_s, batch, bsig, cfg, info, machine_scaling = m.audio_s, m.batch, m.bsig, m.cfg, m.info, m.machine_scaling
    mem, n, rep, scaling = m.mem, m.n, m.rep, m.scaling
    rep.add("## 4. Scaling\n")
    s1 = audio_s / scaling[1]["wall_s"]
    srows = [
        [p, s["chunk_size"], s["wall_s"], audio_s / s["wall_s"], audio_s / s["wall_s"] / p, f"{100 * audio_s / s['wall_s'] / (p * s1):.0f} %"]
        for p, s in scaling.items()
    ]
    rep.add(f"Features jobs (the default extractor set) over the same {n} recordings, cpu queue, N solo worker processes "
            f"on {info['cores']} cores:\n")
    rep.add(table(["processes", "chunk size", "wall s", "x real time", "x real time per process", "scaling efficiency"], srows))
    rep.add(
        "\nCeiling: the same extraction (the default extractor set, one thread each) in N plain processes started together, "
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


def report_decisions(m: SimpleNamespace) -> None:
    """Section 5: the measurements behind the defaults (bf16, VAD, feature extractors)."""
    agreement, audio_s, cls_job, default_cls, feats, jobs = m.agreement, m.audio_s, m.cls_job, m.default_cls, m.feats, m.jobs
    rep, svc_rt, vad_ms = m.rep, m.svc_rt, m.vad_ms
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
        f"**Feature extractors** in process, ms per audio second ({fe['audio_s']:.0f} s of audio, 1 thread; every registered "
        "extractor, the opt-in `compare`, `formants` and `voice_quality` too: a default features job runs the others); seed = every "
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

    m.fe, m.names = fe, names


def report_targets(m: SimpleNamespace) -> None:
    """Section 6: the targets, met or missed, and what holds each back."""
    audio_s, b_rt, cls_job, default_cls, deployed, fe = m.audio_s, m.b_rt, m.cls_job, m.default_cls, m.deployed, m.fe
    fractions, front, holders, machine_scaling, names, one_proc = m.fractions, m.front, m.holders, m.machine_scaling, m.names, m.one_proc
    ratio, rep, resnet_mv, scaling = m.ratio, m.rep, m.resnet_mv, m.scaling
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
            f"{f1:.1f}x (in process {1000 / default_set_ms(fe['current']):.1f}x)",
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
