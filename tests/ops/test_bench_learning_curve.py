"""bench.learning_curve: the evaluation speakers are the configuration's validation SAA speakers and
never drawn for training; draws are seeded, per size, per class; the table averages seeds."""

from __future__ import annotations

import pytest

from bench.learning_curve import config_pools, draw, table
from tests.factories import audio_bytes, pulse_train
from workers.pipeline.train_config import TrainConfig


@pytest.fixture
def manifest(tmp_path):
    rows = ["path,accent_group,speaker_id,split,corpus"]
    clip = audio_bytes(pulse_train(150.0, 0.5))
    for group, n in (("native_english", 12), ("other_l1", 12), ("mandarin_l1", 4)):
        for s in range(n):
            for corpus in ("SAA", "VCTK") if s < 2 else ("SAA",):
                name = f"{group}-{s}-{corpus}.wav"
                (tmp_path / name).write_bytes(clip)
                rows.append(f"{name},{group},{group}-{s}-{corpus},{'test' if s >= n - 2 else 'train'},{corpus}")
    (tmp_path / "manifest.csv").write_text("\n".join(rows) + "\n")
    return tmp_path / "manifest.csv"


def test_pools_are_saa_train_speakers_and_the_evaluation_is_its_validation_split(manifest) -> None:
    config = TrainConfig(name="t", family="whisper_probe", manifest=str(manifest), labels=["native", "non_native"],
                         label_map={"native_english": "native", "other_l1": "non_native", "mandarin_l1": "non_native"},
                         val_fraction=0.25)
    speakers, train, val = config_pools(config)
    assert {it.corpus for it in train} == {"SAA"} and {it.corpus for it in val} == {"SAA"}
    assert val and not {it.speaker for it in val} & {it.speaker for it in train}
    assert not any(it.split == "test" for it in train + val)  # the manifest's test split is never read
    assert set(speakers) == {"native", "non_native"}
    assert all(sp.startswith("native") for sp in speakers["native"])
    a, b = draw(speakers, 2, seed=0), draw(speakers, 2, seed=0)
    assert a == b and len(a) == 4 and sum(sp.startswith("native") for sp in a) == 2
    assert any(draw(speakers, 2, seed=s) != a for s in range(1, 6))
    with pytest.raises(ValueError, match="speakers asked for"):
        draw(speakers, 100, seed=0)


def test_table_gives_mean_and_range_over_seeds() -> None:
    rows = [{"family": "cnn", "speakers_per_class": 4, "balanced_accuracy": v} for v in (0.5, 0.7)]
    rows.append({"family": "whisper_probe", "speakers_per_class": 8, "balanced_accuracy": 0.9})
    lines = table(rows)
    assert lines[0] == "| family | 4 per class | 8 per class |"
    assert "| `cnn` | 0.600 (0.50-0.70, 2 seeds) | - |" in lines
    assert "| `whisper_probe` | - | 0.900 (1 seed) |" in lines
