"""Write the shipped ``spoken-words`` checkpoint (``models/checkpoints/spoken-words.pt`` and its
``.json`` sidecar): no weights, only what the model is (spec, hparams, threshold) and, with
``--metrics``, what ``bench/spoken_words.py`` measured on visible speech.

    .venv/bin/python scripts/spoken_words_checkpoint.py [--metrics bench.json]

The Whisper it runs on is the bundled faster-whisper folder (``var/models/whisper-base``), named by
its ``model.bin`` sha256, as ``whisper_probe`` checkpoints name their encoder.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

VERSION = "1.0.0"
#: chosen on accent-mini's FSDD train speakers (bench/spoken_words.py --split train --min-audio-s ...)
MIN_AUDIO_S = 3.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--metrics", help="bench/spoken_words.py --json output to store as the checkpoint's metrics")
    ap.add_argument("--out", default=str(ROOT / "models" / "checkpoints" / "spoken-words.pt"))
    args = ap.parse_args()

    from models.checkpoint import save_checkpoint
    from models.specs import ModelSpec
    from models.spoken_words import DIGITS, build_spoken_words
    from models.whisper_encoder import file_sha256
    from models.whisper_probe import find_encoder_dir

    folder = find_encoder_dir(None)
    hparams = {"encoder": folder.name, "encoder_sha256": file_sha256(folder / "model.bin"), "min_audio_s": MIN_AUDIO_S,
               "compute_type": "int8", "spellings": "' Word.' and, for digits, ' 0.' (models.spoken_words.spellings)",
               "language": "en"}
    spec = ModelSpec(name="spoken-words", version=VERSION, family="spoken_words", task="classify", labels=DIGITS,
                     sample_rate=16000, window_s=30.0, hop_s=30.0, embedding_dim=None,
                     extra={"encoder": folder.name, "band_limit_hz": None, "zero_shot": True, "min_speech_s": 0.1,
                            "default_classes": list(DIGITS)})
    calibration = {"temperature": 1.0, "threshold": 0.8, "speakers": 0,
                   "fitted_on": "nothing: zero-shot, the raw normalised decoder scores; the 0.8 threshold is seed 003's"}
    metrics: dict = {}
    if args.metrics:  # the benchmark's sets: FSDD test speakers as the card's test, FSDD train speakers (where the
        # padding was chosen) as its validation, espeak-ng voices beside them
        bench = json.loads(Path(args.metrics).read_text())
        metrics = {"benchmark": {k: {kk: vv for kk, vv in v.items() if kk != "report"} if isinstance(v, dict) else v
                                 for k, v in bench.items()}}
        if "fsdd_test" in bench:
            metrics["test"] = bench["fsdd_test"]["report"]
        if "fsdd_train" in bench:
            metrics["val"] = bench["fsdd_train"]["report"]
            metrics["val_note"] = "FSDD train speakers of accent-mini: where min_audio_s was chosen"
        if "espeak" in bench:
            metrics["espeak"] = bench["espeak"]["report"]
    model = build_spoken_words(spec, hparams)
    sha = save_checkpoint(args.out, model=model, spec=spec, calibration=calibration, hparams=hparams, metrics=metrics,
                          training_data={"source": "none (zero-shot)", "note": "Whisper base as shipped; nothing trained"})
    print(args.out, sha)


if __name__ == "__main__":
    main()
