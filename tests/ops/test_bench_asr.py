"""bench.asr_data's WER: the normalisation and the prefix scoring of a cut passage (no audio needed)."""
from __future__ import annotations

import numpy as np

from bench.asr_data import Clip, edit_distance, errors, normalise


def test_normalise_spells_digits_and_drops_punctuation() -> None:
    assert normalise("0, 1, 2. Don't-stop!") == ["zero", "one", "two", "don't", "stop"]
    assert normalise("0123") == ["zero", "one", "two", "three"]
    assert normalise("Hello 12 'quoted'") == ["hello", "twelve", "quoted"]


def test_edit_distance_to_every_prefix() -> None:
    assert edit_distance("a b c".split(), "a x c".split()) == [3, 2, 2, 1]
    assert edit_distance("a b".split(), []) == [0, 1, 2]


def test_a_cut_passage_is_scored_against_its_best_prefix() -> None:
    x = np.zeros(16000, np.float32)
    passage = "Please call Stella. Ask her to bring these things with her from the store."
    cut = Clip("saa.flac", "SAA", x, passage, prefix=True)
    assert errors(cut, "please call stella ask her to bring") == (0, 7)
    assert errors(cut, "please call bella ask her") == (1, 5)
    whole = Clip("so.flac", "speechocean762", x, "IT WAS GOOD FOR ME")
    assert errors(whole, "It was good.") == (2, 5)
