"""Single-file prediction, for people coming from Flask / Gradio ``/predict`` tools: the web half.

The web process never runs a model. :func:`predict_submit` checks the upload, takes one of the
caller's ``PREDICT_MAX_CONCURRENT_PER_USER`` slots (a flood gets ``429`` with ``Retry-After`` at
once), stores the file, records the request in Redis and sends ``workers.tasks.run_predict`` to the
``interactive`` queue, which a dedicated worker serves. It then waits up to ``PREDICT_TIMEOUT_S``
for the worker's answer on a client whose socket timeout is longer than the wait (a slow model is
never taken for a dead broker). No answer in time is not an error: the caller gets ``202`` with the
request's URL, and :func:`predict_fetch` gives the same answer there once the worker has it (kept
``PREDICT_RESULT_TTL_S``). The worker half is ``workers/predict.py``.

A web process lets at most ``PREDICT_WAITERS_PER_PROCESS`` requests wait at once (gunicorn's
``gthread`` workers hold a thread, not a process, per request); the rest answer ``202`` at once, so
waiting predicts never take every thread of a web process away from other users.

Redis keys (the broker's database): ``accentsite:predict:<id>`` a hash (``owner``, ``status``:
``queued`` / ``running`` / ``done``, ``created``, ``body``); ``accentsite:predict:<id>:reply`` the
list the worker pushes to when done (wakes the waiting request); ``accentsite:predict:active:<user>``
a sorted set of the user's open requests, scored by the time their slot lapses on its own (a worker
that died mid-request does not hold the slot for ever).
"""
from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from dataclasses import dataclass
from typing import BinaryIO

from django.conf import settings
from django.core.files import File
from django.core.files.storage import default_storage

from recognition.broker import broker_errors, broker_redis
from recognition.errors import ServiceError
from recognition.services.models import model_resolve

logger = logging.getLogger(__name__)

KEY_PREFIX = "accentsite:predict:"
#: the longest one predict may run on its worker (a minute of audio, a cold model): one still
#: "running" after this lost its worker, and its slot lapses
PREDICT_RUN_LIMIT_S = 300
RUN_PREDICT = "workers.tasks.run_predict"

_waiters: threading.BoundedSemaphore | None = None
_waiters_lock = threading.Lock()


def request_key(request_id: str) -> str:
    return f"{KEY_PREFIX}{request_id}"


def reply_key(request_id: str) -> str:
    return f"{KEY_PREFIX}{request_id}:reply"


def active_key(owner_id: int) -> str:
    return f"{KEY_PREFIX}active:{owner_id}"


@dataclass
class PredictAnswer:
    """What ``/predict`` answers: ``status`` 200 with the result, or 202 with where to fetch it."""

    status: int
    body: dict
    retry_after: int | None = None


def _unavailable(exc: BaseException) -> ServiceError:
    logger.warning("predict: the broker cannot be reached: %s", exc)
    return ServiceError("predict_unavailable", "The prediction service cannot reach its queue right now (the broker is "
                        "down); try again in a minute, or upload the file and run a classify job.", status_code=503)


# Drop lapsed slots, then take one only while fewer than the cap are held: one atomic step, so a
# flood of simultaneous requests admits exactly the cap.
_TAKE_SLOT = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[4])
redis.call('EXPIRE', KEYS[1], ARGV[5])
return 1
"""


def _slot_take(client, *, owner_id: int, request_id: str, hold_s: float) -> bool:
    """Take one of the owner's concurrent-predict slots; False when all are taken. Slots whose
    request lapsed (expired unstarted, worker died) are dropped first."""
    now = time.time()
    taken = client.eval(_TAKE_SLOT, 1, active_key(owner_id), now, settings.PREDICT_MAX_CONCURRENT_PER_USER,
                        now + hold_s, request_id, int(hold_s) + 60)
    return bool(taken)


def _slot_retry_after(client, owner_id: int) -> int:
    """Seconds until the owner's oldest slot would lapse on its own, bounded to a polite 1-30 s."""
    oldest = client.zrange(active_key(owner_id), 0, 0, withscores=True)
    if not oldest:
        return 1
    return int(min(30, max(1, oldest[0][1] - time.time())))


def _wait_slot() -> threading.BoundedSemaphore:
    global _waiters
    with _waiters_lock:
        if _waiters is None:
            _waiters = threading.BoundedSemaphore(max(1, settings.PREDICT_WAITERS_PER_PROCESS))
        return _waiters


def predict_submit(*, fileobj: BinaryIO, filename: str, user, model: str | None = None, threshold: float | None = None,
                   vad: bool = False, transcript: str = "", task: str = "classify", params: dict | None = None,
                   wait: bool = True, classes: list[str] | str | None = None) -> PredictAnswer:
    """Send one upload to the interactive worker and answer with its result, or with ``202`` and
    the URL of the request when no answer came within ``PREDICT_TIMEOUT_S`` (or ``wait`` is off).

    Raises ``ServiceError``: the audio error code for bad input, ``too_long`` (400) past
    ``PREDICT_MAX_DURATION_S``, ``too_many_predicts`` (429, ``retry_after`` set) when the caller
    already has ``PREDICT_MAX_CONCURRENT_PER_USER`` predicts open, ``predict_unavailable`` (503)
    when the broker cannot be reached, and any error the worker answered with.
    """
    from recognition.validation import text_check
    from workers.pipeline.audio import AudioError
    from workers.pipeline.probe import probe_audio

    text_check(transcript, field="transcript")
    fileobj.seek(0, 2)
    if fileobj.tell() > settings.AUDIO_MAX_UPLOAD_BYTES:
        raise ServiceError("too_large", "The file is over the per-file upload limit.", status_code=413)
    fileobj.seek(0)
    if task == "classify":
        mv = model_resolve(model, task="classify", user=user)
        classes = _predict_classes(mv, classes)  # a zero-shot model's classes (spoken-words)
    elif task in ("language", "transcribe"):
        from recognition.services.jobs import validate_job_params
        from workers.runtime import whisper_model_problem

        mv, params = None, dict(validate_job_params(task, dict(params or {})))
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

    request_id = uuid.uuid4().hex
    queue_s = settings.PREDICT_QUEUE_EXPIRES_S
    client = broker_redis()
    try:
        # a slot lapses on its own once its request can no longer be running (a worker that died with it)
        if not _slot_take(client, owner_id=user.pk, request_id=request_id, hold_s=queue_s + PREDICT_RUN_LIMIT_S):
            limit = settings.PREDICT_MAX_CONCURRENT_PER_USER
            raise ServiceError("too_many_predicts", f"You already have {limit} predictions in progress (at most {limit} at "
                               "once); wait for one to finish, or run a job for many files.", status_code=429,
                               retry_after=_slot_retry_after(client, user.pk))
    except broker_errors() as exc:
        raise _unavailable(exc) from exc

    fileobj.seek(0)
    key = default_storage.save(f"predict/{request_id}.{info.format or 'bin'}", File(fileobj))
    try:
        client.hset(request_key(request_id), mapping={"owner": user.pk, "status": "queued", "created": time.time(),
                                                      "expires": time.time() + queue_s})
        client.expire(request_key(request_id), settings.PREDICT_RESULT_TTL_S)
        from kombu.utils.imports import symbol_by_name  # by name, as recognition.jobkinds sends chunk tasks

        symbol_by_name(RUN_PREDICT).apply_async(kwargs=dict(
            request_id=request_id, key=key, format=info.format, model_version_id=mv.pk if mv else None,
            threshold=threshold, vad=vad, transcript=transcript, task=task, params=params or {},
            classes=classes if task == "classify" else None,
        ), queue="interactive", expires=queue_s)
    except broker_errors() as exc:  # nothing was sent: leave nothing behind
        default_storage.delete(key)
        try:
            client.delete(request_key(request_id))
            client.zrem(active_key(user.pk), request_id)
        except broker_errors():
            pass
        raise _unavailable(exc) from exc

    if wait and settings.PREDICT_TIMEOUT_S > 0:
        slot = _wait_slot()
        if slot.acquire(blocking=False):
            try:
                waiter = broker_redis(wait_s=settings.PREDICT_TIMEOUT_S)
                t0 = time.monotonic()
                waiter.blpop([reply_key(request_id)], timeout=settings.PREDICT_TIMEOUT_S)
                waited = round(time.monotonic() - t0, 4)
            except broker_errors() as exc:  # the broker went away while we waited: the answer may still come
                logger.warning("predict %s: the wait was cut (%s); the caller polls", request_id, exc)
                waited = None
            finally:
                slot.release()
            answer = _read(client, request_id=request_id, owner_id=user.pk)
            if answer.status == 200 and waited is not None:
                answer.body.setdefault("timings", {})["wait"] = waited
            return answer
    return _read(client, request_id=request_id, owner_id=user.pk)


def predict_fetch(*, request_id: str, user) -> PredictAnswer:
    """The answer of an earlier ``/predict`` of ``user``: 200 with the result, 202 while it is queued
    or running; ``not_found`` (404) for an unknown, expired or someone else's request,
    ``predict_expired`` (503) when no worker started it within ``PREDICT_QUEUE_EXPIRES_S``."""
    if not request_id.isalnum() or len(request_id) > 64:
        raise ServiceError("not_found", "No such prediction.", status_code=404)
    try:
        return _read(broker_redis(), request_id=request_id, owner_id=user.pk)
    except broker_errors() as exc:
        raise _unavailable(exc) from exc


def _read(client, *, request_id: str, owner_id: int) -> PredictAnswer:
    raw = {k.decode(): v.decode() for k, v in client.hgetall(request_key(request_id)).items()}
    if not raw or raw.get("owner") != str(owner_id):
        raise ServiceError("not_found", "No such prediction (unknown, someone else's, or older than "
                           f"{settings.PREDICT_RESULT_TTL_S // 60} minutes).", status_code=404)
    url = f"/api/v1/predict/{request_id}/"
    if raw.get("status") == "done":
        body = json.loads(raw["body"])
        if "error" in body:
            err = body["error"]
            raise ServiceError(err["code"], err["message"], status_code=err.get("status", 400))
        return PredictAnswer(200, {"id": request_id, **body["result"]})
    if raw.get("status") == "queued" and time.time() > float(raw.get("expires", "inf")):
        raise ServiceError("predict_expired", f"No worker started this prediction within {settings.PREDICT_QUEUE_EXPIRES_S:.0f} s "
                           "(the interactive queue is busy or no worker serves it); send it again, or upload the file "
                           "and run a classify job.", status_code=503)
    if raw.get("status") == "running" and time.time() > float(raw.get("started", "inf")) + PREDICT_RUN_LIMIT_S:
        raise ServiceError("predict_lost", "The worker running this prediction stopped before answering; send it again.",
                           status_code=503)
    status = raw.get("status", "queued")
    message = ("The model is working on it" if status == "running" else
               "It waits for a free interactive worker") + f"; fetch {url} for the answer."
    return PredictAnswer(202, {"id": request_id, "status": status, "url": url, "message": message}, retry_after=1)


def _predict_classes(mv, classes: list[str] | str | None) -> list[str] | None:
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
