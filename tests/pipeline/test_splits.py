"""Speaker-disjoint splitting, windowing and balancing."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from workers.pipeline.data import (
    TrainItem,
    balanced_sample_weights,
    check_speaker_disjoint,
    frame_windows,
    parse_label_map,
    read_manifest,
    speaker_disjoint_split,
    speaker_folds,
    window_starts,
)


def _items(n_speakers: int = 40, per: int = 3, declared: bool = False) -> list[TrainItem]:
    items = []
    for s in range(n_speakers):
        label = "a" if s % 3 else "b"
        corpus = "X" if s % 2 else "Y"
        split = ("test" if s % 5 == 0 else "train") if declared else ""
        for k in range(per):
            items.append(TrainItem(f"/x/{s}_{k}.flac", label, f"spk{s}", corpus, split))
    return items


@pytest.mark.parametrize("declared", [False, True])
def test_no_speaker_crosses_splits(declared: bool) -> None:
    items = _items(declared=declared)
    splits = speaker_disjoint_split(items, val_fraction=0.2, test_fraction=0.2, seed=3)
    check_speaker_disjoint(items, splits)
    sets = {k: {items[i].speaker for i in v} for k, v in splits.items()}
    assert not (sets["train"] & sets["val"]) and not (sets["train"] & sets["test"]) and not (sets["val"] & sets["test"])
    assert sorted(i for v in splits.values() for i in v) == list(range(len(items)))
    assert all(splits.values())
    val_labels = Counter(items[i].label for i in splits["val"])
    assert set(val_labels) == {"a", "b"}  # stratified by label


def test_declared_splits_are_honoured() -> None:
    items = _items(declared=True)
    splits = speaker_disjoint_split(items, seed=0)
    assert {items[i].split for i in splits["test"]} == {"test"}
    assert {items[i].split for i in splits["train"] + splits["val"]} == {"train"}


def test_speaker_with_two_declared_splits_goes_to_test() -> None:
    items = [TrainItem("/a", "a", "s1", split="train"), TrainItem("/b", "a", "s1", split="test"),
             TrainItem("/c", "b", "s2", split="train"), TrainItem("/d", "b", "s3", split="train")]
    splits = speaker_disjoint_split(items, val_fraction=0.0)
    assert splits["test"] == [0, 1]
    check_speaker_disjoint(items, splits)


def test_check_detects_leak() -> None:
    items = [TrainItem("/a", "a", "s1"), TrainItem("/b", "a", "s1")]
    with pytest.raises(ValueError):
        check_speaker_disjoint(items, {"train": [0], "test": [1]})


def test_manifest_and_label_map(tmp_path) -> None:
    (tmp_path / "m.csv").write_text(
        "path,accent_group,speaker_id,corpus,split\n"
        "a.flac,native_english,s1,SAA,train\nb.flac,mandarin_l1,s2,SAA,test\nc.flac,other_l1,s3,VCTK,train\n"
    )
    lm = parse_label_map("native_english=native,mandarin_l1=non_native,other_l1=non_native")
    items = read_manifest(tmp_path / "m.csv", label_map=lm)
    assert [it.label for it in items] == ["native", "non_native", "non_native"]
    assert items[0].path_or_loader == str(tmp_path / "a.flac") and items[1].split == "test"
    assert len(read_manifest(tmp_path / "m.csv", corpora=["SAA"])) == 2


def test_windowing() -> None:
    assert window_starts(100, 40, 20) == [0, 20, 40, 60]
    assert window_starts(110, 40, 20) == [0, 20, 40, 60, 70]
    assert window_starts(30, 40, 20) == [0]
    w = frame_windows(np.arange(30, dtype=np.float32), 40, 20)
    assert w.shape == (1, 40) and w[0, 29] == 29 and w[0, 30] == 0


def test_balanced_weights() -> None:
    labels = np.array([0, 0, 0, 1])
    w = balanced_sample_weights(labels)
    assert w[labels == 0].sum() == pytest.approx(0.5) and w[3] == pytest.approx(0.5)
    w = balanced_sample_weights(np.array([0, 0, 0, 1]), groups=["s1", "s1", "s2", "s3"])
    assert w[0] + w[1] == pytest.approx(w[2])  # each speaker of a class weighs the same


def test_speaker_folds_are_disjoint_and_stratified() -> None:
    items = _items(n_speakers=60)
    idx = list(range(len(items)))
    folds = speaker_folds(items, idx, 5, seed=3)
    assert sorted(i for f in folds for i in f) == idx
    speakers = [{items[i].speaker for i in f} for f in folds]
    assert all(not (a & b) for n, a in enumerate(speakers) for b in speakers[n + 1:])
    for f in folds:  # 60 speakers in 4 (label, corpus) strata of 10 or 20: 2 or 4 of each per fold
        strata = Counter((items[i].label, items[i].corpus) for i in f if i % 3 == 0)
        assert set(strata.values()) <= {2, 4} and len(strata) == 4
    with pytest.raises(ValueError):
        speaker_folds(items, idx, 1)
