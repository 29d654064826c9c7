"""Per-process worker runtime: thread budgets, the torch device, and models loaded once.

Pure of Django settings access at import; functions read settings when called in a worker.
"""
from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

logger = logging.getLogger(__name__)
_models: dict[tuple[str, str, str], object] = {}
_lock = threading.Lock()


def configure_threads(torch_threads: int | None = None) -> int:
    """Set one BLAS thread and a deliberate torch thread count for this process.

    numpy's OpenBLAS pool and torch's OpenMP pool otherwise fight over the cores (2-3x slower).
    ``torch_threads`` 0/None means ``WORKER_TORCH_THREADS`` or, unset, the cores this process may use.
    """
    from threadpoolctl import threadpool_limits

    os.environ.setdefault("NUMBA_CACHE_DIR", "/tmp/accentsite-numba")
    threadpool_limits(limits=1, user_api="blas")
    import torch

    if not torch_threads:
        torch_threads = int(os.environ.get("WORKER_TORCH_THREADS") or 0) or len(os.sched_getaffinity(0))
    torch.set_num_threads(torch_threads)
    return torch_threads


def device() -> str:
    """The torch device this worker runs models on: ``WORKER_DEVICE`` or CUDA when present."""
    from django.conf import settings

    wanted = settings.WORKER_DEVICE
    if wanted != "auto":
        return wanted
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def load_model(model_version) -> object:
    """The ``LoadedModel`` for a ``ModelVersion``, loaded once per process and kept."""
    from django.conf import settings

    key = (model_version.name, model_version.version, model_version.sha256)
    with _lock:
        if key not in _models:
            from models.checkpoint import load_checkpoint, load_speaker_encoder

            dev = device()
            if model_version.family == "speaker_encoder":
                _models[key] = load_speaker_encoder(device=dev)
            else:
                _models[key] = load_checkpoint(_checkpoint_path(model_version.checkpoint, Path(settings.MODELS_DIR)), device=dev)
            logger.info("loaded model %s@%s on %s", model_version.name, model_version.version, dev)
        return _models[key]


def _checkpoint_path(checkpoint: str, models_dir: Path) -> Path:
    """Shipped checkpoints live in models/checkpoints; trained ones in storage (cached locally)."""
    if not checkpoint.startswith("storage:"):
        return models_dir / checkpoint
    from django.core.files.storage import default_storage

    key = checkpoint.removeprefix("storage:")
    cache = Path(os.environ.get("ACCENTSITE_MODEL_CACHE", "/tmp/accentsite-models")) / key.replace("/", "_")
    if not cache.exists():
        cache.parent.mkdir(parents=True, exist_ok=True)
        with default_storage.open(key, "rb") as src, open(cache.with_suffix(".part"), "wb") as dst:
            dst.write(src.read())
        cache.with_suffix(".part").rename(cache)
    return cache
