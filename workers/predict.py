"""``/predict`` on a worker: the other half of ``recognition/services/predict.py``.

Django-aware like ``workers/tasks.py`` (it reads settings, storage and model rows); the task in
``workers/tasks.py`` only calls :func:`predict_serve`. The answer goes into the request's Redis hash
(where ``GET /api/v1/predict/<id>/`` reads it for ``PREDICT_RESULT_TTL_S``) and a push on its reply
list wakes the web request still waiting for it. The caller's concurrency slot is freed here.
"""
from __future__ import annotations

import json
import logging
import time
from typing import TYPE_CHECKING, BinaryIO

from django.conf import settings
from django.core.files.storage import default_storage

from recognition.broker import broker_redis
from recognition.errors import ServiceError
from recognition.models import ModelVersion
from recognition.services.predict import active_key, reply_key, request_key

if TYPE_CHECKING:
    from workers.pipeline.outcomes import ClassifyOutcome

logger = logging.getLogger(__name__)


def predict_serve(*, request_id: str, key: str, format: str, model_version_id: int | None, threshold, vad: bool,
                  transcript: str, task: str, params: dict, worker: str, classes: list[str] | None = None) -> None:
    """Run one stored upload and publish its answer; the upload is deleted whatever happens."""
    client = broker_redis()
    req = request_key(request_id)
    try:
        owner = client.hget(req, "owner")
        if owner is None:  # the request lapsed (its hash expired): nobody can read an answer
            return
        client.hset(req, mapping={"status": "running", "started": time.time(), "worker": worker})
        try:
            body = {"result": {**_run(key=key, format=format, model_version_id=model_version_id, threshold=threshold,
                                      vad=vad, transcript=transcript, task=task, params=params, classes=classes),
                               "worker": worker}}
        except ServiceError as exc:
            body = {"error": {**exc.as_dict(), "status": exc.status_code}}
        except Exception as exc:  # report, don't leave the person waiting
            logger.exception("predict failed")
            body = {"error": {"code": "processing_error", "message": f"Prediction failed with {type(exc).__name__}.",
                              "status": 422}}
        pipe = client.pipeline()
        pipe.hset(req, mapping={"status": "done", "body": json.dumps(body, default=float), "finished": time.time()})
        pipe.expire(req, settings.PREDICT_RESULT_TTL_S)
        pipe.rpush(reply_key(request_id), "done")
        pipe.expire(reply_key(request_id), int(settings.PREDICT_TIMEOUT_S) + 60)
        pipe.zrem(active_key(int(owner)), request_id)
        pipe.execute()
    finally:
        default_storage.delete(key)


def _run(*, key: str, format: str, model_version_id: int | None, threshold, vad: bool, transcript: str, task: str,
         params: dict, classes: list[str] | None = None) -> dict:
    if task == "classify":
        mv = ModelVersion.objects.filter(pk=model_version_id).first()
        if mv is None:
            raise ServiceError("unknown_model", "The model was removed.", status_code=404)
    try:
        fh = default_storage.open(key, "rb")
    except FileNotFoundError as exc:
        raise ServiceError("upload_lost", "The uploaded file was no longer stored; send it again.", status_code=410) from exc
    with fh:
        if task == "classify":
            return predict_run(mv=mv, fileobj=fh, format_hint=format, threshold=threshold, vad=vad, transcript=transcript,
                               classes=classes)
        return predict_whisper_run(task=task, params=params or {}, fileobj=fh, format_hint=format)


def predict_run(*, mv: ModelVersion, fileobj: BinaryIO, format_hint: str | None, threshold: float | None, vad: bool,
                transcript: str = "", classes: list[str] | None = None) -> dict:
    """Decode and classify one file in *this* process (``classes``: a zero-shot model's classes for
    this request, e.g. spoken-words')."""
    from workers import runtime
    from workers.pipeline.inference import classify_batch

    audio, decode_s = _decode(fileobj, format_hint)
    try:
        loaded = runtime.load_model(mv)
    except runtime.ModelUnavailable as exc:
        raise ServiceError("model_unavailable", str(exc), status_code=409) from exc
    if classes:
        from workers.pipeline.spoken_words import bind_classes

        loaded = bind_classes(loaded, classes)
    (outcome,) = classify_batch(loaded, [audio.samples], threshold=threshold, vad=vad, transcripts=[transcript],
                                min_speech_s=runtime.min_speech_s(loaded), **runtime.window_params(loaded))
    from workers.pipeline.spoken_words import is_zero_shot

    # a zero-shot model's probabilities are its decoder's scores normalised over the classes: nothing was fitted
    calibrated = bool(loaded.calibration) and not is_zero_shot(loaded)
    return predict_response(outcome, mv=mv, calibrated=calibrated, duration_s=audio.duration_s, decode_s=decode_s)


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
    """``task=language`` or ``task=transcribe``: Whisper in *this* process (loaded once). Returns what
    such a job stores per recording (``identify_languages`` / ``transcribe`` output) plus ``task``,
    ``model``, ``model_sha256``, ``duration_s`` and ``timings``."""
    from workers import runtime
    from workers.pipeline.whisper_asr import transcribe, transcribe_options
    from workers.pipeline.whisper_lang import WhisperError, identify_languages, language_options
    from workers.pipeline.whisper_outcomes import LanguageOutcome, TranscribeOutcome

    audio, decode_s = _decode(fileobj, format_hint)
    try:
        engine = runtime.load_whisper()
        if task == "language":  # as a language job's
            out: LanguageOutcome | TranscribeOutcome = LanguageOutcome.from_dict(
                identify_languages(engine, audio.samples, **language_options(params)))
        else:  # as a transcribe job's
            out = TranscribeOutcome.from_dict(transcribe(engine, audio.samples, **transcribe_options(params)))
    except WhisperError as exc:
        raise ServiceError("model_unavailable", str(exc), status_code=409) from exc
    model = engine.describe()
    return {**out.as_dict(), "task": task, "model": model["model"], "model_sha256": model["model_sha256"],
            "duration_s": round(audio.duration_s, 3), "timings": dict(out.timings or {}, decode=decode_s)}


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
