"""A long recording is transcribed in resumable pieces: its chunk saves each piece as it is done, and
a redelivered chunk goes on after the saved pieces (the chunk task runs in this process, on the real
Whisper model and the test database)."""
import io

import pytest

from recognition import services
from recognition.models import JobChunk, Transcript
from tests.conftest import speech

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

TEXT = ("Please call Stella. Ask her to bring these things with her from the store. "
        "Six spoons of fresh snow peas, five thick slabs of blue cheese, and maybe a snack for her brother Bob.")


@pytest.fixture
def long_recording(user):
    from workers.runtime import whisper_model_problem

    if whisper_model_problem():
        pytest.skip(f"no Whisper model here: {whisper_model_problem()}")
    return services.recording_create(owner=user, fileobj=io.BytesIO(speech(TEXT, speed=140)), filename="long.wav")[0]


def _run(chunk_id: int) -> None:
    from workers.tasks import run_whisper_chunk

    run_whisper_chunk.apply(args=(chunk_id,)).get()


def test_a_long_recording_is_transcribed_in_pieces_and_resumes_after_saved_ones(user, long_recording, settings):
    settings.TRANSCRIBE_PIECE_S = 6.0
    assert long_recording.duration_s > 12  # at least two pieces of 6 s
    job = services.job_submit(owner=user, kind="transcribe", recordings=[long_recording], params={"language": "en"},
                              enqueue=False)
    chunk = job.chunks.get()
    _run(chunk.pk)
    whole = Transcript.objects.get(result__job=job)
    words = whole.text.lower()
    assert "please call" in words and "brother" in words, whole.text  # the first piece and the last
    starts = [s["start_s"] for s in whole.segments]
    assert starts == sorted(starts) and whole.segments[-1]["end_s"] > 10  # in the recording's time
    assert JobChunk.objects.get(pk=chunk.pk).partial == {}  # forgotten once stored

    # as if a worker was lost after the first piece: its saved state says what was done
    from workers.pipeline.audio import load_audio
    from workers.pipeline.pieces import cut_points

    with long_recording.file.open("rb") as fh:
        samples = load_audio(fh, 16000).samples
    cuts = cut_points(samples, 16000, 6.0)
    again = services.job_submit(owner=user, kind="transcribe", recordings=[long_recording], params={"language": "en"},
                                enqueue=False)
    done = [{"text": "ALREADY HEARD", "language": "en", "language_probability": 1.0, "params": {},
             "segments": [{"start_s": 0.1, "end_s": cuts[1] / 16000 - 0.1, "text": "ALREADY HEARD", "words": []}],
             "timings": {}}]
    services.chunk_partial_save(chunk_id=again.chunks.get().pk, recording_id=long_recording.pk,
                                state={"cuts": cuts, "done": done})
    _run(again.chunks.get().pk)
    resumed = Transcript.objects.get(result__job=again)
    assert resumed.text.startswith("ALREADY HEARD") and "brother" in resumed.text.lower()
    assert "please call" not in resumed.text.lower()  # the first piece was not transcribed again
