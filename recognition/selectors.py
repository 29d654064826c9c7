"""Reads: every query the API and admin make goes through here, owner-scoped."""
from __future__ import annotations

import numpy as np
from django.contrib.auth.models import AbstractBaseUser
from django.db.models import Count, OuterRef, Q, QuerySet, Subquery
from django.db.models.functions import Coalesce

from recognition import vectorindex
from recognition.errors import NotFound
from recognition.models import Batch, Embedding, Job, ModelVersion, Recording, RecordingResult


def recording_list(*, user: AbstractBaseUser) -> QuerySet[Recording]:
    return Recording.objects.filter(owner=user)


def batch_list(*, user: AbstractBaseUser) -> QuerySet[Batch]:
    return Batch.objects.filter(owner=user)


def batches_counted(batches: QuerySet[Batch]) -> QuerySet[Batch]:
    """``batches`` with ``n_recordings`` and ``n_jobs``: counted by subqueries in the same query (an index
    range per listed batch), so a list of batches costs one query, not two more per batch."""
    members = Batch.recordings.through.objects.filter(batch_id=OuterRef("pk")).order_by().values("batch_id")
    jobs = Job.objects.filter(batch_id=OuterRef("pk")).order_by().values("batch_id")
    return batches.annotate(
        n_recordings=Coalesce(Subquery(members.annotate(n=Count("id")).values("n")), 0),
        n_jobs=Coalesce(Subquery(jobs.annotate(n=Count("id")).values("n")), 0),
    )


def job_list(*, user: AbstractBaseUser) -> QuerySet[Job]:
    return Job.objects.filter(owner=user).select_related("model_version", "batch")


def job_get(*, user: AbstractBaseUser, job_id: int) -> Job:
    job = job_list(user=user).filter(pk=job_id).first()
    if job is None:
        raise NotFound("not_found", "No such job.")
    return job


def job_results(*, job: Job) -> QuerySet[RecordingResult]:
    return (
        job.results.select_related("recording", "prediction__model_version", "embedding__model_version", "language_id",
                                   "transcription")
        .prefetch_related("feature_sets")
        .order_by("id")
    )


MODEL_PERMISSION = "recognition.view_modelversion"


def model_list(*, user: AbstractBaseUser | None = None) -> QuerySet[ModelVersion]:
    """Model versions ``user`` may see and run: shipped ones (no owner) and their own; every one for
    users with the model permission. ``user=None``: a trusted caller (the shell), every version."""
    qs = ModelVersion.objects.all()
    if user is None or (user.is_authenticated and user.has_perm(MODEL_PERMISSION)):
        return qs
    if not user.is_authenticated:
        return qs.filter(owner__isnull=True)
    return qs.filter(Q(owner__isnull=True) | Q(owner=user))


def model_details_visible(*, user: AbstractBaseUser | None, model_version: ModelVersion) -> bool:
    """Whether ``user`` may read a version's whole report (per-recording predictions, speakers,
    training configuration): its owner and holders of the model permission only."""
    if user is None:
        return True
    if not user.is_authenticated:
        return False
    return (model_version.owner_id is not None and model_version.owner_id == user.pk) or user.has_perm(MODEL_PERMISSION)


# What anyone who may use a model sees of its report: headline numbers, never rows about recordings.
_PUBLIC_SPLIT_METRICS = ("n", "accuracy", "balanced_accuracy", "macro_f1", "ece", "brier", "nll")
_PUBLIC_METRICS = ("best_epoch", "val_balanced_accuracy")
_PUBLIC_TRAINING_DATA = ("n_items", "seconds", "class_counts", "splits")


def _numbers_only(value):
    """A nested dict of counts keeps its numbers (and the dict shape); anything else is dropped."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return value
    if isinstance(value, dict):
        kept = {str(k): _numbers_only(v) for k, v in value.items()}
        return {k: v for k, v in kept.items() if v is not None} or None
    return None


def _scrub_paths(value):
    """Server paths never leave the server: an absolute path becomes its file name."""
    if isinstance(value, str):
        if value.startswith(("/", "~", "\\")) or (len(value) > 2 and value[1] == ":" and value[2] in "\\/"):
            return value.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1]
        return value
    if isinstance(value, dict):
        return {k: _scrub_paths(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_scrub_paths(v) for v in value]
    return value


def model_report(*, user: AbstractBaseUser | None, model_version: ModelVersion) -> dict:
    """``metrics``, ``hyperparameters`` and ``training_data`` of a version as ``user`` may see them.

    Owners (and the model permission) get everything but server paths; everyone else gets the
    headline numbers per split and the counts of the training data: no per-recording predictions,
    recording hashes, speakers or configuration."""
    metrics = model_version.metrics or {}
    training = model_version.training_data or {}
    if model_details_visible(user=user, model_version=model_version):
        return {"metrics": _scrub_paths(metrics), "hyperparameters": _scrub_paths(model_version.hyperparameters or {}),
                "training_data": _scrub_paths(training), "details": True}
    public_metrics = {k: metrics[k] for k in _PUBLIC_METRICS if isinstance(metrics.get(k), (int, float))}
    for split in ("val", "test"):
        numbers = metrics.get(split)
        if isinstance(numbers, dict):
            public_metrics[split] = {k: numbers[k] for k in _PUBLIC_SPLIT_METRICS
                                     if isinstance(numbers.get(k), (int, float)) and not isinstance(numbers.get(k), bool)}
    public_training = {k: v for k in _PUBLIC_TRAINING_DATA if (v := _numbers_only(training.get(k))) is not None}
    return {"metrics": public_metrics, "hyperparameters": {}, "training_data": public_training, "details": False}


def similar_recordings(
    *, user: AbstractBaseUser, recording: Recording, model_version: ModelVersion | None = None, k: int = 10,
    scan_limit: int | None = None,
) -> list[tuple[Recording, float]]:
    """The ``k`` nearest of the user's recordings to ``recording`` by cosine similarity.

    Uses the newest embedding per recording of one model version. On a PostgreSQL with pgvector
    the HNSW index answers (:mod:`recognition.vectorindex`); elsewhere an exact search in numpy
    (the vectors are L2-normalised, so cosine is a dot product). ``scan_limit``: the exact search
    reads only the newest ``scan_limit`` embeddings (a page that must answer fast whatever the
    user's size: :func:`similar_scan_capped` says whether it cut). Never returns another user's
    recordings.
    """
    mine = Embedding.objects.filter(recording__owner=user)
    query = mine.filter(recording=recording)
    if model_version is not None:
        query = query.filter(model_version=model_version)
    anchor = query.order_by("-id").first()
    if anchor is None:
        raise NotFound("no_embedding", "This recording has no embedding yet; run an embed job first.")
    if vectorindex.backend() == "pgvector-hnsw":
        pairs = vectorindex.nearest(vector=anchor.vector, model_version_id=anchor.model_version_id, owner_id=user.pk,
                                    exclude_recording_id=recording.pk, k=k)
        recs = Recording.objects.in_bulk([r for r, _ in pairs])
        return [(recs[r], sim) for r, sim in pairs if r in recs]
    return _similar_exact(mine, anchor, recording, k, scan_limit)


def similar_scan_capped(*, user: AbstractBaseUser, recording: Recording, scan_limit: int) -> bool:
    """Whether :func:`similar_recordings` with ``scan_limit`` left some of the user's embeddings unread
    (no pgvector, and more than ``scan_limit`` of them): one query that stops at ``scan_limit + 1`` rows."""
    if vectorindex.backend() == "pgvector-hnsw":
        return False
    anchor = Embedding.objects.filter(recording=recording).order_by("-id").values_list("model_version_id", flat=True).first()
    mine = Embedding.objects.filter(recording__owner=user, model_version_id=anchor).exclude(recording=recording)
    return anchor is not None and mine.order_by()[scan_limit : scan_limit + 1].exists()


def _similar_exact(mine: QuerySet[Embedding], anchor: Embedding, recording: Recording, k: int,
                   scan_limit: int | None = None) -> list[tuple[Recording, float]]:
    latest: dict[int, list[float]] = {}
    rows = mine.filter(model_version=anchor.model_version).exclude(recording=recording)
    if scan_limit is not None:  # the newest scan_limit rows, then in id order so the newest per recording wins
        rows = rows.filter(pk__in=rows.order_by("-id").values("pk")[:scan_limit])
    for rec_id, vector in rows.order_by("id").values_list("recording_id", "vector"):
        latest[rec_id] = vector
    if not latest:
        return []
    ids = list(latest)
    matrix = np.asarray([latest[i] for i in ids], dtype=np.float32)
    scores = matrix @ np.asarray(anchor.vector, dtype=np.float32)
    order = np.argsort(-scores, kind="stable")[:k]
    recs = Recording.objects.in_bulk([ids[i] for i in order])
    return [(recs[ids[i]], float(scores[i])) for i in order]
