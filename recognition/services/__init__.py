"""Business logic that writes: every state change of recognition's models goes through here."""
from recognition.services.jobs import (  # noqa: F401  (re-exported API)
    chunk_beat_key,
    chunk_beat_now,
    chunk_beat_url,
    chunk_finish,
    chunk_give_up,
    chunk_heartbeat,
    chunk_partial,
    chunk_partial_save,
    chunk_start,
    chunks_beating,
    job_cancel,
    job_finalize,
    job_is_cancelled,
    job_requeue_stuck,
    job_rerun,
    job_retry_failed,
    job_submit,
    result_fail,
    result_store_embedding,
    result_store_features,
    result_store_language,
    result_store_prediction,
    result_store_transcript,
)
from recognition.services.labels import (  # noqa: F401
    label_corrections,
    label_review_create,
)
from recognition.services.models import (  # noqa: F401
    model_resolve,
    model_version_make_default,
    model_version_register,
    shipped_models_register,
)
from recognition.services.recordings import (  # noqa: F401
    Rejection,
    batch_append,
    batch_create,
    recording_create,
    recording_delete,
)
