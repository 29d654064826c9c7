"""Celery tasks: thin and idempotent. Load ids, call the pipeline, call a service.

The only Django-aware module under ``workers/``. Pipeline and torch imports happen inside the
tasks, never at import time, so nothing touches torch before a prefork worker forks.
"""
from __future__ import annotations

import contextlib
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Iterator

from celery import shared_task
from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.db import InterfaceError, OperationalError, close_old_connections
from kombu.exceptions import OperationalError as BrokerError

from recognition import services
from recognition.models import Job, Recording

logger = logging.getLogger(__name__)

# Named transient errors: a dropped database connection, a broker hiccup. Bad audio is never retried.
TRANSIENT = (OperationalError, InterfaceError, BrokerError, ConnectionError)
_RETRY = dict(autoretry_for=TRANSIENT, retry_backoff=2, retry_backoff_max=60, retry_jitter=True, max_retries=10)


def _decode(recording: Recording):
    """Open by storage key (never a local path), decode to 16 kHz mono and validate."""
    from workers.pipeline.audio import load_audio, validate_audio

    with recording.file.storage.open(recording.file.name, "rb") as fh:
        audio = load_audio(fh, settings.AUDIO_SAMPLE_RATE, format_hint=recording.format, max_duration_s=settings.AUDIO_MAX_DURATION_S)
    validate_audio(audio, min_duration_s=settings.AUDIO_MIN_DURATION_S, max_duration_s=settings.AUDIO_MAX_DURATION_S)
    return audio


@contextlib.contextmanager
def _heartbeating(chunk_id: int, every_s: float | None = None) -> Iterator[None]:
    """Keep the chunk visibly alive while the block runs (a long decode, one batched inference, a
    whole training), so the reaper's short silence limit only catches chunks whose worker is gone.

    Two beats: a thread updates ``JobChunk.heartbeat_at`` every ``CHUNK_HEARTBEAT_S`` (what the
    timeline shows), and a tiny process (:mod:`workers.chunkbeat`) keeps a Redis key alive, which
    also beats while C code holds the GIL (parselmouth on a long recording stalls the thread). The
    process ends when the block ends or this worker dies (its stdin pipe closes)."""
    import subprocess
    import sys
    import threading

    from django.conf import settings
    from django.db import connection

    every = every_s or settings.CHUNK_HEARTBEAT_S
    stop = threading.Event()

    def beat() -> None:
        try:
            while not stop.wait(every):
                try:
                    services.chunk_heartbeat(chunk_id=chunk_id)
                except Exception as exc:  # a database blip: try again next beat
                    logger.warning("chunk heartbeat failed: %s", exc)
        finally:
            connection.close()

    helper = None
    services.chunk_beat_now(chunk_id=chunk_id, ttl_s=3 * every + 1)  # alive before the helper has started
    try:
        helper = subprocess.Popen(
            [sys.executable, "-m", "workers.chunkbeat", services.chunk_beat_url(), services.chunk_beat_key(chunk_id),
             str(every)],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, close_fds=True,
            cwd=str(settings.BASE_DIR),
        )
    except Exception as exc:  # no process to spare: the thread's beat still runs; never fail the chunk for it
        logger.warning("chunk heartbeat process did not start: %s", exc)
    thread = threading.Thread(target=beat, name=f"chunk-{chunk_id}-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        if helper is not None:
            helper.stdin.close()
            try:
                helper.wait(timeout=5)
            except subprocess.TimeoutExpired:
                helper.kill()
        thread.join(timeout=every + 5)


def _run_chunk(task, chunk_id: int, process: Callable) -> None:
    """Shared chunk loop: claim, process, record failures per recording, close the chunk."""
    close_old_connections()
    ctx = services.chunk_start(chunk_id=chunk_id, worker=task.request.hostname or "", task_id=task.request.id or "")
    if ctx is None:
        return
    timings: dict[str, float] = defaultdict(float)
    error = ""
    # the chunk closes while it still beats: between the last beat and the close a reaper would see a
    # running chunk that is silent
    with _heartbeating(chunk_id):
        try:
            process(ctx, timings)
        except SoftTimeLimitExceeded:  # raised by Celery's prefork pool in the child (every shipped pool is prefork)
            error = "The chunk exceeded its time limit; its unfinished recordings failed."
            done = set(ctx.job.results.values_list("recording_id", flat=True))
            for rec in ctx.recordings:
                if rec.pk not in done:
                    services.result_fail(job=ctx.job, recording=rec, code="time_limit", message=error)
        services.chunk_finish(chunk_id=chunk_id, timings=dict(timings), error=error)


def _fail_unexpected(ctx, rec: Recording, exc: Exception) -> None:
    logger.exception("recording failed", extra={"job_id": ctx.job.pk, "recording_id": rec.pk})
    services.result_fail(
        job=ctx.job, recording=rec, code="processing_error",
        message=f"Processing failed with {type(exc).__name__}: {exc}. Report this if it repeats.",
    )


@shared_task(bind=True, **_RETRY)
def run_features_chunk(self, chunk_id: int) -> None:
    """Decode each recording of a chunk and run the job's feature extractors on it."""

    def process(ctx, timings):
        from workers.pipeline.audio import AudioError
        from workers.pipeline.features import extract_features, result_to_npz_bytes

        names = ctx.job.params.get("extractors") or None
        for rec in ctx.recordings:
            if services.job_is_cancelled(job_id=ctx.job.pk):
                break
            t0 = time.perf_counter()
            try:
                audio = _decode(rec)
                t1 = time.perf_counter()
                results = extract_features(audio.samples, audio.sample_rate, names=names)
                t2 = time.perf_counter()
            except AudioError as exc:
                services.result_fail(job=ctx.job, recording=rec, code=exc.code, message=exc.message)
                continue
            except TRANSIENT + (SoftTimeLimitExceeded,):
                raise
            except Exception as exc:  # a bug or odd input in one recording must not sink the chunk
                _fail_unexpected(ctx, rec, exc)
                continue
            rec_timings = {"decode": t1 - t0, "features": t2 - t1}
            features = {
                name: {"version": r.version, "config": r.config, "summary": r.summary, "array_names": sorted(r.arrays)}
                for name, r in results.items()
            }
            services.result_store_features(
                job=ctx.job, recording=rec, features=features, npz=result_to_npz_bytes(results), timings=rec_timings
            )
            timings["decode"] += rec_timings["decode"]
            timings["features"] += rec_timings["features"]
            timings["store"] += time.perf_counter() - t2
            services.chunk_heartbeat(chunk_id=ctx.chunk.pk)

    _run_chunk(self, chunk_id, process)


#: ``"transcript": "auto"`` in a classify job: Whisper transcribes recordings that have no transcript
AUTO_TRANSCRIPT = "auto"


def _auto_transcripts(loaded, decoded: list, timings: dict, heartbeat: Callable[[], None]) -> dict[int, tuple[dict, dict]]:
    """Whisper transcripts ``{recording id: (transcript, engine.describe())}`` for the recordings of a
    chunk that have none, when the model reads a transcript (``needs_transcript``); otherwise none.

    Forced to English: reading models align English text (a non-native speaker's English must not be
    written down as another language). A recording Whisper cannot transcribe gets no transcript, so the
    window model answers for it, as for any recording without one."""
    from workers import runtime
    from workers.pipeline.whisper_asr import transcribe
    from workers.pipeline.whisper_lang import WhisperError

    todo = [(rec, samples) for rec, samples in decoded if not rec.transcript]
    if not todo or not getattr(getattr(loaded, "model", None), "needs_transcript", False):
        return {}
    t0 = time.perf_counter()
    try:
        engine = runtime.load_whisper()
    except WhisperError:
        logger.exception("transcript auto: no Whisper; the reading model runs without transcripts")
        return {}
    out: dict[int, tuple[dict, dict]] = {}
    for rec, samples in todo:
        try:
            out[rec.pk] = (transcribe(engine, samples, language="en"), engine.describe())
        except WhisperError:
            logger.exception("transcript auto failed", extra={"recording_id": rec.pk})
        heartbeat()
    timings["transcribe"] += time.perf_counter() - t0
    return out


def _fail_all_unavailable(ctx, exc: Exception) -> None:
    """The chunk's model cannot be loaded: no use retrying, every recording fails with the reason."""
    for rec in ctx.recordings:
        services.result_fail(job=ctx.job, recording=rec, code="model_unavailable", message=str(exc))


def _audio_groups(decoded: list, group_s: float) -> list[list]:
    """``(recording, samples)`` pairs in order, cut into consecutive groups of at least ``group_s``
    seconds of 16 kHz audio each: a group closes once it holds ``group_s`` (the last may hold less)."""
    from workers.pipeline.audio import TARGET_SR

    groups: list[list] = [[]]
    seconds = 0.0
    for pair in decoded:
        if groups[-1] and seconds >= group_s:
            groups.append([])
            seconds = 0.0
        groups[-1].append(pair)
        seconds += len(pair[1]) / TARGET_SR
    return [g for g in groups if g]


@shared_task(bind=True, **_RETRY)
def run_model_chunk(self, chunk_id: int) -> None:
    """Classify or embed a chunk: decode all, then batched inference over groups of recordings
    (``MODEL_GROUP_AUDIO_S`` of audio each), storing each group's results as it finishes."""

    def process(ctx, timings):
        from workers import runtime
        from workers.pipeline.audio import AudioError
        from workers.pipeline.inference import classify_batch, embed_batch

        job, params = ctx.job, ctx.job.params
        t0 = time.perf_counter()
        try:
            loaded = runtime.load_model(job.model_version)
        except runtime.ModelUnavailable as exc:
            _fail_all_unavailable(ctx, exc)
            return
        timings["model_load"] += time.perf_counter() - t0
        if job.kind == Job.Kind.CLASSIFY and params.get("classes"):  # a zero-shot model answers the job's own classes
            from workers.pipeline.spoken_words import bind_classes

            loaded = bind_classes(loaded, params["classes"])
        decoded: list[tuple[Recording, object]] = []
        for rec in ctx.recordings:
            t = time.perf_counter()
            try:
                decoded.append((rec, _decode(rec).samples))
            except AudioError as exc:
                services.result_fail(job=job, recording=rec, code=exc.code, message=exc.message)
            except TRANSIENT + (SoftTimeLimitExceeded,):
                raise
            except Exception as exc:
                _fail_unexpected(ctx, rec, exc)
            timings["decode"] += time.perf_counter() - t
        if not decoded or services.job_is_cancelled(job_id=job.pk):
            return
        window = runtime.window_params(loaded, params)
        batch_size = params.get("batch_size") or runtime.default_batch_size(loaded)
        # the chunk's recordings in groups of about MODEL_GROUP_AUDIO_S of audio: each group is one
        # batched inference and its results are stored before the next starts, so progress moves
        # (and a chunk stopped half way keeps what it finished) while batches stay full
        for group in _audio_groups(decoded, settings.MODEL_GROUP_AUDIO_S):
            if services.job_is_cancelled(job_id=job.pk):
                return
            services.chunk_heartbeat(chunk_id=ctx.chunk.pk)
            signals = [s for _, s in group]
            heard: dict[int, tuple[dict, dict]] = {}
            if job.kind == Job.Kind.CLASSIFY:
                if params.get("transcript") == AUTO_TRANSCRIPT:
                    heard = _auto_transcripts(loaded, group, timings, lambda: services.chunk_heartbeat(chunk_id=ctx.chunk.pk))
                    texts = [rec.transcript or (heard[rec.pk][0]["text"] if rec.pk in heard else "") for rec, _ in group]
                else:  # a recording's own transcript, else the job's (the text every speaker read)
                    texts = [rec.transcript or params.get("transcript") or "" for rec, _ in group]
                outcomes = classify_batch(
                    loaded, signals, threshold=params.get("threshold"), vad=params.get("vad", settings.CLASSIFY_VAD_DEFAULT),
                    min_speech_s=params.get("min_speech_s", loaded.spec.extra.get("min_speech_s", 1.0)), batch_size=batch_size,
                    autocast=runtime.use_autocast(loaded), **window, transcripts=texts,
                )
            else:
                outcomes = embed_batch(
                    loaded, signals, per_window=params.get("per_window", False),
                    batch_size=batch_size, autocast=runtime.use_autocast(loaded), **window,
                )
            t = time.perf_counter()
            for (rec, _), outcome in zip(group, outcomes, strict=True):
                stage = outcome.timings
                for key, seconds in stage.items():
                    timings[key] += seconds
                if job.kind == Job.Kind.CLASSIFY:
                    said, said_by = heard.get(rec.pk, (None, None))
                    services.result_store_prediction(job=job, recording=rec, outcome=outcome, timings=stage,
                                                     transcript=said, transcript_model=said_by)
                else:
                    services.result_store_embedding(job=job, recording=rec, outcome=outcome, timings=stage)
            timings["store"] += time.perf_counter() - t

    _run_chunk(self, chunk_id, process)


def _transcribe_long(ctx, rec: Recording, samples, run) -> dict:
    """``run(samples)``, or for a recording over ``TRANSCRIBE_PIECE_S`` the same piece by piece, each
    piece saved on the chunk as it is done and a redelivered chunk going on after the last one
    (``workers/pipeline/pieces.py``)."""
    from workers.pipeline.pieces import run_in_pieces

    if len(samples) <= settings.TRANSCRIBE_PIECE_S * settings.AUDIO_SAMPLE_RATE:
        return run(samples)
    chunk_id = ctx.chunk.pk

    def save(state: dict) -> None:
        services.chunk_partial_save(chunk_id=chunk_id, recording_id=rec.pk, state=state)
        services.chunk_heartbeat(chunk_id=chunk_id)

    outcome = run_in_pieces(run, samples, sample_rate=settings.AUDIO_SAMPLE_RATE, piece_s=settings.TRANSCRIBE_PIECE_S,
                            partial=services.chunk_partial(chunk_id=chunk_id, recording_id=rec.pk), save=save)
    services.chunk_partial_save(chunk_id=chunk_id, recording_id=rec.pk, state=None)
    return outcome


@shared_task(bind=True, **_RETRY)
def run_whisper_chunk(self, chunk_id: int) -> None:
    """Language identification or transcription of a chunk with the process's Whisper, one recording at a time."""

    def process(ctx, timings):
        from workers import runtime
        from workers.pipeline.audio import AudioError
        from workers.pipeline.whisper_asr import transcribe, transcribe_options
        from workers.pipeline.whisper_lang import WhisperError, identify_languages, language_options

        job, params = ctx.job, ctx.job.params
        t0 = time.perf_counter()
        try:
            engine = runtime.load_whisper()
        except WhisperError as exc:
            _fail_all_unavailable(ctx, exc)
            return
        timings["model_load"] += time.perf_counter() - t0
        for rec in ctx.recordings:
            if services.job_is_cancelled(job_id=job.pk):
                break
            t = time.perf_counter()
            try:
                samples = _decode(rec).samples
                decoded = time.perf_counter()
                if job.kind == Job.Kind.LANGUAGE:
                    outcome = identify_languages(engine, samples, **language_options(params))
                else:
                    options = transcribe_options(params)

                    def run(piece, options=options):
                        return transcribe(engine, piece, **options)

                    outcome = _transcribe_long(ctx, rec, samples, run)
            except AudioError as exc:
                services.result_fail(job=job, recording=rec, code=exc.code, message=exc.message)
                continue
            except WhisperError as exc:
                services.result_fail(job=job, recording=rec, code="model_unavailable", message=str(exc))
                continue
            except TRANSIENT + (SoftTimeLimitExceeded,):
                raise
            except Exception as exc:  # a bug or odd input in one recording must not sink the chunk
                _fail_unexpected(ctx, rec, exc)
                continue
            rec_timings = {"decode": decoded - t, **outcome.get("timings", {})}
            stored = time.perf_counter()
            if job.kind == Job.Kind.LANGUAGE:
                services.result_store_language(job=job, recording=rec, outcome=outcome, model=engine.describe(), timings=rec_timings)
            else:
                services.result_store_transcript(job=job, recording=rec, transcript=outcome, model=engine.describe(), timings=rec_timings)
            for key, seconds in rec_timings.items():
                timings[key] += seconds
            timings["store"] += time.perf_counter() - stored
            services.chunk_heartbeat(chunk_id=ctx.chunk.pk)

    _run_chunk(self, chunk_id, process)


@shared_task(bind=True, acks_late=True, autoretry_for=(OperationalError, InterfaceError), retry_backoff=5, max_retries=3,
             soft_time_limit=settings.TRAIN_SOFT_TIME_LIMIT_S, time_limit=settings.TRAIN_TIME_LIMIT_S)
def run_train_job(self, chunk_id: int) -> None:
    """Train a model on a job's labelled recordings; progress moves by epoch.

    Its own time limits (``TRAIN_SOFT_TIME_LIMIT_S`` / ``TRAIN_TIME_LIMIT_S``, hours), not the chunk
    tasks' minutes: Celery's prefork pool enforces them, the soft one fails the job with its reason."""
    from recognition.errors import ServiceError
    from recognition.services import training

    close_old_connections()
    ctx = services.chunk_start(chunk_id=chunk_id, worker=self.request.hostname or "", task_id=self.request.id or "")
    if ctx is None:
        return
    job_id = ctx.job.pk

    checked = [0.0]

    def progress(stage: str, done: int, total: int, info: dict) -> None:
        """Every step of training reports here: progress by epoch, and a cancel stops it (checked at
        most every TRAIN_CANCEL_CHECK_S, between epochs, feature batches and evaluation steps)."""
        if stage == "train":
            training.train_job_progress(job_id=job_id, done=done, total=total)
        now = time.monotonic()
        if now - checked[0] >= settings.TRAIN_CANCEL_CHECK_S:
            checked[0] = now
            if services.job_is_cancelled(job_id=job_id):
                raise training.TrainingCancelled()

    # a training may run for hours: the reaper must see it alive, until its job is closed
    with _heartbeating(chunk_id):
        try:
            mv = training.train_job_run(job=ctx.job, progress=progress)
        except training.TrainingCancelled:
            training.train_job_stopped(job_id=job_id, chunk_id=chunk_id)
        except ServiceError as exc:
            training.train_job_finish(job_id=job_id, model_version=None, error=exc.message)
        except SoftTimeLimitExceeded:
            training.train_job_finish(job_id=job_id, model_version=None, error="Training exceeded its time limit.")
        except TRANSIENT:
            raise  # retried
        except Exception as exc:  # bad hyper-parameters, too little data for a split, a bug: fail once, with the reason
            logger.exception("training failed", extra={"job_id": job_id})
            training.train_job_finish(job_id=job_id, model_version=None, error=f"Training failed: {type(exc).__name__}: {exc}")
        else:
            training.train_job_finish(job_id=job_id, model_version=mv)


@shared_task(bind=True, acks_late=False, ignore_result=True)  # a person waits: a lost message shows as a lapsed request
def run_predict(self, *, request_id: str, key: str, format: str, model_version_id: int | None, threshold, vad: bool,
                transcript: str, task: str = "classify", params: dict | None = None, classes: list | None = None) -> None:
    """``/predict`` on a worker (``workers/predict.py``): run one stored upload, publish the answer."""
    from workers.predict import predict_serve

    if not self.request.is_eager:
        close_old_connections()
    predict_serve(request_id=request_id, key=key, format=format, model_version_id=model_version_id, threshold=threshold,
                  vad=vad, transcript=transcript, task=task, params=params or {}, classes=classes,
                  worker=self.request.hostname or "")
