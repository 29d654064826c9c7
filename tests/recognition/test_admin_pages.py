"""The admin's result pages are for reading (no Save, no editable results, no raw JSON), and the
correction loop: review labels, train from the admin, classify with the new model, compare."""
from __future__ import annotations

import json

import pytest

from recognition import review, services
from recognition.models import Batch, Job, LabelReview, ModelVersion, Recording
from tests.recognition.test_review import _classify_job, _model, _recording

pytestmark = pytest.mark.django_db

FORM_LEFTOVERS = ['name="_save"', 'name="_continue"', "object (", "Add another", "deletelink"]


@pytest.fixture
def boss(django_user_model):
    return django_user_model.objects.create_superuser("boss", "boss@example.com", "pw-123456789")


@pytest.fixture
def staff(client, boss):
    client.force_login(boss)
    return client


@pytest.fixture
def study(boss):
    """The boss's labelled batch classified by one model: r1 wrong, r3 wrong and uncertain, r5 without speech."""
    batch = Batch.objects.create(owner=boss, name="study")
    recs = [_recording(boss, f"r{i}.wav", label=label) for i, label in enumerate(["native", "native", "non_native", "non_native"])]
    recs.append(_recording(boss, "r4.wav"))
    recs.append(_recording(boss, "r5.wav", label="native"))
    batch.recordings.set(recs)
    job = _classify_job(boss, batch, _model(version="1"), {
        recs[0]: ("native", 0.9), recs[1]: ("non_native", 0.2), recs[2]: ("non_native", 0.1), recs[3]: ("native", 0.55),
        recs[4]: ("native", 0.8), recs[5]: ("", 0.0)})
    return batch, recs, job


def _page(client, url: str) -> str:
    response = client.get(url)
    assert response.status_code == 200, (url, response.status_code)
    return response.content.decode()


def test_result_pages_have_no_form_buttons_or_leaked_inlines(staff, study):
    batch, recs, job = study
    for url in [f"/admin/recognition/batch/{batch.pk}/change/", f"/admin/recognition/job/{job.pk}/change/",
                f"/admin/recognition/recording/{recs[1].pk}/change/", f"/admin/recognition/modelversion/{job.model_version_id}/change/"]:
        page = _page(staff, url)
        for leftover in FORM_LEFTOVERS:
            assert leftover not in page, (url, leftover)
    page = _page(staff, f"/admin/recognition/batch/{batch.pk}/change/")
    assert 'id="batch-recordings"' in page and 'id="label-counts"' in page and 'id="class-counts"' in page and 'id="batch-jobs"' in page
    # editing what makes sense to edit stays on the usual change form
    page = _page(staff, f"/admin/recognition/batch/{batch.pk}/change/?edit=1")
    assert 'name="name"' in page and 'name="_save"' in page
    page = _page(staff, f"/admin/recognition/recording/{recs[1].pk}/change/?edit=1")
    assert 'name="speaker"' in page and 'name="label"' not in page  # labels change through a review only
    assert "RecordingResult object" not in page


def test_job_report_shows_answers_given_and_withheld(staff, study):
    _, _, job = study
    page = _page(staff, f"/admin/recognition/job/{job.pk}/change/")
    assert 'alt="risk-coverage curve"' in page and 'alt="confusion matrix"' in page
    assert "accuracy on the answers given" in page and "75 %" in page  # 3 of 4 answered
    assert '<strong class="accuracy-accepted">0.667</strong>' in page
    assert "1 uncertain; 1 without enough speech" in page
    assert 'class="per-corpus"' in page and "unspecified" in page
    assert "Recordings to listen to" in page and "r1.wav" in page
    r = review.job_review(job=job, pictures=False)["report"]
    assert r["selective"]["n_accepted"] == 3 and r["selective"]["abstained"] == {"uncertain": 1, "insufficient_speech": 1}


def test_intervals_that_cannot_be_estimated_say_so(staff, boss):
    batch = Batch.objects.create(owner=boss, name="one speaker")
    recs = [_recording(boss, f"o{i}.wav", label=["native", "non_native"][i % 2], speaker="only") for i in range(4)]
    batch.recordings.set(recs)
    job = _classify_job(boss, batch, _model(version="o"), {r: ("native", 0.9) if r.label == "native" else ("non_native", 0.1)
                                                           for r in recs})
    page = _page(staff, f"/admin/recognition/job/{job.pk}/change/")
    assert "no CI: fewer than 2 speakers" in page


def test_compare_shows_how_abstentions_changed(staff, study):
    batch, recs, a = study
    b = _classify_job(a.owner, batch, _model(version="2"), {
        recs[0]: ("native", 0.95), recs[1]: ("native", 0.7), recs[2]: ("non_native", 0.2), recs[3]: ("native", 0.8),
        recs[4]: ("non_native", 0.3), recs[5]: ("", 0.0)})
    page = _page(staff, f"/admin/recognition/job/{b.pk}/change/")
    assert f"/admin/recognition/job/{b.pk}/compare/?other={a.pk}" in page
    page = _page(staff, f"/admin/recognition/job/{b.pk}/compare/?other={a.pk}")
    assert "ok -&gt; uncertain: 1" in page and "Answered by #" in page and "accuracy on answers given" in page


def test_model_page_is_a_card_without_predictions_or_paths(staff, settings):
    meta = json.loads((settings.BASE_DIR / "models" / "checkpoints" / "accent-native.json").read_text())
    mv = ModelVersion.objects.create(name="card-model", version="1", family=meta["spec"]["family"], task="classify",
                                     labels=meta["spec"]["labels"], checkpoint="models/checkpoints/accent-native.pt",
                                     sha256=meta["sha256"], metrics=meta["metrics"], calibration=meta["calibration"],
                                     hyperparameters=meta.get("hparams") or {}, training_data=meta["training_data"])
    page = _page(staff, f"/admin/recognition/modelversion/{mv.pk}/change/")
    assert len(page) < 200_000  # was a 20,000-pixel JSON dump
    for section in ("card-results", "card-calibration", "card-data", "card-licence", "card-splits"):
        assert f'id="{section}"' in page, section
    assert "Speech Accent Archive" in page and "non-commercial" in page and "**" not in page
    assert "speechocean762" in page and 'class="per-corpus"' in page and 'alt="reliability diagram"' in page
    assert "test_predictions" not in page and meta["metrics"]["test_predictions"][0]["key"] not in page
    assert "models/checkpoints" not in page and "/work/shared" not in page and "/tmp/" not in page
    assert 'name="_save"' not in page


def test_batches_add_opens_the_upload_and_its_heading_is_printed_once(staff):
    for model in ("batch", "recording"):
        response = staff.get(f"/admin/recognition/{model}/add/")
        assert response.status_code == 302 and response["Location"] == "/admin/recognition/batch/upload/"
    page = _page(staff, "/admin/recognition/batch/upload/")
    assert page.count("Upload a batch</h1>") == 1 and 'name="files"' in page


def test_recordings_filter_by_batch_label_prediction_outcome_and_confidence(staff, study, other_user):
    batch, recs, _ = study
    theirs = Batch.objects.create(owner=other_user, name="someone else's batch")
    base = "/admin/recognition/recording/"
    page = _page(staff, base)
    assert "someone else&#x27;s batch" not in page and "someone else's batch" not in page  # only the user's own batches
    for query in ("?batch=", "?predicted=non_native", "?outcome=uncertain", "?confidence=high"):
        assert query.split("=")[0][1:] in page

    def names(query: str) -> set[str]:
        return {r.original_filename for r in _page_context(staff, base + query)}

    assert names(f"?batch={batch.pk}") == {f"r{i}.wav" for i in range(6)}
    assert names(f"?batch={theirs.pk}") == set()
    assert names("?label=native") == {"r0.wav", "r1.wav", "r5.wav"}
    assert names("?predicted=non_native") == {"r1.wav", "r2.wav"}
    assert names("?outcome=uncertain") == {"r3.wav"}
    assert names("?outcome=insufficient_speech") == {"r5.wav"}
    assert names("?confidence=high") == {"r0.wav", "r1.wav", "r2.wav", "r4.wav"}
    assert names("?confidence=low") == {"r3.wav"}


def _page_context(client, url: str):
    response = client.get(url)
    assert response.status_code == 200, url
    return list(response.context["cl"].result_list)


def test_classify_with_a_chosen_model_preselects_the_classify_default(staff, boss, settings):
    ModelVersion.objects.update_or_create(name="accent-group", version="1.0.0", defaults=dict(
        family="cnn", task="classify", labels=["a", "b"], is_default=True))
    ModelVersion.objects.filter(name=settings.DEFAULT_MODELS["classify"]).update(is_default=False)  # one default per name
    native, _ = ModelVersion.objects.update_or_create(name=settings.DEFAULT_MODELS["classify"], version="2.0.0", defaults=dict(
        family="cnn", task="classify", labels=["native", "non_native"], is_default=True))
    batch = Batch.objects.create(owner=boss, name="b")
    page = _page_context_html(staff.post("/admin/recognition/batch/", {"action": "classify_with_model", "_selected_action": [batch.pk]}))
    assert f'<option value="{native.pk}" selected>' in page


def _page_context_html(response) -> str:
    assert response.status_code == 200
    return response.content.decode()


def test_label_review_keeps_who_when_and_the_original(staff, study, boss):
    batch, recs, _ = study
    url = f"/admin/recognition/recording/{recs[1].pk}/label/"
    response = staff.post(url, {"label": "non_native", "batch": batch.pk})
    assert response.status_code == 302
    staff.post(url, {"other_label": "native", "batch": batch.pk})  # typed in the box: corrected back
    staff.post(f"/admin/recognition/recording/{recs[0].pk}/label/", {"label": "native", "batch": batch.pk, "next": recs[1].pk})
    rows = list(LabelReview.objects.filter(recording=recs[1]).order_by("id").values_list("original_label", "new_label", "reviewer", "batch"))
    assert rows == [("native", "non_native", boss.pk, batch.pk), ("non_native", "native", boss.pk, batch.pk)]
    assert Recording.objects.get(pk=recs[1].pk).label == "native"
    confirmed = LabelReview.objects.get(recording=recs[0])
    assert not confirmed.is_correction and confirmed.created_at is not None
    page = _page(staff, f"/admin/recognition/recording/{recs[1].pk}/change/?batch={batch.pk}")
    assert 'id="label-history"' in page and "corrected from 'non_native'" in page
    assert 'id="label-review-form"' in page and "Correct to 'non_native'" in page
    assert 'alt="waveform and spectrogram"' in page or "No waveform" in page
    assert 'id="predictions"' in page and 'class="wrong">no (native)' in page


def test_label_review_refuses_another_users_recording(client, study, other_user):
    batch, recs, _ = study
    client.force_login(other_user)
    other_user.is_staff = True
    other_user.save()
    response = client.post(f"/admin/recognition/recording/{recs[1].pk}/label/", {"label": "x", "batch": batch.pk})
    assert response.status_code in (403, 404)
    assert not LabelReview.objects.exists() and Recording.objects.get(pk=recs[1].pk).label == "native"


def test_corrections_win_in_the_training_items(study, boss):
    batch, recs, _ = study
    services.label_review_create(recording=recs[0], batch=batch, new_label="non_native", reviewer=boss)
    Recording.objects.filter(pk=recs[0].pk).update(label="native")  # labels re-imported elsewhere: the review still wins
    recordings = list(batch.recordings.order_by("id"))
    corrections = services.label_corrections(recordings=recordings, batch=batch)
    assert corrections == {recs[0].pk: "non_native"}
    from recognition.services.training import training_items

    items = training_items(recordings, corrections=corrections, label_map={"non_native": "nn"})
    assert [i.label for i in items] == ["nn", "native", "nn", "nn", "native"]  # r4 unlabelled is left out
    other = Batch.objects.create(owner=boss, name="other")
    assert services.label_corrections(recordings=recordings, batch=other) == {}


def test_train_from_the_admin_submits_a_train_job(staff, study, monkeypatch, boss):
    monkeypatch.setattr("recognition.services.jobs._enqueue_chunks", lambda job, ids: None)
    batch, recs, _ = study
    services.label_review_create(recording=recs[1], batch=batch, new_label="non_native", reviewer=boss)
    page = _page(staff, f"/admin/recognition/batch/{batch.pk}/train/")
    assert page.index('value="whisper_probe"') < page.index('value="speaker_head"') and "recommended" in page
    assert '<option value="whisper_probe" selected>' in page  # the family that learns best from few clips starts chosen
    assert 'id="train-corrections">1 corrected by review' in page
    response = staff.post(f"/admin/recognition/batch/{batch.pk}/train/", {
        "family": "whisper_probe", "name": "study-retrained", "label_map": "native = native\nnon_native = non_native", "epochs": ""})
    job = Job.objects.get(kind="train")
    assert response.status_code == 302 and response["Location"] == f"/admin/recognition/job/{job.pk}/change/"
    assert job.batch == batch and job.params == {"family": "whisper_probe", "name": "study-retrained",
                                                 "label_map": {"native": "native", "non_native": "non_native"}}
    page = _page(staff, f"/admin/recognition/job/{job.pk}/change/")
    assert "Training runs on a worker" in page
    # a label map that leaves one class is refused before anything is queued
    response = staff.post(f"/admin/recognition/batch/{batch.pk}/train/", {
        "family": "speaker_head", "name": "x", "label_map": "native = one\nnon_native = one"})
    assert response.status_code == 200 and "at least two classes" in response.content.decode()
    assert Job.objects.filter(kind="train").count() == 1


def test_train_page_of_another_users_batch_is_not_found(client, study, other_user):
    batch, _, _ = study
    other_user.is_staff = True
    other_user.save()
    client.force_login(other_user)
    assert client.get(f"/admin/recognition/batch/{batch.pk}/train/").status_code in (403, 404)


def test_a_trained_model_classifies_its_batch_and_links_the_compare(staff, study, monkeypatch, boss):
    monkeypatch.setattr("recognition.services.jobs._enqueue_chunks", lambda job, ids: None)
    batch, recs, old = study
    trained = ModelVersion.objects.create(name="study-retrained", version="20261201-000000", family="cnn", task="classify",
                                          labels=["native", "non_native"], checkpoint="storage:models/x.pt")
    train = Job.objects.create(owner=boss, kind="train", batch=batch, status="succeeded",
                               params={"family": "whisper_probe", "name": "study-retrained", "trained_model": str(trained)})
    page = _page(staff, f"/admin/recognition/job/{train.pk}/change/")
    assert f"/admin/recognition/modelversion/{trained.pk}/change/" in page and 'id="classify-trained"' in page
    response = staff.post(f"/admin/recognition/job/{train.pk}/classify-trained/")
    new = Job.objects.get(kind="classify", model_version=trained)
    assert response.status_code == 302 and new.batch == batch
    assert f"train job #{train.pk}" in _page(staff, f"/admin/recognition/modelversion/{trained.pk}/change/")
    new.status = "succeeded"
    new.save()
    page = _page(staff, f"/admin/recognition/job/{new.pk}/change/")
    assert f"/admin/recognition/job/{new.pk}/compare/?other={old.pk}" in page
    page = _page(staff, f"/admin/recognition/job/{train.pk}/change/")
    assert f"/admin/recognition/job/{new.pk}/change/" in page
    assert f"/admin/recognition/job/{new.pk}/compare/?other={old.pk}" in page  # what changed, one click away


def test_a_model_trained_here_has_its_own_licence_line(staff):
    mv = ModelVersion.objects.create(name="mine", version="1", family="whisper_probe", task="classify", labels=["a", "b"],
                                     checkpoint="storage:models/mine/mine-1.pt")
    page = _page(staff, f"/admin/recognition/modelversion/{mv.pk}/change/")
    assert "uploaded recordings" in page and "Speech Accent Archive" not in page and "MIT licence" in page
    assert "No evaluation is stored" in page and "storage:" not in page


def test_a_train_job_reads_the_batch_corrections(study, boss, monkeypatch):
    """train_job_run hands the trainer the reviewed label, not the uploaded one."""
    monkeypatch.setattr("recognition.services.jobs._enqueue_chunks", lambda job, ids: None)
    batch, recs, _ = study
    services.label_review_create(recording=recs[0], batch=batch, new_label="non_native", reviewer=boss)
    Recording.objects.filter(pk=recs[0].pk).update(label="native")
    job = services.job_submit(owner=boss, kind="train", batch=batch, params={"family": "speaker_head", "name": "t"})
    seen = {}

    class Stop(Exception):
        pass

    def fake_train(config, progress=None):
        seen.update({i.key: i.label for i in config.items})
        raise Stop

    monkeypatch.setattr("workers.pipeline.training.train_model", fake_train)
    from recognition.services.training import train_job_run

    with pytest.raises(Stop):
        train_job_run(job=job)
    assert seen[f"recording-{recs[0].sha256}"] == "non_native" and seen[f"recording-{recs[1].sha256}"] == "native"


def test_the_batch_page_runs_jobs_for_its_owner_only(staff, study, monkeypatch, client, other_user):
    monkeypatch.setattr("recognition.services.jobs._enqueue_chunks", lambda job, ids: None)
    batch, _, _ = study
    assert 'name="run-classify"' in _page(staff, f"/admin/recognition/batch/{batch.pk}/change/")
    response = staff.post(f"/admin/recognition/batch/{batch.pk}/run/features/")
    job = Job.objects.get(kind="features")
    assert response.status_code == 302 and response["Location"] == f"/admin/recognition/job/{job.pk}/change/" and job.batch == batch
    assert staff.post(f"/admin/recognition/batch/{batch.pk}/run/train/").status_code == 404
    assert 'name="extractors" value="formants"' in _page(staff, f"/admin/recognition/batch/{batch.pk}/change/")
    staff.post(f"/admin/recognition/batch/{batch.pk}/run/features/", {"extractors": ["formants", "voice_quality"]})
    with_praat = Job.objects.filter(kind="features").latest("pk")
    assert with_praat.params["extractors"] == ["egemaps", "logmel", "mfcc", "prosody", "spectral", "formants", "voice_quality"]
    response = staff.post(f"/admin/recognition/batch/{batch.pk}/run/features/", {"extractors": ["pitch"]}, follow=True)
    assert "Unknown extractors" in response.content.decode() and Job.objects.filter(kind="features").count() == 2
    other_user.is_staff = True
    other_user.save()
    client.force_login(other_user)
    assert client.post(f"/admin/recognition/batch/{batch.pk}/run/features/").status_code in (403, 404)
    assert Job.objects.filter(kind="features").count() == 2


def test_a_model_trained_with_robustness_shows_its_table_on_its_card(staff, settings):
    """The robustness report a run stored (``metrics["robustness"]``) is a table on the model's page."""
    meta = json.loads((settings.BASE_DIR / "models" / "checkpoints" / "accent-native-2.1.0.json").read_text())
    rob = json.loads((settings.BASE_DIR / "models" / "checkpoints" / "accent-native-2.1.0.robustness.json").read_text())
    mv = ModelVersion.objects.create(name="card-robust", version="1", family=meta["spec"]["family"], task="classify",
                                     labels=meta["spec"]["labels"], checkpoint="models/checkpoints/accent-native-2.1.0.pt",
                                     sha256=meta["sha256"], metrics={**meta["metrics"], "robustness": rob},
                                     calibration=meta["calibration"], training_data=meta["training_data"])
    page = _page(staff, f"/admin/recognition/modelversion/{mv.pk}/change/")
    section = page.split('id="card-robustness"')[1].split("</section>")[0]
    assert "Measured on 51 validation clips (21 native, 30 non_native)" in section
    assert "babble of 6 other clips of the same split, 5 dB SNR" in section and "native recall" in section
    answer_all, at = section.split('id="card-robustness-threshold"')
    babble_5 = next(c for c in rob["conditions"] if c["name"] == "babble_5db")
    drop = babble_5["balanced_accuracy"] - rob["conditions"][0]["balanced_accuracy"]
    assert drop < -0.1 and f"{drop:+.3f}" in answer_all and answer_all.count("<tr>") == 1 + len(rob["conditions"])
    assert at.count("<tr>") == 1 + len(rob["conditions"]) and "At the default threshold 0.666" in at
    assert "native uncertain" in at and f"{rob['conditions'][0]['at_threshold']['coverage']:.3f}" in at
    bare = ModelVersion.objects.create(name="card-bare", version="1", family=meta["spec"]["family"], task="classify",
                                       labels=meta["spec"]["labels"], metrics=meta["metrics"])
    assert 'id="card-robustness"' not in _page(staff, f"/admin/recognition/modelversion/{bare.pk}/change/")


def _shipped(name: str, version: str, stem: str, settings) -> ModelVersion:
    meta = json.loads((settings.BASE_DIR / "models" / "checkpoints" / f"{stem}.json").read_text())
    mv, _ = ModelVersion.objects.update_or_create(
        name=name, version=version, owner=None,
        defaults=dict(family=meta["spec"]["family"], task="classify", labels=meta["spec"]["labels"],
                      checkpoint=f"{stem}.pt", sha256=meta["sha256"], metrics=meta["metrics"],
                      calibration=meta["calibration"], training_data=meta["training_data"]))
    return mv


def test_a_shipped_model_shows_its_robustness_report_and_the_default_threshold_table(staff, settings):
    """The report ``evaluate_robustness`` wrote beside a shipped checkpoint: the answer-all table and, beside it, the
    default threshold's (share answered, accuracy of the answered, recall and uncertain share per class)."""
    rob = json.loads((settings.BASE_DIR / "models" / "checkpoints" / "accent-group.robustness.json").read_text())
    mv = _shipped("accent-group", "2.0.0", "accent-group", settings)
    section = _page(staff, f"/admin/recognition/modelversion/{mv.pk}/change/").split('id="card-robustness"')[1]
    section = section.split("</section>")[0]
    assert "From the robustness report shipped beside the checkpoint (validation split, SAA only)." in section
    answer_all, at = section.split('id="card-robustness-threshold"')
    assert answer_all.count("<tr>") == at.count("<tr>") == 1 + len(rob["conditions"])
    assert "At the default threshold 0.6 " in at and "mandarin_l1 uncertain" in at and "other_l1 recall" in at
    babble = next(row for row in rob["conditions"] if row["name"] == "babble_10db")["at_threshold"]
    assert f"<td class=\"num\">{babble['coverage']:.3f}</td><td class=\"num\">{babble['accuracy_answered']:.3f}</td>" in at
    assert "/checkpoints" not in section and str(settings.BASE_DIR) not in section  # no server path


def test_an_older_report_without_the_threshold_table_still_renders_escaped(staff, settings, tmp_path, boss):
    """A report from before the default-threshold table: the answer-all table and a note, no error; every
    string from the report is escaped; a report of another version, or beside a user's model, is not shown."""
    rob = json.loads((settings.BASE_DIR / "models" / "checkpoints" / "accent-native-2.1.0.robustness.json").read_text())
    for row in rob["conditions"]:
        row.pop("at_threshold", None)
    rob["conditions"][1]["description"] = "<script>alert(1)</script> noise"
    rob["sha256"] = "f" * 64
    settings.MODELS_DIR = tmp_path
    (tmp_path / "accent-native-2.1.0.robustness.json").write_text(json.dumps(rob))
    mv = _shipped("accent-native", "2.1.0", "accent-native-2.1.0", settings)
    page = _page(staff, f"/admin/recognition/modelversion/{mv.pk}/change/")
    section = page.split('id="card-robustness"')[1].split("</section>")[0]
    assert 'id="card-robustness-threshold"' not in section and 'id="card-robustness-no-threshold"' in section
    assert section.count("<tr>") == 1 + len(rob["conditions"])
    assert "&lt;script&gt;alert(1)&lt;/script&gt; noise" in section and "<script>alert" not in page
    assert "It was measured on a checkpoint file with sha256 ffffffffffff..., not this version" in section
    other = _shipped("accent-native", "9.9.9", "accent-native-2.1.0", settings)  # the file names 2.1.0, not 9.9.9
    assert 'id="card-robustness"' not in _page(staff, f"/admin/recognition/modelversion/{other.pk}/change/")
    mine = ModelVersion.objects.create(name="mine", version="2.1.0", owner=boss, family=mv.family, task="classify",
                                       labels=mv.labels, checkpoint="accent-native-2.1.0.pt", metrics=mv.metrics)
    assert 'id="card-robustness"' not in _page(staff, f"/admin/recognition/modelversion/{mine.pk}/change/")
