"""Training from labelled recordings in the database, and registration of what was trained."""
from __future__ import annotations

import functools
import json
import logging
import os
import subprocess
import tempfile
from pathlib import Path

from django.conf import settings
from django.core.files import File
from django.core.files.storage import default_storage
from django.db import IntegrityError, transaction
from django.utils import timezone

from recognition.errors import ServiceError, scrub_paths
from recognition.models import Job, ModelVersion, Recording
from recognition.services.models import model_version_from_sidecar
from recognition.services.recordings import batch_labels

logger = logging.getLogger(__name__)


@functools.lru_cache(maxsize=1)
def code_version() -> str:
    """The git commit the code runs from, when known: ``ACCENTSITE_CODE_VERSION`` (baked into the image
    at build time: ``docker build --build-arg GIT_COMMIT=$(git rev-parse --short=12 HEAD)``, where no
    ``.git`` exists), else asked of git once per process."""
    baked = os.environ.get("ACCENTSITE_CODE_VERSION", "").strip()
    if baked:
        return baked
    try:
        out = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=settings.BASE_DIR, capture_output=True,
                             text=True, timeout=5, check=False)
        return out.stdout.strip() if out.returncode == 0 else ""
    except (OSError, subprocess.TimeoutExpired):
        return ""


def training_items(recordings: list[Recording], *, label_map: dict[str, str] | None = None, batch=None,
                   corrections: dict[int, str] | None = None) -> list:
    """``TrainItem``s for labelled recordings: decoded from storage by key when the trainer asks.

    With ``batch``, each recording's label and speaker are the ones that batch gave it
    (``BatchMember``), not whatever another upload of the same file said; ``corrections``
    (``{recording id: label}``, from reviews) win over both; ``label_map`` then applies."""
    from workers.pipeline.audio import load_audio
    from workers.pipeline.data import TrainItem

    def loader(rec: Recording):
        def load():
            with rec.file.storage.open(rec.file.name, "rb") as fh:
                return load_audio(fh, settings.AUDIO_SAMPLE_RATE, format_hint=rec.format).samples
        return load

    label_map, corrections = label_map or {}, corrections or {}
    own = batch_labels(batch=batch) if batch is not None else {}
    items = []
    for r in recordings:
        label, speaker = own.get(r.pk, (r.label, r.speaker))
        label = corrections.get(r.pk) or label
        if label:
            items.append(TrainItem(loader(r), label_map.get(label, label), speaker or f"recording-{r.pk}",
                                   corpus=str(r.metadata.get("corpus", "")), key=f"recording-{r.sha256}",
                                   transcript=r.transcript))
    if len({i.label for i in items}) < 2:
        raise ServiceError("not_enough_labels", "Training needs labelled recordings of at least two classes.")
    return items


class TrainingCancelled(ServiceError):
    """The train job was cancelled: training stops at its next progress step and registers nothing."""

    def __init__(self) -> None:
        super().__init__("cancelled", "Cancelled by request.", status_code=409)


def train_job_run(*, job: Job, progress=None) -> ModelVersion:
    """Train on a job's labelled recordings, store the checkpoint in storage, register it.

    At most one model version per train job: a job that already registered one (a redelivered
    message) returns it without training again, and the ``train_job`` one-to-one column refuses a
    second row. The model is private to the job's owner. The checkpoint is written to a temporary
    file named by the code, then into storage under ``models/<owner>/<name>/<version>.pt`` through
    the storage API; ``name`` is a checked slug (``model_name_check``), never a path."""
    from recognition.services.jobs import model_name_check
    from workers.pipeline.training import TrainConfig, train_model

    existing = ModelVersion.objects.filter(train_job=job).first()
    if existing is not None:
        return existing
    params = job.params
    recordings = list(job.recordings.order_by("id"))
    from recognition.services.labels import label_corrections

    corrections = label_corrections(recordings=recordings, batch=job.batch)
    items = training_items(recordings, label_map=params.get("label_map"), batch=job.batch, corrections=corrections)
    from models.registry import default_train_family

    family = params.get("family") or default_train_family()
    name = model_name_check(params.get("name") or f"batch-{job.batch_id or job.pk}-{family}",
                            owner=job.owner)
    version = timezone.now().strftime("%Y%m%d-%H%M%S")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "checkpoint.pt"
        config = TrainConfig(
            name=name, family=family, items=items, version=version, out=str(out),
            epochs=params.get("epochs", 30), deploy_prior=params.get("deploy_prior"), seed=params.get("seed", 0),
            hparams=params.get("hparams") or {}, window_s=params.get("window_s"), hop_s=params.get("hop_s"), n_boot=200,
            cache_dir=str(Path(tempfile.gettempdir()) / "accentsite-cache"),
            robustness=train_robustness_conditions(params.get("robustness")),
        )
        train_model(config, progress=progress)
        with open(out, "rb") as fh:
            key = default_storage.save(f"models/{job.owner_id}/{name}/{version}.pt", File(fh))
        meta = json.loads(out.with_suffix(".json").read_text())
    try:
        with transaction.atomic():
            # a cancel that came while the checkpoint was written still wins: nothing is registered
            if Job.objects.select_for_update().filter(pk=job.pk, status=Job.Status.CANCELLED).exists():
                raise TrainingCancelled()
            mv = model_version_from_sidecar(meta, checkpoint=f"storage:{key}", code_version=code_version(),
                                            owner=job.owner, train_job=job)
    except TrainingCancelled:
        default_storage.delete(key)
        raise
    except IntegrityError:  # another delivery of this job registered first: keep that one
        default_storage.delete(key)
        mv = ModelVersion.objects.filter(train_job=job).first()
        if mv is None:
            raise
    logger.info("trained %s", mv, extra={"job_id": job.pk})
    return mv


def train_job_stopped(*, job_id: int, chunk_id: int) -> None:
    """A cancelled training stopped: its chunk closes as cancelled (the job already is)."""
    from recognition.models import JobChunk

    JobChunk.objects.filter(pk=chunk_id, job_id=job_id).update(status=JobChunk.Status.CANCELLED, finished_at=timezone.now())
    logger.info("training stopped: the job was cancelled", extra={"job_id": job_id})


def train_job_progress(*, job_id: int, done: int, total: int) -> None:
    Job.objects.filter(pk=job_id, status=Job.Status.RUNNING).update(done=done, total=total)


def train_job_finish(*, job_id: int, model_version: ModelVersion | None, error: str = "") -> Job:
    error = scrub_paths(error)  # built from exceptions: no server path reaches the job page
    with transaction.atomic():
        job = Job.objects.select_for_update().get(pk=job_id)
        if job.is_terminal:
            return job
        job.params = dict(job.params, trained_model=str(model_version) if model_version else None)
        if model_version is not None:
            job.mark_finished(Job.Status.SUCCEEDED)
            job.done = job.total
        else:
            job.mark_finished(Job.Status.FAILED, error=error)
        job.save()
        job.chunks.update(status="done" if model_version else "failed", finished_at=timezone.now(), error=error)
    return job


def train_robustness_conditions(value: bool | list | None) -> list[str] | None:
    """A train job's ``robustness`` param as condition names: ``true`` is the default set, a list names
    them (clean always first), ``false`` or absent is none."""
    if not value:
        return None
    from workers.pipeline.degrade import parse_conditions

    return parse_conditions(None if value is True else [str(n) for n in value])
