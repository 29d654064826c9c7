"""Native varieties from manifest rows, and recall / uncertain share per variety and per first language."""

from __future__ import annotations

import pytest

from workers.pipeline.varieties import (
    l1_markdown,
    l1_recall,
    native_variety,
    right_class,
    variety_markdown,
    variety_recall,
)


@pytest.mark.parametrize(("corpus", "detail", "variety"), [
    ("SAA", "SAA:english:boston; massachusetts; usa", "US"),
    ("SAA", "SAA:english:arlington; virginia", "US"),
    ("SAA", "SAA:english:belfast; northern ireland; uk", "UK"),
    ("SAA", "SAA:english:glasgow; scotland; uk", "UK"),
    ("SAA", "SAA:english:dublin; ireland", "Ireland"),
    ("SAA", "SAA:english:calgary; alberta; canada", "Canada"),
    ("SAA", "SAA:english:auckland; new zealand", "NZ"),
    ("SAA", "SAA:english:launceston; tasmania; australia", "Australia"),
    ("SAA", "SAA:english:bombay; india", "other"),
    ("SAA", "SAA:english:st. thomas; us virgin islands", "other"),
    ("SAA", "SAA:english:kingston; jamaica", "other"),
    ("VCTK", "VCTK:Scottish:Orkney", "UK"),
    ("VCTK", "VCTK:SouthAfrican:Johannesburg", "other"),
    ("VCTK", "VCTK:Canadian:Toronto", "Canada"),
    ("LibriSpeech", "LibriSpeech:unlabelled(mostly North American)", "unlabelled"),
    ("VCC2020_EMIME", "VCC2020:SEF1", "unlabelled"),
    ("CMU_ARCTIC", "CMU_ARCTIC:bdl US male", "US"),
])
def test_native_variety_reads_the_manifest(corpus: str, detail: str, variety: str) -> None:
    assert native_variety({"corpus": corpus, "accent_detail": detail}) == variety


def test_variety_recall_counts_answers_uncertain_and_misses_per_variety() -> None:
    varieties = ["US", "US", "US", "US", "other", "other"]
    speakers = ["a", "a", "b", "c", "d", "e"]
    predicted = ["native", "native", "non_native", "native", "non_native", "native"]
    answered = [True, False, True, True, True, False]
    rows = {r["variety"]: r for r in variety_recall(varieties, speakers, predicted, answered, native="native")}
    assert list(rows) == ["US", "other", "all"]
    us = rows["US"]
    assert (us["clips"], us["speakers"], us["recall"], us["recall_at_threshold"], us["uncertain"],
            us["non_native_at_threshold"]) == (4, 3, 0.75, 0.5, 0.25, 0.25)
    assert rows["other"]["recall"] == 0.5 and rows["other"]["recall_at_threshold"] == 0.0
    assert rows["other"]["non_native_at_threshold"] == 0.5 and rows["all"]["clips"] == 6
    table = "\n".join(variety_markdown(list(rows.values()), 0.666))
    assert "| US | 4 | 3 | 0.750 | 0.500 | 0.250 | 0.250 |" in table and "at threshold 0.666" in table


@pytest.mark.parametrize(("l1", "labels", "right"), [
    ("mandarin", ("mandarin_l1", "native_english", "other_l1"), "mandarin_l1"),
    ("korean", ("mandarin_l1", "native_english", "other_l1"), "other_l1"),
    ("english", ("mandarin_l1", "native_english", "other_l1"), "native_english"),
    ("english(presumed)", ("native", "non_native"), "native"),
    ("mandarin", ("native", "non_native"), "non_native"),
    ("unknown(Indian English)", ("native", "non_native"), "non_native"),
])
def test_right_class_of_a_first_language(l1: str, labels: tuple, right: str) -> None:
    assert right_class(l1, labels) == right


def test_l1_recall_keeps_l1s_with_enough_speakers_and_splits_answers_into_right_uncertain_wrong() -> None:
    labels = ("mandarin_l1", "native_english", "other_l1")
    l1s = ["mandarin"] * 4 + ["korean"] * 3 + ["greek"]
    speakers = ["m1", "m1", "m2", "m3", "k1", "k2", "k3", "g1"]
    predicted = ["mandarin_l1", "other_l1", "mandarin_l1", "native_english", "other_l1", "mandarin_l1", "other_l1",
                 "other_l1"]
    answered = [True, True, False, True, True, True, False, True]
    rows, warning = l1_recall(l1s, speakers, predicted, answered, labels=labels, min_speakers=3)
    assert warning is None and [r["l1"] for r in rows] == ["korean", "mandarin"]  # greek: one speaker
    korean, mandarin = rows
    assert (mandarin["right"], mandarin["clips"], mandarin["speakers"]) == ("mandarin_l1", 4, 3)
    assert mandarin["given"] == {"mandarin_l1": 0.5, "native_english": 0.25, "other_l1": 0.25}
    assert (mandarin["right_at_threshold"], mandarin["uncertain"], mandarin["wrong_at_threshold"]) == (0.25, 0.25, 0.5)
    assert korean["right"] == "other_l1" and korean["given"]["other_l1"] == pytest.approx(2 / 3)
    assert (korean["right_at_threshold"], korean["uncertain"]) == (pytest.approx(1 / 3), pytest.approx(1 / 3))
    table = "\n".join(l1_markdown(rows, labels, 0.6))
    assert "| mandarin | mandarin_l1 | 4 | 3 | **0.500** | 0.250 | 0.250 | 0.250 | 0.250 | 0.500 |" in table
    assert "at threshold 0.6: right" in table and "answer all: as other_l1" in table


def test_l1_recall_lists_the_largest_with_a_warning_when_none_reaches_the_count() -> None:
    rows, warning = l1_recall(["french", "french", "dutch", "greek"], ["f1", "f2", "d1", "g1"], ["other_l1"] * 4,
                              [True] * 4, labels=("mandarin_l1", "native_english", "other_l1"), min_speakers=10,
                              fallback=2)
    assert [r["l1"] for r in rows] == ["french", "dutch"]  # most speakers first, then by name
    assert warning and "no L1 has 10 test speakers" in warning
