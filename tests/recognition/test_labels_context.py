"""Labels CSV with context: a corpus (or source) column and any extra columns, used by the reports."""
import pytest

from recognition.errors import ServiceError
from recognition.models import Job, Prediction, Recording, RecordingResult
from recognition.services.recordings import LabelRow, parse_labels_csv
from tests.factories import audio_bytes, pulse_train, upload
from tests.recognition.test_review import _model


def test_header_columns_by_name_with_corpus_and_extras():
    rows, rejected = parse_labels_csv(
        b"Speaker,filename,label,Source,age,l1\ns1,a.wav,native,saa,34,English\ns2,b.wav,non_native,l2arctic,,Mandarin\n")
    assert rejected == []
    assert rows["a.wav"] == LabelRow("native", "s1", "saa", {"age": "34", "l1": "English"})
    assert rows["b.wav"].metadata() == {"corpus": "l2arctic", "l1": "Mandarin"}  # blanks are not stored


def test_positional_rows_keep_working_and_take_a_corpus_fourth():
    rows, _ = parse_labels_csv(b"a.wav,native\nb.wav,non_native,s2\nc.wav,native,s3,saa,ignored\n")
    assert rows["a.wav"] == LabelRow("native", "", "", {})
    assert rows["b.wav"].speaker == "s2" and rows["c.wav"].corpus == "saa" and rows["c.wav"].extra == {}
    rows, _ = parse_labels_csv(b"filename,label,speaker\nd.wav,native,s4\n")
    assert rows["d.wav"] == LabelRow("native", "s4")


def test_formulas_in_any_column_and_repeated_columns_are_refused():
    rows, rejected = parse_labels_csv(b"filename,label,notes\na.wav,native,=HYPERLINK(1)\nb.wav,native,fine\n")
    assert list(rows) == ["b.wav"] and [r.code for r in rejected] == ["formula_injection"]
    with pytest.raises(ServiceError, match="names a column twice"):
        parse_labels_csv(b"filename,label,corpus,source\na.wav,native,x,y\n")


@pytest.mark.django_db
def test_batch_upload_stores_the_context_and_the_report_has_a_section_per_corpus(api):
    files = [upload(f"r{i}.wav", audio_bytes(pulse_train(f0=110 + 15 * i, seed=i))) for i in range(4)]
    labels = ("filename,label,speaker,corpus,session\n"
              "r0.wav,native,s0,saa,1\nr1.wav,non_native,s1,saa,1\nr2.wav,native,s2,l2arctic,2\nr3.wav,non_native,s3,,2\n")
    body = api.post("/api/v1/batches/", {"name": "ctx", "files": files, "labels": upload("labels.csv", labels.encode())},
                    format="multipart").json()
    assert body["rejected"] == []
    meta = {r.original_filename: r.metadata for r in Recording.objects.all()}
    assert meta == {"r0.wav": {"corpus": "saa", "session": "1"}, "r1.wav": {"corpus": "saa", "session": "1"},
                    "r2.wav": {"corpus": "l2arctic", "session": "2"}, "r3.wav": {"session": "2"}}

    from recognition.services.reports import classify_report

    mv = _model()
    job = Job.objects.create(owner=api.user, kind="classify", model_version=mv, status="succeeded", total=4, done=4)
    for rec in Recording.objects.order_by("original_filename"):
        result = RecordingResult.objects.create(job=job, recording=rec, status="succeeded")
        p = 0.9 if rec.label == "native" else 0.2
        Prediction.objects.create(result=result, model_version=mv, checkpoint_sha256="0", outcome="ok",
                                  predicted_class="native" if p > 0.5 else "non_native", confidence=max(p, 1 - p),
                                  probabilities={"native": p, "non_native": 1 - p})
    report = classify_report(job=job)
    assert set(report["per_corpus"]) == {"saa", "l2arctic", "unspecified"}
    assert report["per_corpus"]["saa"]["n"] == 2 and report["per_corpus"]["l2arctic"]["n"] == 1

    # the same files again with more context: the existing recordings gain it
    again = [upload("r0.wav", audio_bytes(pulse_train(f0=110, seed=0)))]
    api.post("/api/v1/batches/", {"name": "again", "files": again,
                                  "labels": upload("l.csv", b"filename,label,room\nr0.wav,native,quiet\n")}, format="multipart")
    assert Recording.objects.get(original_filename="r0.wav").metadata == {"corpus": "saa", "session": "1", "room": "quiet"}


@pytest.mark.django_db
def test_the_review_form_offers_the_batchs_labels_and_the_models_classes_only(user):
    """Not every label the owner ever used: the batch in view's labels, the recording's own, and the
    classes of the models that classified it."""
    import io

    import numpy as np
    import soundfile as sf

    from recognition import services
    from recognition.forms import review_label_choices
    from recognition.models import Job, ModelVersion, Prediction, RecordingResult

    def wav(seed):
        buf = io.BytesIO()
        sf.write(buf, np.random.default_rng(seed).uniform(-0.3, 0.3, 16000).astype(np.float32), 16000, format="WAV")
        buf.seek(0)
        return buf

    mine, recs, _ = services.batch_create(owner=user, name="a", files=[("a.wav", wav(1)), ("b.wav", wav(2))],
                                          labels_csv=b"a.wav,us\nb.wav,gb\n")
    services.batch_create(owner=user, name="other", files=[("c.wav", wav(3))], labels_csv=b"c.wav,martian\n")
    assert review_label_choices(recording=recs[0], batch=mine) == ["gb", "us"]
    mv = ModelVersion.objects.create(name="m", version="1", family="cnn", task="classify", labels=["india", "us"])
    job = Job.objects.create(owner=user, kind="classify", model_version=mv, total=1)
    result = RecordingResult.objects.create(job=job, recording=recs[0], status="succeeded")
    Prediction.objects.create(result=result, model_version=mv, predicted_class="us", confidence=0.9,
                              probabilities={"india": 0.1, "us": 0.9})
    assert review_label_choices(recording=recs[0], batch=mine) == ["gb", "india", "us"]
    assert "martian" not in review_label_choices(recording=recs[0])
