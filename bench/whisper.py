"""Whisper paths, measured against a baseline in the same run (prints a Markdown section).

    .venv/bin/python -m bench.whisper [--clips N] [--checkpoint models/checkpoints/accent-native.pt] [--write]

1. **The service's classify path** for a ``whisper_probe`` checkpoint (``classify_batch``: windows
   as long as the audio, never padded to 30 s, batched by length, one thread per worker process as
   the CPU workers run, bf16 autocast as ``WORKER_AUTOCAST=auto`` would choose; both encoder
   engines, torch and CTranslate2 int8, with their agreement) against
   **the naive way** of running the same model: one file at a time, padded to 30 s as Whisper's
   transcription front end does, torch's default threads. Same clips, same probe, same answers
   (the agreement of the two is printed).
2. The encoder's batch table on each device present (CPU; CUDA where there is one): x real time
   of the feature path by batch size, fp32 and bf16, and bf16's agreement with fp32.
3. faster-whisper (CTranslate2) language identification (4-s windows) and transcription: x real time.

Clips: accent-mini test clips when the data folder exists (``ACCENTMINI``), else espeak-ng speech.
Speed is reported, never asserted (tests assert behaviour).
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("ACCENTMINI", ROOT.parent / "shared" / "data" / "accent-mini"))


def clips(n: int) -> list[np.ndarray]:
    """``n`` mono 16 kHz clips: accent-mini test clips (SAA first), else espeak-ng sentences."""
    from workers.pipeline.audio import load_audio

    manifest = DATA / "manifest.csv"
    if manifest.exists():
        import csv

        rows = [r for r in csv.DictReader(open(manifest)) if r["split"] == "test"]
        rows.sort(key=lambda r: (r["corpus"] != "SAA", r["path"]))
        return [load_audio(str(DATA / r["path"])).samples for r in rows[:n]]
    import subprocess
    import tempfile

    out = []
    texts = ["Please call Stella and ask her to bring these things with her from the store.",
             "Six spoons of fresh snow peas, five thick slabs of blue cheese, and maybe a snack for her brother."]
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(n):
            path = Path(tmp) / f"{i}.wav"
            subprocess.run(["espeak-ng", "-s", str(140 + 5 * (i % 5)), "-w", str(path), texts[i % 2]], check=True)
            out.append(load_audio(str(path)).samples)
    return out


def _timed(fn):
    t0 = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - t0


def service_vs_naive(loaded, signals: list[np.ndarray], autocast: bool) -> list[str]:
    import torch

    from workers.pipeline.inference import classify_batch

    audio_s = sum(len(x) for x in signals) / 16000
    torch.set_num_threads(1)
    engines = {}
    for engine in ("torch", "auto"):  # auto: what a CPU worker runs (runtime.load_model, WHISPER_PROBE_ENGINE)
        used = loaded.model.use_engine(engine, compute_type="int8", threads=1)
        classify_batch(loaded, signals[:2], vad=False, autocast=autocast)  # warm-up
        engines[used] = _timed(lambda: classify_batch(loaded, signals, vad=False, autocast=autocast, batch_size=16))
    default = "ctranslate2" if "ctranslate2" in engines else "torch"
    ours, t_ours = engines[default]

    torch.set_num_threads(os.cpu_count() or 1)  # "default threads"
    probe = loaded.model

    def naive_one(x: np.ndarray) -> int:
        padded = np.zeros((1, 480000), dtype=np.float32)
        padded[0, : min(len(x), 480000)] = x[:480000]
        with torch.inference_mode():
            inputs = {"wave": torch.from_numpy(padded), "lengths": None}
            wave = probe.band_limit(inputs["wave"])
            states, _ = probe.attach_encoder().hidden_states(wave, None)
            pooled = torch.stack([torch.stack([h.mean(1), h.std(1, unbiased=False)], 1) for h in states], 1)
            logits = probe.head((probe.select(pooled) - probe.feat_mean) / probe.feat_scale)
        return int(logits.argmax())

    naive_one(signals[0])
    naive, t_naive = _timed(lambda: [naive_one(x) for x in signals])
    torch.set_num_threads(1)
    labels = list(loaded.spec.labels)
    agree = np.mean([labels[a] == r.predicted_class for a, r in zip(naive, ours, strict=True)])
    rows = ["| path | threads | seconds | x real time |", "|---|---|---|---|"]
    names = {"torch": f"torch encoder, batched by length, {'bf16 autocast' if autocast else 'fp32'}",
             "ctranslate2": "CTranslate2 int8 encoder, window by window (the CPU default for a last-state probe)"}
    for used, (_, t) in engines.items():
        rows.append(f"| service classify_batch: {names[used]} | 1 | {t:.2f} | {audio_s / t:.0f} |")
    rows += [f"| naive: one file at a time, padded to 30 s, fp32 | {os.cpu_count()} (default) | {t_naive:.2f} | {audio_s / t_naive:.1f} |",
             "", f"Speed-up of the default ({default}) {t_naive / t_ours:.1f}x per worker process; it agrees with the naive "
             f"path on {agree:.0%} of the {len(signals)} clips ({audio_s:.0f} s of audio). The naive path pools over 30 s "
             "of padding, so some answers differ."]
    if len(engines) == 2:
        a, b = engines["torch"][0], engines["ctranslate2"][0]
        dp = [abs(x.probabilities[k] - y.probabilities[k]) for x, y in zip(a, b, strict=True) for k in labels]
        same = np.mean([x.predicted_class == y.predicted_class for x, y in zip(a, b, strict=True)])
        rows.append(f"CTranslate2 int8 against the torch encoder the probe was fitted on: decisions agree on {same:.1%}, "
                    f"|Δp| mean {np.mean(dp):.4f}, max {np.max(dp):.4f}.")
    return rows


def encoder_table(signals: list[np.ndarray], device: str) -> list[str]:
    import torch

    from models.whisper_encoder import load_encoder
    from models.whisper_probe import find_encoder_dir

    enc, _ = load_encoder(find_encoder_dir(), device=device)
    win = 8 * 16000
    batch_all = np.zeros((len(signals), win), dtype=np.float32)
    for i, x in enumerate(signals):
        batch_all[i, : min(win, len(x))] = x[:win]
    rows = ["| device | batch | dtype | x real time (8-s windows) |", "|---|---|---|---|"]
    ref = None
    agreement = ""
    sizes = (1, 8, 32) if device == "cpu" else (1, 16, 64, 256)
    for dtype in ("fp32", "bf16"):
        for bs in sizes:
            reps = max(1, (bs * 2) // len(signals) + 1)
            data = torch.from_numpy(np.tile(batch_all, (reps, 1))[: max(bs, len(signals))]).to(device)
            n = data.shape[0]

            def run(data=data, n=n, bs=bs, dtype=dtype):
                outs = []
                with torch.inference_mode(), torch.autocast(torch.device(device).type, dtype=torch.bfloat16,
                                                             enabled=dtype == "bf16"):
                    for i in range(0, n, bs):
                        outs.append(enc.hidden_states(data[i : i + bs])[0][-1].float().mean(1))
                if device.startswith("cuda"):
                    torch.cuda.synchronize()
                return torch.cat(outs)

            run()
            out, dt = _timed(run)
            rows.append(f"| {device} | {bs} | {dtype} | {n * 8 / dt:.0f} |")
            if dtype == "fp32" and ref is None:
                ref = out
            if dtype == "bf16" and bs == sizes[-1] and ref is not None:
                cos = torch.nn.functional.cosine_similarity(out[: len(ref)], ref[: len(out)], dim=-1)
                agreement = f"bf16 vs fp32 pooled last state: cosine min {float(cos.min()):.4f}, mean {float(cos.mean()):.5f}."
    if device.startswith("cuda"):
        rows.append(f"\nPeak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB.")
    return [*rows, "", agreement]


def faster_whisper_rows(signals: list[np.ndarray], device: str) -> list[str]:
    from models.whisper_probe import find_encoder_dir
    from workers.pipeline.whisper_asr import transcribe
    from workers.pipeline.whisper_lang import identify_languages, load_engine

    engine = load_engine(find_encoder_dir(), device=device, cpu_threads=1)
    rows = ["| task | device | audio s | seconds | x real time |", "|---|---|---|---|---|"]
    audio_s = sum(len(x) for x in signals) / 16000
    for name, fn in (("language (4-s windows, VAD)", lambda x: identify_languages(engine, x, window_s=4.0)),
                     ("transcribe (greedy, word times, VAD filter)", lambda x: transcribe(engine, x, beam_size=1))):
        fn(signals[0])  # warm-up
        _, dt = _timed(lambda f=fn: [f(x) for x in signals])
        rows.append(f"| {name} | {device} | {audio_s:.0f} | {dt:.1f} | {audio_s / dt:.1f} |")
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", type=int, default=40)
    ap.add_argument("--checkpoint", default=str(ROOT / "models" / "checkpoints" / "accent-native.pt"))
    args = ap.parse_args()
    import torch

    from models.checkpoint import load_checkpoint
    from workers.runtime import cpu_has_bf16

    signals = clips(args.clips)
    audio_s = sum(len(x) for x in signals) / 16000
    out = [f"## Whisper paths ({time.strftime('%Y-%m-%d')}, `python -m bench.whisper --clips {args.clips}`)", "",
           f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, bf16: {cpu_has_bf16()}, "
           f"GPU: {torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'none'}, load average {os.getloadavg()}. "
           f"{len(signals)} clips, {audio_s:.0f} s of audio.", ""]
    loaded = load_checkpoint(args.checkpoint)
    if loaded.spec.family == "whisper_probe":
        loaded.model.attach_encoder()
        out += ["### Classify: the service's path against the naive one", ""]
        out += service_vs_naive(loaded, signals, autocast=cpu_has_bf16()) + [""]
    out += ["### Encoder batch table", ""]
    for device in ["cpu"] + (["cuda"] if torch.cuda.is_available() else []):
        torch.set_num_threads(1 if device == "cpu" else (os.cpu_count() or 1))
        out += encoder_table(signals, device) + [""]
    torch.set_num_threads(1)
    out += ["### faster-whisper", ""]
    for device in ["cpu"] + (["cuda"] if torch.cuda.is_available() else []):
        out += faster_whisper_rows(signals[:10], device)
    print("\n".join(out))


if __name__ == "__main__":
    main()
