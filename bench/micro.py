"""In-process measurements: model FLOPs, the machine's conv / matmul throughput, the inference
path against batch size, bf16 agreement, VAD cost and the feature extractors one by one."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from bench.corpus import Clip


def _best(fn: Callable[[], object], repeat: int, min_s: float = 0.0) -> float:
    """Best-of-``repeat`` seconds of ``fn`` (after one warm-up); each timing at least ``min_s``."""
    fn()
    best = float("inf")
    for _ in range(repeat):
        n, t0 = 0, time.perf_counter()
        while True:
            fn()
            n += 1
            dt = time.perf_counter() - t0
            if dt >= min_s:
                break
        best = min(best, dt / n)
    return best


def threads(n: int) -> None:
    import torch

    torch.set_num_threads(n)


def resnet_checkpoint(folder: Path) -> tuple[Path, dict]:
    """A random-weight ResNet18-shaped classifier (80-bin log-mel, 4 s windows) and its sidecar."""
    import json

    import torch

    from models.checkpoint import build_model, save_checkpoint
    from models.specs import ModelSpec

    torch.manual_seed(0)
    spec = ModelSpec(
        name="bench-resnet18",
        version="random-0",
        family="resnet",
        task="classify",
        labels=("native", "non_native"),
        window_s=4.0,
        hop_s=2.0,
        embedding_dim=256,
    )
    hparams = {"n_mels": 80, "base_channels": 32, "layers": [2, 2, 2, 2], "embedding_dim": 256, "specaug": False}
    model = build_model(spec, hparams).eval()
    path = folder / "bench-resnet18.pt"
    save_checkpoint(
        path,
        model=model,
        spec=spec,
        calibration={"temperature": 1.0, "threshold": 0.0},
        hparams=hparams,
        metrics={"note": "random weights: benchmark only"},
        training_data={},
    )
    return path, json.loads(path.with_suffix(".json").read_text())


def flops_per_window(loaded) -> float:
    """FLOPs of one forward pass over one window (FlopCounterMode; LSTMs counted by formula when
    the CPU's fused kernel hides them from the counter)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    win = loaded.spec.window_samples
    x = loaded.prepare(np.zeros((1, win), dtype=np.float32) + 0.01 * np.random.default_rng(0).standard_normal((1, win)).astype(np.float32))
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        loaded.logits(x) if loaded.spec.task == "classify" else loaded.embed(x)
    total = float(counter.get_total_flops())
    lstm_flops = 0.0
    lstms = [m for m in loaded.model.modules() if isinstance(m, torch.nn.LSTM)]
    if lstms:
        counted = {str(k) for k in counter.get_flop_counts().get("Global", {})}
        if not any("mkldnn_rnn" in k for k in counted):
            frames = _lstm_frames(loaded, x)
            for m in lstms:
                for layer in range(m.num_layers):
                    d_in = m.input_size if layer == 0 else m.hidden_size
                    lstm_flops += 2.0 * 4 * m.hidden_size * (d_in + m.hidden_size) * frames
            # if the counter already saw the LSTM's matmuls this would double count: check it did not
            if total > lstm_flops:
                lstm_flops = 0.0 if _counter_saw_lstm(counter) else lstm_flops
    return total + lstm_flops


def _counter_saw_lstm(counter) -> bool:
    return any("lstm" in str(mod).lower() for mod in counter.get_flop_counts() if mod != "Global")


def _lstm_frames(loaded, x) -> int:
    import torch

    seen = []
    hooks = [m.register_forward_hook(lambda m, i, o: seen.append(i[0].shape[1])) for m in loaded.model.modules() if isinstance(m, torch.nn.LSTM)]
    with torch.inference_mode():
        loaded.logits(x) if loaded.spec.task == "classify" else loaded.embed(x)
    for h in hooks:
        h.remove()
    return int(seen[0]) if seen else 0


#: 3x3 convolutions of ResNet stages 1-3 on a 4-s log-mel window: (channels, height, width)
CONV_SHAPES = ((64, 40, 200), (128, 20, 100), (256, 10, 50))


def hardware(thread_counts: Sequence[int], repeat: int) -> list[dict]:
    """Timed 3x3 conv2d (:data:`CONV_SHAPES`: the layers of ResNet stages 1-3) and a 1024^3 matmul,
    fp32 and bf16, at each thread count: GFLOP/s. Each conv is timed at batch 2 and 16, in the
    default and the channels-last layout; the ceiling is the best of all (small batches stay in
    cache on a CPU, wider layers reuse more; ``conv_batch_*`` keeps the best per batch size)."""
    import torch

    rows = []
    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    mm_flops = 2.0 * 1024**3
    for n in thread_counts:
        threads(n)
        row = {"threads": n}
        with torch.inference_mode():
            for dtype in (torch.float32, torch.bfloat16):
                ad, bd = a.to(dtype), b.to(dtype)
                tag = "fp32" if dtype == torch.float32 else "bf16"
                for bs in (2, 16):
                    best = 0.0
                    for ch, h, wdt in CONV_SHAPES:
                        xd = torch.randn(bs, ch, h, wdt).to(dtype)
                        wd = torch.randn(ch, ch, 3, 3).to(dtype)
                        flops = 2.0 * bs * ch * h * wdt * ch * 9
                        # both memory layouts: the served models run channels-last (models/fold.py),
                        # which oneDNN often runs faster
                        for fmt in (torch.contiguous_format, torch.channels_last):
                            xf, wf = xd.contiguous(memory_format=fmt), wd.contiguous(memory_format=fmt)
                            conv_s = _best(lambda xf=xf, wf=wf: torch.nn.functional.conv2d(xf, wf, padding=1), repeat, min_s=0.05)
                            best = max(best, flops / conv_s / 1e9)
                    row[f"conv_batch{bs}_{tag}"] = best
                row[f"conv_{tag}"] = max(row[f"conv_batch2_{tag}"], row[f"conv_batch16_{tag}"])
                row[f"matmul_{tag}"] = mm_flops / _best(lambda ad=ad, bd=bd: ad @ bd, repeat, min_s=0.05) / 1e9
        rows.append(row)
    return rows


def batch_table(
    loaded, signals: Sequence[np.ndarray], batch_sizes: Sequence[int], thread_counts: Sequence[int], autocast_opts: Sequence[bool], repeat: int
) -> list[dict]:
    """Windows/s and audio x real time of the model stage (``classify_batch`` without VAD)."""
    from workers.pipeline.inference import classify_batch

    audio_s = sum(len(s) for s in signals) / loaded.spec.sample_rate
    rows = []
    for n in thread_counts:
        threads(n)
        for ac in autocast_opts:
            for bs in batch_sizes:
                out = []

                def run(out=out, bs=bs, ac=ac):
                    out[:] = classify_batch(loaded, signals, vad=False, batch_size=bs, autocast=ac)

                dt = _best(run, repeat)
                n_win = sum(r.n_windows for r in out)
                fwd = sum(r.timings["forward"] for r in out)
                rows.append(
                    {
                        "threads": n,
                        "bf16": ac,
                        "batch": bs,
                        "windows": n_win,
                        "seconds": dt,
                        "windows_per_s": n_win / dt,
                        "x_rt": audio_s / dt,
                        "forward_s": fwd,
                    }
                )
    return rows


def bf16_agreement(loaded, clips: Sequence[Clip], signals: Sequence[np.ndarray]) -> dict:
    """Agreement of bf16-autocast and fp32 predictions (and accuracy of each where labels are known)."""
    from workers.pipeline.inference import classify_batch

    a = classify_batch(loaded, signals, vad=False, batch_size=16)
    b = classify_batch(loaded, signals, vad=False, batch_size=16, autocast=True)
    first = loaded.spec.labels[0]
    same = [x.predicted_class == y.predicted_class for x, y in zip(a, b, strict=True)]
    dp = [abs(x.probabilities[first] - y.probabilities[first]) for x, y in zip(a, b, strict=True)]
    labelled = [(c.label, x.predicted_class, y.predicted_class) for c, x, y in zip(clips, a, b, strict=True) if c.label]
    out = {"n": len(same), "agreement": float(np.mean(same)), "max_abs_dp": float(np.max(dp)), "mean_abs_dp": float(np.mean(dp))}
    if labelled:
        labels = sorted({t for t, _, _ in labelled})

        def bal(k):
            return float(np.mean([np.mean([row[k] == lab for row in labelled if row[0] == lab]) for lab in labels]))

        out |= {"n_labelled": len(labelled), "balanced_acc_fp32": bal(1), "balanced_acc_bf16": bal(2)}
    return out


def vad_cost(signals: Sequence[np.ndarray], repeat: int) -> float:
    """Seconds of silero VAD per second of audio."""
    from workers.pipeline import vad

    audio_s = sum(len(s) for s in signals) / 16000
    return _best(lambda: [vad.speech_timestamps(s, 16000) for s in signals], repeat) / audio_s


def feature_breakdown(signals: Sequence[np.ndarray]) -> dict:
    """ms per audio second of each extractor, the seed configuration (no shared Praat objects,
    HNR every 10 ms) against the current one, plus the effect on ``hnr_mean_db``."""
    from workers.pipeline.features import EXTRACTORS, get_extractor, shared

    audio_s = sum(len(s) for s in signals) / 16000
    seed_cfg = {"voice_quality": {"hnr_time_step": 0.01}}
    out: dict = {"audio_s": audio_s, "current": {}, "seed": {}}
    for mode in ("seed", "current"):
        exts = {n: get_extractor(n, seed_cfg.get(n) if mode == "seed" else None) for n in EXTRACTORS}
        for e in exts.values():  # warm-up (numba, FFT plans)
            e.extract(signals[0], 16000)
        times = dict.fromkeys(exts, 0.0)
        hnr = []
        for s in signals:
            for name, e in exts.items():
                if mode == "seed":
                    shared.forget()  # every extractor builds its own Sound, Pitch and spectrogram, as before
                t0 = time.perf_counter()
                r = e.extract(s, 16000)
                times[name] += time.perf_counter() - t0
                if name == "voice_quality":
                    hnr.append(r.summary.get("hnr_mean_db"))
        out[mode] = {n: 1000 * t / audio_s for n, t in times.items()}
        out[mode]["total"] = sum(out[mode].values())
        out[f"hnr_{mode}"] = hnr
    a = np.array([h if h is not None else np.nan for h in out["hnr_seed"]], dtype=float)
    b = np.array([h if h is not None else np.nan for h in out["hnr_current"]], dtype=float)
    ok = np.isfinite(a) & np.isfinite(b)
    d = b[ok] - a[ok]
    out["hnr_effect"] = {
        "n": int(ok.sum()),
        "mean_diff_db": float(d.mean()) if d.size else None,
        "mean_abs_diff_db": float(np.abs(d).mean()) if d.size else None,
        "max_abs_diff_db": float(np.abs(d).max()) if d.size else None,
        "between_clip_std_db": float(a[ok].std()) if d.size else None,
        "corr": float(np.corrcoef(a[ok], b[ok])[0, 1]) if d.size > 2 else None,
    }
    return out


def _extract_all(signals: Sequence[np.ndarray]) -> float:
    """Child process body: every extractor over ``signals``, one thread; returns seconds."""
    from workers import runtime
    from workers.pipeline.features import extract_features

    runtime.configure_threads(1)
    extract_features(signals[0], 16000)  # warm-up: imports, FFT plans
    t0 = time.perf_counter()
    for s in signals:
        extract_features(s, 16000)
    return time.perf_counter() - t0


def process_scaling(signals: Sequence[np.ndarray], counts: Sequence[int]) -> dict[int, float]:
    """The machine's own scaling for the features work, without the service: ``p`` plain
    processes each extract every feature from the same signals at once. Returns
    ``{p: efficiency}``, efficiency = one process's time / the mean time when ``p`` run together
    (1.0 = linear). This is the ceiling the service's features scaling is compared with."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")  # no fork after torch / OpenMP in this process
    times: dict[int, float] = {}
    for p in counts:
        with ctx.Pool(p) as pool:
            times[p] = float(np.mean(pool.map(_extract_all, [list(signals)] * p)))
    return {p: times[counts[0]] / t for p, t in times.items()}


def frontend_share(loaded, signals: Sequence[np.ndarray], batch: int, bf16: bool, repeat: int) -> dict | None:
    """How the model stage splits between the waveform frontend (band-limit + log-mel, which the
    FLOP count leaves out) and the network body, on ``batch`` windows under the worker's bf16
    setting. None for models without a separate ``frontend``."""
    import torch

    from workers.pipeline.batching import autocast_context
    from workers.pipeline.data import frame_windows

    model = loaded.model
    if not hasattr(model, "frontend") or not hasattr(model, "band_limit"):
        return None
    spec = loaded.spec
    win = spec.window_samples
    wins = np.concatenate([frame_windows(s, win, int(spec.hop_s * spec.sample_rate)) for s in signals])[:batch]
    x = loaded.prepare(wins.astype(np.float32))
    with torch.inference_mode(), autocast_context(bf16, "cpu"):
        front = _best(lambda: model.frontend(model.band_limit(x)), repeat)
        whole = _best(lambda: loaded.logits(x), repeat)
    return {"windows": len(wins), "frontend_s": front, "forward_s": whole, "share": front / whole}
