"""The model registry: register trained versions, pick defaults, resolve ``name[@version]``."""
from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Case, When

from recognition.errors import NotFound, ServiceError
from recognition.models import ModelVersion

logger = logging.getLogger(__name__)

SPEAKER_ENCODER = {"name": "speaker-encoder", "version": "resemblyzer-0.1.4", "family": "speaker_encoder", "task": "embed"}


def model_version_register(
    *,
    name: str,
    version: str,
    family: str,
    task: str,
    labels: list[str],
    checkpoint: str,
    sha256: str,
    metrics: dict[str, Any] | None = None,
    calibration: dict[str, Any] | None = None,
    hyperparameters: dict[str, Any] | None = None,
    training_data: dict[str, Any] | None = None,
    code_version: str = "",
    make_default: bool = False,
    owner=None,
    train_job=None,
) -> ModelVersion:
    """Create or update the row for ``name@version``; optionally make it its task's default.

    ``owner``: the user who trained it (private to them); ``None`` for shipped, public models.
    ``train_job``: the job that trained it (a database constraint allows one version per job)."""
    with transaction.atomic():
        mv, _ = ModelVersion.objects.update_or_create(
            name=name,
            version=version,
            owner=owner,  # names are per owner: two users may each have a "my-model"
            defaults=dict(
                family=family, task=task, labels=list(labels), checkpoint=checkpoint, sha256=sha256,
                metrics=metrics or {}, calibration=calibration or {}, hyperparameters=hyperparameters or {},
                training_data=training_data or {}, code_version=code_version, train_job=train_job,
            ),
        )
        if make_default or not ModelVersion.objects.filter(name=name, owner=owner, is_default=True).exclude(pk=mv.pk).exists():
            model_version_make_default(model_version=mv)
    return mv


def model_version_make_default(*, model_version: ModelVersion) -> ModelVersion:
    """Make this version the one ``name`` (without ``@version``) resolves to."""
    with transaction.atomic():
        ModelVersion.objects.filter(name=model_version.name, owner=model_version.owner_id).exclude(
            pk=model_version.pk).update(is_default=False)
        model_version.is_default = True
        model_version.save(update_fields=["is_default"])
    return model_version


def shipped_models_register(models_dir: Path | None = None) -> list[ModelVersion]:
    """Register every checkpoint shipped under ``models/checkpoints`` (its ``.json`` sidecar) and
    the pretrained speaker encoder, so a fresh install has working defaults. Idempotent."""
    models_dir = Path(models_dir or settings.MODELS_DIR)
    registered = []
    for sidecar in sorted(models_dir.glob("*.json")):
        meta = json.loads(sidecar.read_text())
        spec = meta.get("spec") if isinstance(meta, dict) else None
        if not spec:  # e.g. the ``<name>.loco.json`` leave-one-corpus-out reports beside a checkpoint
            continue
        checkpoint = sidecar.with_suffix(".pt")
        if not checkpoint.exists():
            logger.warning("sidecar %s has no checkpoint beside it; skipped", sidecar.name)
            continue
        existing = ModelVersion.objects.filter(name=spec["name"], version=spec["version"], owner__isnull=True).first()
        if existing is not None and existing.sha256 == meta.get("sha256"):
            if existing.checkpoint != checkpoint.name:  # the same weights moved to another file name
                existing.checkpoint = checkpoint.name
                existing.save(update_fields=["checkpoint"])
            registered.append(existing)
            continue
        # a newer shipped version replaces the file the current default was loaded from: it becomes
        # the default (the old row stays for its history; its checkpoint no longer matches its sha256)
        default = ModelVersion.objects.filter(name=spec["name"], owner__isnull=True, is_default=True).first()
        moved_on = default is not None and default.checkpoint == checkpoint.name and default.version != spec["version"]
        registered.append(model_version_from_sidecar(meta, checkpoint=checkpoint.name, make_default=moved_on))
    if not ModelVersion.objects.filter(name=SPEAKER_ENCODER["name"], owner__isnull=True).exists():
        import resemblyzer

        weights = Path(resemblyzer.__file__).parent / "pretrained.pt"
        registered.append(
            model_version_register(
                **SPEAKER_ENCODER, labels=[], checkpoint="package:resemblyzer",
                sha256=hashlib.sha256(weights.read_bytes()).hexdigest() if weights.exists() else "",
                hyperparameters={"embedding_dim": 256, "note": "GE2E encoder shipped inside the resemblyzer package"},
            )
        )
    return registered


def model_version_from_sidecar(meta: dict[str, Any], *, checkpoint: str, make_default: bool = False,
                               code_version: str = "", owner=None, train_job=None) -> ModelVersion:
    """Register a checkpoint from the ``.json`` sidecar that ``models.checkpoint.save_checkpoint`` writes."""
    spec = meta["spec"]
    return model_version_register(
        name=spec["name"], version=spec["version"], family=spec["family"], task=spec["task"],
        labels=list(spec.get("labels") or []), checkpoint=checkpoint, sha256=meta.get("sha256", ""),
        metrics=meta.get("metrics"), calibration=meta.get("calibration"), hyperparameters=meta.get("hparams"),
        training_data=meta.get("training_data"), code_version=code_version or meta.get("code_version", ""),
        make_default=make_default or bool(meta.get("default", False)), owner=owner, train_job=train_job,
    )


def model_resolve(spec: str | None, *, task: str, user=None) -> ModelVersion:
    """Find ``name`` (its default version) or ``name@version``; the task's default when ``None``.

    Only versions ``user`` may use (shipped ones and their own, :func:`selectors.model_list`): another
    user's private model is a 404 ``unknown_model``, the same answer as a name nobody registered.
    ``user=None`` is a trusted caller (the shell, ``manage.py classify``). The default, when no
    model is named, is always a shipped (public) one or the user's own."""
    from recognition.selectors import model_list

    # a name is the user's own model first, then a shipped one (users with the model permission see
    # other users' models too: theirs come last)
    qs = model_list(user=user).filter(task=task).order_by(
        Case(When(owner=user, then=0), When(owner__isnull=True, then=1), default=2) if user is not None and user.pk
        else Case(When(owner__isnull=True, then=0), default=1), "-created_at")
    if not spec:
        default_name = settings.DEFAULT_MODELS.get(task)
        public = qs.filter(owner__isnull=True)
        mv = (public.filter(name=default_name, is_default=True).first() or qs.filter(name=default_name, is_default=True).first()
              or public.filter(is_default=True).first() or qs.filter(is_default=True).first())
        if mv is None:
            raise ServiceError("no_model", f"No {task} model is registered; train one with 'manage.py train'.")
        return mv
    if not isinstance(spec, str):
        raise ServiceError("invalid_params", "'model' must be a string: name or name@version.")
    name, _, version = spec.partition("@")
    mv = qs.filter(name=name, version=version).first() if version else qs.filter(name=name, is_default=True).first()
    if mv is None:
        known = sorted(set(qs.values_list("name", flat=True)))
        raise NotFound("unknown_model", f"No {task} model '{spec[:160]}'. Known: {known}.")
    problem = model_version_problem(mv)
    if problem:
        raise ServiceError("model_unavailable", problem, status_code=409)
    return mv


_sha_cache: dict[tuple[str, int, int], str] = {}


def model_version_problem(mv: ModelVersion) -> str:
    """Why ``mv`` cannot run here, or ``""``: a shipped checkpoint file that is missing, or that now
    holds other weights than the ones registered (a newer shipped version took over the file).

    Trained checkpoints in storage and packaged encoders are checked by the worker when it loads them.
    The file's hash is cached by (path, size, mtime), so a check costs a ``stat`` after the first."""
    if not mv.checkpoint or mv.checkpoint.startswith(("storage:", "package:")):
        return ""
    path = Path(settings.MODELS_DIR) / mv.checkpoint
    try:
        st = path.stat()
    except FileNotFoundError:
        return f"The checkpoint file of {mv.name}@{mv.version} ({mv.checkpoint}) is missing from {settings.MODELS_DIR}."
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key not in _sha_cache:
        _sha_cache[key] = hashlib.sha256(path.read_bytes()).hexdigest()
    if mv.sha256 and _sha_cache[key] != mv.sha256:
        newer = (ModelVersion.objects.filter(name=mv.name, checkpoint=mv.checkpoint, sha256=_sha_cache[key])
                 .values_list("version", flat=True).first())
        hint = f" Use {mv.name}@{newer}, the version it holds now." if newer else ""
        return (f"{mv.name}@{mv.version} is no longer installed: {mv.checkpoint} now holds other weights "
                f"(sha256 {_sha_cache[key][:12]}..., registered {mv.sha256[:12]}...).{hint}")
    return ""
