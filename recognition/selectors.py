"""Reads: every query the API and admin make goes through here, owner-scoped."""
from __future__ import annotations

import numpy as np
from django.contrib.auth.models import AbstractBaseUser
from django.db.models import QuerySet

from recognition import vectorindex
from recognition.errors import NotFound
from recognition.models import Batch, Embedding, Job, ModelVersion, Recording, RecordingResult


def recording_list(*, user: AbstractBaseUser) -> QuerySet[Recording]:
    return Recording.objects.filter(owner=user)


def batch_list(*, user: AbstractBaseUser) -> QuerySet[Batch]:
    return Batch.objects.filter(owner=user)


def job_list(*, user: AbstractBaseUser) -> QuerySet[Job]:
    return Job.objects.filter(owner=user).select_related("model_version", "batch")


def job_get(*, user: AbstractBaseUser, job_id: int) -> Job:
    job = job_list(user=user).filter(pk=job_id).first()
    if job is None:
        raise NotFound("not_found", "No such job.")
    return job


def job_results(*, job: Job) -> QuerySet[RecordingResult]:
    return (
        job.results.select_related("recording", "prediction", "embedding", "language_id", "transcription")
        .prefetch_related("feature_sets")
        .order_by("id")
    )


def model_list() -> QuerySet[ModelVersion]:
    return ModelVersion.objects.all()


def similar_recordings(
    *, user: AbstractBaseUser, recording: Recording, model_version: ModelVersion | None = None, k: int = 10
) -> list[tuple[Recording, float]]:
    """The ``k`` nearest of the user's recordings to ``recording`` by cosine similarity.

    Uses the newest embedding per recording of one model version. On a PostgreSQL with pgvector
    the HNSW index answers (:mod:`recognition.vectorindex`); elsewhere an exact search in numpy
    (the vectors are L2-normalised, so cosine is a dot product). Never returns another user's
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
    return _similar_exact(mine, anchor, recording, k)


def _similar_exact(mine: QuerySet[Embedding], anchor: Embedding, recording: Recording, k: int) -> list[tuple[Recording, float]]:
    latest: dict[int, list[float]] = {}
    for rec_id, vector in (
        mine.filter(model_version=anchor.model_version).exclude(recording=recording).order_by("id").values_list("recording_id", "vector")
    ):
        latest[rec_id] = vector
    if not latest:
        return []
    ids = list(latest)
    matrix = np.asarray([latest[i] for i in ids], dtype=np.float32)
    scores = matrix @ np.asarray(anchor.vector, dtype=np.float32)
    order = np.argsort(-scores, kind="stable")[:k]
    recs = Recording.objects.in_bulk([ids[i] for i in order])
    return [(recs[ids[i]], float(scores[i])) for i in order]
