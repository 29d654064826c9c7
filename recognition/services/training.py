"""Training from labelled recordings in the database, and registration of what was trained."""
from __future__ import annotations

import json
import logging
import subprocess
import tempfile
from pathlib import Path

from django.conf import settings
from django.core.files import File
from django.core.files.storage import default_storage
from django.db import transaction
from django.utils import timezone

from recognition.errors import ServiceError
from recognition.models import Job, ModelVersion, Recording
from recognition.services.models import model_version_from_sidecar

logger = logging.getLogger(__name__)


def code_version() -> str:
    """The git commit the code runs from, when known."""
    try:
        out = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=settings.BASE_DIR, capture_output=True,
                             text=True, timeout=5, check=False)
        return out.stdout.strip() if out.returncode == 0 else ""
    except (OSError, subprocess.TimeoutExpired):
        return ""


def training_items(recordings: list[Recording], *, label_map: dict[str, str] | None = None,
                   corrections: dict[int, str] | None = None) -> list:
    """``TrainItem``s for labelled recordings: decoded from storage by key when the trainer asks.

    ``corrections`` (``{recording id: label}``, from reviews) win over the recordings' labels;
    ``label_map`` then applies to both.
    """
    from workers.pipeline.audio import load_audio
    from workers.pipeline.data import TrainItem

    def loader(rec: Recording):
        def load():
            with rec.file.storage.open(rec.file.name, "rb") as fh:
                return load_audio(fh, settings.AUDIO_SAMPLE_RATE, format_hint=rec.format).samples
        return load

    label_map, corrections = label_map or {}, corrections or {}
    labelled = [(r, corrections.get(r.pk) or r.label) for r in recordings]
    items = [
        TrainItem(loader(r), label_map.get(label, label), r.speaker or f"recording-{r.pk}",
                  corpus=str(r.metadata.get("corpus", "")), key=f"recording-{r.sha256}", transcript=r.transcript)
        for r, label in labelled if label
    ]
    if len({i.label for i in items}) < 2:
        raise ServiceError("not_enough_labels", "Training needs labelled recordings of at least two classes.")
    return items


def train_job_run(*, job: Job, progress=None) -> ModelVersion:
    """Train on a job's labelled recordings, store the checkpoint in storage, register it."""
    from workers.pipeline.training import TrainConfig, train_model

    params = job.params
    recordings = list(job.recordings.order_by("id"))
    from recognition.services.labels import label_corrections

    corrections = label_corrections(recordings=recordings, batch=job.batch)
    items = training_items(recordings, label_map=params.get("label_map"), corrections=corrections)
    name = params.get("name") or f"batch-{job.batch_id or job.pk}-{params.get('family', 'speaker_head')}"
    version = timezone.now().strftime("%Y%m%d-%H%M%S")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / f"{name}-{version}.pt"
        config = TrainConfig(
            name=name, family=params.get("family", "speaker_head"), items=items, version=version, out=str(out),
            epochs=params.get("epochs", 30), deploy_prior=params.get("deploy_prior"), seed=params.get("seed", 0),
            hparams=params.get("hparams") or {}, window_s=params.get("window_s"), hop_s=params.get("hop_s"), n_boot=200,
            cache_dir=str(Path(tempfile.gettempdir()) / "accentsite-cache"),
        )
        train_model(config, progress=progress)
        with open(out, "rb") as fh:
            key = default_storage.save(f"models/{name}/{out.name}", File(fh))
        meta = json.loads(out.with_suffix(".json").read_text())
    mv = model_version_from_sidecar(meta, checkpoint=f"storage:{key}", code_version=code_version())
    logger.info("trained %s", mv, extra={"job_id": job.pk})
    return mv


def train_job_progress(*, job_id: int, done: int, total: int) -> None:
    Job.objects.filter(pk=job_id, status=Job.Status.RUNNING).update(done=done, total=total)


def train_job_finish(*, job_id: int, model_version: ModelVersion | None, error: str = "") -> Job:
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
