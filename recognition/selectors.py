"""Reads: every query the API and admin make goes through here, owner-scoped."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from django.conf import settings
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


@dataclass(frozen=True)
class Neighbours:
    """What a similarity search found and how far it looked.

    ``pairs``: ``(recording, cosine similarity)``, best first. ``backend``: ``pgvector-hnsw`` or
    ``exact``. ``exact``: every one of the user's embeddings of that model was compared (the exact
    search read them all); false through the HNSW index (approximate in principle) or when the exact
    search stopped at its cap. ``searched``: the embeddings the exact search compared (``None``:
    the index chose its candidates)."""

    pairs: list[tuple[Recording, float]]
    backend: str
    exact: bool
    searched: int | None


#: embeddings scored per numpy slice of the exact search (a running top-k is kept between slices)
EXACT_SLICE = 2000


def similar_search(
    *, user: AbstractBaseUser, recording: Recording, model_version: ModelVersion | None = None, k: int = 10,
    limit: int | None = None,
) -> Neighbours:
    """The ``k`` nearest of the user's recordings to ``recording`` by cosine similarity.

    Uses the newest embedding per recording of one model version. On a PostgreSQL with pgvector
    the HNSW index answers (:mod:`recognition.vectorindex`); elsewhere an exact search in numpy
    (the vectors are L2-normalised, so cosine is a dot product) over the user's newest ``limit``
    embeddings (default ``SIMILAR_EXACT_MAX``): one query streamed in slices of :data:`EXACT_SLICE`
    rows, a running top-k kept between them, so neither time nor memory grows past the cap whatever
    the user holds. Never returns another user's recordings.
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
        return Neighbours([(recs[r], sim) for r, sim in pairs if r in recs], "pgvector-hnsw", False, None)
    limit = settings.SIMILAR_EXACT_MAX if limit is None else limit
    rows = mine.filter(model_version_id=anchor.model_version_id).exclude(recording=recording)
    return _similar_exact(rows, np.asarray(anchor.vector, dtype=np.float32), k, max(1, limit))


def similar_recordings(**kwargs) -> list[tuple[Recording, float]]:
    """:func:`similar_search`'s neighbours alone."""
    return similar_search(**kwargs).pairs


def _similar_exact(rows: QuerySet[Embedding], query: np.ndarray, k: int, limit: int) -> Neighbours:
    """Exact top-``k`` among the newest ``limit`` rows, newest first so the newest embedding of a
    recording is the one compared; a ``limit + 1``-th row read says the search was capped."""
    best_ids = np.empty(0, dtype=np.int64)
    best_scores = np.empty(0, dtype=np.float32)
    seen: set[int] = set()
    searched = read = 0
    ids: list[int] = []
    vectors: list[list[float]] = []

    def fold() -> None:
        nonlocal best_ids, best_scores
        if not ids:
            return
        scores = np.asarray(vectors, dtype=np.float32) @ query
        all_ids = np.concatenate([best_ids, np.asarray(ids, dtype=np.int64)])
        all_scores = np.concatenate([best_scores, scores])
        keep = np.lexsort((all_ids, -all_scores))[:k]  # best first; ties by recording id
        best_ids, best_scores = all_ids[keep], all_scores[keep]
        ids.clear()
        vectors.clear()

    stream = rows.order_by("-id").values_list("recording_id", "vector")[: limit + 1].iterator(chunk_size=EXACT_SLICE)
    for rec_id, vector in stream:
        read += 1
        if read > limit:
            break
        if rec_id in seen:  # an older embedding of a recording already compared
            continue
        seen.add(rec_id)
        ids.append(rec_id)
        vectors.append(vector)
        searched += 1
        if len(ids) >= EXACT_SLICE:
            fold()
    fold()
    recs = Recording.objects.in_bulk([int(i) for i in best_ids]) if len(best_ids) else {}
    pairs = [(recs[int(i)], float(sc)) for i, sc in zip(best_ids, best_scores, strict=True) if int(i) in recs]
    return Neighbours(pairs, "exact", read <= limit, searched)
