"""The zero-shot spoken-words model through the API: /predict with ``classes`` (its worker task run
eagerly, as in test_predict.py) and the checks on a job's ``classes``. The job itself runs on a real
worker in tests/integration/test_spoken_words_jobs.py."""
import pytest

from tests.conftest import speech
from tests.factories import upload

pytestmark = pytest.mark.django_db


@pytest.fixture
def spoken_words(db):
    from recognition.services import shipped_models_register

    shipped_models_register()
    from recognition.models import ModelVersion

    return ModelVersion.objects.get(name="spoken-words", is_default=True)


@pytest.fixture
def eager():
    from accentsite.celery import app

    previous = app.conf.task_always_eager
    app.conf.task_always_eager = True
    yield
    app.conf.task_always_eager = previous


def test_predict_with_classes_answers_over_them(api, spoken_words, eager):
    body = api.post("/api/v1/predict/", {"file": upload("six.wav", speech("six")), "model": "spoken-words",
                                         "classes": "zero,two,six", "threshold": 0.8}, format="multipart")
    assert body.status_code == 200, body.content
    body = body.json()
    assert list(body["probabilities"]) == ["zero", "two", "six"] and body["predicted_class"] == "six"
    assert sum(body["probabilities"].values()) == pytest.approx(1, abs=1e-6)
    assert body["threshold"] == 0.8 and body["outcome"] == ("ok" if body["confidence"] >= 0.8 else "uncertain")
    assert body["model"] == "spoken-words@1.0.0" and body["checkpoint_sha256"] == spoken_words.sha256
    # no classes: seed 003's ten digits
    digits = api.post("/api/v1/predict/", {"file": upload("six.wav", speech("six")), "model": "spoken-words"},
                      format="multipart").json()
    assert len(digits["probabilities"]) == 10 and digits["predicted_class"] == "six" and digits["threshold"] == 0.8


def test_classes_are_refused_for_a_trained_model_and_when_malformed(api, spoken_words, tiny_classifier, eager):
    fixed = api.post("/api/v1/predict/", {"file": upload("s.wav", speech("six")), "model": f"tiny@{tiny_classifier.version}",
                                          "classes": "zero,six"}, format="multipart")
    assert fixed.status_code == 400 and fixed.json()["error"]["code"] == "invalid_params"
    assert "zero-shot" in fixed.json()["error"]["message"]
    one = api.post("/api/v1/predict/", {"file": upload("s.wav", speech("six")), "model": "spoken-words", "classes": "six"},
                   format="multipart")
    assert one.status_code == 400 and "between 2" in one.json()["error"]["message"]
    rec = api.post("/api/v1/recordings/", {"file": upload("s.wav", speech("six"))}, format="multipart").json()
    for model, params, says in ((f"tiny@{tiny_classifier.version}", {"classes": ["a", "b"]}, "zero-shot"),
                                ("spoken-words", {"classes": ["six", "Six"]}, "twice"),
                                ("spoken-words", {"classes": 6}, "wrong type")):
        job = api.post("/api/v1/jobs/", {"kind": "classify", "recordings": [rec["id"]], "model": model, "params": params},
                       format="json")
        assert job.status_code == 400 and says in job.json()["error"]["message"], job.json()


def test_its_admin_card_shows_the_measured_figures_and_no_training_data_licence(client, django_user_model, spoken_words):
    client.force_login(django_user_model.objects.create_superuser("boss", "boss@example.com", "pw-123456789"))
    page = client.get(f"/admin/recognition/modelversion/{spoken_words.pk}/change/").content.decode()
    assert 'id="card-results"' in page and "FSDD" in page and "Nothing was trained" in page
    assert "Speech Accent Archive" not in page  # the accent models' data licence is not this model's


def test_classify_command_takes_classes_and_hears_a_short_single_word(spoken_words, tmp_path, capsys):
    """``manage.py classify --classes`` answers over the given words, with the model's own speech gate
    (0.1 s: one word) and an upload floor a single spoken digit passes (``AUDIO_MIN_DURATION_S``)."""
    import json

    import soundfile as sf
    from django.core.management import call_command
    from django.core.management.base import CommandError

    (tmp_path / "six.wav").write_bytes(speech("six"))
    assert sf.info(tmp_path / "six.wav").duration < 1.0  # a single word: under the 1-s speech gate other models keep
    call_command("classify", str(tmp_path / "six.wav"), "--model", "spoken-words", "--classes", "zero, two,six")
    (row,) = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert list(row["probabilities"]) == ["zero", "two", "six"] and row["predicted_class"] == "six", row
    with pytest.raises(CommandError, match="zero-shot"):
        call_command("classify", str(tmp_path / "six.wav"), "--model", "accent-native", "--classes", "a,b")
