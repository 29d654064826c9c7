"""manage.py train (manifest in, registered model out) and manage.py classify (files in, CSV out)."""
import csv
import json

import pytest
from django.core.management import call_command

from recognition.models import ModelVersion
from tests.conftest import speech

pytestmark = pytest.mark.django_db


@pytest.fixture
def manifest(tmp_path):
    rows = ["path,accent_group,speaker_id,split,corpus"]
    voices = {"native_english": ["en-us", "en-gb", "en-us-nyc"], "other_l1": ["en-029", "en-gb-scotland", "en-gb-x-rp"]}
    for group, names in voices.items():
        for i, voice in enumerate(names):
            for speed in (130, 175):
                for j, text in enumerate(["Please call Stella.", "Bring these things with her."]):
                    path = tmp_path / f"{voice}-{speed}-{j}.wav"
                    path.write_bytes(speech(text, voice=voice, speed=speed))
                    rows.append(f"{path.name},{group},{voice}-{speed},{'test' if i == 2 else 'train'},synthetic")
    (tmp_path / "manifest.csv").write_text("\n".join(rows) + "\n")
    return tmp_path / "manifest.csv"


def test_train_command_registers_the_model_and_classify_uses_it(manifest, tmp_path, capsys):
    out = tmp_path / "ckpt" / "cli-model.pt"
    call_command("train", "--manifest", str(manifest), "--family", "cnn", "--name", "cli-model", "--out", str(out),
                 "--label-map", "native_english=native,other_l1=non_native", "--epochs", "2", "--window-s", "1.0",
                 "--hop-s", "0.5", "--hparam", "channels=4", "--hparam", "n_mels=32", "--n-boot", "20")
    mv = ModelVersion.objects.get(name="cli-model")
    assert mv.labels == ["native", "non_native"] and mv.sha256 and mv.checkpoint == str(out.resolve())
    assert mv.metrics["test"]["confusion_matrix"]["labels"] == ["native", "non_native"]
    assert mv.training_data["splits"]["test"]["speakers"] == 4

    results = tmp_path / "results.csv"
    wavs = sorted(str(p) for p in manifest.parent.glob("*.wav"))[:3] + [str(manifest)]
    call_command("classify", *wavs, "--model", "cli-model", "--out", str(results))
    rows = {r["filename"]: r for r in csv.DictReader(results.open())}
    assert set(rows) == set(wavs)
    bad = rows.pop(str(manifest))
    assert bad["status"] == "failed" and bad["error_code"] == "not_audio" and bad["outcome"] == ""
    for row in rows.values():
        assert row["outcome"] in ("ok", "uncertain") and row["predicted_class"] in ("native", "non_native")
        assert float(row["p_native"]) + float(row["p_non_native"]) == pytest.approx(1, abs=1e-4)


def test_train_command_cross_validates_without_registering(manifest, capsys):
    import json

    call_command("train", "--manifest", str(manifest), "--family", "cnn", "--name", "cv-model", "--cv-folds", "2",
                 "--label-map", "native_english=native,other_l1=non_native", "--epochs", "1", "--window-s", "1.0",
                 "--hop-s", "0.5", "--hparam", "channels=4", "--hparam", "n_mels=32", "--no-augment")
    out = capsys.readouterr().out
    cv = json.loads(out[out.index("{"):])
    assert cv["k"] == 2 and len(cv["folds"]) == 2 and 0.0 <= cv["mean"] <= 1.0
    assert not ModelVersion.objects.filter(name="cv-model").exists()


def test_classify_command_passes_a_transcript_file_to_a_reading_model(tiny_reading_classifier, tmp_path, capsys):

    text = "Ask her to bring these things with her from the store."
    (tmp_path / "passage.txt").write_text(text)
    (tmp_path / "r.wav").write_bytes(speech(text))
    call_command("classify", str(tmp_path / "r.wav"), "--model", f"tiny-reading@{tiny_reading_classifier.version}",
                 "--transcript-file", str(tmp_path / "passage.txt"), "--no-vad")
    (row,) = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert row["reading"]["fused"] and row["reading"]["prompt_words"] == 11 and row["outcome"] in ("ok", "uncertain")
    assert set(row["probabilities"]) == set(tiny_reading_classifier.labels) and "all_predictions" not in row


def test_the_robustness_predictor_hands_each_clip_its_transcript_to_a_reading_model(tiny_reading_classifier, tmp_path):
    """``checkpoint_predictor(...)(signals, transcripts)`` (``evaluate_robustness --with-transcripts``): a
    reading fusion fuses where it can follow the text and then applies its ``fused_threshold``. Here that
    threshold is out of reach (1.01) and the window model's is 0: a fused answer is ``uncertain``, the window
    model's alone is answered."""
    from models.checkpoint import read_checkpoint, save_checkpoint
    from workers.pipeline.audio import load_audio
    from workers.pipeline.robustness import checkpoint_predictor

    saved = read_checkpoint(next(tmp_path.glob("tiny-reading-*.pt")))
    path = tmp_path / "strict" / "reading.pt"
    path.parent.mkdir()
    save_checkpoint(path, model=saved["model"], spec=saved["spec"], hparams=saved["hparams"], metrics=saved["metrics"],
                    training_data=saved["training_data"], calibration={**saved["calibration"], "fused_threshold": 1.01})
    text = "Ask her to bring these things with her from the store."
    (tmp_path / "r.wav").write_bytes(speech(text))
    x = load_audio(str(tmp_path / "r.wav"), sample_rate=16000).samples
    predict, _loaded = checkpoint_predictor(path)
    (fused,), (alone,) = predict([x], [text]), predict([x])
    assert fused[1] is False and alone[1] is True and fused[0] in ("native", "non_native")
    assert predict([x, x], [None, text]) == [alone, fused]


def test_train_with_robustness_and_evaluate_robustness_on_the_rebuilt_split(manifest, tmp_path, capsys):
    """``manage.py train --robustness`` puts the table in the card and the registered metrics;
    ``manage.py evaluate_robustness`` rebuilds a split from the checkpoint's stored configuration."""
    out, card = tmp_path / "ckpt" / "robust.pt", tmp_path / "robust.md"
    call_command("train", "--manifest", str(manifest), "--family", "cnn", "--name", "robust", "--out", str(out),
                 "--card", str(card), "--label-map", "native_english=native,other_l1=non_native", "--epochs", "1",
                 "--steps-per-epoch", "2", "--window-s", "1.0", "--hop-s", "0.5", "--hparam", "channels=4",
                 "--hparam", "n_mels=32", "--n-boot", "0", "--no-references", "--robustness", "white_10db,telephone")
    mv = ModelVersion.objects.get(name="robust")
    rob = mv.metrics["robustness"]
    assert [row["name"] for row in rob["conditions"]] == ["clean", "white_10db", "telephone"] and rob["n"] == 8
    assert mv.sha256 == json.loads(out.with_suffix(".json").read_text())["sha256"]  # the re-saved file is registered
    assert "## Robustness: degraded copies of the test clips" in card.read_text()

    report = tmp_path / "rob.json"
    capsys.readouterr()
    call_command("evaluate_robustness", str(out), "--split", "validation", "--conditions", "level_-30db", "--out", str(report))
    text = capsys.readouterr().out
    saved = json.loads(report.read_text())
    assert saved["split"] == "validation" and saved["n"] >= 2 and saved["sha256"] == mv.sha256
    assert [row["name"] for row in saved["conditions"]] == ["clean", "level_-30db"]
    assert f"Measured on {saved['n']} validation clips" in text and "| 30 dB quieter, 16-bit PCM |" in text
    call_command("evaluate_robustness", "--list")
    assert "babble_10db: babble of 6 other clips" in capsys.readouterr().out
    with pytest.raises(Exception, match="unknown robustness condition"):
        call_command("evaluate_robustness", str(out), "--conditions", "pink_11db")


def test_evaluate_robustness_scores_an_embedding_model_against_clean_centroids_of_other_speakers(manifest, tmp_path, capsys):
    """An embed checkpoint: the validation clips, degraded, are placed by the clean centroids of the train
    split's clips; the report gives centroid and k-NN accuracy and the cosine to each clip's clean vector."""
    out = tmp_path / "ckpt" / "emb.pt"
    call_command("train", "--manifest", str(manifest), "--family", "accent_embed", "--task", "embed", "--name", "emb",
                 "--out", str(out), "--label-map", "native_english=native,other_l1=non_native", "--epochs", "1",
                 "--steps-per-epoch", "2", "--window-s", "1.0", "--hop-s", "0.5", "--hparam", "d_model=32",
                 "--hparam", "n_layers=1", "--hparam", "n_heads=2", "--hparam", "n_mels=32", "--hparam", "n_mfcc=13",
                 "--n-boot", "0", "--no-references")
    report = tmp_path / "emb-rob.json"
    capsys.readouterr()
    call_command("evaluate_robustness", str(out), "--split", "test", "--conditions", "white_10db", "--out", str(report))
    text = capsys.readouterr().out
    saved = json.loads(report.read_text())
    assert saved["split"] == "test" and saved["reference_split"] == "train" and saved["n"] == 8
    assert saved["n_reference"] >= 8 and set(saved["reference_class_counts"]) == {"native", "non_native"}
    clean, noisy = saved["conditions"]
    assert abs(clean["cosine_to_clean_mean"] - 1.0) < 1e-6 and noisy["cosine_to_clean_mean"] < 1.0
    assert "centroid balanced acc." in text and "| white noise, 10 dB SNR |" in text and "clean centroids of" in text
    with pytest.raises(Exception, match="must differ"):
        call_command("evaluate_robustness", str(out), "--split", "train", "--reference-split", "train")


def test_train_batch_passes_robustness_and_defaults_to_the_recommended_family(django_user_model, monkeypatch, capsys):
    """``manage.py train --batch ID --robustness`` submits a train job asking for the default conditions,
    of the registry's recommended family when ``--family`` is not given."""
    import io

    from recognition import services
    from recognition.models import Batch, Job
    from tests.factories import audio_bytes, pulse_train

    user = django_user_model.objects.create_user("batcher", password="x")
    batch = Batch.objects.create(owner=user, name="b")
    for i in range(2):
        rec = services.recording_create(owner=user, fileobj=io.BytesIO(audio_bytes(pulse_train(f0=100 + i, seconds=0.6))),
                                        filename=f"b{i}.wav")[0]
        batch.recordings.add(rec)
    seen = {}

    def fake_run(*, job, progress=None):
        seen["params"] = dict(job.params)
        return ModelVersion.objects.create(name=job.params["name"], version="1", family=job.params["family"],
                                           task="classify", owner=user)

    monkeypatch.setattr("recognition.services.training.train_job_run", fake_run)
    monkeypatch.setattr("recognition.services.jobs._enqueue_chunks", lambda job, ids: None)
    call_command("train", "--batch", str(batch.pk), "--name", "robust-batch", "--robustness")
    assert seen["params"]["family"] == "whisper_probe" and seen["params"]["robustness"] is True
    call_command("train", "--batch", str(batch.pk), "--name", "robust-batch-2", "--family", "cnn", "--robustness", "telephone")
    assert seen["params"]["family"] == "cnn" and seen["params"]["robustness"] == ["telephone"]
    assert Job.objects.filter(kind="train").count() == 2
