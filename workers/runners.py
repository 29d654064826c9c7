"""Job-kind runners: how each kind processes the recordings of one chunk (NetBox's ``JobRunner`` habit).

A kind is declared once in :mod:`recognition.jobkinds` (queue, chunks, parameters) and run here by
its :class:`Runner`, found in :data:`RUNNERS` by the kind's name; ``workers.tasks`` claims the chunk,
keeps it beating, calls ``RUNNERS[kind].run(ctx, timings)`` and closes it. How a job *ends* is the
declaration's (``JobKind.finalize``, resolved in ``recognition.services.jobs``).

Every recording goes through one error ladder, :func:`recording_errors`: bad audio fails that recording
with its reason, a model error fails it ``model_unavailable``, transient errors and the time limit go up
(the task is retried / the chunk closes), and anything else fails the recording ``processing_error``
with the traceback logged. Never retried.

Django-aware (services), like ``workers.tasks``. Pipeline and torch imports happen inside the methods,
never at import time, so nothing touches torch before a prefork worker forks.
"""
from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.db import InterfaceError, OperationalError
from kombu.exceptions import OperationalError as BrokerError

from models.hooks import model_hook
from recognition import services
from recognition.models import Recording

logger = logging.getLogger(__name__)

# Named transient errors: a dropped database connection, a broker hiccup. Bad audio is never retried.
TRANSIENT = (OperationalError, InterfaceError, BrokerError, ConnectionError)
#: ``"transcript": "auto"`` in a classify job: Whisper transcribes recordings that have no transcript
AUTO_TRANSCRIPT = "auto"


def decode(recording: Recording):
    """Open by storage key (never a local path), decode to 16 kHz mono and validate."""
    from workers.pipeline.audio import load_audio, validate_audio

    with recording.file.storage.open(recording.file.name, "rb") as fh:
        audio = load_audio(fh, settings.AUDIO_SAMPLE_RATE, format_hint=recording.format, max_duration_s=settings.AUDIO_MAX_DURATION_S)
    validate_audio(audio, min_duration_s=settings.AUDIO_MIN_DURATION_S, max_duration_s=settings.AUDIO_MAX_DURATION_S)
    return audio


@dataclass
class Step:
    """What :func:`recording_errors` tells the code after its block: whether the recording failed."""

    failed: bool = False


@contextlib.contextmanager
def recording_errors(ctx, rec: Recording, *, model_errors: tuple[type[BaseException], ...] = ()) -> Iterator[Step]:
    """The per-recording error ladder around one recording's work; ``step.failed`` after the block says
    whether the recording failed (and was recorded as failed with its reason).

    ``AudioError``: its code and message. ``model_errors`` (e.g. ``WhisperError``): ``model_unavailable``.
    Transient errors (:data:`TRANSIENT`) and ``SoftTimeLimitExceeded``: raised on. Anything else:
    ``processing_error`` with the exception's type and text, logged with its traceback: a bug or odd
    input in one recording must not sink the chunk.
    """
    from workers.pipeline.audio import AudioError

    step = Step()
    try:
        yield step
    except AudioError as exc:
        step.failed = True
        services.result_fail(job=ctx.job, recording=rec, code=exc.code, message=exc.message)
    except TRANSIENT + (SoftTimeLimitExceeded,):
        raise
    except model_errors as exc:
        step.failed = True
        services.result_fail(job=ctx.job, recording=rec, code="model_unavailable", message=str(exc))
    except Exception as exc:
        step.failed = True
        logger.exception("recording failed", extra={"job_id": ctx.job.pk, "recording_id": rec.pk})
        services.result_fail(
            job=ctx.job, recording=rec, code="processing_error",
            message=f"Processing failed with {type(exc).__name__}: {exc}. Report this if it repeats.",
        )


def _fail_all_unavailable(ctx, exc: Exception) -> None:
    """The chunk's model cannot be loaded: no use retrying, every recording fails with the reason."""
    for rec in ctx.recordings:
        services.result_fail(job=ctx.job, recording=rec, code="model_unavailable", message=str(exc))


def _beat(ctx) -> None:
    services.chunk_heartbeat(chunk_id=ctx.chunk.pk)


class Runner:
    """How one job kind processes the recordings of a chunk: :meth:`run` does it all, inside the chunk
    loop of ``workers.tasks`` (claim, heartbeat, time limit, close)."""

    def run(self, ctx, timings: dict[str, float]) -> None:
        raise NotImplementedError

    def warm_up(self, *, before_fork: bool) -> None:
        """Pay a fresh process's one-time costs (imports, JIT, library set-up) at worker start, not on
        the first chunk: ``before_fork`` in the worker's parent (no torch operation), then in each
        child. Nothing by default; models load on their first chunk (``workers.runtime``)."""


def warm_up(queues: Iterable[str], *, before_fork: bool) -> dict[str, float]:
    """Warm the runner of every kind whose chunks can reach a worker consuming ``queues`` (the kind's
    queue, or ``interactive`` for an interactive kind) and that has a warm-up. Returns ``{kind: seconds}``."""
    from recognition import jobkinds

    consumed = set(queues)
    seconds: dict[str, float] = {}
    for name, runner in RUNNERS.items():
        if type(runner).warm_up is Runner.warm_up:
            continue
        kind = jobkinds.get(name)
        if consumed & ({kind.queue} | ({"interactive"} if kind.interactive else set())):
            t0 = time.perf_counter()
            runner.warm_up(before_fork=before_fork)
            seconds[name] = time.perf_counter() - t0
    return seconds


class OneAtATime(Runner):
    """A kind that handles one recording at a time: :meth:`load` once per chunk (a model load error
    fails every recording ``model_unavailable``), then per recording decode, :meth:`process` and
    :meth:`store`, stopping between recordings when the job is cancelled."""

    def load_errors(self) -> tuple[type[BaseException], ...]:
        """Errors of :meth:`load` (and of :meth:`process`) that mean the model is unavailable."""
        return ()

    def load(self, ctx) -> Any:
        return None

    def prepare(self, ctx, engine: Any) -> None:
        """Work on the chunk as a whole before its recordings one by one (nothing by default)."""

    def process(self, ctx, rec: Recording, audio, engine: Any) -> tuple[Any, dict[str, float]]:
        """``(outcome, stage timings)`` of one decoded recording (``audio``: ``workers.pipeline.audio.Audio``)."""
        raise NotImplementedError

    def store(self, ctx, rec: Recording, outcome: Any, engine: Any, timings: dict[str, float]) -> None:
        raise NotImplementedError

    def run(self, ctx, timings: dict[str, float]) -> None:
        errors = self.load_errors()
        t0 = time.perf_counter()
        try:
            engine = self.load(ctx)
        except errors as exc:
            _fail_all_unavailable(ctx, exc)
            return
        if engine is not None:
            timings["model_load"] += time.perf_counter() - t0
        self.prepare(ctx, engine)
        for rec in ctx.recordings:
            if services.job_is_cancelled(job_id=ctx.job.pk):
                break
            t = time.perf_counter()
            with recording_errors(ctx, rec, model_errors=errors) as step:
                audio = decode(rec)
                decoded = time.perf_counter()
                outcome, stages = self.process(ctx, rec, audio, engine)
            if step.failed:
                continue
            rec_timings = {"decode": decoded - t, **stages}
            stored = time.perf_counter()
            self.store(ctx, rec, outcome, engine, rec_timings)
            for key, seconds in rec_timings.items():
                timings[key] += seconds
            timings["store"] += time.perf_counter() - stored
            _beat(ctx)


class FeaturesRunner(OneAtATime):
    """``features``: the job's extractors (``params.extractors``, all by default) on each recording."""

    def warm_up(self, *, before_fork: bool) -> None:
        """The default extractors once on a synthetic voice (``features.warm_up``): those without torch
        in the parent, so the children inherit librosa's numba kernels and openSMILE's set-up, the
        torch ones (log-mel, MFCC) in each child."""
        import workers.pipeline.audio  # noqa: F401  (the decoder's imports)
        from workers.pipeline.features import warm_up

        warm_up(uses_torch=not before_fork)

    def process(self, ctx, rec, audio, engine):
        from workers.pipeline.features import extract_features

        t = time.perf_counter()
        results = extract_features(audio.samples, audio.sample_rate, names=ctx.job.params.get("extractors") or None)
        return results, {"features": time.perf_counter() - t}

    def store(self, ctx, rec, outcome, engine, timings):
        from workers.pipeline.features import result_to_npz_bytes

        features = {
            name: {"version": r.version, "config": r.config, "summary": r.summary, "array_names": sorted(r.arrays)}
            for name, r in outcome.items()
        }
        services.result_store_features(job=ctx.job, recording=rec, features=features, npz=result_to_npz_bytes(outcome),
                                       timings=timings)


class WhisperRunner(OneAtATime):
    """Language identification and transcription with the process's Whisper, one recording at a time."""

    def load_errors(self):
        from workers.pipeline.whisper_lang import WhisperError

        return (WhisperError,)

    def load(self, ctx):
        from workers import runtime

        return runtime.load_whisper()


class LanguageRunner(WhisperRunner):
    """``language``: the spoken language of each recording (``whisper_lang.identify_languages``)."""

    def process(self, ctx, rec, audio, engine):
        from workers.pipeline.whisper_lang import identify_languages, language_options
        from workers.pipeline.whisper_outcomes import LanguageOutcome

        outcome = LanguageOutcome.from_dict(identify_languages(engine, audio.samples, **language_options(ctx.job.params)))
        return outcome, dict(outcome.timings)

    def store(self, ctx, rec, outcome, engine, timings):
        services.result_store_language(job=ctx.job, recording=rec, outcome=outcome, model=engine.describe(), timings=timings)


class TranscribeRunner(WhisperRunner):
    """``transcribe``: what Whisper heard in each recording. The chunk's recordings up to
    ``TRANSCRIBE_PIECE_S`` are first transcribed in one call, so that their short speech pieces share
    Whisper encodings (``workers/pipeline/whisper_pack.py``); a longer one goes piece by piece, each piece
    saved on the chunk as it is done (``workers/pipeline/pieces.py``)."""

    def __init__(self) -> None:
        self._together: dict[int, dict[int, dict]] = {}  # chunk id -> {recording id: transcribe's outcome}

    def prepare(self, ctx, engine):
        """Every recording that decodes and is short enough, in one ``transcribe_many`` call; one that
        does not decode, a long one, or all of them when the shared call fails, are left to
        :meth:`process` one at a time (and fail alone)."""
        from workers.pipeline.audio import AudioError
        from workers.pipeline.whisper_asr import transcribe_many, transcribe_options

        self._together.clear()  # a worker process runs one chunk at a time: nothing of an earlier one is kept
        options = transcribe_options(ctx.job.params)
        if not options.get("pack", True):
            return
        limit = settings.TRANSCRIBE_PIECE_S * settings.AUDIO_SAMPLE_RATE
        decoded: dict[int, Any] = {}
        for rec in ctx.recordings:
            try:
                samples = decode(rec).samples
            except AudioError:
                continue  # fails, with its reason, when process meets it
            if len(samples) <= limit:
                decoded[rec.pk] = samples
        if len(decoded) < 2:
            return
        try:
            outcomes = transcribe_many(engine, list(decoded.values()), **options)
        except TRANSIENT + (SoftTimeLimitExceeded,):
            raise
        except Exception:  # one odd recording must not fail the others: process takes them one by one
            logger.exception("shared transcription failed; transcribing one recording at a time", extra={"job_id": ctx.job.pk})
            return
        self._together[ctx.chunk.pk] = dict(zip(decoded, outcomes, strict=True))

    def process(self, ctx, rec, audio, engine):
        from workers.pipeline.whisper_asr import transcribe, transcribe_options
        from workers.pipeline.whisper_outcomes import TranscribeOutcome

        ready = self._together.get(ctx.chunk.pk, {}).pop(rec.pk, None)
        if ready is None:
            options = transcribe_options(ctx.job.params)
            ready = _transcribe_long(ctx, rec, audio.samples, lambda piece: transcribe(engine, piece, **options))
        outcome = TranscribeOutcome.from_dict(ready)
        return outcome, dict(outcome.timings)

    def store(self, ctx, rec, outcome, engine, timings):
        services.result_store_transcript(job=ctx.job, recording=rec, transcript=outcome, model=engine.describe(), timings=timings)


def _transcribe_long(ctx, rec: Recording, samples, run: Callable) -> dict:
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


class ModelRunner(Runner):
    """Classify or embed: decode all, then batched inference over groups of recordings
    (``MODEL_GROUP_AUDIO_S`` of audio each), storing each group's results as it finishes."""

    def bind(self, loaded, params: dict) -> Any:
        """The loaded model this job runs (a zero-shot model bound to the job's classes)."""
        return loaded

    def infer(self, ctx, loaded, group: list, timings: dict[str, float], **options) -> tuple[list, dict]:
        """``(outcomes, extra)`` of one group of ``(recording, samples)``; ``extra`` goes to :meth:`store`."""
        raise NotImplementedError

    def store(self, ctx, rec: Recording, outcome, stage: dict[str, float], extra: dict) -> None:
        raise NotImplementedError

    def run(self, ctx, timings: dict[str, float]) -> None:
        from workers import runtime

        job, params = ctx.job, ctx.job.params
        t0 = time.perf_counter()
        try:
            loaded = runtime.load_model(job.model_version)
        except runtime.ModelUnavailable as exc:
            _fail_all_unavailable(ctx, exc)
            return
        timings["model_load"] += time.perf_counter() - t0
        loaded = self.bind(loaded, params)
        decoded: list[tuple[Recording, object]] = []
        for rec in ctx.recordings:
            t = time.perf_counter()
            with recording_errors(ctx, rec):
                decoded.append((rec, decode(rec).samples))
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
            _beat(ctx)
            outcomes, extra = self.infer(ctx, loaded, group, timings, batch_size=batch_size,
                                         autocast=runtime.use_autocast(loaded), **window)
            t = time.perf_counter()
            for (rec, _), outcome in zip(group, outcomes, strict=True):
                stage = outcome.timings
                for key, seconds in stage.items():
                    timings[key] += seconds
                self.store(ctx, rec, outcome, stage, extra)
            timings["store"] += time.perf_counter() - t


class ClassifyRunner(ModelRunner):
    """``classify``: class probabilities per recording; with ``"transcript": "auto"``, Whisper first
    transcribes the recordings that have no transcript, for models that read one."""

    def bind(self, loaded, params):
        if params.get("classes"):  # a zero-shot model answers the job's own classes
            from workers.pipeline.spoken_words import bind_classes

            return bind_classes(loaded, params["classes"])
        return loaded

    def infer(self, ctx, loaded, group, timings, **options):
        from workers import runtime
        from workers.pipeline.inference import classify_batch

        params = ctx.job.params
        heard: dict[int, tuple[Any, dict]] = {}
        if params.get("transcript") == AUTO_TRANSCRIPT:
            heard = _auto_transcripts(loaded, group, timings, lambda: _beat(ctx))
            texts = [rec.transcript or (heard[rec.pk][0].text if rec.pk in heard else "") for rec, _ in group]
        else:  # a recording's own transcript, else the job's (the text every speaker read)
            texts = [rec.transcript or params.get("transcript") or "" for rec, _ in group]
        outcomes = classify_batch(
            loaded, [s for _, s in group], threshold=params.get("threshold"),
            vad=params.get("vad", settings.CLASSIFY_VAD_DEFAULT),
            min_speech_s=runtime.min_speech_s(loaded, params), transcripts=texts, **options,
        )
        return outcomes, heard

    def store(self, ctx, rec, outcome, stage, extra):
        said, said_by = extra.get(rec.pk, (None, None))
        services.result_store_prediction(job=ctx.job, recording=rec, outcome=outcome, timings=stage,
                                         transcript=said, transcript_model=said_by)


class EmbedRunner(ModelRunner):
    """``embed``: one L2-normalised vector per recording (and per window with ``per_window``)."""

    def infer(self, ctx, loaded, group, timings, **options):
        from workers.pipeline.inference import embed_batch

        return embed_batch(loaded, [s for _, s in group], per_window=ctx.job.params.get("per_window", False), **options), {}

    def store(self, ctx, rec, outcome, stage, extra):
        services.result_store_embedding(job=ctx.job, recording=rec, outcome=outcome, timings=stage)


def _auto_transcripts(loaded, decoded: list, timings: dict, heartbeat: Callable[[], None]) -> dict[int, tuple[Any, dict]]:
    """Whisper transcripts ``{recording id: (TranscribeOutcome, engine.describe())}`` for the recordings of a
    chunk that have none, when the model reads a transcript (``needs_transcript``); otherwise none.

    Forced to English: reading models align English text (a non-native speaker's English must not be
    written down as another language). A recording Whisper cannot transcribe gets no transcript, so the
    window model answers for it, as for any recording without one."""
    from workers import runtime
    from workers.pipeline.whisper_asr import transcribe
    from workers.pipeline.whisper_lang import WhisperError
    from workers.pipeline.whisper_outcomes import TranscribeOutcome

    todo = [(rec, samples) for rec, samples in decoded if not rec.transcript]
    if not todo or not model_hook(getattr(loaded, "model", None), "needs_transcript"):
        return {}
    t0 = time.perf_counter()
    try:
        engine = runtime.load_whisper()
    except WhisperError:
        logger.exception("transcript auto: no Whisper; the reading model runs without transcripts")
        return {}
    out: dict[int, tuple[Any, dict]] = {}
    for rec, samples in todo:
        try:
            out[rec.pk] = (TranscribeOutcome.from_dict(transcribe(engine, samples, language="en")), engine.describe())
        except WhisperError:
            logger.exception("transcript auto failed", extra={"recording_id": rec.pk})
        heartbeat()
    timings["transcribe"] += time.perf_counter() - t0
    return out


#: job kind -> its runner (``train`` runs as one task of its own: ``workers.tasks.run_train_job``)
RUNNERS: dict[str, Runner] = {
    "features": FeaturesRunner(),
    "classify": ClassifyRunner(),
    "embed": EmbedRunner(),
    "language": LanguageRunner(),
    "transcribe": TranscribeRunner(),
}
