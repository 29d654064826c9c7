"""Synchronous single-file prediction, for people coming from Flask / Gradio ``/predict`` tools."""
from __future__ import annotations

import time
from typing import BinaryIO

from django.conf import settings

from recognition.errors import ServiceError
from recognition.services.models import model_resolve


def predict_file(*, fileobj: BinaryIO, filename: str, model: str | None = None, threshold: float | None = None,
                 vad: bool = False, transcript: str = "", user=None) -> dict:
    """Decode one upload and classify it in this process (the model is loaded once and kept).

    Returns ``{"predicted_class", "confidence", "all_predictions", "calibrated", "outcome",
    "windows", "model", ...}``; raises ``ServiceError`` with the audio error code for bad input.
    """
    from workers import runtime
    from workers.pipeline.audio import AudioError, load_audio, validate_audio
    from workers.pipeline.inference import classify_batch

    fileobj.seek(0, 2)
    if fileobj.tell() > settings.AUDIO_MAX_UPLOAD_BYTES:
        raise ServiceError("too_large", "The file is over the per-file upload limit.", status_code=413)
    fileobj.seek(0)
    mv = model_resolve(model, task="classify", user=user)
    t0 = time.perf_counter()
    try:
        audio = load_audio(fileobj, settings.AUDIO_SAMPLE_RATE, format_hint=filename.rsplit(".", 1)[-1] if "." in filename else None,
                           max_duration_s=settings.AUDIO_MAX_DURATION_S)
        validate_audio(audio, min_duration_s=settings.AUDIO_MIN_DURATION_S, max_duration_s=settings.AUDIO_MAX_DURATION_S)
    except AudioError as exc:
        raise ServiceError(exc.code, exc.message) from exc
    decode_s = time.perf_counter() - t0
    try:
        loaded = runtime.load_model(mv)
    except runtime.ModelUnavailable as exc:
        raise ServiceError("model_unavailable", str(exc), status_code=409) from exc
    (outcome,) = classify_batch(loaded, [audio.samples], threshold=threshold, vad=vad, transcripts=[transcript],
                                **runtime.window_params(loaded))
    return {
        "predicted_class": outcome.get("predicted_class"),
        "confidence": outcome.get("confidence"),
        "all_predictions": outcome.get("probabilities") or {},
        "all_predictions_raw": outcome.get("probabilities_raw") or {},
        "calibrated": bool(loaded.calibration),
        "outcome": outcome["outcome"],
        "threshold": outcome.get("threshold"),
        "window_share": outcome.get("window_share") or {},
        "agreement": outcome.get("agreement"),
        "speech_fraction": outcome.get("speech_fraction"),
        "windows": outcome.get("windows") or [],
        "reading": {**outcome["reading"], "fused": bool(outcome.get("fused"))} if outcome.get("reading") else None,
        "duration_s": round(audio.duration_s, 3),
        "model": str(mv),
        "checkpoint_sha256": mv.sha256,
        "timings": dict(outcome.get("timings") or {}, decode=decode_s),
    }
