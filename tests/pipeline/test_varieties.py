"""Native varieties from manifest rows, and recall / uncertain share per variety."""

from __future__ import annotations

import pytest

from workers.pipeline.varieties import native_variety, variety_markdown, variety_recall


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
