"""The seed-style baseline: what a one-off script or a Flask ``/predict`` handler does.

One file at a time: ``librosa.load`` (decode + resample to 16 kHz), a librosa 80-bin log-mel (the
seed scripts' feature step), then one forward pass of the whole clip at batch 1, with the
library default thread settings (no OMP / BLAS limits, torch's default thread count).
The run scripts call it in a fresh process with those variables removed from the environment:

    python -m bench.baseline CHECKPOINT FILES.json OUT.json
"""

from __future__ import annotations

import json
import sys
import time


def main(checkpoint: str, files_json: str, out_json: str) -> None:
    import librosa
    import numpy as np
    import torch

    from models.checkpoint import load_checkpoint

    loaded = load_checkpoint(checkpoint)
    files = json.loads(open(files_json).read())
    stages = {"load": 0.0, "logmel": 0.0, "forward": 0.0}
    audio_s = 0.0
    preds = []
    # warm-up on the first file (one-off scripts pay this once too, but it is not per-file work)
    y, _ = librosa.load(files[0], sr=16000, mono=True)
    with torch.inference_mode():
        loaded.logits(loaded.prepare(y[None, : 16000 * 2]))
    t_all = time.perf_counter()
    for path in files:
        t0 = time.perf_counter()
        y, sr = librosa.load(path, sr=16000, mono=True)
        t1 = time.perf_counter()
        mel = librosa.power_to_db(librosa.feature.melspectrogram(y=y, sr=sr, n_fft=512, hop_length=160, n_mels=80))
        t2 = time.perf_counter()
        with torch.inference_mode():
            logits = loaded.logits(loaded.prepare(y[None, :]))
        t3 = time.perf_counter()
        stages["load"] += t1 - t0
        stages["logmel"] += t2 - t1
        stages["forward"] += t3 - t2
        audio_s += len(y) / sr
        preds.append(int(np.argmax(logits.numpy()[0])) if mel.size else -1)
    wall = time.perf_counter() - t_all
    json.dump(
        {
            "files": len(files),
            "audio_s": audio_s,
            "wall_s": wall,
            "stages": stages,
            "torch_threads": torch.get_num_threads(),
            "predictions": preds,
        },
        open(out_json, "w"),
    )


if __name__ == "__main__":
    main(*sys.argv[1:4])
