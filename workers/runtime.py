"""Per-process worker runtime: thread budgets, the torch device, and models loaded once.

Pure of Django settings access at import; functions read settings when called in a worker.
"""
from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

from models.hooks import model_hook

logger = logging.getLogger(__name__)
_models: dict[tuple[str, str, str], object] = {}
_lock = threading.Lock()
#: The queues this worker consumes, noted in its parent at start (prefork children inherit it).
_worker_queues: frozenset[str] = frozenset()


def note_worker_queues(queues) -> None:
    """Remember the queues this worker consumes (called in the worker's parent at ``worker_init``)."""
    global _worker_queues
    _worker_queues = frozenset(queues)


def worker_queues() -> frozenset[str]:
    """The queues noted by :func:`note_worker_queues` (empty outside a worker)."""
    return _worker_queues


def default_numba_cache_dir() -> None:
    """Give numba a writable on-disk cache (``NUMBA_CACHE_DIR``, default /tmp/accentsite-numba) unless one
    is set: it must happen before numba's first import in the process (librosa's kernels load from it)."""
    os.environ.setdefault("NUMBA_CACHE_DIR", "/tmp/accentsite-numba")


def warm_up_enabled() -> bool:
    """Whether a worker warms its runners at start (``WORKER_WARM_UP``, on unless ``0`` / ``false`` / ``off``)."""
    return os.environ.get("WORKER_WARM_UP", "1").strip().lower() not in ("0", "false", "off", "no")


def configure_threads(torch_threads: int | None = None) -> int:
    """Set one BLAS thread and a deliberate torch thread count for this process.

    numpy's OpenBLAS pool and torch's OpenMP pool otherwise fight over the cores (2-3x slower).
    ``torch_threads`` 0/None means ``WORKER_TORCH_THREADS`` or, unset, :func:`default_torch_threads`.
    """
    from threadpoolctl import threadpool_limits

    default_numba_cache_dir()
    threadpool_limits(limits=1, user_api="blas")
    import torch

    if not torch_threads:
        torch_threads = int(os.environ.get("WORKER_TORCH_THREADS") or 0) or default_torch_threads()
    torch.set_num_threads(torch_threads)
    return torch_threads


def default_torch_threads() -> int:
    """One torch thread for a CPU worker; the cores of the process when a GPU does the work.

    A CPU host runs one worker process per core (cpu queue) beside the model worker, so a second
    OpenMP thread only oversubscribes: measured on the project's 2-core machine under other load
    (``bench/``), a 2-thread model forward was 1.6-8x *slower* than a 1-thread one (OpenMP threads
    spin at barriers while another process holds the core). Throughput on CPU comes from
    processes. Set ``WORKER_TORCH_THREADS`` on a host whose only busy process is this worker.
    """
    cores = len(os.sched_getaffinity(0))
    wanted = os.environ.get("WORKER_DEVICE", "auto")
    if wanted.startswith("cuda"):
        return cores
    if wanted == "auto":
        import torch

        if torch.cuda.is_available():
            return cores
    return 1


def cpu_has_bf16() -> bool:
    """The CPU has AMX bf16 tiles, where bf16 autocast pays (about 3x fp32 for the Whisper encoder).

    AVX-512 BF16 alone does not: on such a Xeon without AMX (2026-12-02, one thread) bf16 ran at
    0.6x fp32 for the Whisper encoder, 3x3 conv2d 84 against 146 GFLOP/s, matmul 72 against 128
    (``bench/``), so ``auto`` keeps those CPUs in fp32."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return " amx_bf16" in flags


def use_autocast(loaded) -> bool:
    """Whether forward passes of ``loaded`` run under bf16 autocast (setting ``WORKER_AUTOCAST``).

    ``off``: fp32. ``bf16``: always. ``auto`` (default): on a CUDA device, or on a CPU with native
    bf16 (:func:`cpu_has_bf16`). ``bench/`` measures the speed-up and the agreement of bf16 with
    fp32 predictions on real clips; docs/benchmarks.md has the numbers behind the default.
    """
    from django.conf import settings

    mode = getattr(settings, "WORKER_AUTOCAST", "auto")
    if mode == "bf16":
        return True
    if mode != "auto":
        return False
    dev = str(model_hook(loaded, "device"))
    return dev.startswith("cuda") or (dev == "cpu" and cpu_has_bf16())


#: CPU windows per forward pass when the forward pass runs in bf16. With bf16 on
#: AMX, convolutional nets are fastest in small batches (activations of a big batch spill out of
#: the core's L2): ResNet18-shaped, 4-s windows, one thread, as loaded for inference
#: (models/fold.py), ms per window at batch 1 / 2 / 4 / 16 = 22 / 21 / 25 / 36 (Xeon with AMX); the
#: trained CNN 4.6 / 3.6 / 3.3 / 3.5. In fp32 (a CPU without bf16) big batches win a little
#: instead: ResNet18-shaped 98 / 89 / - / 80 ms at 1 / 2 / 16 (Xeon without AMX, bench/). Recurrent
#: and transformer models want big ones either way: GE2E + head at 1 / 2 / 4 / 16 / 32 = 8.9 / 6.8 /
#: 4.3 / 2.9 / 2.8, accent-embed 7.6 / 5.4 / 4.0 / 2.9 / 2.9.
#: Each family's own size is its registry entry's ``cpu_batch_size`` (models/registry.py).
CPU_BATCH_SIZE_DEFAULT = 16
GPU_BATCH_SIZE = 64


def default_batch_size(loaded) -> int:
    """Windows per forward pass when the job does not say: ``WORKER_BATCH_SIZE``, else on a GPU 64,
    on a CPU the family's ``cpu_batch_size`` (models/registry.py) when it runs in bf16, else 16
    (measured, ``bench/``)."""
    from django.conf import settings

    from models.registry import FAMILIES

    configured = int(getattr(settings, "WORKER_BATCH_SIZE", 0) or 0)
    if configured:
        return configured
    if str(model_hook(loaded, "device")).startswith("cuda"):
        return GPU_BATCH_SIZE
    family = getattr(getattr(loaded, "spec", None), "family", None)
    if not use_autocast(loaded):
        return CPU_BATCH_SIZE_DEFAULT
    return getattr(FAMILIES.get(family), "cpu_batch_size", None) or CPU_BATCH_SIZE_DEFAULT


def window_params(loaded, params: dict | None = None) -> dict:
    """``window_s`` / ``hop_s`` for an inference call: the job's when it sets them, else the model's
    window with ``INFERENCE_OVERLAP`` (default 0: windows touch, no overlap).

    Overlap costs forward passes in proportion and bought nothing here: on the accent-mini test
    split (595 clips), accent-native at hop 2 s (no overlap) vs 1 s (50 %) gave balanced accuracy
    0.853 vs 0.853 (SAA 0.808 vs 0.794) at 1.6-1.8x the speed (docs/benchmarks.md, notes).
    """
    from django.conf import settings

    params = params or {}
    window_s = float(params.get("window_s") or loaded.spec.window_s)
    overlap = float(getattr(settings, "INFERENCE_OVERLAP", 0.0))
    hop_s = float(params.get("hop_s") or max(window_s * (1.0 - overlap), 0.01))
    return {"window_s": window_s, "hop_s": hop_s}


def min_speech_s(loaded, params: dict | None = None) -> float:
    """The least speech (seconds, by VAD) a recording needs for a classify answer: the job's
    ``min_speech_s`` when it sets one, else the model's (``spoken-words``: 0.1 s, a single word), else 1 s."""
    params = params or {}
    return float(params.get("min_speech_s", loaded.spec.extra.get("min_speech_s", 1.0)))


def device() -> str:
    """The torch device this worker runs models on: ``WORKER_DEVICE`` or CUDA when present."""
    from django.conf import settings

    wanted = settings.WORKER_DEVICE
    if wanted != "auto":
        return wanted
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


class ModelUnavailable(Exception):
    """The registered model cannot be loaded as registered (file missing, or other weights in it)."""


def load_model(model_version) -> object:
    """The ``LoadedModel`` for a ``ModelVersion``, loaded once per process and kept.

    Raises :class:`ModelUnavailable` when the checkpoint is missing or its sha256 is not the
    registered one: results must never carry a version and hash the weights did not have."""
    from django.conf import settings

    key = (model_version.name, model_version.version, model_version.sha256)
    with _lock:
        if key not in _models:
            from models.checkpoint import load_checkpoint, load_speaker_encoder

            dev = device()
            label = f"{model_version.name}@{model_version.version}"
            if model_version.checkpoint.startswith("package:"):  # the pretrained encoder a package ships
                loaded = load_speaker_encoder(device=dev)
            else:
                from models.checkpoint import CheckpointRefused

                try:
                    path = _checkpoint_path(model_version.checkpoint, Path(settings.MODELS_DIR))
                    # hashed before unpickling: other weights than the registered ones are never loaded
                    loaded = load_checkpoint(path, device=dev, expected_sha256=model_version.sha256)
                except FileNotFoundError as exc:
                    raise ModelUnavailable(f"The checkpoint of {label} is missing: {exc}.") from exc
                except CheckpointRefused as exc:
                    if model_version.sha256 and "is not the registered" in str(exc):
                        raise ModelUnavailable(
                            f"The checkpoint of {label} ({model_version.checkpoint}) now holds other weights "
                            f"({exc}); run the job with the version registered for the current file.") from exc
                    raise ModelUnavailable(f"The checkpoint of {label} was refused: {exc}") from exc
                attach = model_hook(loaded.model, "attach_encoder")
                if attach is not None:  # whisper_probe: its encoder is the Whisper folder, not the checkpoint
                    from models.whisper_encoder import WhisperModelError

                    try:
                        attach()
                    except WhisperModelError as exc:
                        raise ModelUnavailable(f"{label} needs its Whisper encoder: {exc}") from exc
                choose = model_hook(loaded.model, "use_engine")
                if choose is not None:  # whisper_probe: CTranslate2's int8 encoder on a CPU where the probe allows it
                    import torch

                    # where bf16 autocast pays (CUDA, an AMX CPU) the torch encoder is the faster one
                    wanted = "torch" if settings.WHISPER_PROBE_ENGINE == "torch" or use_autocast(loaded) else "auto"
                    engine = choose(wanted, compute_type=settings.WHISPER_PROBE_COMPUTE_TYPE, threads=torch.get_num_threads())
                    logger.info("model %s runs its Whisper encoder on %s", label, engine)
                if model_version.sha256 and loaded.sha256 != model_version.sha256:
                    raise ModelUnavailable(
                        f"The checkpoint of {label} ({model_version.checkpoint}) now holds other weights "
                        f"(sha256 {loaded.sha256[:12]}..., registered {model_version.sha256[:12]}...); "
                        "run the job with the version registered for the current file.")
            _models[key] = loaded
            logger.info("loaded model %s on %s", label, dev)
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


def whisper_model_problem() -> str:
    """Why the configured Whisper model (``WHISPER_MODEL_DIR``, sha256 ``WHISPER_MODEL_SHA256``) cannot
    be used, or ``""``. Workers check it when they start and the readiness probe reports it, so a
    missing or corrupt model is named there instead of failing inside a job. The sha256 is
    computed once per process (about 0.3 s for Whisper base)."""
    from django.conf import settings

    from models.whisper_encoder import WhisperModelError, check_model_dir

    key = (settings.WHISPER_MODEL_DIR, settings.WHISPER_MODEL_SHA256)
    if key not in _whisper_checked:
        try:
            check_model_dir(settings.WHISPER_MODEL_DIR, settings.WHISPER_MODEL_SHA256 or None)
            _whisper_checked[key] = ""
        except WhisperModelError as exc:
            return str(exc)  # not cached: a model installed later is found by the next check
    return _whisper_checked[key]


_whisper_checked: dict[tuple[str, str], str] = {}
def whisper_device() -> str:
    """Where faster-whisper runs: ``WORKER_DEVICE``, or under ``auto`` CUDA when CTranslate2 sees a
    GPU (asked of CTranslate2, so torch is not imported for it), else the CPU."""
    from django.conf import settings

    wanted = settings.WORKER_DEVICE
    if wanted != "auto":
        return wanted
    import ctranslate2

    return "cuda" if ctranslate2.get_cuda_device_count() > 0 else "cpu"


def load_whisper():
    """The process's faster-whisper engine for ``WHISPER_MODEL_DIR`` (loaded once, hash checked
    against ``WHISPER_MODEL_SHA256``); raises ``whisper_lang.WhisperError`` saying why it cannot be.

    CPU threads: ``WORKER_TORCH_THREADS`` or :func:`default_torch_threads` (one on a CPU host, for
    the reason given there); compute type ``WHISPER_COMPUTE_TYPE`` (auto: int8 on CPU, float16 on CUDA)."""
    from django.conf import settings

    from workers.pipeline.whisper_lang import load_engine

    dev = whisper_device()
    threads = int(os.environ.get("WORKER_TORCH_THREADS") or 0) or (len(os.sched_getaffinity(0)) if dev.startswith("cuda") else 1)
    return load_engine(settings.WHISPER_MODEL_DIR, device=dev, compute_type=settings.WHISPER_COMPUTE_TYPE,
                       expected_sha256=settings.WHISPER_MODEL_SHA256, cpu_threads=threads)
