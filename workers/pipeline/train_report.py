"""Evaluation rows, reports, the run's reference baselines and the Markdown model card of a
training run. Pure Python / numpy: no Django."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from workers.pipeline.data import (
    TrainItem,
    Utterance,
)
from workers.pipeline.train_config import TrainConfig


def evaluation_rows(items: list[TrainItem], utts: list[Utterance], idx: list[int], proba: np.ndarray,
                 labels: list[str]) -> list[dict[str, Any]]:
    """One row per utterance: key, speaker, corpus, true label and calibrated class probabilities."""
    return [
        {"key": prediction_key(items[i]), "speaker": utts[i].speaker, "corpus": utts[i].corpus,
         "label": labels[utts[i].label], "proba": [round(float(p), 5) for p in pr]}
        for i, pr in zip(idx, proba, strict=True)
    ]


def prediction_key(item: TrainItem) -> str:
    """The ``key`` of a recording's rows in ``val_predictions`` / ``test_predictions``: its own key,
    else its path, else (a loader) its cache key."""
    if item.key:
        return item.key
    return item.cache_key if callable(item.path_or_loader) else str(item.path_or_loader)


def training_data_summary(config: TrainConfig, items: list[TrainItem], splits: dict[str, list[int]], labels: list[str],
                          *, seconds: float, **extra: Any) -> dict[str, Any]:
    """What a checkpoint records of the data it was trained on (the sidecar's ``training_data``):
    source, item and speaker counts per split, class counts, corpora, the run's config."""
    return {
        "source": config.manifest or "items",
        "n_items": len(items),
        "splits": {k: {"items": len(v), "speakers": len({items[i].speaker for i in v})} for k, v in splits.items()},
        "class_counts": {k: {lab: int(sum(1 for i in v if items[i].label == lab)) for lab in labels}
                         for k, v in splits.items()},
        "corpora": sorted({it.corpus for it in items}),
        "test_corpora": config.test_corpora,
        **extra,
        "config": config.to_dict(),
        "seconds": seconds,
    }


def report_for(y_true: list[str], proba: np.ndarray, labels: list[str], utts: list[Utterance], *, n_boot: int = 500,
            seed: int = 0) -> dict[str, Any]:
    """``evaluation_report`` (speakers and corpora attached)."""
    from workers.pipeline.evaluation import evaluation_report

    return evaluation_report(y_true, proba, labels, speakers=[u.speaker for u in utts],
                             corpora=[u.corpus for u in utts], n_boot=n_boot, seed=seed)


# ---------------------------------------------------------------------------------------------
# model card
# ---------------------------------------------------------------------------------------------

LICENCE_NOTE = (
    "Trained on accent-mini clips that include the Speech Accent Archive (CC BY-NC-SA 4.0) and "
    "L2-ARCTIC (CC BY-NC 4.0). Both are **non-commercial**; the weights inherit that restriction "
    "(and SAA's share-alike). Other sources: speechocean762 (Apache-2.0), LibriSpeech and VCTK "
    "(CC BY 4.0), FSDD (CC BY-SA 4.0), VCC2020/EMIME (ODbL / DbCL), CMU ARCTIC (BSD-style)."
)

CONFOUNDS = [
    "Corpus and accent are entangled: outside SAA, `mandarin_l1` is almost all speechocean762 and "
    "`native_english` mostly LibriSpeech and VCTK, so numbers on those corpora partly measure recording "
    "setup. The SAA rows (one archive, one passage, one procedure for both classes) are the honest test.",
    "Bandwidth: 484 of 491 SAA clips and all of FSDD are 8 kHz-sourced. Every model here low-passes its "
    "input to 4 kHz inside the network (and parselmouth analysis runs at 8 kHz), so bandwidth cannot be a cue.",
    "`other_l1` outside SAA is a handful of speakers; a 3-class model rests on SAA for that class.",
    "Some SAA non-native speakers learned English in early childhood (`age_onset` in the data notes).",
    "LibriSpeech accents are presumed, not labelled; 32 SAA speaker ids are inferred.",
    "Test sets are small (SAA test: 62 native, 88 non-native speakers; one clip each), so confidence "
    "intervals are wide: see the bootstrap CIs (resampled by speaker).",
]


def _fmt(x: Any) -> str:
    return "-" if x is None else (f"{x:.3f}" if isinstance(x, float) else str(x))


def _ci(rep: dict[str, Any], key: str = "balanced_accuracy") -> str:
    ci = (rep.get("ci") or {}).get(key) or {}
    if ci.get("low") is None:
        return ""
    return f" ({ci['low']:.2f}-{ci['high']:.2f})"


REFERENCE_NAMES = {"mfcc_logreg": "MFCC statistics + logistic regression",
                   "speaker_encoder_logreg": "speaker encoder (resemblyzer GE2E) embedding + logistic regression",
                   "speaker_encoder_dvector": "speaker encoder (resemblyzer GE2E) d-vector, no training"}


def reference_reports(train: list[Utterance], test: list[Utterance], model_proba: np.ndarray, labels: list[str],
                      config: TrainConfig) -> dict[str, Any]:
    """The reference baselines of this run (see ``TrainConfig.references``): ``{name: evaluation
    report + "baseline" (how it was fitted) + "paired"}``, where ``paired`` is the model's balanced
    accuracy minus the reference's on the same test recordings, overall (``"all"``) and per corpus,
    with a paired speaker-bootstrap interval (:func:`~workers.pipeline.evaluation.paired_difference`).
    C = 0.1, as the brief's reference numbers were measured."""
    from workers.pipeline.baselines import reference_baselines
    from workers.pipeline.evaluation import paired_by_corpus

    y_test = [labels[u.label] for u in test]
    reports = reference_baselines([u.samples for u in train], [labels[u.label] for u in train],
                                  [u.samples for u in test], y_test, labels,
                                  test_speakers=[u.speaker for u in test], test_corpora=[u.corpus for u in test],
                                  C=0.1, cache_dir=Path(config.cache_dir) / "baselines", n_boot=config.n_boot,
                                  seed=config.seed, keep_proba=True)
    for rep in reports.values():
        rep["paired"] = paired_by_corpus(y_test, model_proba, rep.pop("test_proba"), labels,
                                         speakers=[u.speaker for u in test], corpora=[u.corpus for u in test],
                                         n_boot=config.n_boot, seed=config.seed)
    return reports


def _embedding_section(metrics: dict[str, Any], emb: dict[str, Any]) -> list[str]:
    """An embedding model's test table: k-NN accent accuracy (neighbours from other speakers only),
    same/different-accent EER, per corpus, beside the references measured in the same run."""
    rows = [("this model", emb, metrics.get("test_embedding_per_corpus") or {})]
    for name, ref in (metrics.get("references") or {}).items():
        if ref.get("test_embedding"):
            rows.append((REFERENCE_NAMES.get(name, name), ref["test_embedding"], ref.get("test_embedding_per_corpus") or {}))
    for name, ref in (metrics.get("embedding_baselines") or {}).items():  # e.g. the previous version, scored on the same clips
        rows.append((name, ref["test_embedding"], ref.get("test_embedding_per_corpus") or {}))
    out = ["## Embedding quality on the speaker-disjoint test split", "",
           "k-NN accent vote (k = 5, cosine; a clip's neighbours never include its own speaker's clips), balanced over "
           "the accent labels; EER of same- vs different-accent pairs of clips from different speakers. 'all test' "
           "draws neighbours from every corpus (where corpus and accent are entangled); a corpus row draws them from "
           "that corpus alone.", "",
           "| embedding | slice | clips | speakers | k-NN balanced acc. | k-NN acc. | EER |", "|---|---|---|---|---|---|---|"]
    for name, allrep, per in rows:
        for slice_name, rep in [("all test", allrep)] + sorted(per.items(), key=lambda kv: kv[0] != "SAA"):
            label = "**SAA test**" if slice_name == "SAA" else slice_name
            out.append(f"| {name} | {label} | {rep.get('n')} | {rep.get('n_speakers')} | {_fmt(rep.get('knn_balanced_accuracy'))} "
                       f"| {_fmt(rep.get('knn_accuracy'))} | {_fmt(rep.get('eer'))} |")
    recall = emb.get("knn_per_class_recall") or {}
    if recall:
        out += ["", "k-NN recall per class (all test): " + "; ".join(f"`{c}` {_fmt(v)}" for c, v in recall.items())]
    sel = metrics.get("axes_selection")
    if sel:
        chosen = (metrics.get("chosen") or {}).get("axes")
        out += ["", f"Axes: {sel.get('rule')} (speaker-grouped {sel.get('folds')}-fold CV over train + validation "
                "speakers, test untouched; ties to fewer axes). Candidates: shrinkage LDA over the training labels, over "
                "the manifest column, or both side by side; each axis scaled to unit within-class spread. "
                f"Chosen: `{chosen}`.", "",
                "| axes | dims | CV k-NN balanced acc. (selection slice) | CV k-NN balanced acc. (all) |", "|---|---|---|---|"]
        out += [f"| {r['axes']} | {r['dims']} | {_fmt(r['cv_knn_balanced_accuracy'])} | {_fmt(r['cv_all_knn_balanced_accuracy'])} |"
                for r in sel.get("table") or []]
    return [*out, ""]


def default_threshold_lines(calibration: dict[str, Any]) -> list[str]:
    """The card's line for a classifier's default threshold and the rule that chose it (none for a
    calibration from before the rule)."""
    if not calibration.get("threshold_rule"):
        return []
    acc = calibration.get("accuracy_at_threshold")
    seen = calibration.get("threshold_fitted_on") or calibration.get("fitted_on") or "validation predictions"
    return [f"- **Default threshold {calibration['threshold']}** (used when a request gives none): "
            f"{calibration['threshold_rule']}. On {seen} it answers {calibration.get('coverage_at_threshold', 1):.1%} "
            + (f"and {acc:.1%} of those answers are right. " if acc is not None else ". ")
            + "A request's `threshold` overrides it (0: always answer)."]


def _noisy_selection_lines(sel: dict[str, Any], chosen: dict[str, Any], labels: Sequence[str]) -> list[str]:
    """The selection section of a run with augmented copies or degraded held-out folds: every candidate."""
    table = sel.get("table") or []
    conds = list(sel.get("conditions") or [])
    first = labels[0] if labels else "class 0"
    lines = ["## Selection (cross-validation over train + validation speakers; test untouched)", "",
             f"Rule: {sel.get('rule')}; speaker-grouped {sel.get('folds')}-fold CV, out-of-fold recording predictions "
             f"(held-out folds scored clean and under {', '.join(conds) or 'no degradation'}, degrade.py seed "
             f"{sel.get('conditions_seed', 0)}); ties to fewer copies, then smaller C. Chosen: states "
             f"{chosen.get('states')}, C = {chosen.get('C')}, {chosen.get('augment_copies', 0)} augmented copies per "
             f"utterance" + ("" if sel.get("meets_clean_floor") in (None, True) else " (**no candidate reached the clean floor**)")
             + ". Every candidate:", ""]
    head = ["copies", "C", "CV clean"] + [f"CV {c}" for c in conds] + (["mean"] if conds else []) + \
        [f"{first} recall clean"] + [f"{first} recall {c}" for c in conds]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in table:
        cv = row.get("cv_conditions") or {}
        recall = row.get("cv_recall") or [None]
        cells = [str(row.get("augment_copies", 0)), str(row["C"]), _fmt(row["cv_balanced_accuracy"])]
        cells += [_fmt((cv.get(c) or {}).get("balanced_accuracy")) for c in conds]
        cells += [_fmt(row.get("cv_selection_score"))] if conds else []
        cells += [_fmt(recall[0])] + [_fmt(((cv.get(c) or {}).get("recall") or [None])[0]) for c in conds]
        lines.append("| " + " | ".join(cells) + " |")
    return lines + [""]


MIN_EVALUATION_SPEAKERS = 10


def evaluation_warning(test_speakers: int | None) -> str:
    """What a card says when its test result rests on too few speakers to mean much ("" otherwise)."""
    if test_speakers is None or test_speakers >= MIN_EVALUATION_SPEAKERS:
        return ""
    return (f"The test result rests on {test_speakers} speaker{'s' if test_speakers != 1 else ''}: too few to trust (a few "
            f"speakers more or less can move it by tens of points). Evaluate on at least {MIN_EVALUATION_SPEAKERS} "
            "speakers the model never heard before relying on it.")


def speaker_count_lines(training_data: dict[str, Any]) -> list[str]:
    """A card's sentence on how many speakers it was trained, validated and tested on, and the warning
    when the test split has fewer than :data:`MIN_EVALUATION_SPEAKERS` (or training fewer than that per
    split); empty without split counts."""
    splits = training_data.get("splits") or {}
    n = {k: (splits.get(k) or {}).get("speakers") for k in ("train", "val", "test")}
    if all(v is None for v in n.values()):
        return []
    said = ", ".join(f"{v} {name} speakers" for name, v in (("training", n["train"]), ("validation", n["val"]),
                                                             ("test", n["test"])) if v is not None)
    lines = [f"Speakers: {said}."]
    if n["test"] is not None and n["test"] < MIN_EVALUATION_SPEAKERS:
        lines[0] += " **Warning:** " + evaluation_warning(n["test"])
    if n["train"] is not None and n["train"] < MIN_EVALUATION_SPEAKERS:
        lines[0] += (f" **Warning:** trained on {n['train']} speakers: the model may have learned those voices "
                     "(or their recording setup) rather than the classes.")
    return [*lines, ""]


@dataclass(frozen=True)
class CardNotes:
    """A card's hand-written parts (``docs/models/notes/<stem>.md``), which a re-render keeps."""

    banner: str = ""  #: ``> `` lines kept verbatim under the title (e.g. "Superseded by ...")
    header: tuple[str, ...] = ()  #: bullets added to the card's header list, after the default threshold's line
    notes: tuple[str, ...] = ()  #: the Notes section's bullets
    sections: str = ""  #: whole ``## `` sections kept verbatim after the results (and the Notes)


def _bullets(lines: Sequence[str]) -> list[str]:
    """Markdown bullets (``- ...``) with the indented lines under them (a nested list, a continuation)."""
    out: list[str] = []
    for line in lines:
        if line.startswith("- "):
            out.append(line[2:].strip())
        elif line.startswith(" ") and line.strip() and out:
            out[-1] += "\n" + line.rstrip()
    return out


def parse_card_notes(text: str) -> CardNotes:
    """A notes file, in this order: optional ``> `` lines (the banner); bullets (the Notes section); from its
    first ``## `` heading on, whole sections kept verbatim. A section headed exactly ``## Header`` is not kept as
    a section: its bullets join the card's header list (e.g. why a default threshold predates the rule)."""
    lines = text.splitlines()
    header: list[str] = []
    if "## Header" in lines:
        start = lines.index("## Header")
        end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
        header, lines = _bullets(lines[start + 1:end]), lines[:start] + lines[end:]
    cut = next((i for i, line in enumerate(lines) if line.startswith("## ")), len(lines))
    first_bullet = next((i for i, line in enumerate(lines[:cut]) if line.startswith("- ")), cut)
    banner = [line.rstrip() for line in lines[:first_bullet] if line.startswith(">")]
    return CardNotes("\n".join(banner), tuple(header), tuple(_bullets(lines[:cut])), "\n".join(lines[cut:]))


def card_input_line(spec: Any, family: Any, hparams: dict[str, Any] | None = None,
                    training_data: dict[str, Any] | None = None) -> str:
    """The card's ``Input`` bullet: windows, band limit, and what the family adds (for a model fitted on
    one passage, ``hparams["passage"]``, what its fusion applies to)."""
    passage = list((hparams or {}).get("passage") or [])
    base = ((training_data or {}).get("base_config") or {}).get("version")
    template = family.card_input_passage if passage and family.card_input_passage else family.card_input
    pooled = ("pooled as the mean and the standard deviation of each dimension"
              if (hparams or {}).get("pooling") == "mean_std" else "mean-pooled")
    return (f"- Input: 16 kHz mono, {spec.window_s:g} s windows (hop {spec.hop_s:g} s at inference), low-passed to "
            f"{spec.extra.get('band_limit_hz')} Hz inside the model; utterance score = mean of calibrated window "
            "probabilities" + template.format(window_s=spec.window_s, encoder=spec.extra.get("encoder", "whisper"),
                                               n_words=len(passage), passage=" ".join(passage), pooled=pooled,
                                               base=f" ({base}'s)" if base else ""))


def write_model_card(
    metrics: dict[str, Any],
    *,
    spec: Any,
    path: str | Path,
    command: str,
    calibration: dict[str, Any] | None = None,
    training_data: dict[str, Any] | None = None,
    sha256: str | None = None,
    loco: dict[str, dict[str, Any]] | None = None,
    baselines: list[dict[str, Any]] | None = None,
    notes: Sequence[str] = (),
    sections: str = "",
    banner: str = "",
    header: Sequence[str] = (),
    hparams: dict[str, Any] | None = None,
) -> str:
    """Render a Markdown model card from the evaluation reports; writes it to ``path`` and returns it.

    Parameters
    ----------
    metrics : dict
        ``TrainResult.metrics`` (``test`` evaluation report, optional ``test_embedding``).
    spec : ModelSpec
        The model's spec.
    command : str
        The one command that reproduces the checkpoint.
    loco : dict, optional
        ``{held_out_corpus: evaluation_report}`` from leave-one-corpus-out runs.
    baselines : list of dict, optional
        Rows ``{"name", "saa_test_balanced_accuracy", "note"}``.
    notes : sequence of str
        Extra paragraphs (measured facts, limits).
    sections : str
        Whole Markdown sections (each from a ``## `` heading), kept verbatim after the Notes and before
        Known confounds: tables measured after the run (robustness, per variety, per L1).
    banner : str
        A Markdown block (e.g. a ``> Superseded by ...`` quote) kept verbatim under the title.
    header : sequence of str
        Extra bullets of the header list, after the default threshold's line (e.g. why a checkpoint's
        threshold predates the rule).
    hparams : dict, optional
        The checkpoint's hparams: a reading fusion fitted on one passage (``passage``) is described as such.
    """
    test = metrics.get("test") or {}
    from models.registry import get_family

    family = get_family(spec.family)
    lines = [f"# Model card: {spec.name} ({spec.version})", ""]
    if banner.strip():
        lines += [banner.strip("\n"), ""]
    lines += [
        f"- Family: `{spec.family}`; task: `{spec.task}`; classes: {', '.join(f'`{c}`' for c in spec.labels)}",
        card_input_line(spec, family, hparams, training_data),
    ]
    if spec.task == "embed":  # no class scores: the vector is the mean of the window projections
        lines[-1] = (lines[-1].replace("utterance score = mean of calibrated window probabilities", "recording vector = "
                                       "mean of the window vectors").replace("into a logistic-regression head",
                                                                            "into a linear projection (LDA axes)"))
        lines[-2] = f"- Family: `{spec.family}`; task: `embed`; fitted on the labels: " + ", ".join(
            f"`{c}`" for c in spec.extra.get("trained_labels") or spec.labels)
    if spec.embedding_dim and spec.task == "classify" and family.embeds_class_scores:
        lines.append(f"- Embedding (what an embed job returns): the {spec.embedding_dim}-d class-score vector, "
                     "L2-normalised; `accent-embed` is the accent space")
    elif spec.embedding_dim:
        lines.append(f"- Embedding: {spec.embedding_dim}-d, L2-normalised")
    if sha256:
        lines.append(f"- Checkpoint sha256: `{sha256}`")
    if calibration:
        where = calibration.get("fitted_on") or "fitted on validation speakers"
        if "fusion" in calibration:
            where = "window temperature fitted on validation speakers, " + (
                "window threshold on validation" if "fused_threshold" in calibration
                else "threshold on out-of-fold fused predictions")
        lines.append(f"- Calibration ({where}): temperature {calibration.get('temperature', 1):.3f}, "
                     f"deployment prior {calibration.get('deploy_prior')}, confidence threshold "
                     f"{calibration.get('threshold')} (coverage {_fmt(calibration.get('coverage_at_threshold'))})")
        lines += default_threshold_lines(calibration)
        lines += [f"- {h}" for h in header]
        if calibration.get("n") is not None:  # what the fit saw (checkpoints before 2026-12-07 do not say)
            seen = f"{calibration['speakers']} speakers, " if calibration.get("speakers") is not None else ""
            lines.append(f"- Calibration evidence: {seen}{calibration['n']} predictions, {calibration.get('errors')} of them "
                         "wrong" + ("; too few errors to sharpen, so the temperature is bounded at 1 (never sharper than "
                                    "the raw model)" if calibration.get("temperature_floor") else ""))
        if "fused_threshold" in calibration:
            lines.append(f"- With a transcript: confidence threshold {calibration['fused_threshold']} (coverage "
                         f"{_fmt(calibration.get('fused_coverage_at_threshold'))}), on out-of-fold fused predictions")
    else:
        lines += [f"- {h}" for h in header]
    lines += ["", "## Reproduce", "", "```", command, "```", ""]
    if training_data:
        lines += ["## Data", "", f"Source: `{training_data.get('source')}`. Speaker-disjoint splits "
                  "(manifest `split`; validation carved from train by speaker, stratified by label and corpus):", ""]
        classes = list(spec.labels or spec.extra.get("trained_labels") or [])  # an embedding: the labels it was fitted on
        lines += ["| split | items | speakers | " + " | ".join(classes) + " |", "|---|---|---|" + "---|" * len(classes)]
        for k, v in training_data.get("splits", {}).items():
            cc = training_data.get("class_counts", {}).get(k, {})
            lines.append(f"| {k} | {v['items']} | {v['speakers']} | " + " | ".join(str(cc.get(c, 0)) for c in classes) + " |")
        lines.append("")
        lines += speaker_count_lines(training_data)
    if test:
        lines += ["## Results on the speaker-disjoint test split", "",
                  "Balanced accuracy with a 95 % bootstrap interval (speakers resampled).", "",
                  "| slice | n | speakers | balanced acc. | accuracy | macro F1 | ROC AUC |", "|---|---|---|---|---|---|---|"]
        roc = test.get("roc_auc") or {}
        lines.append(f"| all test | {test.get('n')} | {(test.get('ci') or {}).get('n_units', '-')} | "
                     f"{_fmt(test.get('balanced_accuracy'))}{_ci(test)} | {_fmt(test.get('accuracy'))} | "
                     f"{_fmt(test.get('macro_f1'))} | {_fmt(roc.get('value') if isinstance(roc, dict) else roc)} |")
        for corpus, rep in sorted((test.get("per_corpus") or {}).items(), key=lambda kv: kv[0] != "SAA"):
            name = "**SAA test**" if corpus == "SAA" else corpus
            lines.append(f"| {name} | {rep.get('n')} | {rep.get('n_speakers')} | {_fmt(rep.get('balanced_accuracy'))}{_ci(rep)} | "
                         f"{_fmt(rep.get('accuracy'))} | {_fmt(rep.get('macro_f1'))} | {_fmt(rep.get('roc_auc'))} |")
        lines += ["", "Single-class slices have a balanced accuracy equal to that class's recall.", ""]
        if test.get("per_class"):
            lines += ["Per class (all test): " + "; ".join(
                f"`{c}` P {_fmt(v.get('precision'))} R {_fmt(v.get('recall'))} F1 {_fmt(v.get('f1'))}"
                for c, v in test["per_class"].items()), ""]
        lines += [f"ECE {_fmt(test.get('ece'))}, NLL {_fmt(test.get('nll'))}, Brier {_fmt(test.get('brier'))}.", ""]
    if metrics.get("robustness"):
        from workers.pipeline.robustness import robustness_caption, robustness_markdown, robustness_threshold_markdown

        rob = metrics["robustness"]
        lines += ["## Robustness: degraded copies of the test clips", "",
                  robustness_caption(rob, rob.get("split", "test")) + " Decisions without abstention.", "",
                  *robustness_markdown(rob), ""]
        at = robustness_threshold_markdown(rob)
        if at:
            lines += ["The default threshold under the same conditions (answers under it are `uncertain`):", "", *at, ""]
    emb = metrics.get("test_embedding")
    if emb and "test_embedding_per_corpus" in metrics:
        lines += _embedding_section(metrics, emb)
    elif emb:
        keys = [k for k in emb if isinstance(emb[k], (int, float)) and not isinstance(emb[k], bool)]
        lines += ["## Embedding quality (test speakers)", "", "| metric | value |", "|---|---|"]
        lines += [f"| {k} | {_fmt(float(emb[k]))} |" for k in keys]
        lines.append("")
    fcv = metrics.get("fusion_cv")
    if fcv:
        wm = metrics.get("window_model") or {}
        reading = family.uses_transcript
        lines += [f"## Window model alone and fused with {'reading' if reading else 'phone'} features", "",
                  f"Speaker-grouped {fcv['folds']}-fold cross-validation over train + validation (out-of-fold window-model "
                  f"probabilities; fusion cross-fitted, {fcv['seeds']} seeds, L2 strength C = {fcv['C']}), and the test split"
                  + (f". The fusion applies to recordings with a transcript only ({fcv.get('rows')} in cross-validation), "
                     "so the CV columns cover those; on the test split, recordings without one keep the window model's "
                     "output." if reading else ":"), "",
                  "| slice | CV window model | CV fused | test window model | test fused |", "|---|---|---|---|---|"]
        alone, fused = fcv["window_model_alone"], fcv["fused"]
        test_pc = (test or {}).get("per_corpus") or {}
        lines.append(f"| all | {_fmt(alone['overall'])} | {_fmt(fused['overall'])} | {_fmt(wm.get('test'))} | "
                     f"{_fmt((test or {}).get('balanced_accuracy'))} |")
        for name in sorted(fused["per_corpus"], key=lambda n: n != "SAA"):
            lines.append(f"| {name} | {_fmt(alone['per_corpus'].get(name))} | {_fmt(fused['per_corpus'][name])} | "
                         f"{_fmt((wm.get('test_per_corpus') or {}).get(name))} | {_fmt((test_pc.get(name) or {}).get('balanced_accuracy'))} |")
        lines.append("")
    sel = metrics.get("selection")
    if sel and any("augment_copies" in row or "cv_conditions" in row for row in sel.get("table") or []):
        lines += _noisy_selection_lines(sel, metrics.get("chosen") or {}, list(spec.labels))
    elif sel:
        best: dict[str, dict[str, Any]] = {}
        for row in sel.get("table") or []:
            name = "all states" if len(row["states"]) > 1 else f"state {row['states'][0]}"
            if name not in best or row["cv_balanced_accuracy"] > best[name]["cv_balanced_accuracy"]:
                best[name] = row
        chosen = metrics.get("chosen") or {}
        lines += ["## Selection (cross-validation over train + validation speakers; test untouched)", "",
                  f"Rule: {sel.get('rule')}, speaker-grouped {sel.get('folds')}-fold CV over out-of-fold recording "
                  f"predictions; candidates: each encoder state (0 = embedding, 1..n = blocks) alone and all states "
                  f"concatenated, each with every L2 strength C; ties to fewer states, then smaller C. Chosen: states "
                  f"{chosen.get('states')}, C = {chosen.get('C')}. Best C per candidate:", "",
                  "| candidate | C | CV balanced acc. (selection slice) | CV balanced acc. (all) |", "|---|---|---|---|"]
        for name, row in best.items():
            lines.append(f"| {name} | {row['C']} | {_fmt(row['cv_balanced_accuracy'])} | {_fmt(row['cv_all_balanced_accuracy'])} |")
        lines.append("")
    if loco:
        lines += ["## Leave-one-corpus-out", "", "Trained on every other corpus, tested on the held-out one.", "",
                  "| held-out corpus | n | balanced acc. | accuracy |", "|---|---|---|---|"]
        for corpus, rep in loco.items():
            lines.append(f"| {corpus} | {rep.get('n')} | {_fmt(rep.get('balanced_accuracy'))}{_ci(rep)} | {_fmt(rep.get('accuracy'))} |")
        lines.append("")
    refs = metrics.get("references") or {}
    if refs:
        focus = "SAA" if any("SAA" in (r.get("per_corpus") or {}) for r in refs.values()) else None
        lines += ["## Reference baselines (this run, same split)", "",
                  "The brief's two references, trained in the same run on its train + validation recordings "
                  "(band-limited to 4 kHz, logistic regression C = 0.1) and scored on the same test recordings; "
                  "'model minus reference' is a paired speaker bootstrap on those recordings (95 % interval; "
                  "'not better': share of draws where the model does not beat the reference).", ""]
        head = ["reference", "test balanced acc.", "model minus reference, test"]
        if focus:
            head += [f"{focus} test balanced acc.", f"model minus reference, {focus} test"]
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]

        def diff(d: dict[str, Any] | None) -> str:
            if not d or d.get("difference") is None:
                return "-"
            if d.get("low") is None:  # fewer than 2 speakers: no interval (see d["reason"])
                return f"{d['difference']:+.3f} (no interval: {d.get('reason') or 'not estimable'})"
            return (f"{d['difference']:+.3f} ({d['low']:+.3f} to {d['high']:+.3f}); not better "
                    f"{100 * d['share_not_better']:.0f} %")

        for name, rep in refs.items():
            row = [REFERENCE_NAMES.get(name, name),
                   f"{_fmt(rep.get('balanced_accuracy'))}{_ci(rep)}", diff((rep.get("paired") or {}).get("all"))]
            if focus:
                pc = (rep.get("per_corpus") or {}).get(focus) or {}
                row += [f"{_fmt(pc.get('balanced_accuracy'))}{_ci(pc)}",
                        diff(((rep.get("paired") or {}).get("per_corpus") or {}).get(focus))]
            lines.append("| " + " | ".join(row) + " |")
        lines.append("")
    if baselines:
        lines += ["## Baselines (SAA test, native vs non-native, band-limited to 4 kHz)", "",
                  "| baseline | SAA-test balanced acc. | note |", "|---|---|---|"]
        lines += [f"| {b['name']} | {_fmt(b.get('saa_test_balanced_accuracy'))} | {b.get('note', '')} |" for b in baselines]
        lines.append("")
    if notes:
        lines += ["## Notes", ""] + [f"- {n}" for n in notes] + [""]
    if sections.strip():
        lines += [sections.strip("\n"), ""]
    lines += ["## Known confounds", ""] + [f"- {c}" for c in CONFOUNDS] + [""]
    lines += ["## Licence", "", LICENCE_NOTE + (" " + family.licence if family.licence else ""), ""]
    text = "\n".join(lines)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(text)
    return text
