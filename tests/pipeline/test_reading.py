"""Reading features: a recording aligned to the text its speaker read (pocketsphinx, offline)."""

from __future__ import annotations

import numpy as np
import pytest

from tests.pipeline.test_vad import espeak, needs_espeak
from workers.pipeline.reading import (
    FEATURE_NAMES,
    WORD_FEATURES,
    ReadingAlignment,
    align_reading,
    normalise_prompt,
    passage_matches,
    passage_word_features,
    reading_features,
    reading_features_from_alignment,
    word_report,
)

PASSAGE = ("Please call Stella. Ask her to bring these things with her from the store: six spoons of fresh snow peas, "
           "five thick slabs of blue cheese, and maybe a snack for her brother Bob.")


def test_prompts_are_normalised_to_dictionary_words() -> None:
    assert normalise_prompt("Please call Stella.  Ask her -- it's 5 o'clock!") == [
        "please", "call", "stella", "ask", "her", "it's", "o'clock"]
    assert normalise_prompt("") == [] and normalise_prompt("1234 ...") == []


@needs_espeak
def test_a_reading_of_the_start_of_a_passage_aligns_to_the_words_read() -> None:
    """The reader stopped after 'store': the alignment follows the words read, in order, and stops
    there (the passage goes on). Words the model cannot follow in espeak's voice (its sibilants lie
    above the 3.8 kHz low-pass) are skipped, not allowed to derail the rest; every word read gets
    phones with scores, and the numbers are plausible."""
    x = espeak("Please call Stella. Ask her to bring these things with her from the store.")
    al = align_reading(x, 16000, PASSAGE)
    words = [w for w, _, _ in al.words]
    rest = iter(normalise_prompt(PASSAGE))
    assert all(w in rest for w in words)  # a subsequence of the passage, in its order
    assert len(words) >= 7 and words[-1] == "store" and al.skipped == 14 - len(words)
    assert [a for _, a, _ in al.words] == sorted(a for _, a, _ in al.words)
    aligned = {k for k, name, *_ in al.phones if name not in (None, "SIL")}
    assert len(aligned) >= len(words) - 1  # a word pocketsphinx cannot align is kept, unaligned
    f = dict(zip(FEATURE_NAMES, reading_features_from_alignment(al), strict=True))
    assert 1.0 <= f["words_per_s"] <= 5.0 and 5.0 <= f["phones_per_s"] <= 25.0
    assert f["gop_mean"] <= 0 and f["gop_p10"] <= f["gop_p25"] <= 0
    assert 0.0 <= f["low_gop_share"] <= 1.0 and f["unaligned_word_share"] <= 0.2
    assert f["skipped_word_share"] == pytest.approx(al.skipped / 14) and f["read_share"] > 0.6
    assert np.isnan(f["gop_ZH"])  # a phone the reading never contains: missing, not "perfect"
    assert np.isfinite(f["gop_K"]) and f["frames_K"] > 0  # "call", "ask"


@needs_espeak
def test_the_right_text_covers_the_recording_and_features_are_deterministic() -> None:
    """Aligned to what was said, the words read span most of the recording; aligned to another
    sentence, few words are found and they cover little of it. A recording's features do not
    depend on what the process aligned before."""
    said = "we also need a small plastic snake and a big toy frog for the kids"
    x = espeak(said)
    right = dict(zip(FEATURE_NAMES, reading_features(x, 16000, said), strict=True))
    wrong = dict(zip(FEATURE_NAMES, reading_features(x, 16000, "she can scoop these things into three red bags and "
                                                                 "we will go meet her wednesday"), strict=True))
    assert right["read_share"] > 0.7 and right["read_share"] > wrong["read_share"] + 0.3
    assert right["skipped_word_share"] < 0.4
    reading_features(espeak("Something else entirely, in another voice.", "en-gb"), 16000, PASSAGE)
    again = reading_features(x, 16000, said)
    assert np.array_equal(again, np.array(list(right.values())), equal_nan=True)


def test_no_prompt_or_no_speech_gives_an_empty_alignment() -> None:
    silence = np.zeros(16000, dtype=np.float32)
    assert align_reading(silence, 16000, "").words == []
    al = align_reading(silence, 16000, "zzyzzx qqqxv")  # no word of it is in the dictionary
    assert al.oov == ["qqqxv", "zzyzzx"] and al.prompt_words == 0 and al.words == []
    assert not reading_features_from_alignment(ReadingAlignment()).any()


def test_features_of_a_hand_made_alignment() -> None:
    al = ReadingAlignment(
        words=[("call", 10, 39), ("her", 60, 79)], pauses=[(40, 59)], n_frames=100, prompt_words=2,
        phones=[(0, "SIL", 7, 3, -10.0), (0, "K", 10, 10, -50.0), (0, "AO", 20, 10, -100.0), (0, "L", 30, 10, -400.0),
                (1, None, 60, 20, None)],
    )
    f = dict(zip(FEATURE_NAMES, reading_features_from_alignment(al), strict=True))
    assert f["words_per_s"] == pytest.approx(2 / 70 * 100) and f["pauses_per_s"] == pytest.approx(1 / 70 * 100)
    assert f["speech_share"] == pytest.approx(50 / 70) and f["phones_per_s"] == pytest.approx(3 / 30 * 100)
    assert f["gop_mean"] == pytest.approx(np.mean([-5.0, -10.0, -40.0]))
    assert f["low_gop_share"] == pytest.approx(1 / 3) and f["unaligned_word_share"] == pytest.approx(0.5)
    assert f["gop_L"] == pytest.approx(-40.0) and f["frames_AO"] == pytest.approx(10.0)
    assert f["read_share"] == pytest.approx(70 / 100) and f["skipped_word_share"] == 0.0
    with pytest.raises(ValueError):
        reading_features(np.zeros(8000, dtype=np.float32), 8000, "call her")  # 16 kHz only


def test_the_word_report_of_a_hand_made_alignment() -> None:
    al = ReadingAlignment(
        words=[("call", 10, 39), ("her", 60, 79)], n_frames=100, prompt_words=2,
        phones=[(0, "SIL", 7, 3, -10.0), (0, "K", 10, 10, -50.0), (0, "AO", 20, 10, -100.0), (0, "L", 30, 10, -400.0),
                (1, None, 60, 20, None)],
    )
    call, her = word_report(al)
    # (-50 - 100 - 400) / 30 frames; the SIL margin is not part of the word
    assert call == {"word": "call", "start_s": 0.1, "end_s": 0.4, "gop": -18.3, "weakest": "L", "low": False}
    assert her == {"word": "her", "start_s": 0.6, "end_s": 0.8, "gop": None, "weakest": None, "low": False}
    al.phones[3] = (0, "L", 30, 10, -1600.0)
    assert word_report(al)[0]["low"] and word_report(al)[0]["gop"] == pytest.approx(-58.3)
    assert word_report(ReadingAlignment()) == []


@needs_espeak
def test_passage_word_features_are_keyed_by_position_in_the_passage() -> None:
    """A passage model compares how each word of the passage sounds: features sit at the word's
    position in the passage (a skipped or unread word is NaN), durations are the aligned spans."""
    x = espeak("We also need a small plastic snake and a big toy frog for the kids.")
    passage = "we also need a small plastic snake and a big toy frog for the kids she can scoop"
    al = align_reading(x, 16000, passage)
    f = passage_word_features(x, 16000, al, 16).reshape(16, len(WORD_FEATURES))
    read = dict(zip(al.positions, al.words, strict=True))
    for pos in range(16):
        if pos in read and read[pos][2] > read[pos][1]:
            _, a, b = read[pos]
            assert np.isfinite(f[pos]).all() and f[pos, -1] == b - a + 1
        else:
            assert np.isnan(f[pos]).all()
    assert np.isnan(f[14:]).all()  # "she can" was not read
    assert len(read) >= 8
    words = normalise_prompt(passage)
    assert passage_matches(passage + " and more", words[:5]) and not passage_matches("we also", words[:5])
    assert not passage_matches("", words[:5]) and not passage_matches(passage, [])


@pytest.mark.parametrize(("read_share", "fused"), [(0.8, True), (0.3, False)])
def test_a_passage_model_fuses_only_recordings_that_follow_the_passage(monkeypatch, read_share, fused) -> None:
    """Unrelated audio sent with the passage (the aligner follows it through a small part of the
    recording) keeps the window model's answer, and the summary says why."""
    import workers.pipeline.reading as reading
    from workers.pipeline.inference import MIN_PASSAGE_READ_SHARE, _fuse_reading

    class Passage:
        passage = ["please", "call"]

        def fuse(self, window, feats):
            return np.array([[0.1, 0.9]])

    feats = np.zeros(len(FEATURE_NAMES))
    feats[FEATURE_NAMES.index("read_share")] = read_share
    al = ReadingAlignment(words=[("please", 10, 40)], n_frames=100, prompt_words=2, positions=[0])
    monkeypatch.setattr(reading, "fusion_features", lambda *a, **k: (feats, al))
    window = np.array([0.6, 0.4])
    out, summary = _fuse_reading(Passage(), window, np.zeros(16000), 16000, "Please call Stella.")
    assert (out is not window) is fused and summary["read_share"] == read_share
    if fused:
        assert out.tolist() == [0.1, 0.9] and "note" not in summary
    else:
        assert out is window and f"under {100 * MIN_PASSAGE_READ_SHARE:.0f} %" in summary["note"]
