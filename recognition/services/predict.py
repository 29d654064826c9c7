"""Single-file prediction, for people coming from Flask / Gradio ``/predict`` tools.

The web process never runs a model: :func:`predict_file` checks the upload, stores it, sends a
``run_predict`` task to the ``interactive`` queue (the gpu worker serves it beside ``gpu``) and
waits up to ``PREDICT_TIMEOUT_S`` for the worker's answer on a one-off Redis list. Audio longer
than ``PREDICT_MAX_DURATION_S`` is refused up front with a hint to run a classify job instead.
"""
from __future__ import annotations

import json
import logging
import time
import uuid
from typing import TYPE_CHECKING, BinaryIO

from django.conf import settings
from django.core.files import File
from django.core.files.storage import default_storage

from recognition.errors import ServiceError
from recognition.models import ModelVersion
from recognition.services.models import model_resolve

if TYPE_CHECKING:
    from workers.pipeline.inference import ClassifyOutcome

logger = logging.getLogger(__name__)

REPLY_PREFIX = "accentsite:predict:"


def predict_file(*, fileobj: BinaryIO, filename: str, model: str | None = None, threshold: float | None = None,
                 vad: bool = False, transcript: str = "", user=None, task: str = "classify",
                 params: dict | None = None, classes: list[str] | str | None = None) -> dict:
    """Classify one upload on a worker (or, with ``task`` ``language`` / ``transcribe`` and that job
    kind's ``params``, run Whisper on it there) and return its answer.

    Returns :func:`predict_response`'s ``{"outcome", "predicted_class", "confidence", "probabilities",
    "probabilities_raw", ..., "calibrated", "model", "worker", ...}``; raises ``ServiceError`` with
    the audio error code for bad input, ``too_long`` (400) past ``PREDICT_MAX_DURATION_S``, ``predict_timeout`` (503) when no
    worker answered within ``PREDICT_TIMEOUT_S``.
    """
    from recognition.ops import broker_redis
    from recognition.validation import text_check
    from workers import tasks
    from workers.pipeline.audio import AudioError
    from workers.pipeline.probe import probe_audio

    text_check(transcript, field="transcript")
    fileobj.seek(0, 2)
    if fileobj.tell() > settings.AUDIO_MAX_UPLOAD_BYTES:
        raise ServiceError("too_large", "The file is over the per-file upload limit.", status_code=413)
    fileobj.seek(0)
    if task == "classify":
        mv = model_resolve(model, task="classify", user=user)
        classes = _predict_classes(mv, classes)  # issue 24 (spoken-words): a zero-shot model's classes
    elif task in ("language", "transcribe"):
        from recognition.services.jobs import _validate_params
        from workers.runtime import whisper_model_problem

        mv, params = None, dict(_validate_params(task, dict(params or {})))
        problem = whisper_model_problem()  # said here, not after a worker's round trip
        if problem:
            raise ServiceError("model_unavailable", problem, status_code=409)
    else:
        raise ServiceError("invalid_params", f"Unknown task '{task}'; use classify, language or transcribe.")
    try:
        info = probe_audio(fileobj, filename=filename, path=getattr(fileobj, "temporary_file_path", lambda: None)())
    except AudioError as exc:
        raise ServiceError(exc.code, exc.message) from exc
    if info.duration_s > settings.PREDICT_MAX_DURATION_S:
        raise ServiceError(
            "too_long",
            f"/predict takes at most {settings.PREDICT_MAX_DURATION_S:.0f} s of audio; this file lasts "
            f"{info.duration_s:.0f} s. Upload it (POST /api/v1/recordings/ or /api/v1/batches/) and run a "
            "classify job (POST /api/v1/jobs/) instead.")
    fileobj.seek(0)
    key = default_storage.save(f"predict/{uuid.uuid4().hex}.{info.format or 'bin'}", File(fileobj))
    reply = f"{REPLY_PREFIX}{uuid.uuid4().hex}"
    timeout = settings.PREDICT_TIMEOUT_S
    client = broker_redis()
    try:
        tasks.run_predict.apply_async(
            kwargs=dict(key=key, format=info.format, model_version_id=mv.pk if mv else None, threshold=threshold,
                        vad=vad, transcript=transcript, reply=reply, task=task, params=params or {}, classes=classes),
            queue="interactive", expires=timeout,
        )
        t0 = time.monotonic()
        answer = client.blpop([reply], timeout=max(1, int(timeout)))
    except Exception as exc:  # the broker is down: say so, with the way round it
        logger.warning("predict could not reach the broker: %s", exc)
        default_storage.delete(key)
        raise ServiceError("predict_unavailable", "The prediction workers cannot be reached right now; "
                           "upload the file and run a classify job instead.", status_code=503) from exc
    if answer is None:
        default_storage.delete(key)  # the task expires unstarted; a worker already on it finds no file
        raise ServiceError(
            "predict_timeout", f"No worker answered within {timeout:.0f} s (the interactive queue is busy or no worker "
                               "serves it); upload the file and run a classify job instead.", status_code=503)
    body = json.loads(answer[1])
    if "error" in body:
        err = body["error"]
        raise ServiceError(err["code"], err["message"], status_code=err.get("status", 400))
    body["result"].setdefault("timings", {})["wait"] = round(time.monotonic() - t0, 4)
    return body["result"]


def predict_run(*, mv: ModelVersion, fileobj: BinaryIO, format_hint: str | None, threshold: float | None, vad: bool,
                transcript: str = "", classes: list[str] | None = None) -> dict:
    """Decode and classify one file in *this* process: the worker's side of :func:`predict_file`."""
    from workers import runtime
    from workers.pipeline.inference import classify_batch

    audio, decode_s = _decode(fileobj, format_hint)
    try:
        loaded = runtime.load_model(mv)
    except runtime.ModelUnavailable as exc:
        raise ServiceError("model_unavailable", str(exc), status_code=409) from exc
    if classes:  # issue 24 (spoken-words): the request's classes
        from workers.pipeline.spoken_words import bind_classes

        loaded = bind_classes(loaded, classes)
    (outcome,) = classify_batch(loaded, [audio.samples], threshold=threshold, vad=vad, transcripts=[transcript],
                                min_speech_s=loaded.spec.extra.get("min_speech_s", 1.0), **runtime.window_params(loaded))
    return predict_response(outcome, mv=mv, calibrated=bool(loaded.calibration), duration_s=audio.duration_s,
                            decode_s=decode_s)


def predict_response(outcome: ClassifyOutcome, *, mv: ModelVersion, calibrated: bool, duration_s: float,
                     decode_s: float) -> dict:
    """The ``/predict`` answer: ``outcome.api_dict()`` (the keys a job's prediction has in
    ``results/``) plus ``calibrated``, ``threshold``, ``duration_s``, ``model``, ``checkpoint_sha256``
    and ``timings``.

    ``all_predictions`` / ``all_predictions_raw`` repeat ``probabilities`` / ``probabilities_raw``
    for the old Flask / Gradio clients; they are deprecated and will go: read ``probabilities``.
    """
    body = outcome.api_dict()
    return {
        **body,
        "all_predictions": dict(body["probabilities"]),  # deprecated alias of probabilities
        "all_predictions_raw": dict(body["probabilities_raw"]),  # deprecated alias of probabilities_raw
        "calibrated": calibrated,
        "threshold": outcome.threshold,
        "duration_s": round(duration_s, 3),
        "model": str(mv),
        "checkpoint_sha256": mv.sha256,
        "timings": dict(outcome.timings, decode=decode_s),
    }


def predict_whisper_run(*, task: str, params: dict, fileobj: BinaryIO, format_hint: str | None) -> dict:
    """``/predict/`` with ``task=language`` or ``task=transcribe``, the worker's side: Whisper in *this*
    process (loaded once). Returns what such a job stores per recording (``identify_languages`` /
    ``transcribe`` output) plus ``task``, ``model``, ``model_sha256``, ``duration_s`` and ``timings``."""
    from workers import runtime
    from workers.pipeline.whisper_asr import transcribe
    from workers.pipeline.whisper_lang import WhisperError, identify_languages

    audio, decode_s = _decode(fileobj, format_hint)
    try:
        engine = runtime.load_whisper()
        if task == "language":
            out = identify_languages(engine, audio.samples, window_s=float(params.get("window_s", 4.0)),
                                     languages=params.get("languages"), vad=params.get("vad", True))
        else:
            out = transcribe(engine, audio.samples, language=params.get("language"), beam_size=params.get("beam_size", 1),
                             vad_filter=params.get("vad_filter", True))
    except WhisperError as exc:
        raise ServiceError("model_unavailable", str(exc), status_code=409) from exc
    model = engine.describe()
    return {**out, "task": task, "model": model["model"], "model_sha256": model["model_sha256"],
            "duration_s": round(audio.duration_s, 3), "timings": dict(out.get("timings") or {}, decode=decode_s)}


def _decode(fileobj: BinaryIO, format_hint: str | None):
    """Decode and validate a stored upload on the worker; ``(audio, seconds spent)``, audio errors as
    ``ServiceError`` with their code."""
    from workers.pipeline.audio import AudioError, load_audio, validate_audio

    t0 = time.perf_counter()
    try:
        audio = load_audio(fileobj, settings.AUDIO_SAMPLE_RATE, format_hint=format_hint,
                           max_duration_s=settings.AUDIO_MAX_DURATION_S)
        validate_audio(audio, min_duration_s=settings.AUDIO_MIN_DURATION_S, max_duration_s=settings.AUDIO_MAX_DURATION_S)
    except AudioError as exc:
        raise ServiceError(exc.code, exc.message) from exc
    return audio, time.perf_counter() - t0


# --- issue 24 (spoken-words): the classes of a zero-shot model -----------------------------------

def _predict_classes(mv: ModelVersion, classes: list[str] | str | None) -> list[str] | None:
    """``/predict``'s ``classes`` (a list, or ``zero,two,six``) checked as a classify job's are, and only
    for a zero-shot model; None when none were given."""
    if classes is None or classes == "" or classes == []:
        return None
    from models.word_classes import check_classes
    from recognition.services.jobs import classes_check

    try:
        cleaned = check_classes(classes)
    except ValueError as exc:
        raise ServiceError("invalid_params", f"{exc}.") from exc
    classes_check(mv, cleaned)
    return cleaned
