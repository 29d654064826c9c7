"""Real read speech with known text for the transcription benchmark (``bench.asr``), and WER.

The subset is fixed by a rule chosen before any result was seen: in a split of accent-mini
(``train`` to choose settings, ``test`` to report them),
clips sorted by path, the first ``n`` of each corpus that carries its text:

- speechocean762 (Mandarin-L1 adults reading English sentences; text from
  ``metadata/speechocean762_transcripts_subset.tsv``),
- SAA (the "Please call Stella" passage, first 8 s of each reading: scored against the passage
  prefix that best matches the hypothesis, since the cut falls mid-passage),
- FSDD (the digits 0-9 spoken one by one and concatenated: "zero one ... nine").

No other corpus in accent-mini ships its text (LibriSpeech, VCTK, ARCTIC rows have none), and no
installed PyPI package ships real speech with a transcript (only scipy's test tones).
"""

from __future__ import annotations

import csv
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("ACCENTMINI", ROOT.parent / "shared" / "data" / "accent-mini"))
PASSAGE = ROOT / "docs" / "models" / "saa_reading_passage.txt"
#: how many test clips of each corpus, in path order (the fixed subset)
SUBSET = {"speechocean762": 16, "SAA": 8, "FSDD": 4}

_DIGITS = "zero one two three four five six seven eight nine".split()
_NUMBERS = {str(i): w for i, w in enumerate(_DIGITS)} | {"10": "ten", "11": "eleven", "12": "twelve", "20": "twenty"}


@dataclass(frozen=True)
class Clip:
    path: str
    corpus: str
    samples: np.ndarray
    reference: str
    #: the reference is a passage whose reading was cut: score against its best-matching prefix
    prefix: bool = False

    @property
    def duration_s(self) -> float:
        return len(self.samples) / 16000


def normalise(text: str) -> list[str]:
    """Lower case, no punctuation (apostrophes kept inside words), digits spelled out one by one
    (Whisper writes FSDD's digits as "0, 1, 2"), hyphens split words."""
    text = text.lower().replace("-", " ")
    text = re.sub(r"[^\w\s']", " ", text)
    out: list[str] = []
    for token in text.split():
        token = token.strip("'")
        if not token:
            continue
        if token.isdigit():
            out.extend([_NUMBERS[token]] if token in _NUMBERS else [_DIGITS[int(d)] for d in token])
        else:
            out.append(token)
    return out


def edit_distance(ref: list[str], hyp: list[str]) -> list[int]:
    """Word edit distance of ``hyp`` to every prefix of ``ref``: ``[d(ref[:0]), ..., d(ref)]``."""
    prev = list(range(len(ref) + 1))  # hyp empty: deleting every word of the prefix
    for i, h in enumerate(hyp, 1):
        cur = [i] + [0] * len(ref)
        for j, r in enumerate(ref, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (r != h))
        prev = cur
    return prev


def errors(clip: Clip, hypothesis: str) -> tuple[int, int]:
    """(word errors, reference words) of one hypothesis; a cut passage counts against the prefix
    of the passage with the fewest errors (ties: the longer prefix)."""
    ref, hyp = normalise(clip.reference), normalise(hypothesis)
    dist = edit_distance(ref, hyp)
    if not clip.prefix:
        return dist[-1], len(ref)
    best = min(range(1, len(ref) + 1), key=lambda k: (dist[k] / k, -k))
    return dist[best], best


def clips(subset: dict[str, int] | None = None, split: str = "test") -> list[Clip]:
    """The fixed subset (``SUBSET``) of a split, or nothing when accent-mini is not there."""
    from workers.pipeline.audio import load_audio

    subset = subset or SUBSET
    manifest = DATA / "manifest.csv"
    if not manifest.exists():
        return []
    texts = dict(line.rstrip("\n").split("\t", 1) for line in open(DATA / "metadata" / "speechocean762_transcripts_subset.tsv")
                 if "\t" in line)
    passage = PASSAGE.read_text().strip() if PASSAGE.exists() else (DATA / "metadata" / "saa_reading_passage.txt").read_text().strip()
    rows = sorted((r for r in csv.DictReader(open(manifest)) if r["split"] == split), key=lambda r: r["path"])
    out: list[Clip] = []
    for corpus, n in subset.items():
        picked = [r for r in rows if r["corpus"] == corpus and (corpus != "speechocean762" or r["path"] in texts)][:n]
        for r in picked:
            if corpus == "speechocean762":
                ref, prefix = texts[r["path"]], False
            elif corpus == "SAA":
                ref, prefix = passage, True
            else:
                ref, prefix = " ".join(_DIGITS), False
            out.append(Clip(r["path"], corpus, load_audio(str(DATA / r["path"])).samples, ref, prefix))
    return out
