"""Job kinds: one declaration per kind says which task runs it, on which queue, in what chunks,
and which parameters it takes. Routing (``services.jobs``, Celery's ``task_routes``), the
operations views and commands (``recognition.ops``), the health checks and /metrics all read
this registry; nothing else lists queues or maps kinds to tasks.

Adding a kind is one declaration, one runner and one test (docs/architecture.md):

1. declare it here::

       register(JobKind(
           name="transcribe", stores="transcript", task="workers.tasks.run_whisper_chunk", queue="gpu",
           interactive=True, chunk_size=4,              # stores: what pages and exports show (JobKind.stores)
           params={"language": str, "chunk_size": int},
           param_help={"language": "force it"},   # the API's help text (params_help)
           validate=_check_transcribe,            # optional: checks beyond the types
       ))

   and add the value to ``recognition.models.Job.Kind`` and run ``manage.py makemigrations`` (the
   choices live in the database schema). ``tests/recognition/test_jobkinds.py`` fails until the
   registry and ``Job.Kind`` agree;
2. write its runner in ``workers/runners.py`` (how it processes one recording, one entry in ``RUNNERS``);
3. a test that runs a chunk of it.

What a job of the kind ends with is declared here too (``evaluates``, ``makes_model``): no code
outside this module tests a kind's name.

This module imports no Django models, so settings and the Celery app may import it.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

# Queues by workload, each with its reason (shown by the admin Workers page and the docs).
QUEUES: dict[str, str] = {
    "cpu": "decoding, parselmouth/librosa feature extraction and housekeeping: many prefork processes, one per core",
    "gpu": "model inference and training: one process per GPU (prefork, concurrency 1: CUDA starts in the child); "
           "on a machine without a GPU the same queue runs on CPU with deliberate thread settings",
    "interactive": "what a person waits for: /predict, and model jobs of at most INTERACTIVE_MAX_RECORDINGS recordings "
                   "whose estimated work (audio seconds x the kind's cost) is at most INTERACTIVE_MAX_WORK_S; served by "
                   "its own worker, so it is never stuck behind a 10,000-file batch or a 2-hour transcription; also "
                   "planning a job of more than JOB_PLAN_INLINE_MAX recordings (one short task that writes and sends its chunks)",
}
# Queues that must have a live consumer for the service to be ready: interactive has a worker of its
# own in every deployment we ship (make run, docker-compose), so a missing one is a readiness failure.
REQUIRED_QUEUES: tuple[str, ...] = ("cpu", "gpu", "interactive")
MAINTENANCE_QUEUE = "cpu"  # workers.maintenance.* (beat): a few database queries each
#: tasks that are not chunks of a job kind: /predict's one file a person waits for
#: and the planning of a large job (``services.planning``): a short task that must never wait behind batches
PLAN_TASK = "workers.tasks.plan_job"
PLAN_QUEUE = "interactive"
OTHER_ROUTES: dict[str, str] = {"workers.tasks.run_predict": "interactive", PLAN_TASK: PLAN_QUEUE}

ParamTypes = dict[str, type | tuple[type, ...]]


class ParamsError(ValueError):
    """Parameters a job kind does not accept; ``message`` is for the person who sent them."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class JobKind:
    """What a job kind is to the system.

    ``task``: the Celery task (dotted name) that runs one chunk, called with the ``JobChunk`` id.
    ``queue``: where its chunks go; with ``interactive``, jobs of at most
    ``INTERACTIVE_MAX_RECORDINGS`` recordings go to the ``interactive`` queue instead.
    ``chunk_size``: recordings per chunk (``settings.JOB_CHUNK_SIZE[name]`` and the job's own
    ``chunk_size`` parameter override it); ``None``: the whole job is one chunk.
    ``params``: accepted parameter names and their JSON types; ``validate`` checks values further
    and raises :class:`ParamsError`.
    ``model_task``: the model registry task (``classify`` / ``embed``) whose model the job runs;
    ``None`` for kinds that take no ``model``.
    ``needs_recordings``: a job of this kind without recordings is refused.
    """

    name: str
    task: str
    queue: str
    params: ParamTypes
    chunk_size: int | None = 16
    interactive: bool = False
    model_task: str | None = None
    needs_recordings: bool = True
    #: the admin's change-list action on selected batches / recordings ("{what}" becomes "batches" or
    #: "recordings"); kinds with a ``model_task`` also get "... with a chosen model..."; None: no action
    admin_action: str | None = None
    #: without a ``chunk_size`` parameter, cut chunks by audio seconds (``JOB_CHUNK_AUDIO_S``, at most
    #: ``JOB_CHUNK_MAX_RECORDINGS`` recordings): a chunk of two-hour files then takes as long as one of clips
    chunk_by_audio: bool = False
    #: worker seconds per audio second on one CPU thread (docs/benchmarks.md): routes small jobs to
    #: ``interactive`` by work, not by recording count, and scales a chunk's time limit to its audio
    cost_per_audio_s: float = 0.03
    #: audio seconds per chunk when cut by audio (``None``: ``JOB_CHUNK_AUDIO_S``)
    chunk_audio_s: float | None = None
    #: the job ends with an evaluation report over its recordings' true labels (``services.reports``)
    evaluates: bool = False
    #: the job's outcome is a model (``train``): it names the model at submission (a default from the
    #: batch and family, checked unique), runs as one task over all its recordings and fails or
    #: succeeds as a whole (a lost worker fails the job, not recordings)
    makes_model: bool = False
    #: what one recording's result holds (``prediction``, ``embedding``, ``features``, ``language``,
    #: ``transcript``; ``model`` for a job whose outcome is a model): pages, exports and comparisons
    #: choose their sections by it (:func:`storing`), never by the kind's name
    stores: str = ""
    validate: Callable[[dict[str, Any]], None] | None = field(default=None, compare=False)
    #: a note per parameter for the API's help text (:func:`params_help`); ``{extractors}``,
    #: ``{default_extractors}`` and ``{families}`` become the registries' names
    param_help: dict[str, str] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        if self.queue not in QUEUES:
            raise ValueError(f"job kind {self.name!r}: unknown queue {self.queue!r}; declare it in QUEUES")

    @property
    def task_function(self) -> str:
        return self.task.rsplit(".", 1)[-1]


KINDS: dict[str, JobKind] = {}


def register(kind: JobKind) -> JobKind:
    if kind.name in KINDS:
        raise ValueError(f"job kind {kind.name!r} is declared twice")
    KINDS[kind.name] = kind
    return kind


def get(name: str) -> JobKind:
    return KINDS[name]


def storing(what: str) -> tuple[str, ...]:
    """The names of the kinds whose results hold ``what`` (``JobKind.stores``), e.g. for a query's ``kind__in``."""
    return tuple(name for name, kind in KINDS.items() if kind.stores == what)


def stores(name: str) -> str:
    """What a result of kind ``name`` holds (``JobKind.stores``); ``""`` for an unknown kind."""
    kind = KINDS.get(name)
    return kind.stores if kind else ""


# --- Routing -----------------------------------------------------------------------------------

AUTO_TRANSCRIPT_CHUNK_SIZE = 4


def chunk_size_for(name: str, params: dict[str, Any]) -> int | None:
    """Recordings per chunk for a new job; ``None``: one chunk for the whole job."""
    from django.conf import settings

    kind = get(name)
    if kind.chunk_size is None:
        return None
    if name == "classify" and params.get("transcript") == "auto" and not params.get("chunk_size"):
        return AUTO_TRANSCRIPT_CHUNK_SIZE  # Whisper may transcribe each recording alone first: keep chunks short
    return params.get("chunk_size") or settings.JOB_CHUNK_SIZE.get(name, kind.chunk_size)


def queue_for(name: str, total: int, audio_s: float = 0.0) -> str:
    """The queue a job's chunks go to: small jobs a person waits for go to ``interactive``, judged by
    their recordings (``INTERACTIVE_MAX_RECORDINGS``) and their estimated work (``audio_s`` times the
    kind's ``cost_per_audio_s``, at most ``INTERACTIVE_MAX_WORK_S``): a one-recording two-hour job is
    not small."""
    from django.conf import settings

    kind = get(name)
    if (kind.interactive and total <= settings.INTERACTIVE_MAX_RECORDINGS
            and audio_s * kind.cost_per_audio_s <= settings.INTERACTIVE_MAX_WORK_S):
        return "interactive"
    return kind.queue


def time_limits(name: str, audio_s: float) -> tuple[float, float]:
    """``(soft, hard)`` time limits for a chunk of ``audio_s`` seconds: the configured chunk limits, or
    four times the chunk's estimated work where that is longer (a two-hour recording to transcribe
    on a CPU), never past the training limits the broker's visibility timeout is set for."""
    from django.conf import settings

    kind = get(name)
    soft = max(float(settings.CELERY_TASK_SOFT_TIME_LIMIT), 4 * audio_s * kind.cost_per_audio_s)
    soft = min(soft, float(settings.TRAIN_SOFT_TIME_LIMIT_S))
    hard = max(float(settings.CELERY_TASK_TIME_LIMIT), soft + 300)
    return soft, min(hard, float(settings.TRAIN_TIME_LIMIT_S))


def load_task(name: str):
    """The Celery task object that runs chunks of kind ``name`` (imported on first use)."""
    from kombu.utils.imports import symbol_by_name

    return symbol_by_name(get(name).task)


def chunk_task_names() -> frozenset[str]:
    """Tasks whose first argument is a ``JobChunk`` id (their log records carry chunk and job ids)."""
    return frozenset(k.task for k in KINDS.values())


def route_task(name: str, args=None, kwargs=None, options=None, task=None, **_: Any) -> dict | None:
    """Celery router (``CELERY_TASK_ROUTES``): a chunk task's default queue, and housekeeping on
    ``MAINTENANCE_QUEUE``. ``services.jobs`` passes the job's own queue (interactive or not) when it
    sends a chunk, which wins over this default."""
    for kind in KINDS.values():
        if kind.task == name:
            return {"queue": kind.queue}
    if name in OTHER_ROUTES:
        return {"queue": OTHER_ROUTES[name]}
    if name.startswith("workers.maintenance."):
        return {"queue": MAINTENANCE_QUEUE}
    return None


# --- Parameters --------------------------------------------------------------------------------

def validate_params(name: str, params: Any) -> dict[str, Any]:
    """Check a job's parameters against its kind's declaration; raises :class:`ParamsError`."""
    if not isinstance(params, dict):
        raise ParamsError("'params' must be a JSON object.")
    kind = get(name)
    allowed = kind.params
    for key, value in params.items():
        if key not in allowed:
            raise ParamsError(f"Unknown parameter '{key}' for {name} jobs; allowed: {sorted(allowed)}.")
        declared = allowed[key] if isinstance(allowed[key], tuple) else (allowed[key],)
        if isinstance(value, bool) and bool not in declared or not isinstance(value, declared):
            raise ParamsError(f"Parameter '{key}' has the wrong type ({type(value).__name__}).")
    if kind.validate is not None:
        kind.validate(params)
    _check_common(params)
    return params


def params_help() -> str:
    """The API's help text for a job's ``params``, written from the declarations (each kind's parameters
    in order, with their notes) and the extractor and family registries, so it cannot go stale.
    Imports the feature extractors: call it when the text is read (the serializer's help text is lazy)."""
    from models.registry import FAMILIES, TRAINABLE_FAMILIES
    from workers.pipeline.degrade import CONDITIONS
    from workers.pipeline.features import EXTRACTORS, default_extractors

    names = {
        "conditions": ", ".join(CONDITIONS),
        "extractors": ", ".join(EXTRACTORS),
        "default_extractors": "all" if list(EXTRACTORS) == default_extractors()
        else "all but " + ", ".join(n for n in EXTRACTORS if n not in default_extractors()),
        "families": ", ".join(sorted(TRAINABLE_FAMILIES, key=lambda f: not FAMILIES[f].recommended)),
    }
    parts = ["Options of the job's kind (unknown keys are a 400)."]
    for kind in KINDS.values():
        notes = [f"{key} ({kind.param_help[key].format(**names)})" if kind.param_help.get(key) else key for key in kind.params]
        parts.append(f"{kind.name}: {', '.join(notes)}.")
    parts.append("classify's transcript may be 'auto': Whisper transcribes recordings without one for reading models.")
    return " ".join(parts)


def _check_common(params: dict[str, Any]) -> None:
    """Ranges of parameters several kinds share."""
    for key in ("window_s", "hop_s"):
        if key in params and not 0.1 <= params[key] <= 60:
            raise ParamsError(f"'{key}' must be between 0.1 and 60 seconds.")
    if "transcript" in params and len(params["transcript"]) > 20000:
        raise ParamsError("'transcript' is limited to 20,000 characters.")
    if "threshold" in params and not 0 <= params["threshold"] <= 1:
        raise ParamsError("'threshold' must be between 0 and 1.")
    if "chunk_size" in params and not 1 <= params["chunk_size"] <= 1000:
        raise ParamsError("'chunk_size' must be between 1 and 1000.")


def _check_features(params: dict[str, Any]) -> None:
    if "extractors" in params:
        from workers.pipeline.features import EXTRACTORS

        if not all(isinstance(n, str) for n in params["extractors"]):
            raise ParamsError("'extractors' must be a list of extractor names.")
        unknown = [n for n in params["extractors"] if n not in EXTRACTORS]
        if unknown:
            raise ParamsError(f"Unknown extractors {unknown}; available: {sorted(EXTRACTORS)}.")


def _check_train(params: dict[str, Any]) -> None:
    from models.registry import TRAINABLE_FAMILIES

    if "family" in params and params["family"] not in TRAINABLE_FAMILIES:
        raise ParamsError(f"Unknown family '{params['family']}'; use one of {list(TRAINABLE_FAMILIES)}.")
    if "epochs" in params and not 1 <= params["epochs"] <= 1000:
        raise ParamsError("'epochs' must be between 1 and 1000.")
    if isinstance(params.get("robustness"), list):
        from workers.pipeline.degrade import parse_conditions

        try:
            parse_conditions([str(n) for n in params["robustness"]])
        except ValueError as exc:
            raise ParamsError(str(exc)) from exc


def _check_whisper(kind: str) -> Callable[[dict[str, Any]], None]:
    """Language and transcribe jobs: language codes Whisper knows (``languages``, a transcribe job's ``language``),
    a window it can hear, a sane beam."""

    def check(params: dict[str, Any]) -> None:
        from workers.pipeline.whisper_lang import MAX_WINDOW_S, MIN_WINDOW_S, validate_languages

        if kind == "language" and "window_s" in params and not MIN_WINDOW_S < params["window_s"] <= MAX_WINDOW_S:
            raise ParamsError(f"'window_s' must be over {MIN_WINDOW_S:g} and at most {MAX_WINDOW_S:g} seconds.")
        if kind == "language" and params.get("scan_s") is not None and params["scan_s"] < MIN_WINDOW_S:
            raise ParamsError(f"'scan_s' must be at least {MIN_WINDOW_S:g} seconds (or null: the whole recording).")
        if kind == "language" and "min_probability" in params and not 0 <= params["min_probability"] < 1:
            raise ParamsError("'min_probability' must be in [0, 1).")
        if kind == "language" and "min_windows" in params and not 0 <= params["min_windows"] <= 1000:
            raise ParamsError("'min_windows' must be between 0 and 1000.")
        for key in ("languages", "language"):  # a transcribe job takes a candidate list as a language job does
            if key not in params or (key == "language" and kind == "language"):
                continue
            codes = params[key] if key == "languages" else [params[key]]
            if not all(isinstance(c, str) for c in codes):
                raise ParamsError("'languages' must be a list of language codes such as [\"en\", \"fr\"].")
            try:
                cleaned = validate_languages(codes)
            except ValueError as exc:
                raise ParamsError(f"{exc}.") from exc
            params[key] = cleaned if key == "languages" else cleaned[0]
        if "beam_size" in params and not 1 <= params["beam_size"] <= 10:
            raise ParamsError("'beam_size' must be between 1 and 10.")

    return check


# --- The kinds ---------------------------------------------------------------------------------

_NUM = (int, float)

register(JobKind(
    name="features", stores="features", task="workers.tasks.run_features_chunk", queue="cpu", chunk_size=8, cost_per_audio_s=0.07,
    admin_action="Run feature extraction on selected {what}",
    params={"extractors": list, "chunk_size": int}, validate=_check_features,
    param_help={"extractors": "list of names: {extractors}; default: {default_extractors}"},
))
def _check_classify(params: dict[str, Any]) -> None:
    """``classes`` (zero-shot models such as ``spoken-words``): 2-64 distinct words, kept as a clean list;
    whether the chosen model takes classes is checked once it is resolved (``services.jobs``)."""
    if "classes" in params:
        from models.word_classes import check_classes

        try:
            params["classes"] = check_classes(params["classes"])
        except ValueError as exc:
            raise ParamsError(f"{exc}.") from exc


register(JobKind(
    name="classify", stores="prediction", task="workers.tasks.run_model_chunk", queue="gpu", chunk_size=64, interactive=True,
    model_task="classify", chunk_by_audio=True, cost_per_audio_s=0.025, admin_action="Classify selected {what}", evaluates=True,
    params={"window_s": _NUM, "hop_s": _NUM, "threshold": _NUM, "vad": bool, "min_speech_s": _NUM, "chunk_size": int,
            "batch_size": int, "transcript": str, "label_map": dict, "classes": (list, str)},
    validate=_check_classify,
    param_help={"window_s": "0.1-60 s", "hop_s": "0.1-60 s", "threshold": "0-1; answers under it are 'uncertain'",
                "vad": "bool", "label_map": "true label -> model class, for the report", "transcript": "the text read",
                "classes": "a zero-shot model such as spoken-words: the words to choose from, 2-64; default: its ten digits"},
))
register(JobKind(
    name="embed", stores="embedding", task="workers.tasks.run_model_chunk", queue="gpu", chunk_size=64, interactive=True,
    model_task="embed", chunk_by_audio=True, cost_per_audio_s=0.025, admin_action="Embed selected {what}",
    params={"window_s": _NUM, "hop_s": _NUM, "per_window": bool, "chunk_size": int, "batch_size": int},
    param_help={"per_window": "bool: keep one vector per window"},
))
# Training runs as one task over all of the job's recordings: one chunk, whatever its size.
register(JobKind(
    name="train", stores="model", task="workers.tasks.run_train_job", queue="gpu", chunk_size=None, needs_recordings=False, makes_model=True,
    params={"family": str, "label_map": dict, "epochs": int, "name": str, "deploy_prior": list, "seed": int,
            "hparams": dict, "window_s": _NUM, "hop_s": _NUM, "robustness": (bool, list)}, validate=_check_train,
    param_help={"family": "{families}", "epochs": "1-1000", "deploy_prior": "class priors", "hparams": "object",
                "robustness": "true (default conditions) or a list of: {conditions}; scores the model on degraded "
                              "copies of its test clips"},
))
# Whisper (faster-whisper): model work on the gpu queue, chunks cut by audio seconds; transcribe chunks hold at
# most 300 s (decoding is ~0.4 s per second of speech on one CPU thread, and a chunk is what a crash loses) and
# up to 16 recordings, whose short speech pieces share Whisper encodings (workers/pipeline/whisper_pack.py).
register(JobKind(
    name="language", stores="language", task="workers.tasks.run_whisper_chunk", queue="gpu", chunk_size=16, interactive=True,
    chunk_by_audio=True, cost_per_audio_s=0.3,  # padded windows: 2.7-5.6x real time on one CPU thread (docs/benchmarks.md)
    admin_action="Identify the spoken language of selected {what} (Whisper)",
    params={"window_s": _NUM, "languages": list, "vad": bool, "chunk_size": int, "scan_s": (int, float, type(None)),
            "min_windows": int, "min_probability": _NUM, "pad_windows": bool}, validate=_check_whisper("language"),
    param_help={"window_s": "over 1, at most 30 s; 4", "languages": "Whisper codes to restrict to", "vad": "skip silent windows",
                "scan_s": "hear only the first seconds; whole recording",
                "min_windows": "fewer speech windows: the clip is scored whole; 3",
                "min_probability": "under it the outcome is 'uncertain'; 0.4",
                "pad_windows": "pad each window to 30 s as Whisper was trained; true"},
))
register(JobKind(
    name="transcribe", stores="transcript", task="workers.tasks.run_whisper_chunk", queue="gpu", chunk_size=16, interactive=True,
    chunk_by_audio=True, cost_per_audio_s=0.45, chunk_audio_s=300.0,
    admin_action="Transcribe selected {what} (Whisper)",
    params={"language": str, "languages": list, "beam_size": int, "vad_filter": bool, "temperature_fallback": bool,
            "pack": bool, "chunk_size": int},
    validate=_check_whisper("transcribe"),
    param_help={"language": "force it", "languages": "candidates: each speech piece's language is one of them",
                "beam_size": "1-10; 5", "vad_filter": "bool", "temperature_fallback": "bool",
                "pack": "short speech pieces of a chunk share 30-s Whisper encodings; true"},
))
