"""Native English varieties of accent-mini's native speakers, and a classifier's recall per variety.

:func:`native_variety` reads a manifest row (``corpus``, ``accent_detail``) and names the variety: ``US``,
``UK``, ``Canada``, ``Australia``, ``NZ``, ``Ireland``, ``other`` (a native speaker from anywhere else:
India, South Africa, Jamaica, Singapore, ...) or ``unlabelled`` (corpora that do not say: LibriSpeech,
whose readers are "mostly North American" but unlabelled, and VCC2020/EMIME, whose English speakers'
variety is not stated). Northern Ireland, Scotland and Wales count as UK; the US Virgin Islands and
other territories as ``other``.

:func:`variety_recall` scores predictions per variety: recall of the native class when every clip is
answered, and at a confidence threshold the share answered right and the share ``uncertain``.
:func:`l1_recall` does the same per first language (manifest ``l1``) for every clip, against the class that
L1's speakers should get (:func:`right_class`). Pure Python / numpy: no Django.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

VARIETIES = ("US", "UK", "Canada", "Australia", "NZ", "Ireland", "other", "unlabelled")

_COUNTRY = {"usa": "US", "uk": "UK", "england": "UK", "scotland": "UK", "wales": "UK", "northern ireland": "UK",
            "canada": "Canada", "australia": "Australia", "new zealand": "NZ", "ireland": "Ireland"}
_US_STATES = {
    "alabama", "alaska", "arizona", "arkansas", "california", "colorado", "connecticut", "delaware", "florida",
    "georgia", "hawaii", "idaho", "illinois", "indiana", "iowa", "kansas", "kentucky", "louisiana", "maine",
    "maryland", "massachusetts", "michigan", "minnesota", "mississippi", "missouri", "montana", "nebraska", "nevada",
    "new hampshire", "new jersey", "new mexico", "new york", "north carolina", "north dakota", "ohio", "oklahoma",
    "oregon", "pennsylvania", "rhode island", "south carolina", "south dakota", "tennessee", "texas", "utah",
    "vermont", "virginia", "washington", "west virginia", "wisconsin", "wyoming", "dc"}
_VCTK = {"american": "US", "english": "UK", "scottish": "UK", "welsh": "UK", "northernirish": "UK", "british": "UK",
         "irish": "Ireland", "canadian": "Canada", "australian": "Australia", "newzealand": "NZ"}
_UNLABELLED_CORPORA = {"LibriSpeech", "VCC2020_EMIME"}
_US_CORPORA = {"CMU_ARCTIC", "FSDD"}  # their native speakers are US English (manifest: "US male", "USA/neutral")


def native_variety(row: Mapping[str, str]) -> str:
    """The native variety (one of :data:`VARIETIES`) of a manifest row's speaker."""
    corpus = (row.get("corpus") or "").strip()
    detail = (row.get("accent_detail") or "").strip()
    if corpus in _UNLABELLED_CORPORA:
        return "unlabelled"
    if corpus in _US_CORPORA:
        return "US"
    parts = detail.split(":")
    if corpus == "VCTK":
        return _VCTK.get(parts[1].strip().lower() if len(parts) > 1 else "", "other")
    if corpus == "SAA":
        place = [p.strip().lower() for p in (parts[2] if len(parts) > 2 else "").split(";") if p.strip()]
        if not place:
            return "unlabelled"
        last = place[-1]
        if last in _COUNTRY:
            return _COUNTRY[last]
        if last in _US_STATES and len(place) >= 2:  # "arlington; virginia"
            return "US"
        return "other"
    return "unlabelled"


def variety_recall(varieties: Sequence[str], speakers: Sequence[str], predicted: Sequence[str | None],
                   answered: Sequence[bool], *, native: str) -> list[dict[str, Any]]:
    """Per variety (in :data:`VARIETIES` order, only those present) of native clips: ``variety``,
    ``clips``, ``speakers``, ``recall`` (top class ``native``, every clip answered), ``recall_at_threshold``
    (top class ``native`` and ``answered``: confidence at least the threshold), ``uncertain`` (not
    answered), ``non_native_at_threshold`` (answered, and not ``native``); then an ``all`` row."""
    v = np.asarray(varieties, dtype=object)
    pred = np.asarray([p == native for p in predicted], dtype=bool)
    answered = np.asarray(answered, dtype=bool)
    rows = []
    for name in [*[x for x in VARIETIES if x in set(varieties)], "all"]:
        idx = np.flatnonzero(v == name) if name != "all" else np.arange(len(v))
        if not len(idx):
            continue
        rows.append({"variety": name, "clips": int(len(idx)), "speakers": len({speakers[i] for i in idx}),
                     "recall": float(pred[idx].mean()), "recall_at_threshold": float((pred[idx] & answered[idx]).mean()),
                     "uncertain": float((~answered[idx]).mean()),
                     "non_native_at_threshold": float((~pred[idx] & answered[idx]).mean())})
    return rows


def variety_markdown(rows: Sequence[Mapping[str, Any]], threshold: float) -> list[str]:
    """The rows of :func:`variety_recall` as a Markdown table."""
    lines = [f"| native variety | clips | speakers | recall, answer all | at threshold {threshold:g}: recall | "
             "uncertain | answered as another class |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        name = f"**{r['variety']}**" if r["variety"] == "all" else r["variety"]
        lines.append(f"| {name} | {r['clips']} | {r['speakers']} | {r['recall']:.3f} | {r['recall_at_threshold']:.3f} | "
                     f"{r['uncertain']:.3f} | {r['non_native_at_threshold']:.3f} |")
    return lines


# ---- per first language (manifest ``l1``) -------------------------------------------------------------------------
NATIVE_CLASSES = ("native", "native_english")


def right_class(l1: str, labels: Sequence[str]) -> str:
    """The class a speaker of first language ``l1`` should get: the native class for English (``english``,
    ``english(presumed)``); ``mandarin_l1`` for Mandarin where the model has it; otherwise ``other_l1`` (3-class)
    or ``non_native`` (2-class)."""
    l1 = l1.strip().lower()
    native = next((lab for lab in labels if lab in NATIVE_CLASSES), None)
    if l1.startswith("english") and native is not None:
        return native
    if l1 == "mandarin" and "mandarin_l1" in labels:
        return "mandarin_l1"
    for name in ("other_l1", "non_native"):
        if name in labels:
            return name
    raise ValueError(f"no class for first language {l1!r} among {list(labels)}")


def l1_recall(l1s: Sequence[str], speakers: Sequence[str], predicted: Sequence[str], answered: Sequence[bool], *,
              labels: Sequence[str], min_speakers: int = 10, fallback: int = 5) -> tuple[list[dict[str, Any]], str | None]:
    """Per first language with at least ``min_speakers`` speakers (most speakers first): ``l1``, ``right``
    (:func:`right_class`), ``clips``, ``speakers``, ``given`` (share of clips whose top class is each label, every
    clip answered), ``right_at_threshold`` / ``uncertain`` / ``wrong_at_threshold`` (answered as the right class,
    not answered, answered as another class). When no L1 reaches ``min_speakers``, the ``fallback`` largest are
    listed and the second value is a warning (else None)."""
    l1 = np.asarray(l1s, dtype=object)
    pred = np.asarray(predicted, dtype=object)
    answered = np.asarray(answered, dtype=bool)
    counts = {name: len({speakers[i] for i in np.flatnonzero(l1 == name)}) for name in set(l1s)}
    order = sorted(counts, key=lambda name: (-counts[name], name))
    chosen = [name for name in order if counts[name] >= min_speakers]
    warning = None
    if not chosen and order:
        chosen = order[:fallback]
        warning = (f"no L1 has {min_speakers} test speakers here; the {len(chosen)} largest are listed anyway, "
                   "and their shares rest on too few speakers to read")
    rows = []
    for name in chosen:
        idx = np.flatnonzero(l1 == name)
        right = right_class(name, labels)
        hit = pred[idx] == right
        rows.append({"l1": name, "right": right, "clips": int(len(idx)), "speakers": counts[name],
                     "given": {lab: float((pred[idx] == lab).mean()) for lab in labels},
                     "right_at_threshold": float((hit & answered[idx]).mean()),
                     "uncertain": float((~answered[idx]).mean()),
                     "wrong_at_threshold": float((~hit & answered[idx]).mean())})
    return rows, warning


def l1_markdown(rows: Sequence[Mapping[str, Any]], labels: Sequence[str], threshold: float) -> list[str]:
    """The rows of :func:`l1_recall` as a Markdown table (the right class's share in bold)."""
    head = ["L1", "right class", "clips", "speakers", *[f"answer all: as {lab}" for lab in labels],
            f"at threshold {threshold:g}: right", "uncertain", "wrong class"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        given = [f"**{r['given'][lab]:.3f}**" if lab == r["right"] else f"{r['given'][lab]:.3f}" for lab in labels]
        lines.append(f"| {r['l1']} | {r['right']} | {r['clips']} | {r['speakers']} | " + " | ".join(given)
                     + f" | {r['right_at_threshold']:.3f} | {r['uncertain']:.3f} | {r['wrong_at_threshold']:.3f} |")
    return lines
