"""Every admin result page in a real Chromium, through the loop a new user follows: upload a
labelled batch, read the batch page and the job report, correct three labels on the recording
page, train from the admin, classify with the new model and compare, read the model card.

Workers are not started: the jobs' results are written as a worker would (the pages are under
test, not the pipeline), and enqueuing is switched off. Each page is saved as a screenshot to
``$SCREENSHOT_DIR`` (default ``var/screenshots/``), named after the page.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from recognition.models import Batch, Job, ModelVersion, Prediction, Recording, RecordingResult
from tests.factories import audio_bytes, pulse_train

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = Path(os.environ.get("SCREENSHOT_DIR", ROOT / "var" / "screenshots"))
LABELS = ["native", "non_native"]


def _shoot(browser, name: str) -> Path:
    """A full-page screenshot (the window grown to the page's height), and the page never wider than the window."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    for _ in range(2):  # the page reflows once the window is taller
        height = browser.execute_script("return document.documentElement.scrollHeight")
        browser.set_window_size(1400, min(max(height + 150, 900), 8000))
    overflow = browser.execute_script("return document.documentElement.scrollWidth - document.documentElement.clientWidth")
    path = SCREENSHOTS / f"{name}.png"
    browser.save_screenshot(str(path))
    print(f"screenshot: {path}")
    assert overflow <= 0, f"{name} overflows sideways by {overflow}px"
    browser.set_window_size(1400, 1000)
    return path


def _rendered(browser, alt: str) -> None:
    from selenium.webdriver.common.by import By

    image = browser.find_element(By.CSS_SELECTOR, f'img[alt="{alt}"]')
    assert image.get_attribute("src").startswith("data:image/png;base64,")
    assert browser.execute_script("return arguments[0].complete && arguments[0].naturalWidth", image) > 100, f"{alt} did not render"


def _no_form_leftovers(browser) -> None:
    from selenium.webdriver.common.by import By

    assert not browser.find_elements(By.CSS_SELECTOR, 'input[name="_save"], a.deletelink, .inline-group')
    assert "object (" not in browser.find_element(By.ID, "content").text


def _wait_for_text(browser, element_id: str, text: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(browser, 20).until(expected_conditions.text_to_be_present_in_element((By.ID, element_id), text))


def _classify(job: Job, said: dict[Recording, tuple[str, float]]) -> Job:
    """Write a classify job's results as its worker would: ``said`` is ``{recording: (class or "", p_native)}``."""
    from recognition.services.reports import classify_report

    for rec, (predicted, p_native) in said.items():
        result = RecordingResult.objects.create(job=job, recording=rec, recording_ref=rec.original_filename, status="succeeded")
        outcome = "insufficient_speech" if not predicted else ("uncertain" if max(p_native, 1 - p_native) < 0.6 else "ok")
        probs = {"native": p_native, "non_native": 1 - p_native} if predicted else {}
        windows = [{"start_s": t / 2, "end_s": t / 2 + 1.0, "probabilities": {"native": min(1.0, p_native + 0.1 * (t % 2)),
                                                                           "non_native": max(0.0, 1 - p_native - 0.1 * (t % 2))}}
                   for t in range(3)] if predicted else []
        Prediction.objects.create(result=result, model_version=job.model_version, checkpoint_sha256="0" * 64, outcome=outcome,
                                  predicted_class=predicted, confidence=max(p_native, 1 - p_native) if predicted else None,
                                  probabilities=probs, windows=windows)
    Job.objects.filter(pk=job.pk).update(status="succeeded", total=len(said), done=len(said), timings={"forward": 1.2, "decode": 0.4})
    job.refresh_from_db()
    job.report = classify_report(job=job)
    job.save()
    return job


def test_the_review_loop_in_the_browser(live_server, admin_login, tmp_path, monkeypatch, settings):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    monkeypatch.setattr("recognition.services.jobs._enqueue_chunks", lambda job, ids: None)
    browser = admin_login
    url = live_server.url

    # upload a labelled batch ("Batches + Add" opens the upload page)
    paths, rows = [], ["filename,label,speaker"]
    for i in range(8):
        label = LABELS[i % 2]
        path = tmp_path / f"speaker{i}-{label}.wav"
        path.write_bytes(audio_bytes(pulse_train(f0=110 + 15 * i, seconds=2.0, seed=i)))
        paths.append(str(path))
        rows.append(f"{path.name},{label},speaker{i}")
    labels_csv = tmp_path / "labels.csv"
    labels_csv.write_text("\n".join(rows) + "\n")
    browser.get(f"{url}/admin/recognition/batch/add/")
    assert browser.current_url.endswith("/admin/recognition/batch/upload/")
    assert len(browser.find_elements(By.TAG_NAME, "h1")) == 1
    browser.find_element(By.NAME, "name").send_keys("study")
    browser.find_element(By.NAME, "files").send_keys("\n".join(paths))
    browser.find_element(By.NAME, "labels").send_keys(str(labels_csv))
    browser.find_element(By.NAME, "_upload").click()
    assert "8 stored, 0 rejected" in browser.find_element(By.ID, "upload-result").text
    _shoot(browser, "01-upload")
    batch = Batch.objects.get(name="study")
    recs = list(batch.recordings.order_by("original_filename"))

    # a classify job with the old model (written as its worker would)
    old_model = ModelVersion.objects.create(name="old-model", version="1.0.0", family="speaker_head", task="classify", labels=LABELS)
    old = Job.objects.create(owner=batch.owner, kind="classify", batch=batch, model_version=old_model, status="running")
    said = {rec: (("native", 0.85) if rec.label == "native" else ("non_native", 0.2)) for rec in recs}
    # recs[i] is labelled native for even i, non_native for odd i
    said[recs[1]] = ("native", 0.7)    # wrong (or mislabelled)
    said[recs[2]] = ("native", 0.55)   # right but unsure
    said[recs[3]] = ("native", 0.58)   # wrong and unsure
    said[recs[7]] = ("", 0.0)          # no speech
    old = _classify(old, said)

    browser.get(f"{url}/admin/recognition/batch/{batch.pk}/change/")
    _no_form_leftovers(browser)
    assert len(browser.find_elements(By.CSS_SELECTOR, "#batch-recordings tbody tr")) == 8
    assert "native" in browser.find_element(By.ID, "label-counts").text
    assert f"job #{old.pk}" in browser.find_element(By.ID, "class-counts").text
    _rendered(browser, "confusion matrix")
    _shoot(browser, "02-batch")

    browser.get(f"{url}/admin/recognition/job/{old.pk}/change/")
    _no_form_leftovers(browser)
    _rendered(browser, "confusion matrix")
    _rendered(browser, "reliability diagram")
    _rendered(browser, "risk-coverage curve")
    selective = browser.find_element(By.ID, f"job-{old.pk}-selective")
    assert selective.is_displayed()
    assert "accuracy on the answers given" in browser.find_element(By.ID, "job-review").text
    assert len(browser.find_elements(By.CSS_SELECTOR, "table.wrong-or-unsure tbody tr")) >= 3
    _shoot(browser, "03-job-report")

    # correct three labels from the recording page, walking through the batch
    corrected = [recs[1], recs[3], recs[5]]
    before = [r.label for r in corrected]
    for n, rec in enumerate(corrected):
        browser.get(f"{url}/admin/recognition/recording/{rec.pk}/change/?batch={batch.pk}")
        _no_form_leftovers(browser)
        if n == 0:
            _rendered(browser, "waveform and spectrogram")
            assert browser.find_elements(By.CSS_SELECTOR, 'img.timeline')
            assert "Predictions of every job" in browser.find_element(By.ID, "predictions").text
        target = "non_native" if rec.label == "native" else "native"
        browser.find_element(By.CSS_SELECTOR, f'button.correct-to[data-label="{target}"]').click()
        _wait_for_text(browser, "current-label", "corrected from")
        if n == 0:
            assert "corrected from" in browser.find_element(By.ID, "current-label").text
            _shoot(browser, "04-recording")
    flipped = ["non_native" if label == "native" else "native" for label in before]
    from recognition.services.recordings import batch_labels

    # the corrections are this batch's labels; the recordings' own (other batches') stay as uploaded
    assert [batch_labels(batch=batch)[r.pk][0] for r in corrected] == flipped
    assert [Recording.objects.get(pk=r.pk).label for r in corrected] == before

    browser.get(f"{url}/admin/recognition/batch/{batch.pk}/change/")
    assert browser.find_element(By.ID, "n-corrected").text == "3"
    browser.find_element(By.ID, "train-link").click()
    assert "3 corrected by review" in browser.find_element(By.ID, "train-corrections").text
    family = Select(browser.find_element(By.NAME, "family"))
    assert family.first_selected_option.get_attribute("value") == "whisper_probe"
    _shoot(browser, "05-train")
    browser.find_element(By.NAME, "_train").click()
    _wait_for_text(browser, "trained-model", "Training runs on a worker")
    train = Job.objects.get(kind="train")
    assert train.params["family"] == "whisper_probe" and train.params["name"] == "study-retrained"
    assert "Training runs on a worker" in browser.find_element(By.ID, "trained-model").text

    # the worker trains and registers the model (its card from a shipped model's report)
    meta = json.loads((settings.BASE_DIR / "models" / "checkpoints" / "accent-native.json").read_text())
    new_model = ModelVersion.objects.create(name="study-retrained", version="20261201-230000", family="whisper_probe", task="classify",
                                            labels=LABELS, sha256="ab" * 32, metrics=meta["metrics"], calibration=meta["calibration"],
                                            training_data=meta["training_data"], checkpoint="storage:models/study-retrained/x.pt")
    Job.objects.filter(pk=train.pk).update(status="succeeded", params=dict(train.params, trained_model=str(new_model)))
    browser.get(f"{url}/admin/recognition/job/{train.pk}/change/")
    browser.find_element(By.CSS_SELECTOR, "#classify-trained input[type=submit]").click()
    _wait_for_text(browser, "content-start", "Queued classify job")
    new = Job.objects.get(kind="classify", model_version=new_model)
    said.update({recs[1]: ("native", 0.8), recs[3]: ("native", 0.9), recs[5]: ("native", 0.8), recs[2]: ("native", 0.75)})
    _classify(new, said)

    browser.get(f"{url}/admin/recognition/job/{new.pk}/change/")
    assert browser.find_element(By.CSS_SELECTOR, f'a.compare-link[href$="?other={old.pk}"]')
    browser.get(f"{url}/admin/recognition/job/{train.pk}/change/")
    browser.find_element(By.ID, "compare-with-before").click()
    assert int(browser.find_element(By.ID, "n-changed").text) >= 1
    assert f"Answered by #{new.pk}, withheld by #{old.pk}" in browser.find_element(By.ID, "abstentions").text
    _shoot(browser, "06-compare")

    browser.get(f"{url}/admin/recognition/job/{train.pk}/change/")
    _shoot(browser, "07-train-job")
    browser.find_element(By.ID, "trained-link").click()
    _no_form_leftovers(browser)
    assert browser.find_element(By.ID, "card-balanced-accuracy").text == f"{meta['metrics']['test']['balanced_accuracy']:.3f}"
    _rendered(browser, "reliability diagram")
    page = browser.find_element(By.ID, "content").text
    assert "test_predictions" not in page and "/work/" not in page and "models/checkpoints" not in page
    assert "non-commercial" in browser.find_element(By.ID, "licence").text
    _shoot(browser, "08-model-card")

    # lists: recordings filtered by batch and outcome; the job list and the timeline never overflow sideways
    browser.get(f"{url}/admin/recognition/recording/?batch={batch.pk}&outcome=uncertain")
    assert "speaker2-native.wav" in browser.find_element(By.ID, "result_list").text
    _shoot(browser, "09-recordings-filtered")
    Job.objects.filter(pk=old.pk).update(error="x" * 400)
    browser.get(f"{url}/admin/recognition/job/")
    _shoot(browser, "10-job-list")
    browser.get(f"{url}/admin/recognition/job/{old.pk}/timeline/")
    _shoot(browser, "11-timeline")
