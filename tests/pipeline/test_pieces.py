"""Long recordings in resumable pieces (workers/pipeline/pieces.py): cuts at pauses, times in the
recording's time, and a run that goes on after the pieces an interrupted run saved."""
import numpy as np
import pytest

from workers.pipeline.pieces import cut_points, run_in_pieces

SR = 16000


def _tone_with_pauses(seconds: float, pauses_at: list[float]) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    x = 0.3 * np.sin(2 * np.pi * 200 * t).astype(np.float32)
    for p in pauses_at:
        x[int((p - 0.3) * SR) : int((p + 0.3) * SR)] = 0.0
    return x


def test_cuts_land_in_the_pauses_near_each_boundary():
    x = _tone_with_pauses(95.0, pauses_at=[31.5, 58.0, 88.0])
    points = cut_points(x, SR, piece_s=30.0)
    assert points[0] == 0 and points[-1] == len(x)
    for cut, pause in zip(points[1:-1], [31.5, 58.0], strict=False):
        assert abs(cut / SR - pause) < 0.35, (cut / SR, pause)  # moved into the silence, not at 30 / 60 s
    assert all(b - a > 20 * SR for a, b in zip(points, points[1:], strict=False))


def _fake_piece(piece: np.ndarray) -> dict:
    seconds = len(piece) / SR
    return {"text": f"piece of {seconds:.0f} s", "language": "en", "language_probability": 0.9, "params": {"beam_size": 1},
            "segments": [{"start_s": 0.5, "end_s": seconds - 0.5, "text": "x",
                          "words": [{"word": "x", "start_s": 0.5, "end_s": 1.0, "probability": 0.9}]}],
            "timings": {"decode": 1.0}}


def test_pieces_merge_into_one_transcript_in_the_recordings_time():
    x = _tone_with_pauses(95.0, pauses_at=[31.5, 58.0, 88.0])
    saved = []
    out = run_in_pieces(_fake_piece, x, sample_rate=SR, piece_s=30.0, save=lambda s: saved.append(len(s["done"])))
    assert out["pieces"] == 3 and len(out["segments"]) == 3 and out["language"] == "en"
    starts = [seg["start_s"] for seg in out["segments"]]
    assert starts[0] == 0.5 and starts[1] == pytest.approx(31.5 + 0.5, abs=0.4) and starts == sorted(starts)
    assert out["segments"][1]["words"][0]["start_s"] == pytest.approx(out["segments"][1]["start_s"])
    assert out["timings"]["decode"] == 3.0 and out["duration_s"] == 95.0
    assert saved == [1, 2]  # saved after each piece but the last (stored with the result)


def test_an_interrupted_run_goes_on_after_the_saved_pieces():
    x = _tone_with_pauses(95.0, pauses_at=[31.5, 58.0, 88.0])
    state = {}

    def dies_on_the_second(piece):
        if state.get("done") and len(state["done"]) == 1:
            raise RuntimeError("worker lost")
        return _fake_piece(piece)

    with pytest.raises(RuntimeError):
        run_in_pieces(dies_on_the_second, x, sample_rate=SR, piece_s=30.0, save=state.update)
    ran = []
    out = run_in_pieces(lambda p: ran.append(len(p)) or _fake_piece(p), x, sample_rate=SR, piece_s=30.0, partial=state)
    assert len(ran) == 2 and out["pieces"] == 3  # the first piece was not heard again
