"""scripts/native_varieties.py on a synthetic checkpoint's stored test predictions: the per-variety and
per-L1 tables, the SAA slice with its own speaker counts, and the warning when no L1 has enough speakers."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from types import SimpleNamespace

from tests.factories import script_module

ROOT = Path(__file__).resolve().parents[2]
LABELS = ("mandarin_l1", "native_english", "other_l1")


def _fixture(tmp_path: Path):
    """A manifest and stored predictions: 12 Mandarin speakers (10 outside SAA, 2 in SAA), 3 native SAA
    speakers, 2 French SAA speakers; probabilities chosen so each answer is known."""
    rows, preds = [], []
    people = ([("mandarin", "speechocean762", f"so{i}", "mandarin_l1") for i in range(10)]
              + [("mandarin", "SAA", f"saa_m{i}", "mandarin_l1") for i in range(2)]
              + [("english", "SAA", f"saa_e{i}", "native_english") for i in range(3)]
              + [("french", "SAA", f"saa_f{i}", "other_l1") for i in range(2)])
    probas = {"mandarin_l1": [0.9, 0.05, 0.05], "native_english": [0.1, 0.8, 0.1], "other_l1": [0.2, 0.25, 0.55]}
    for l1, corpus, speaker, label in people:
        path = f"audio/{label}/{corpus}/{speaker}.flac"
        detail = f"SAA:{l1}:boston; massachusetts; usa" if corpus == "SAA" else f"{corpus}:{speaker}"
        rows.append({"path": path, "accent_group": label, "l1": l1, "accent_detail": detail, "speaker_id": speaker,
                     "split": "test", "corpus": corpus})
        given = "other_l1" if speaker == "so0" else ("native_english" if speaker == "saa_f0" else label)
        preds.append({"key": path, "speaker": speaker, "corpus": corpus, "label": label, "proba": probas[given]})
    manifest = tmp_path / "manifest.csv"
    with manifest.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    saved = {"spec": SimpleNamespace(name="accent-group", version="9.9.9", labels=LABELS),
             "calibration": {"threshold": 0.6}, "training_data": {"config": {}},
             "metrics": {"test_predictions": preds}}
    return manifest, saved


def test_the_script_prints_per_l1_tables_from_stored_predictions(tmp_path, monkeypatch, capsys) -> None:
    import models.checkpoint

    manifest, saved = _fixture(tmp_path)
    monkeypatch.setattr(models.checkpoint, "read_checkpoint", lambda path: saved)
    script = script_module("native_varieties")
    out = tmp_path / "all.json"
    assert script.main(["fake.pt", "--manifest", str(manifest), "--out", str(out)]) == 0
    entry = json.loads(out.read_text())["accent-group@9.9.9 fake.pt"]
    (mandarin,) = entry["l1"]["rows"]  # only Mandarin has 10 test speakers
    assert entry["l1"]["warning"] is None and (mandarin["l1"], mandarin["speakers"], mandarin["clips"]) == ("mandarin", 12, 12)
    assert mandarin["given"]["mandarin_l1"] == 11 / 12 and mandarin["given"]["other_l1"] == 1 / 12
    # so0's answer (other_l1 at 0.55) is under the threshold 0.6: uncertain, not wrong
    assert (mandarin["right_at_threshold"], mandarin["uncertain"], mandarin["wrong_at_threshold"]) == (11 / 12, 1 / 12, 0.0)
    text = capsys.readouterr().out
    assert "per L1 with >= 10 test speakers" in text and "| mandarin | mandarin_l1 | 12 | 12 | **0.917** |" in text

    out_saa = tmp_path / "saa.json"
    assert script.main(["fake.pt", "--manifest", str(manifest), "--corpus", "SAA", "--out", str(out_saa)]) == 0
    saa = json.loads(out_saa.read_text())["accent-group@9.9.9 fake.pt"]
    assert "no L1 has 10 test speakers" in saa["l1"]["warning"]  # SAA counts its own speakers: 3, 2 and 2
    assert [(r["l1"], r["speakers"]) for r in saa["l1"]["rows"]] == [("english", 3), ("french", 2), ("mandarin", 2)]
    french = saa["l1"]["rows"][1]
    assert french["right"] == "other_l1" and french["wrong_at_threshold"] == 0.5  # saa_f0 answered native_english
    assert saa["test"][-1]["clips"] == 3  # the variety table still covers the native clips only
    assert "**Warning:** no L1 has 10 test speakers" in capsys.readouterr().out
