"""Spoken language identification on data we can see: the uncertainty floor, padded against unpadded
windows, and the share of accented English the service calls English.

    .venv/bin/python -m bench.language_id [--windows-sample 150] [--out var/bench/language_id.json]

Data (nothing here is held out; the FLEURS clips the team measured are never read):

- **espeak-ng** sentences in eight voices (en-us, en-gb, fr, es, it, pl, and de, pt, nl, whose voices
  Whisper base often hears as another language), four sentences each, read one at a time, two at a
  time and all four (short clips are scored whole, the long one by windows). The right answer is the
  voice's language.
- **accent-mini** (``ACCENTMINI``, default ``../shared/data/accent-mini``): every SAA clip (491, all
  English read by native and non-native speakers, 8 s each); the right answer is ``en``.
- **Windows, padded against unpadded**: every 4-s speech window (VAD-trimmed as the service does) of
  ``--windows-sample`` (96) accent-mini *train* clips (a fixed random sample, stratified by corpus) and of
  the espeak clips, heard unpadded (the encoder's positional embedding sliced) and zero-padded to 30 s
  as faster-whisper does.

The rule for the floor, fixed before this script was first run: on the selection data (the espeak
clips and the SAA *train* split, scored by the new rule with the floor off), for each candidate
floor in 0.30, 0.35, ..., 0.80 count the right answers at or over it (kept) and the wrong answers
under it (caught); the floor is the candidate with the largest kept-right share + caught-wrong share
among those that keep at least 95 % of the right answers (accented English must stay English);
ties go to the lower floor. The SAA *test* split is only reported, never used to choose.

Prints Markdown (for docs/benchmarks.md) and writes the raw numbers as JSON.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import platform
import random
import shutil
import subprocess
import sys
import time
from math import gcd
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("ACCENTMINI", ROOT.parent / "shared" / "data" / "accent-mini"))
SR = 16000
FLOORS = [round(0.30 + 0.05 * i, 2) for i in range(11)]
MIN_KEPT = 0.95

VOICES = {"en": "en-us", "en-gb": "en-gb", "fr": "fr-fr", "es": "es", "it": "it", "pl": "pl", "de": "de", "pt": "pt", "nl": "nl"}
TEXTS = {
    "en": ["The quick brown fox jumps over the lazy dog.", "Please call Stella and ask her to bring these things with her.",
           "We will meet at the station tomorrow morning before the train leaves.", "My brother bought three apples and a loaf of bread."],
    "fr": ["Le renard brun rapide saute par-dessus le chien paresseux.", "Veuillez appeler Stella et lui demander d'apporter ces choses.",
           "Nous nous retrouverons demain matin à la gare avant le départ du train.", "Mon frère a acheté trois pommes et une baguette."],
    "es": ["El rápido zorro marrón salta sobre el perro perezoso.", "Por favor, llama a Estela y pídele que traiga estas cosas.",
           "Nos veremos mañana por la mañana en la estación antes de que salga el tren.", "Mi hermano compró tres manzanas y una barra de pan."],
    "it": ["La volpe marrone veloce salta sopra il cane pigro.", "Per favore chiama Stella e chiedile di portare queste cose.",
           "Ci vediamo domani mattina alla stazione prima che parta il treno.", "Mio fratello ha comprato tre mele e una pagnotta."],
    "pl": ["W Szczebrzeszynie chrząszcz brzmi w trzcinie.", "Jutro pojedziemy pociągiem do Krakowa na wycieczkę.",
           "Spotkamy się jutro rano na dworcu, zanim odjedzie pociąg.", "Mój brat kupił trzy jabłka i bochenek chleba."],
    "de": ["Der schnelle braune Fuchs springt über den faulen Hund.", "Bitte ruf Stella an und bitte sie, diese Sachen mitzubringen.",
           "Wir treffen uns morgen früh am Bahnhof, bevor der Zug abfährt.", "Mein Bruder hat drei Äpfel und ein Brot gekauft."],
    "pt": ["A rápida raposa marrom pula sobre o cão preguiçoso.", "Por favor, ligue para a Stella e peça para ela trazer estas coisas.",
           "Vamos nos encontrar amanhã de manhã na estação antes de o trem partir.", "O meu irmão comprou três maçãs e um pão."],
    "nl": ["De snelle bruine vos springt over de luie hond.", "Bel Stella alsjeblieft en vraag haar deze dingen mee te nemen.",
           "We zien elkaar morgenochtend op het station voordat de trein vertrekt.", "Mijn broer kocht drie appels en een brood."],
}


def espeak(text: str, voice: str) -> np.ndarray:
    import soundfile as sf
    from scipy.signal import resample_poly

    wav = subprocess.run(["espeak-ng", "-v", voice, "--stdout", text], check=True, capture_output=True).stdout
    x, sr = sf.read(io.BytesIO(wav), dtype="float32")
    g = gcd(SR, sr)
    return resample_poly(x, SR // g, sr // g).astype(np.float32)


def espeak_clips() -> list[dict]:
    """``[{name, language, samples}]``: each voice's four sentences alone, in two pairs, and all four."""
    if shutil.which("espeak-ng") is None:
        return []
    out = []
    for key, voice in VOICES.items():
        texts = TEXTS["en" if key == "en-gb" else key]
        code = key.split("-")[0]
        groups = [[t] for t in texts] + [texts[:2], texts[2:], texts]
        for i, group in enumerate(groups):
            out.append({"name": f"espeak-{key}-{i}", "language": code, "samples": espeak(" ".join(group), voice)})
    return out


def manifest() -> list[dict]:
    path = DATA / "manifest.csv"
    return list(csv.DictReader(open(path))) if path.exists() else []


def _answer(out: dict) -> dict:
    return {"language": out["language"], "probability": out["probability"], "outcome": out["outcome"], "scored": out["scored"],
            "speech_windows": out["speech_windows"]}


def choose_floor(rows: list[dict]) -> tuple[float, list[dict]]:
    """The floor by the rule in the module docstring; ``rows`` ``[{right: bool, probability}]``."""
    right = [r["probability"] for r in rows if r["right"]]
    wrong = [r["probability"] for r in rows if not r["right"]]
    table = []
    for floor in FLOORS:
        kept = sum(p >= floor for p in right) / len(right) if right else 0.0
        caught = sum(p < floor for p in wrong) / len(wrong) if wrong else 0.0
        table.append({"floor": floor, "kept_right": kept, "caught_wrong": caught, "n_right": len(right), "n_wrong": len(wrong)})
    allowed = [t for t in table if t["kept_right"] >= MIN_KEPT] or table[:1]
    best = max(allowed, key=lambda t: (round(t["kept_right"] + t["caught_wrong"], 9), -t["floor"]))
    return best["floor"], table


def window_comparison(engine, items: list[tuple[str, np.ndarray]], window_s: float = 4.0) -> list[dict]:
    """Every speech window of each ``(language, samples)``, heard unpadded and padded: ``[{language,
    unpadded: {top, p_top, p_true}, padded: {...}}]``."""
    from workers.pipeline.audio import normalise_level
    from workers.pipeline.vad import speech_fraction, speech_timestamps
    from workers.pipeline.whisper_lang import _detect_batch, _trim_to_speech, window_features, window_spans

    rows = []
    for code, samples in items:
        x, _ = normalise_level(samples)
        spans = window_spans(len(x) / SR, window_s)
        stamps = speech_timestamps(x, SR)
        for span, cov in zip(spans, speech_fraction(spans, stamps), strict=True):
            if cov < 0.3:
                continue
            a, b = _trim_to_speech(span, stamps)
            seg = x[int(round(a * SR)) : int(round(b * SR))]
            unpadded, padded = _detect_batch(engine, [window_features(engine, seg, padded=False),
                                                      window_features(engine, seg, padded=True)], 1)
            row = {"language": code}
            for name, p in (("unpadded", unpadded), ("padded", padded)):
                top = max(p, key=p.get)
                row[name] = {"top": top, "p_top": p[top], "p_true": p.get(code, 0.0)}
            rows.append(row)
    return rows


def _summary(rows: list[dict], key: str) -> dict:
    n = len(rows)
    right = sum(r[key]["top"] == r["language"] for r in rows)
    return {"n": n, "right": right, "accuracy": right / n if n else None,
            "mean_p_true": float(np.mean([r[key]["p_true"] for r in rows])) if rows else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--windows-sample", type=int, default=96, help="accent-mini train clips for padded vs unpadded windows")
    parser.add_argument("--saa-limit", type=int, default=0, help="at most this many SAA clips (0: all)")
    parser.add_argument("--out", default=str(ROOT / "var" / "bench" / "language_id.json"))
    parser.add_argument("--reuse", metavar="JSON", help="take the SAA answers and the window comparison from an earlier run's JSON "
                        "(valid while the SAA clips are all heard whole, which the run checks); rerun the espeak clips and the floor")
    parser.add_argument("--time", type=int, default=0, metavar="N",
                        help="only time the old and new rules on the first N SAA test clips (seconds per clip)")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from workers.pipeline.audio import load_audio
    from workers.pipeline.whisper_lang import identify_languages, load_engine

    engine = load_engine(ROOT / "var" / "models" / "whisper-base", device="cpu", compute_type="int8", cpu_threads=1)
    if args.time:
        print(timing(engine, args.time))
        return
    t_start = time.perf_counter()
    result: dict = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
                    "load_before": os.getloadavg()}

    def new(x: np.ndarray) -> dict:
        return _answer(identify_languages(engine, x, min_probability=0.0))

    def old(x: np.ndarray) -> dict:  # the rule before: every window unpadded, a vote, no level normalisation, no floor
        return _answer(identify_languages(engine, x, min_probability=0.0, min_windows=0, normalise=False, pad_windows=False))

    speak = espeak_clips()
    result["espeak"] = [{"name": c["name"], "language": c["language"], "seconds": round(len(c["samples"]) / SR, 2),
                         "new": new(c["samples"]), "old": old(c["samples"])} for c in speak]
    print(f"espeak done at {time.perf_counter() - t_start:.0f} s", file=sys.stderr, flush=True)
    rows = manifest()
    saa = [r for r in rows if r["corpus"] == "SAA"]
    if args.saa_limit:
        saa = saa[: args.saa_limit]
    earlier = json.loads(Path(args.reuse).read_text()) if args.reuse else None
    if earlier is not None:
        if any(c["new"]["scored"] != "whole" for c in earlier["saa"]):
            raise SystemExit("--reuse: some SAA clips were scored by windows, which pad_windows changes; rerun them")
        saa = []
        result["reused"] = {"from": args.reuse, "machine": earlier["machine"], "seconds": earlier["seconds"]}
    result["saa"] = earlier["saa"] if earlier is not None else []
    for i, r in enumerate(saa):
        if i % 50 == 0:
            print(f"SAA {i}/{len(saa)} at {time.perf_counter() - t_start:.0f} s", file=sys.stderr, flush=True)
        x = load_audio(str(DATA / r["path"])).samples
        result["saa"].append({"path": r["path"], "split": r["split"], "accent_group": r["accent_group"], "l1": r["l1"],
                              "new": new(x), "old": old(x)})
    selection = [{"right": c["new"]["language"] == c["language"], "probability": c["new"]["probability"]}
                 for c in result["espeak"] if c["new"]["language"]]
    selection += [{"right": c["new"]["language"] == "en", "probability": c["new"]["probability"]}
                  for c in result["saa"] if c["split"] == "train" and c["new"]["language"]]
    floor, table = choose_floor(selection)
    result["floor"], result["floor_table"] = floor, table

    if earlier is not None:
        result["windows"] = earlier["windows"]
        return _finish(result, args, t_start)
    rng = random.Random(0)
    by_corpus: dict[str, list[dict]] = {}
    for r in rows:
        if r["split"] == "train":
            by_corpus.setdefault(r["corpus"], []).append(r)
    sample: list[dict] = []
    per = max(1, args.windows_sample // max(1, len(by_corpus)))
    for corpus in sorted(by_corpus):
        sample += rng.sample(by_corpus[corpus], min(per, len(by_corpus[corpus])))
    print(f"windows at {time.perf_counter() - t_start:.0f} s", file=sys.stderr, flush=True)
    real = window_comparison(engine, [("en", load_audio(str(DATA / r["path"])).samples) for r in sample])
    synth = window_comparison(engine, [(c["language"], c["samples"]) for c in speak])
    result["windows"] = {"accent_mini_clips": len(sample), "real": {k: _summary(real, k) for k in ("unpadded", "padded")},
                         "espeak": {k: _summary(synth, k) for k in ("unpadded", "padded")}}
    _finish(result, args, t_start)


def _finish(result: dict, args, t_start: float) -> None:
    result["seconds"] = round(time.perf_counter() - t_start, 1)
    result["load_after"] = os.getloadavg()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(report(result))


def timing(engine, n: int) -> str:
    """Seconds per clip on one thread: the old rule (window vote) and the new one on 8-s SAA clips (heard
    whole), and unpadded against padded windows on 32-s recordings (four of those clips joined: a vote)."""
    from workers.pipeline.audio import load_audio
    from workers.pipeline.whisper_lang import identify_languages

    clips = [load_audio(str(DATA / r["path"])).samples for r in manifest() if r["corpus"] == "SAA" and r["split"] == "test"][:n]
    joined = [np.concatenate(clips[i : i + 4]) for i in range(0, len(clips) - 3, 4)]
    identify_languages(engine, clips[0])  # warm-up: VAD model, first calls
    old = dict(min_windows=0, normalise=False, min_probability=0.0, pad_windows=False)
    runs = [("8-s clips", clips, "old (window vote, unpadded, no normalising)", old),
            ("8-s clips", clips, "new (heard whole, padded to 30 s)", {}),
            ("32-s recordings", joined, "new with pad_windows false (window vote, unpadded)", dict(pad_windows=False)),
            ("32-s recordings", joined, "new (window vote, padded: the default)", {})]
    lines = [f"load average {os.getloadavg()[0]:.2f}; {len(clips)} SAA test clips, one thread", "",
             "| audio | rule | s per recording | x real time |", "|---|---|---|---|"]
    for what, items, name, kwargs in runs:
        t0 = time.perf_counter()
        for x in items:
            identify_languages(engine, x, **kwargs)
        per = (time.perf_counter() - t0) / len(items)
        lines.append(f"| {what} ({len(items)}) | {name} | {per:.2f} | {len(items[0]) / SR / per:.1f} |")
    lines.append(f"load average after {os.getloadavg()[0]:.2f}")
    return "\n".join(lines)


def _share_en(items: list[dict], key: str, floor: float) -> tuple[int, int, int]:
    """(called en, of which ok at the floor, clips)."""
    called = [c for c in items if c[key]["language"] == "en"]
    ok = [c for c in called if (c[key]["probability"] or 0) >= floor]
    return len(called), len(ok), len(items)


def report(result: dict) -> str:
    floor = result["floor"]
    reused = result.get("reused")
    lines = [f"Machine: {result['machine']}; load average before {result['load_before'][0]:.2f}, after "
             f"{result['load_after'][0]:.2f}; {result['seconds']:.0f} s."
             + (f" SAA answers and the window comparison from an earlier run ({reused['from']}, {reused['seconds']:.0f} s): every "
                "SAA clip is heard whole, so window settings do not change them." if reused else ""), "",
             f"**Uncertainty floor chosen: {floor:.2f}** (selection data: {sum(1 for c in result['espeak'])} espeak clips and "
             f"{sum(1 for c in result['saa'] if c['split'] == 'train')} SAA train clips).", "",
             "| floor | right answers kept | wrong answers caught |", "|---|---|---|"]
    for t in result["floor_table"]:
        mark = " **(chosen)**" if t["floor"] == floor else ""
        lines.append(f"| {t['floor']:.2f}{mark} | {t['kept_right']:.3f} of {t['n_right']} | {t['caught_wrong']:.3f} of {t['n_wrong']} |")
    lines += ["", "SAA clips called `en` (all English; `ok` = called `en` at or over the floor):", "",
              "| SAA clips | rule | called en | called en and ok | share ok |", "|---|---|---|---|---|"]
    for split in ("train", "test", "all"):
        items = [c for c in result["saa"] if split == "all" or c["split"] == split]
        if not items:
            continue
        for key, name in (("old", "old (window vote, unpadded)"), ("new", "new (whole when < 3 speech windows, else padded windows)")):
            called, ok, n = _share_en(items, key, floor if key == "new" else 0.0)
            lines.append(f"| {split} ({n}) | {name} | {called} ({called / n:.3f}) | {ok} | {ok / n:.3f} |")
    groups = sorted({c["accent_group"] for c in result["saa"]})
    if groups:
        lines += ["", "New rule on every SAA clip by accent group: called `en` / `ok` / clips: " + "; ".join(
            "{}: {}/{}/{}".format(g, *_share_en([c for c in result["saa"] if c["accent_group"] == g], "new", floor)) for g in groups)]
    sp = result["espeak"]
    for key in ("old", "new"):
        right = sum(c[key]["language"] == c["language"] for c in sp)
        ok_right = sum(c[key]["language"] == c["language"] and (c[key]["probability"] or 0) >= (floor if key == "new" else 0) for c in sp)
        tail = f", {ok_right} right and ok at the floor" if key == "new" else ""
        lines.append(f"espeak clips, {key} rule: {right}/{len(sp)} top-1 right{tail}")
    w = result["windows"]
    lines += ["", f"Windows (4 s, VAD-trimmed), unpadded against padded to 30 s: accent-mini train sample of {w['accent_mini_clips']} clips "
              "and the espeak clips.", "", "| windows | heard | n | top-1 right | mean p(true language) |", "|---|---|---|---|---|"]
    for data in ("real", "espeak"):
        for key in ("unpadded", "padded"):
            s = w[data][key]
            lines.append(f"| {'accent-mini (en)' if data == 'real' else 'espeak'} | {key} | {s['n']} | {s['right']} ({s['accuracy']:.3f}) | "
                         f"{s['mean_p_true']:.3f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
