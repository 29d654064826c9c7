"""The Whisper feature path on a GPU, as one prepared run that fits the device tool's carry limit.

A lent GPU machine has torch, torchaudio and numpy but none of this project's other packages, and a
call carries at most 64 MiB: Whisper base's ``model.bin`` (139 MB) and the CTranslate2 wheel do not
fit. What the feature path needs does: the encoder's weights in fp16 (about 41 MB), the mel filters
and the default classifier's head. So:

    .venv/bin/python -m bench.gpu export                      # here: writes var/gpu/bundle.pt
    python3 -m bench.gpu run --device cuda --out $OUT/gpu.md  # there, with carry ["var/gpu"]

``run`` times the path a classify / embed job and the trainer's feature cache take (band limit,
Whisper log-mel, every encoder state, pooling, the probe's head) on 8-s windows of synthetic audio,
batch by batch, in fp32 and under bf16 autocast, with the peak GPU memory and bf16's agreement
with fp32 (cosine of the pooled last state, the head's decisions). The encoder is this project's own
torch module, built from the same weights (``models.whisper_encoder``), so its numbers are the
service's. faster-whisper on CUDA needs the full model and the CTranslate2 wheel, which do not fit.
On a CPU the same command runs (slowly; the tests use it so), which keeps it from rotting.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from models.frontends import BandLimit  # noqa: E402
from models.whisper_encoder import WhisperEncoder  # noqa: E402

WINDOW_S = 8.0
SR = 16000


PASSAGE = ("Please call Stella. Ask her to bring these things with her from the store: six spoons of fresh snow peas, "
           "five thick slabs of blue cheese, and maybe a snack for her brother Bob.")
VOICES = ("en-us", "en-gb", "en-gb-scotland", "en-029", "fr", "de", "es", "it", "hi", "cmn")


def speech_windows() -> torch.Tensor:
    """8-s windows of espeak-ng reading the passage in several voices, int16 ``[k, samples]``: the
    bf16 agreement is read on speech, not noise (empty when espeak-ng is not installed)."""
    import shutil
    import subprocess
    import tempfile

    import soundfile as sf
    import torchaudio

    if shutil.which("espeak-ng") is None:
        return torch.zeros(0, int(WINDOW_S * SR), dtype=torch.int16)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for k, voice in enumerate(VOICES):
            path = Path(tmp) / f"{k}.wav"
            subprocess.run(["espeak-ng", "-v", voice, "-s", str(150 + 5 * k), "-w", str(path), PASSAGE],
                           check=True, capture_output=True)
            x, sr = sf.read(path, dtype="float32")
            w = torchaudio.functional.resample(torch.from_numpy(x), sr, SR)[: int(WINDOW_S * SR)]
            w = torch.nn.functional.pad(w, (0, int(WINDOW_S * SR) - w.shape[0]))
            rows.append((w / w.abs().max().clamp(min=1e-6) * 0.5 * 32767).to(torch.int16))
    return torch.stack(rows)


def export(model_dir: str | None, checkpoint: str, out: str) -> Path:
    """Write the bundle: fp16 encoder weights, sizes, mel filters, the encoder's sha256 and the
    checkpoint's probe head (standardiser, linear layer, states, band limit)."""
    from models.checkpoint import load_checkpoint
    from models.whisper_encoder import load_encoder
    from models.whisper_probe import find_encoder_dir

    loaded = load_checkpoint(checkpoint)
    probe = loaded.model
    folder = Path(model_dir) if model_dir else find_encoder_dir(probe.encoder_sha256 or None)
    enc, info = load_encoder(folder, expected_sha256=probe.encoder_sha256 or None)
    bundle = {
        "sizes": {"n_mels": info.n_mels, "d_model": info.d_model, "n_heads": enc.blocks[0].n_heads,
                  "n_layers": info.n_layers, "n_ctx": enc.n_ctx},
        "state_dict": {k: v.half() for k, v in enc.state_dict().items()},
        "mel_filters": enc.mel.filters.clone(),
        "encoder_sha256": info.sha256, "encoder": Path(info.model_dir).name, "speech": speech_windows(),
        "head": {"model": f"{loaded.spec.name}@{loaded.spec.version}", "labels": list(loaded.spec.labels),
                 "states": list(probe.states), "pooling": probe.pooling, "band_limit_hz": probe.band_limit.cutoff_hz,
                 "feat_mean": probe.feat_mean.clone(), "feat_scale": probe.feat_scale.clone(),
                 "weight": probe.head.weight.detach().clone(), "bias": probe.head.bias.detach().clone()},
    }
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(bundle, path)
    return path


def build(bundle: dict, device: str) -> tuple[WhisperEncoder, BandLimit]:
    """The encoder (fp32 on ``device``, weights from the fp16 bundle) and the probe's band limit."""
    enc = WhisperEncoder(**bundle["sizes"], mel_filters=bundle["mel_filters"])
    enc.load_state_dict({k: v.float() for k, v in bundle["state_dict"].items()}, strict=False)
    enc.eval().requires_grad_(False).to(device)
    return enc, BandLimit(SR, bundle["head"]["band_limit_hz"]).to(device)


@torch.inference_mode()
def features(enc: WhisperEncoder, band: BandLimit, wave: torch.Tensor, bf16: bool) -> torch.Tensor:
    """``[n, samples]`` -> every state's mean and standard deviation over time ``[n, states, 2, d_model]``
    (float32): what the trainer caches and the probe reads from (``WhisperProbe.pooled_states``)."""
    with torch.autocast(wave.device.type, dtype=torch.bfloat16, enabled=bf16):
        states, _ = enc.hidden_states(band(wave))
        return torch.stack([torch.stack([h.float().mean(dim=1), h.float().std(dim=1, unbiased=False)], dim=1)
                            for h in states], dim=1)


def head_logits(bundle: dict, pooled: torch.Tensor) -> torch.Tensor:
    """The probe's head on :func:`features`: its states, the mean alone or mean and spread by its pooling."""
    h = bundle["head"]
    picked = pooled[:, h["states"]]
    x = (picked if h.get("pooling") == "mean_std" else picked[:, :, :1]).reshape(pooled.shape[0], -1)
    x = (x - h["feat_mean"].to(x.device)) / h["feat_scale"].to(x.device)
    return x @ h["weight"].to(x.device).T + h["bias"].to(x.device)


def run(bundle_path: str, device: str, batches: list[int], windows: int, out: str | None) -> str:
    bundle = torch.load(bundle_path, map_location="cpu", weights_only=False)
    enc, band = build(bundle, device)
    n = int(WINDOW_S * SR)
    speech = bundle.get("speech")
    if speech is not None and len(speech):  # the bundle's espeak windows, repeated (with a little noise) to fill the rows
        reps = -(-windows // len(speech))
        audio = speech.float().div(32767).repeat(reps, 1)[:windows]
        audio = audio + torch.from_numpy(1e-3 * np.random.default_rng(0).standard_normal(audio.shape).astype(np.float32))
    else:  # the arithmetic does not depend on the content: seeded noise at a normal level
        audio = torch.from_numpy((0.05 * np.random.default_rng(0).standard_normal((windows, n))).astype(np.float32))
    cuda = device.startswith("cuda")
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    name = torch.cuda.get_device_name(0) if cuda else "CPU"
    lines = [f"## GPU feature path (`python -m bench.gpu run --device {device}`, {time.strftime('%Y-%m-%d %H:%M')})", "",
             f"Device: {name}; torch {torch.__version__}; encoder {bundle['encoder']} (sha256 "
             f"{bundle['encoder_sha256'][:12]}...), weights carried in fp16 and run in fp32 or bf16 autocast; "
             f"{windows} windows of {WINDOW_S:g} s ({windows * WINDOW_S:g} s of audio; espeak-ng speech carried in the "
             "bundle) per row; host to device copy included.", "",
             "| dtype | batch | seconds | x real time | peak GPU memory GiB |", "|---|---|---|---|---|"]
    results: dict[tuple[str, int], torch.Tensor] = {}
    for bf16 in (False, True):
        for bs in batches:
            features(enc, band, audio[:bs].to(device), bf16)  # warm-up: kernels, cuDNN plans
            sync()
            if cuda:
                torch.cuda.reset_peak_memory_stats()
            t = time.perf_counter()
            pooled = [features(enc, band, audio[i : i + bs].to(device, non_blocking=True), bf16).cpu()
                      for i in range(0, windows, bs)]
            sync()
            dt = time.perf_counter() - t
            results[("bf16" if bf16 else "fp32", bs)] = torch.cat(pooled)
            peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else float("nan")
            lines.append(f"| {'bf16' if bf16 else 'fp32'} | {bs} | {dt:.3f} | {windows * WINDOW_S / dt:.0f} | {peak:.2f} |")
    ref, low = results[("fp32", batches[-1])], results[("bf16", batches[-1])]
    last = ref.shape[1] - 1
    cos = torch.nn.functional.cosine_similarity(ref[:, last, 0], low[:, last, 0], dim=-1)
    agree = (head_logits(bundle, ref).argmax(1) == head_logits(bundle, low).argmax(1)).float().mean()
    lines += ["", f"bf16 against fp32 (batch {batches[-1]}): pooled last state cosine min {cos.min():.5f}, mean "
              f"{cos.mean():.5f}; {bundle['head']['model']}'s head decides the same on {100 * agree:.1f} % of the windows.",
              ""]
    text = "\n".join(lines)
    if out:
        Path(out).write_text(text + "\n")
    return text


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    ex = sub.add_parser("export", help="write the bundle the GPU machine carries")
    ex.add_argument("--model-dir", default=None, help="a faster-whisper folder (default: the checkpoint's encoder)")
    ex.add_argument("--checkpoint", default=str(ROOT / "models" / "checkpoints" / "accent-native.pt"))
    ex.add_argument("--out", default=str(ROOT / "var" / "gpu" / "bundle.pt"))
    rn = sub.add_parser("run", help="time the feature path on a device")
    rn.add_argument("--bundle", default=str(ROOT / "var" / "gpu" / "bundle.pt"))
    rn.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    rn.add_argument("--batches", default="1,8,32,128,256")
    rn.add_argument("--windows", type=int, default=1024)
    rn.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    if args.cmd == "export":
        path = export(args.model_dir, args.checkpoint, args.out)
        print(f"wrote {path} ({path.stat().st_size / 2**20:.1f} MiB)")
        return 0
    print(run(args.bundle, args.device, [int(b) for b in args.batches.split(",")], args.windows, args.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
