"""Review: server-side plots and the read-side selectors behind the admin review pages.

(Over 500 lines: every reading page's data builder sits here beside the plot helpers they share;
splitting it by page - batch, job report, recording, model card - is the next step when it grows.)

Two halves:

- pure plotting functions (data in, PNG bytes out; :func:`data_uri` turns them into an inline
  ``data:image/png;base64,...`` URI) drawn with matplotlib's Agg canvas, never pyplot, so they hold
  no global state and need no display or network;
- owner-aware selectors (``job_projection``, ``job_wrong_or_unsure``, ``jobs_compare``, ...) that
  read rows and return plain JSON-able dicts for the API and the admin templates.
"""
from __future__ import annotations

import base64
import io
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from django.conf import settings
from django.db.models import QuerySet

from recognition import jobkinds, selectors
from recognition.errors import NotFound, ServiceError
from recognition.job_pages import (
    PROJECTION_POINTS,
    job_wrong_or_unsure,  # noqa: F401  (re-exported: the API and tests read it here)
    projection_rows,
    wrong_or_unsure_page,
)
from recognition.job_pages import truth as _truth
from recognition.models import Batch, Job, LanguageResult, Prediction, Recording, Transcript

#: Colour of recordings without a label in the projection plot.
UNLABELLED_COLOUR = "#9e9e9e"
#: Jobs per batch page that get the full report pictures (the rest are linked).
BATCH_REPORT_LIMIT = 5
#: Without pgvector the recording page's neighbours come from an exact search over at most this many
#: of the owner's newest embeddings, so the page costs the same at 1,000 and 100,000 of them.
SIMILAR_SCAN_LIMIT = 5000

# ---------------------------------------------------------------------------------------------
# Plots: pure functions, data in, PNG bytes out
# ---------------------------------------------------------------------------------------------


#: Fixed margins (figure fractions) of the recording page's time plots, so the waveform, the
#: spectrogram and every window timeline share one time axis on the page.
TIME_AXIS_MARGINS = {"left": 0.085, "right": 0.8}
TIME_PLOT_WIDTH = 8.0


def _figure(width: float, height: float, *, layout: str | None = "constrained"):
    """A matplotlib Figure on an Agg canvas (no pyplot, no global figure registry)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout=layout)
    FigureCanvasAgg(fig)
    return fig


def _png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def data_uri(png: bytes) -> str:
    """``data:image/png;base64,...`` for an ``<img src>``: the page needs no further request."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def confusion_matrix_png(labels: Sequence[str], matrix: Sequence[Sequence[int]]) -> bytes:
    """Confusion matrix: counts written in the cells, shading by row-normalised share (recall).

    Parameters
    ----------
    labels : sequence of str
        The ``C`` class names; rows are true classes, columns predicted ones.
    matrix : sequence of sequences of int
        Counts, shape ``[C, C]``.
    """
    counts = np.asarray(matrix, dtype=np.float64).reshape(len(labels), len(labels))
    rows = counts.sum(axis=1, keepdims=True)
    share = np.divide(counts, rows, out=np.zeros_like(counts), where=rows > 0)
    size = 2.2 + 0.7 * len(labels)
    fig = _figure(size + 1.0, size)
    ax = fig.add_subplot()
    image = ax.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of true class")
    ticks = np.arange(len(labels))
    ax.set_xticks(ticks, labels=list(labels), rotation=30, ha="right")
    ax.set_yticks(ticks, labels=list(labels))
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    for i in range(len(labels)):
        for j in range(len(labels)):
            colour = "white" if share[i, j] > 0.6 else "black"
            ax.text(j, i, f"{int(counts[i, j])}\n{share[i, j]:.0%}", ha="center", va="center", color=colour, fontsize=9)
    ax.set_title("Confusion matrix")
    return _png(fig)


def reliability_png(reliability: Mapping[str, Sequence[Any]], *, ece: float | None = None) -> bytes:
    """Reliability diagram: accuracy per confidence bin against the diagonal, counts below.

    Parameters
    ----------
    reliability : mapping
        The report's ``reliability``: ``edges`` ``[B+1]``, ``confidence``, ``accuracy`` and
        ``count`` ``[B]`` (``None`` for empty bins).
    ece : float, optional
        Expected calibration error, shown in the title.
    """
    edges = np.asarray(reliability["edges"], dtype=np.float64)
    accuracy = np.asarray([np.nan if v is None else v for v in reliability["accuracy"]], dtype=np.float64)
    confidence = np.asarray([np.nan if v is None else v for v in reliability["confidence"]], dtype=np.float64)
    count = np.asarray(reliability["count"], dtype=np.float64)
    lefts, widths = edges[:-1], np.diff(edges)
    fig = _figure(4.6, 4.6)
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=[3, 1])
    filled = ~np.isnan(accuracy)
    top.bar(lefts[filled], accuracy[filled], width=widths[filled], align="edge", color="#417690", edgecolor="white", label="accuracy")
    top.scatter(confidence[filled], accuracy[filled], color="#ba2121", s=14, zorder=3, label="mean confidence")
    top.plot([0, 1], [0, 1], linestyle="--", color="#666", linewidth=1, label="perfect calibration")
    top.set_ylim(0, 1)
    top.set_ylabel("accuracy")
    top.legend(loc="upper left", fontsize=8)
    top.set_title("Reliability diagram" + (f" (ECE {ece:.3f})" if ece is not None else ""))
    bottom.bar(lefts, count, width=widths, align="edge", color="#999", edgecolor="white")
    bottom.set_xlim(0, 1)
    bottom.set_xlabel("confidence (top class)")
    bottom.set_ylabel("count")
    return _png(fig)


def window_timeline_png(windows: Sequence[Mapping[str, Any]], labels: Sequence[str] | None = None) -> bytes:
    """Class probabilities over time, one stacked step band per class.

    Each window's probabilities hold from its start until the next window starts (the last one
    until its end), so overlapping windows read as a step function of time.

    Parameters
    ----------
    windows : sequence of mappings
        ``[{"start_s", "end_s", "probabilities": {label: p}}]`` in time order.
    labels : sequence of str, optional
        Class order (and colours); the first window's keys when omitted.
    """
    fig = _figure(TIME_PLOT_WIDTH, 2.4, layout=None)
    fig.subplots_adjust(bottom=0.2, top=0.95, **TIME_AXIS_MARGINS)
    ax = fig.add_subplot()
    if not windows:
        ax.text(0.5, 0.5, "no windows (not enough speech)", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
        return _png(fig)
    labels = list(labels or windows[0]["probabilities"])
    starts = [float(w["start_s"]) for w in windows]
    x = np.asarray(starts + [float(windows[-1]["end_s"])])
    probs = np.asarray([[float(w["probabilities"].get(label, 0.0)) for label in labels] for w in windows])
    probs = np.vstack([probs, probs[-1:]])  # the last window holds until its end
    lower = np.zeros(len(x))
    for j, label in enumerate(labels):
        upper = lower + probs[:, j]
        ax.fill_between(x, lower, upper, step="post", label=label, alpha=0.85, color=f"C{j}")
        lower = upper
    ax.set_xlim(x[0], x[-1])
    ax.set_ylim(0, 1)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("probability")
    ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8)
    return _png(fig)


def waveform_png(samples: np.ndarray, sample_rate: int, *, duration_s: float | None = None) -> bytes:
    """Waveform above a log-magnitude spectrogram (0-8 kHz), on the window timelines' time axis.

    Parameters
    ----------
    samples : np.ndarray
        Mono audio, shape ``[time]``.
    sample_rate : int
        Its rate in Hz.
    duration_s : float, optional
        The x range (the recording's length); the samples' length when omitted.
    """
    x = np.asarray(samples, dtype=np.float32).reshape(-1)
    end = float(duration_s or len(x) / sample_rate or 1.0)
    fig = _figure(TIME_PLOT_WIDTH, 3.4, layout=None)
    fig.subplots_adjust(bottom=0.14, top=0.96, hspace=0.08, **TIME_AXIS_MARGINS)
    wave, spec = fig.subplots(2, 1, sharex=True, height_ratios=[1, 1.6])
    step = max(1, len(x) // 4000)  # the envelope of at most ~4000 columns
    if len(x):
        n = len(x) // step * step
        blocks = x[:n].reshape(-1, step) if n else x.reshape(1, -1)
        t = (np.arange(len(blocks)) * step + step / 2) / sample_rate
        wave.fill_between(t, blocks.min(axis=1), blocks.max(axis=1), color="#2b5d7d", linewidth=0.4, edgecolor="#2b5d7d")
    wave.set_ylabel("wave")
    wave.set_xlim(0, end)
    nfft = 512
    if len(x) >= nfft:
        hop = 160
        frames = np.lib.stride_tricks.sliding_window_view(x, nfft)[::hop] * np.hanning(nfft).astype(np.float32)
        power = np.abs(np.fft.rfft(frames, axis=1)) ** 2
        db = 10 * np.log10(power.T + 1e-10)
        top = int(min(8000, sample_rate / 2) / (sample_rate / nfft))
        first = nfft / 2 / sample_rate  # frame centres
        extent = (first, first + len(frames) * hop / sample_rate, 0, top * sample_rate / nfft / 1000)
        spec.imshow(db[: top + 1], origin="lower", aspect="auto", cmap="magma", vmin=db.max() - 80, vmax=db.max(), extent=extent)
    spec.set_ylabel("kHz")
    spec.set_xlabel("time (s)")
    spec.set_xlim(0, end)
    return _png(fig)


def risk_coverage_png(curve: Mapping[str, Sequence[Any]], *, coverage: float | None = None,
                      risk_accepted: float | None = None) -> bytes:
    """Risk-coverage curve: error rate of the ``k`` most confident answers against their share.

    Parameters
    ----------
    curve : mapping
        The report's ``selective["curve"]``: ``coverage`` and ``risk``, each ``[K]``.
    coverage, risk_accepted : float, optional
        The job's own operating point (answers given ``ok``), marked on the curve.
    """
    x = np.asarray([np.nan if v is None else v for v in curve.get("coverage") or []], dtype=np.float64)
    y = np.asarray([np.nan if v is None else v for v in curve.get("risk") or []], dtype=np.float64)
    fig = _figure(4.6, 3.4)
    ax = fig.add_subplot()
    if len(x):
        ax.step(x, y, where="post", color="#417690", linewidth=1.6, label="answer only the most confident")
    if coverage is not None and risk_accepted is not None:
        ax.scatter([coverage], [risk_accepted], color="#ba2121", s=40, zorder=3, label="this job's accepted answers")
    ax.set_xlim(0, 1.02)
    ax.set_ylim(0, max(0.05, float(np.nanmax(y)) * 1.15) if len(y) and not np.isnan(y).all() else 1)
    ax.set_xlabel("coverage (share of recordings answered)")
    ax.set_ylabel("risk (error rate)")
    ax.set_title("Risk-coverage")
    ax.legend(fontsize=8, loc="upper left")
    return _png(fig)


def projection_png(points: Sequence[Mapping[str, Any]], *, title: str = "") -> bytes:
    """2-D scatter of projected embeddings coloured by label; unlabelled points grey.

    Parameters
    ----------
    points : sequence of mappings
        ``[{"x", "y", "label"}]``; an empty ``label`` means unlabelled.
    """
    fig = _figure(5.5, 4.5)
    ax = fig.add_subplot()
    groups: dict[str, list[Mapping[str, Any]]] = {}
    for p in points:
        groups.setdefault(p.get("label") or "", []).append(p)
    for j, label in enumerate(sorted(k for k in groups if k)):
        xs, ys = zip(*((p["x"], p["y"]) for p in groups[label]), strict=True)
        ax.scatter(xs, ys, s=28, color=f"C{j % 10}", label=label, edgecolor="white", linewidth=0.5)
    if "" in groups:
        xs, ys = zip(*((p["x"], p["y"]) for p in groups[""]), strict=True)
        ax.scatter(xs, ys, s=22, color=UNLABELLED_COLOUR, label="unlabelled", edgecolor="white", linewidth=0.5)
    if points:
        ax.legend(fontsize=8, loc="best")
    ax.set_xlabel("component 1")
    ax.set_ylabel("component 2")
    ax.set_title(title or "Embedding projection")
    return _png(fig)


# ---------------------------------------------------------------------------------------------
# Projection arithmetic (pure numpy)
# ---------------------------------------------------------------------------------------------


def pca_2d(vectors: np.ndarray) -> np.ndarray:
    """First two principal components of ``vectors`` by SVD of the centred matrix.

    Parameters
    ----------
    vectors : np.ndarray
        Shape ``[n, d]``.

    Returns
    -------
    np.ndarray
        Shape ``[n, 2]`` (zero columns where there are fewer than two components). The sign of
        each component is fixed (largest absolute loading positive) so the picture is stable.
    """
    x = np.asarray(vectors, dtype=np.float64)
    out = np.zeros((len(x), 2))
    if len(x) < 2:
        return out
    centred = x - x.mean(axis=0, keepdims=True)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    k = min(2, vt.shape[0])
    components = vt[:k]
    signs = np.sign(components[np.arange(k), np.abs(components).argmax(axis=1)])
    components = components * np.where(signs == 0, 1.0, signs)[:, None]
    out[:, :k] = centred @ components.T
    return out


def project_2d(vectors: np.ndarray, *, method: str = "auto") -> tuple[np.ndarray, str]:
    """Project ``[n, d]`` vectors to ``[n, 2]``: UMAP when asked for (or ``auto``) and importable, else PCA.

    Returns the coordinates and the method used (``"umap"`` or ``"pca"``).
    """
    x = np.asarray(vectors, dtype=np.float64)
    if method in ("auto", "umap") and len(x) >= 15:
        try:
            import umap  # optional dependency
        except ImportError:
            pass
        else:
            coords = umap.UMAP(n_components=2, random_state=0, metric="cosine").fit_transform(x)
            return np.asarray(coords, dtype=np.float64), "umap"
    return pca_2d(x), "pca"


# ---------------------------------------------------------------------------------------------
# Selectors: read rows, return JSON-able dicts
# ---------------------------------------------------------------------------------------------


def _model_name(job: Job) -> str:
    mv = job.model_version
    return f"{mv.name}@{mv.version}" if mv else ""


def _predictions(job: Job) -> QuerySet[Prediction]:
    return Prediction.objects.filter(result__job=job).select_related("result__recording").order_by("result__recording_id")


def job_projection(*, job: Job, method: str = "auto", limit: int | None = None) -> dict[str, Any]:
    """2-D projection of an embed job's vectors, one point per recording, with its label.

    ``limit``: project an even sample of at most about that many vectors (the admin pages ask for
    :data:`recognition.job_pages.PROJECTION_POINTS`); ``total`` says how many the job has.
    Raises ``NotFound`` when the job stored no embeddings (not an embed job, or not run yet).
    """
    rows, total = projection_rows(job=job, limit=limit)
    if not rows:
        raise NotFound("no_embeddings", "This job has no embeddings to project; run an embed job over the recordings.")
    coords, used = project_2d(np.asarray([r.vector for r in rows], dtype=np.float64), method=method)
    return {
        "job": job.pk,
        "model": _model_name(job),
        "method": used,
        "total": total,
        "sampled": len(rows) < total,
        "points": [
            {"recording": r.recording.pk, "filename": r.recording.original_filename, "label": r.recording.label,
             "speaker": r.recording.speaker, "x": float(x), "y": float(y)}
            for r, (x, y) in zip(rows, coords, strict=True)
        ],
    }


def _side(job: Job, predictions: dict[int, Prediction], ids: list[int]) -> dict[str, Any]:
    """Accuracy of one job over the labelled recordings among ``ids``; abstentions count as not correct.

    ``abstained``: no answer (insufficient speech); ``uncertain``: an answer under the threshold;
    ``accepted``: answered ``ok``, with ``coverage`` (accepted / labelled) and ``accuracy_accepted``
    (on those only).
    """
    labelled = [i for i in ids if _truth(job, predictions[i].result.recording)]
    right = {i for i in labelled if predictions[i].predicted_class == _truth(job, predictions[i].result.recording)}
    outcomes = [predictions[i].outcome for i in labelled]
    accepted = [i for i in labelled if predictions[i].outcome == Prediction.Outcome.OK]
    return {"job": job.pk, "model": _model_name(job), "n_labelled": len(labelled), "correct": len(right),
            "abstained": outcomes.count(Prediction.Outcome.INSUFFICIENT_SPEECH),
            "uncertain": outcomes.count(Prediction.Outcome.UNCERTAIN),
            "accuracy": len(right) / len(labelled) if labelled else None,
            "accepted": len(accepted), "coverage": len(accepted) / len(labelled) if labelled else None,
            "accuracy_accepted": sum(1 for i in accepted if i in right) / len(accepted) if accepted else None}


def _abstentions(pa: dict[int, Prediction], pb: dict[int, Prediction], common: list[int]) -> dict[str, Any]:
    """How withheld answers changed between two jobs over their common recordings.

    ``transitions``: counts of ``"<outcome a> -> <outcome b>"`` where the outcome changed;
    ``newly_withheld`` / ``newly_answered``: recordings answered ``ok`` by one job and not by the
    other, each with both outcomes, predictions and confidences.
    """
    ok = Prediction.Outcome.OK
    transitions: dict[str, int] = {}
    rows: dict[str, list[dict[str, Any]]] = {"newly_withheld": [], "newly_answered": []}
    for i in common:
        a, b = pa[i], pb[i]
        if a.outcome == b.outcome:
            continue
        key = f"{a.outcome} -> {b.outcome}"
        transitions[key] = transitions.get(key, 0) + 1
        if (a.outcome == ok) == (b.outcome == ok):
            continue
        rec = a.result.recording
        rows["newly_withheld" if a.outcome == ok else "newly_answered"].append({
            "recording": rec.pk, "filename": rec.original_filename, "label": rec.label,
            "a_outcome": a.outcome, "b_outcome": b.outcome, "a": a.predicted_class or None, "b": b.predicted_class or None,
            "a_confidence": a.confidence, "b_confidence": b.confidence,
        })
    return {"transitions": dict(sorted(transitions.items())), **rows}


def jobs_compare(*, job_a: Job, job_b: Job) -> dict[str, Any]:
    """Compare two classify jobs over (mostly) the same recordings, e.g. two model versions.

    Returns ``a`` and ``b`` (job, model, accuracy over the labelled recordings both jobs
    predicted), ``n_common``, ``n_changed``, ``agreement``, ``transitions``, ``only_in_a``,
    ``only_in_b`` (recording ids) and ``changed``: one row per recording whose prediction
    differs, with its filename, true label and both predictions and confidences; ``abstentions``:
    how the withheld answers (``uncertain``, ``insufficient_speech``) changed (see ``_abstentions``),
    and each side's ``coverage`` and ``accuracy_accepted`` beside its ``accuracy``.
    """
    from workers.pipeline.evaluation import compare_predictions

    for job in (job_a, job_b):
        if jobkinds.stores(job.kind) != "prediction":
            raise ServiceError("not_classify", f"Job #{job.pk} is a {job.kind} job; only classify jobs can be compared.")
    pa = {p.result.recording_id: p for p in _predictions(job_a) if p.result.recording_id}
    pb = {p.result.recording_id: p for p in _predictions(job_b) if p.result.recording_id}
    diff = compare_predictions({i: p.predicted_class or None for i, p in pa.items()},
                               {i: p.predicted_class or None for i, p in pb.items()})
    common = sorted(i for i in pa if i in pb)
    changed = []
    for row in diff["changed"]:
        a, b = pa[row["id"]], pb[row["id"]]
        rec = a.result.recording
        changed.append({
            "recording": rec.pk, "filename": rec.original_filename, "label": rec.label,
            "a": row["a"], "b": row["b"], "a_confidence": a.confidence, "b_confidence": b.confidence,
        })
    return {
        "a": _side(job_a, pa, common), "b": _side(job_b, pb, common),
        "n_common": diff["n_common"], "n_changed": diff["n_changed"], "agreement": diff["agreement"],
        "transitions": diff["transitions"], "only_in_a": diff["only_in_a"], "only_in_b": diff["only_in_b"],
        "changed": changed, "abstentions": _abstentions(pa, pb, common),
    }


def job_compare_candidates(*, job: Job) -> QuerySet[Job]:
    """Other finished classify jobs of the same owner over the same batch: what the job page offers to compare with."""
    if jobkinds.stores(job.kind) != "prediction" or job.batch_id is None:
        return Job.objects.none()
    return (
        Job.objects.filter(owner_id=job.owner_id, batch_id=job.batch_id, kind__in=jobkinds.storing("prediction"),
                           status=Job.Status.SUCCEEDED)
        .exclude(pk=job.pk).select_related("model_version").order_by("-created_at", "-id")
    )


def _ci_text(report: Mapping[str, Any], metric: str) -> str:
    ci = (report.get("ci") or {}).get(metric) or {}
    if ci.get("low") is None or ci.get("high") is None:
        reason = ci.get("reason") or (report.get("ci") or {}).get("reason")
        if reason or ci:
            return f"no CI: {reason or 'cannot be estimated'}"
        return ""
    return f"95% CI {ci['low']:.3f} to {ci['high']:.3f}, bootstrap over {report['ci'].get('n_units')} {report['ci'].get('unit')}s"


def _per_corpus_rows(report: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The report's ``per_corpus`` as rows, each with its balanced accuracy's interval text."""
    rows = []
    for corpus, rep in sorted((report.get("per_corpus") or {}).items()):
        roc = rep.get("roc_auc")
        rows.append({"corpus": corpus, "n": rep.get("n"), "speakers": rep.get("n_speakers"),
                     "balanced_accuracy": rep.get("balanced_accuracy"), "accuracy": rep.get("accuracy"),
                     "macro_f1": rep.get("macro_f1"), "roc_auc": roc.get("value") if isinstance(roc, dict) else roc,
                     "ci": _ci_text(rep, "balanced_accuracy")})
    return rows


def _selective(report: Mapping[str, Any]) -> dict[str, Any] | None:
    """What withholding unsure answers did, for the page: the report's ``selective`` less its curve."""
    sel = report.get("selective")
    if not sel:
        return None
    return {"n": sel.get("n"), "n_accepted": sel.get("n_accepted"), "coverage": sel.get("coverage"),
            "accuracy_accepted": sel.get("accuracy_accepted"), "accuracy_all": sel.get("accuracy_all"),
            "risk_accepted": sel.get("risk_accepted"), "aurc": sel.get("aurc"), "threshold": sel.get("threshold"),
            "abstained": sel.get("abstained") or {}}


def job_review(*, job: Job, pictures: bool = True, page: Any = 1) -> dict[str, Any]:
    """Everything a person reviews about one job, ready for a template (pictures as data URIs).

    Classify jobs with a report: headline numbers with CIs, per-class table, confusion matrix,
    reliability diagram (all from the report stored when the job ended), and page ``page`` of the
    wrong-or-unsure recordings. Embed jobs: the projection picture of at most
    :data:`~recognition.job_pages.PROJECTION_POINTS` of its vectors. Every job: its stage timings,
    largest first. A bounded number of queries whatever the job's size.
    """
    total = sum(float(v) for v in (job.timings or {}).values()) or 0.0
    review: dict[str, Any] = {
        "job": job,
        "model": _model_name(job),
        "timings": [
            {"stage": stage, "seconds": float(s), "share": 100 * float(s) / total if total else 0.0}
            for stage, s in sorted((job.timings or {}).items(), key=lambda kv: -float(kv[1]))
        ],
    }
    report = job.report
    if jobkinds.stores(job.kind) == "prediction" and report and report.get("n"):
        review["report"] = {
            "n": report["n"],
            "accuracy": report.get("accuracy"),
            "balanced_accuracy": report.get("balanced_accuracy"),
            "balanced_accuracy_ci": _ci_text(report, "balanced_accuracy"),
            "macro_f1": report.get("macro_f1"),
            "ece": report.get("ece"),
            "roc_auc": (report.get("roc_auc") or {}).get("value"),
            "excluded": report.get("excluded") or {},
            "coverage": (report.get("selective") or {}).get("coverage"),
            "accuracy_accepted": (report.get("selective") or {}).get("accuracy_accepted"),
            "per_class": [dict(label=label, **values) for label, values in (report.get("per_class") or {}).items()],
            "per_corpus": _per_corpus_rows(report),
            "selective": _selective(report),
            "accuracy_ci": _ci_text(report, "accuracy"),
            "macro_f1_ci": _ci_text(report, "macro_f1"),
        }
        if pictures:
            cm = report["confusion_matrix"]
            review["confusion_matrix_uri"] = data_uri(confusion_matrix_png(cm["labels"], cm["matrix"]))
            if report.get("reliability"):
                review["reliability_uri"] = data_uri(reliability_png(report["reliability"], ece=report.get("ece")))
            sel = report.get("selective") or {}
            if (sel.get("curve") or {}).get("coverage"):
                review["risk_coverage_uri"] = data_uri(risk_coverage_png(
                    sel["curve"], coverage=sel.get("coverage"), risk_accepted=sel.get("risk_accepted")))
        review["wrong_or_unsure"] = wrong_or_unsure_page(job=job, page=page)
    if jobkinds.stores(job.kind) == "embedding" and job.status == Job.Status.SUCCEEDED and pictures:
        try:
            projection = job_projection(job=job, limit=PROJECTION_POINTS)
        except NotFound:
            pass
        else:
            shown, total = len(projection["points"]), projection["total"]
            title = f"{projection['model']} ({projection['method'].upper()}, " + (
                f"{shown} recordings)" if shown == total else f"a sample of {shown:,} of {total:,} recordings)")
            review["projection_uri"] = data_uri(projection_png(projection["points"], title=title))
    return review


def batch_review(*, batch: Batch, limit: int = BATCH_REPORT_LIMIT) -> dict[str, Any]:
    """Reviews of a batch's newest finished labelled classify jobs and embed jobs (``limit`` of each)."""
    finished = batch.jobs.filter(status=Job.Status.SUCCEEDED).select_related("model_version").order_by("-created_at", "-id")
    classify = [j for j in finished.filter(kind__in=jobkinds.storing("prediction"), report__isnull=False)[:limit]]
    embed = list(finished.filter(kind__in=jobkinds.storing("embedding"))[:limit])
    return {"classify": [job_review(job=j) for j in classify if j.report and j.report.get("n")],
            "embed": [job_review(job=j) for j in embed]}


#: Timeline colours of the commonest languages; others take :data:`LANGUAGE_PALETTE` in order of appearance
LANGUAGE_COLOURS = {"en": "#1f77b4", "fr": "#d62728", "es": "#ff7f0e", "it": "#2ca02c", "pl": "#9467bd", "de": "#8c564b"}
LANGUAGE_PALETTE = ("#e377c2", "#17becf", "#bcbd22", "#7f7f7f", "#aec7e8", "#98df8a", "#ffbb78", "#c5b0d5")
NO_SPEECH_COLOUR = "#e0e0e0"


def language_timeline(windows: Sequence[Mapping[str, Any]], shares: Mapping[str, float], duration_s: float | None = None) -> dict[str, Any]:
    """A language job's windows as an HTML/CSS bar: ``segments`` ``[{left, width, colour, language,
    title}]`` (percent of the recording) and a ``legend`` ``[{language, colour, percent}]`` by share.

    Non-speech windows are grey with no language. Pure: no database, no HTML (the template draws it).
    """
    end = float(duration_s or 0.0) or max((float(w["end_s"]) for w in windows), default=0.0)
    colours: dict[str, str] = {}
    spare = iter(LANGUAGE_PALETTE * 4)

    def colour(code: str | None) -> str:
        if not code:
            return NO_SPEECH_COLOUR
        if code not in colours:
            colours[code] = LANGUAGE_COLOURS.get(code) or next(spare, UNLABELLED_COLOUR)
        return colours[code]

    for code in shares:
        colour(code)
    segments = []
    for w in windows:
        start, stop = float(w["start_s"]), float(w["end_s"])
        code = w.get("language") if w.get("speech", True) else None
        title = f"{start:.1f}-{stop:.1f} s: " + (f"{code} {float(w.get('probability') or 0):.2f}" if code else "no speech")
        segments.append({"left": round(100 * start / end, 3) if end else 0, "width": round(100 * (stop - start) / end, 3) if end else 0,
                         "colour": colour(code), "language": code or "", "title": title})
    legend = [{"language": code, "colour": colour(code), "percent": round(100 * float(share), 1)} for code, share in shares.items()]
    return {"segments": segments, "legend": legend}


def _whisper_reviews(recording: Recording, limit: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """A recording's newest language results (with their timelines) and transcripts."""
    languages = [
        {"job": row.result.job, "row": row,
         "timeline": language_timeline(row.windows, row.shares, recording.duration_s)}
        for row in LanguageResult.objects.filter(result__recording=recording).select_related("result__job")
        .order_by("-result__job__created_at", "-id")[:limit]
    ]
    transcripts = [
        {"job": row.result.job, "row": row}
        for row in Transcript.objects.filter(result__recording=recording).select_related("result__job")
        .order_by("-result__job__created_at", "-id")[:limit]
    ]
    return languages, transcripts


def recording_review(*, recording: Recording, k: int = 8, limit: int = 10) -> dict[str, Any]:
    """A recording's window timelines (its newest ``limit`` predictions) and its ``k`` nearest neighbours
    (without pgvector: among the newest :data:`SIMILAR_SCAN_LIMIT` embeddings, ``neighbours_note`` says so);
    ``languages`` and ``transcripts``: its newest Whisper language results (with a bar timeline) and transcripts.

    Neighbours come from :func:`recognition.selectors.similar_recordings` for the recording's owner,
    so they never include another user's recordings; ``neighbours_note`` says why there are none.
    """
    predictions = (
        Prediction.objects.filter(result__recording=recording)
        .select_related("result__job__model_version", "model_version").order_by("-result__job__created_at", "-id")[:limit]
    )
    timelines = [
        {"job": p.result.job, "model": f"{p.model_version.name}@{p.model_version.version}", "outcome": p.outcome,
         "truth": _truth(p.result.job, recording),
         "predicted": p.predicted_class, "confidence": p.confidence, "reading": p.reading,
         "uri": data_uri(window_timeline_png(p.windows, list(p.model_version.labels) or None))}
        for p in predictions
    ]
    try:
        found = selectors.similar_search(user=recording.owner, recording=recording, k=k, limit=SIMILAR_SCAN_LIMIT)
        pairs = found.pairs
        note = "" if pairs else "No other recording has an embedding from the same model yet."
        if pairs and found.backend == "exact" and not found.exact:
            note = (f"Nearest among the newest {SIMILAR_SCAN_LIMIT:,} embeddings only: without pgvector this page does not "
                    f"search them all (the API's similar/ reads up to {settings.SIMILAR_EXACT_MAX:,}).")
    except NotFound as exc:
        pairs, note = [], exc.message
    languages, transcripts = _whisper_reviews(recording, limit)
    return {"timelines": timelines, "neighbours": [{"recording": r, "similarity": s} for r, s in pairs], "neighbours_note": note,
            "languages": languages, "transcripts": transcripts}


# ---------------------------------------------------------------------------------------------
# The model page: a model version's card from its stored metrics (no raw predictions, no paths)
# ---------------------------------------------------------------------------------------------


def recording_waveform(*, recording: Recording, max_seconds: float = 120.0) -> dict[str, Any]:
    """The recording page's waveform and spectrogram: ``{"uri"}``, or ``{"note"}`` saying why there is none."""
    from django.conf import settings

    from workers.pipeline.audio import load_audio

    if recording.duration_s and recording.duration_s > max_seconds:
        return {"note": f"No waveform: the recording is longer than {max_seconds:g} s."}
    try:
        with recording.file.storage.open(recording.file.name, "rb") as fh:
            decoded = load_audio(fh, settings.AUDIO_SAMPLE_RATE, format_hint=recording.format)
    except Exception as exc:  # missing file, undecodable audio: the page still renders
        return {"note": f"No waveform: {type(exc).__name__}: {exc}"}
    return {"uri": data_uri(waveform_png(decoded.samples, settings.AUDIO_SAMPLE_RATE, duration_s=recording.duration_s))}
