"""A model version's card for the admin: what it is, how it was calibrated, what it was trained on,
its held-out results (with how many speakers they rest on) and its licence. Read-only views of a
``ModelVersion``'s stored metrics; no server path ever reaches the page."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from recognition.review import _ci_text, _per_corpus_rows, confusion_matrix_png, data_uri, reliability_png
from workers.pipeline.train_report import evaluation_warning


def _paired_text(d: Mapping[str, Any] | None) -> str:
    if not d or d.get("difference") is None:
        return "-"
    if d.get("low") is None:
        return f"{d['difference']:+.3f} (no interval: {d.get('reason') or 'cannot be estimated'})"
    text = f"{d['difference']:+.3f} ({d['low']:+.3f} to {d['high']:+.3f})"
    if d.get("share_not_better") is not None:
        text += f"; not better in {100 * d['share_not_better']:.0f} % of draws"
    return text


def scalar_rows(values: Mapping[str, Any] | None) -> list[tuple[str, Any]]:
    """Top-level scalar settings of a mapping, never a path (strings with a slash are left out)."""
    out = []
    for key, value in sorted((values or {}).items()):
        if isinstance(value, float):
            out.append((key, f"{value:.4g}"))
        elif isinstance(value, (bool, int)) or (isinstance(value, str) and "/" not in value):
            out.append((key, value))
        elif isinstance(value, list) and len(value) <= 8 and all(isinstance(v, (int, float, str)) and "/" not in str(v) for v in value):
            out.append((key, ", ".join(f"{v:.4g}" if isinstance(v, float) else str(v) for v in value)))
    return out


def shipped_robustness_report(mv) -> tuple[dict[str, Any], str]:
    """``(report, source note)`` of a shipped checkpoint's ``<stem>.robustness.json`` (``manage.py
    evaluate_robustness``) when it names this model's name and version; ``({}, "")`` otherwise (a trained or
    packaged model, no report, a report of another version). The note says where the report came from and
    warns when it was measured on a file with another sha256."""
    import json
    from pathlib import Path

    from django.conf import settings

    if mv.owner_id is not None or not mv.checkpoint or ":" in mv.checkpoint:  # storage:, package:
        return {}, ""
    path = Path(settings.MODELS_DIR) / (Path(mv.checkpoint).stem + ".robustness.json")
    try:
        report = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}, ""
    if not isinstance(report, dict) or report.get("model") != f"{mv.name}@{mv.version}":
        return {}, ""
    note = f"From the robustness report shipped beside the checkpoint ({report.get('split')} split"
    note += f", {report['corpus']} only)." if report.get("corpus") else ")."
    if report.get("sha256") and mv.sha256 and report["sha256"] != mv.sha256:
        note += (f" It was measured on a checkpoint file with sha256 {report['sha256'][:12]}..., not this version's "
                 f"{mv.sha256[:12]}... (the same name and version).")
    return report, note


def robustness_card(rob: Mapping[str, Any], *, source: str = "") -> dict[str, Any]:
    """A robustness report (``workers.pipeline.robustness.evaluate_robustness``) for the card: the answer-all
    table (balanced accuracy, change from clean, recall per class) and, when the report has ``at_threshold``
    rows (reports before the default-threshold table have none), the default threshold's table: share
    answered, accuracy of the answered, per-class recall (answered and right) and ``uncertain`` share."""
    from workers.pipeline.robustness import robustness_caption

    labels = [str(label) for label in rob.get("labels") or []]

    def name(row: Mapping[str, Any]) -> str:
        return "clean" if row["name"] == "clean" else str(row.get("description") or row["name"])

    out: dict[str, Any] = {
        "caption": robustness_caption(rob, rob.get("split", "test")), "source": source, "labels": labels,
        "rows": [{"condition": name(row), "balanced_accuracy": row.get("balanced_accuracy"),
                  "delta": row.get("delta") if row["name"] != "clean" else None,
                  "recall": [(row.get("recall") or {}).get(label) for label in labels]} for row in rob["conditions"]],
        "threshold": None}
    at = [row for row in rob["conditions"] if isinstance(row.get("at_threshold"), dict)]
    if at:
        cut = rob.get("threshold")
        out["threshold"] = {
            "value": f"{cut:g}" if isinstance(cut, (int, float)) and not isinstance(cut, bool) else "",
            "rows": [{"condition": name(row), "accuracy": row.get("accuracy"),
                      "coverage": row["at_threshold"].get("coverage"),
                      "accuracy_answered": row["at_threshold"].get("accuracy_answered"),
                      "recall": [(row["at_threshold"].get("recall") or {}).get(label) for label in labels],
                      "uncertain": [(row["at_threshold"].get("uncertain") or {}).get(label) for label in labels]}
                     for row in at]}
    return out


def model_card(*, model_version, pictures: bool = True) -> dict[str, Any]:
    """A model version's card for the admin: what it is, how it was calibrated, on what data it was
    trained, its test results (overall, per class, per corpus, references) and its licence.

    Read from ``metrics``, ``calibration``, ``training_data`` and ``hyperparameters``. The list of
    test predictions and every server path (checkpoint, data source, cache) are left out.
    """
    from workers.pipeline.train_report import CONFOUNDS, LICENCE_NOTE, REFERENCE_NAMES

    mv = model_version
    metrics = mv.metrics or {}
    test, val = metrics.get("test") or {}, metrics.get("val") or {}
    data = mv.training_data or {}
    labels = list(mv.labels or [])
    # a shipped checkpoint (trained on accent-mini) or one trained here on a user's batch; zero-shot (spoken-words): neither
    from models.registry import FAMILIES

    zero_shot = mv.family in FAMILIES and FAMILIES[mv.family].zero_shot
    shipped = not zero_shot and (not (mv.checkpoint or "").startswith("storage:") or "accent-mini" in str(data.get("source") or ""))
    splits = [
        {"split": name, "items": v.get("items"), "speakers": v.get("speakers"),
         "counts": [(data.get("class_counts") or {}).get(name, {}).get(c, 0) for c in labels]}
        for name, v in (data.get("splits") or {}).items()
    ]
    card: dict[str, Any] = {
        "summary": [("family", mv.family), ("task", mv.task), ("classes", ", ".join(labels) or "-"),
                    ("version", mv.version), ("default of its name", "yes" if mv.is_default else "no"),
                    ("checkpoint sha256", mv.sha256 or "-"), ("code version", mv.code_version or "-"),
                    ("registered", mv.created_at)],
        "calibration": scalar_rows({k: v for k, v in (mv.calibration or {}).items() if k != "fusion"}),
        "data": {"splits": splits, "labels": labels, "corpora": data.get("corpora") or [], "n_items": data.get("n_items"),
                 "seconds": data.get("seconds"), "label_map": sorted(((data.get("config") or {}).get("label_map") or {}).items())},
        "hyperparameters": scalar_rows(mv.hyperparameters),
        "licence": FAMILIES[mv.family].licence + " Nothing was trained." if zero_shot else (LICENCE_NOTE.replace("**", "") if shipped else
                    "Trained in this service on its owner's uploaded recordings: the terms of those recordings apply "
                    "to the weights.")
        + (" The Whisper encoder's weights are OpenAI's Whisper (MIT licence)." if mv.family == "whisper_probe" else ""),
        "confounds": [c.replace("`", "") for c in CONFOUNDS] if shipped else [],
        "has_metrics": bool(test or val),
    }
    split_speakers = {name: v.get("speakers") for name, v in (data.get("splits") or {}).items()}
    card["speakers"] = {"train": split_speakers.get("train"), "test": split_speakers.get("test"), "val": split_speakers.get("val")}
    card["evaluation_warning"] = evaluation_warning(split_speakers.get("test"))
    if test:
        roc = test.get("roc_auc")
        card["test"] = {
            "n": test.get("n"), "balanced_accuracy": test.get("balanced_accuracy"), "ci": _ci_text(test, "balanced_accuracy"),
            "accuracy": test.get("accuracy"), "macro_f1": test.get("macro_f1"),
            "roc_auc": roc.get("value") if isinstance(roc, dict) else roc,
            "ece": test.get("ece"), "nll": test.get("nll"), "brier": test.get("brier"),
            "per_class": [dict(label=label, **values) for label, values in (test.get("per_class") or {}).items()],
            "per_corpus": _per_corpus_rows(test),
        }
        if pictures and test.get("confusion_matrix"):
            cm = test["confusion_matrix"]
            card["confusion_matrix_uri"] = data_uri(confusion_matrix_png(cm["labels"], cm["matrix"]))
        if pictures and test.get("reliability"):
            card["reliability_uri"] = data_uri(reliability_png(test["reliability"], ece=test.get("ece")))
    if val:
        card["val"] = {"n": val.get("n"), "balanced_accuracy": val.get("balanced_accuracy"), "accuracy": val.get("accuracy")}
    card["references"] = [
        {"name": REFERENCE_NAMES.get(name, name), "balanced_accuracy": rep.get("balanced_accuracy"),
         "ci": _ci_text(rep, "balanced_accuracy"), "paired": _paired_text((rep.get("paired") or {}).get("all"))}
        for name, rep in (metrics.get("references") or {}).items()
    ]
    fcv = metrics.get("fusion_cv") or {}
    if fcv:
        card["fusion_cv"] = {"folds": fcv.get("folds"), "window_model": (fcv.get("window_model_alone") or {}).get("overall"),
                             "fused": (fcv.get("fused") or {}).get("overall"), "C": fcv.get("C")}
    chosen = metrics.get("chosen") or {}
    if chosen:
        card["chosen"] = scalar_rows(chosen)
    rob, source = metrics.get("robustness") or {}, ""
    if not rob.get("conditions"):  # a shipped checkpoint: the report evaluate_robustness wrote beside it
        rob, source = shipped_robustness_report(mv)
    if rob.get("conditions"):
        card["robustness"] = robustness_card(rob, source=source)
    return card


# ---------------------------------------------------------------------------------------------
# The batch page
# ---------------------------------------------------------------------------------------------
