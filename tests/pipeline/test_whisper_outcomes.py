"""Typed Whisper outcomes: read by attribute, built from the pipeline's dicts without losing a key."""
from __future__ import annotations

import pytest

from workers.pipeline.whisper_outcomes import LanguageOutcome, TranscribeOutcome

LANGUAGE = {"outcome": "ok", "language": "fr", "probability": 0.91, "scored": "windows", "shares": {"fr": 1.0},
            "mean_probabilities": {"fr": 0.91, "en": 0.05}, "whole": None,
            "windows": [{"start_s": 0.0, "end_s": 4.0, "speech": True, "language": "fr", "probability": 0.91, "top": {"fr": 0.91}}],
            "speech_windows": 1, "languages": None, "window_s": 4.0, "scan_s": None, "min_windows": 3, "min_probability": 0.4,
            "pad_windows": True, "windows_padded": True, "gain_db": 3.5, "duration_s": 4.2, "timings": {"vad": 0.01, "language": 0.2}}
TRANSCRIPT = {"text": "hello there", "language": "en", "language_probability": 0.98, "languages": {"en": 2.0},
              "segments": [{"start_s": 0.0, "end_s": 2.0, "text": "hello there", "language": "en", "words": []}],
              "speech_s": 2.0, "duration_s": 2.5, "params": {"beam_size": 5}, "timings": {"transcribe": 0.4}}


@pytest.mark.parametrize(("cls", "data"), [(LanguageOutcome, LANGUAGE), (TranscribeOutcome, TRANSCRIPT)])
def test_an_outcome_is_read_by_attribute_and_gives_back_the_dict_it_was_made_from(cls, data):
    outcome = cls.from_dict(data)
    assert outcome.as_dict() == data
    assert outcome.timings == data["timings"] and outcome.language == data["language"]
    assert outcome["language"] == data["language"] and outcome.get("nothing", 1) == 1  # the deprecated dict reading
    assert cls.from_dict(outcome) is outcome


def test_a_key_the_outcome_does_not_know_is_kept():
    """``transcribe`` may grow a key: it comes back from as_dict (the /predict answer) instead of vanishing."""
    outcome = TranscribeOutcome.from_dict({**TRANSCRIPT, "pieces": 3})
    assert outcome.extra == {"pieces": 3} and outcome.as_dict()["pieces"] == 3 and outcome["pieces"] == 3
    assert LanguageOutcome.from_dict(LANGUAGE).extra == {}
