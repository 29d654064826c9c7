"""Review in a real browser: upload a labelled batch, classify it with a chosen model from the admin,
let a real worker run it, then read the report pictures and tables on the batch and job pages."""
import os

import pytest

from recognition.models import Batch, Job
from tests.conftest import speech, wait_for_job

pytestmark = [pytest.mark.browser, pytest.mark.integration, pytest.mark.django_db(transaction=True)]

SENTENCES = ["Please call Stella.", "Ask her to bring these things with her from the store."]
SCREENSHOT = os.environ.get("REVIEW_SCREENSHOT", "/tmp/review.png")


def _assert_inline_png(browser, alt: str) -> None:
    from selenium.webdriver.common.by import By

    image = browser.find_element(By.CSS_SELECTOR, f'img[alt="{alt}"]')
    assert image.get_attribute("src").startswith("data:image/png;base64,")
    assert browser.execute_script("return arguments[0].complete && arguments[0].naturalWidth", image) > 100, f"{alt} did not render"


def test_review_a_classified_batch_in_the_browser(live_server, admin_login, celery_worker, tiny_classifier, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    browser = admin_login
    paths, rows = [], ["filename,label,speaker"]
    for voice, label in (("en-us", "native"), ("en-gb-scotland", "non_native")):
        for i, text in enumerate(SENTENCES):
            path = tmp_path / f"{voice}-{i}.wav"
            path.write_bytes(speech(text, voice=voice))
            paths.append(str(path))
            rows.append(f"{path.name},{label},{voice}")
    labels = tmp_path / "labels.csv"
    labels.write_text("\n".join(rows) + "\n")

    browser.get(f"{live_server.url}/admin/recognition/batch/upload/")
    browser.find_element(By.NAME, "name").send_keys("review batch")
    browser.find_element(By.NAME, "files").send_keys("\n".join(paths))
    browser.find_element(By.NAME, "labels").send_keys(str(labels))
    browser.find_element(By.NAME, "_upload").click()
    assert "4 stored, 0 rejected" in browser.find_element(By.ID, "upload-result").text
    batch = Batch.objects.get(name="review batch")

    # the change list's "with a chosen model" action: pick the batch, then the model on the next page
    browser.get(f"{live_server.url}/admin/recognition/batch/")
    browser.find_element(By.CSS_SELECTOR, f'input.action-select[value="{batch.pk}"]').click()
    Select(browser.find_element(By.NAME, "action")).select_by_value("classify_with_model")
    browser.find_element(By.CSS_SELECTOR, 'button[name="index"]').click()
    Select(browser.find_element(By.NAME, "model")).select_by_visible_text(str(tiny_classifier))
    browser.find_element(By.NAME, "apply").click()
    assert f"with {tiny_classifier}" in browser.find_element(By.CSS_SELECTOR, "ul.messagelist").text

    job = Job.objects.get(batch=batch)
    assert (job.kind, job.model_version_id) == ("classify", tiny_classifier.pk)
    job = wait_for_job(job.pk, timeout=240)
    assert job.status == "succeeded", job.error
    assert job.report and job.report["n"] == 4

    browser.get(f"{live_server.url}/admin/recognition/batch/{batch.pk}/change/")
    section = browser.find_element(By.ID, f"job-{job.pk}-review")
    _assert_inline_png(browser, "confusion matrix")
    _assert_inline_png(browser, "reliability diagram")
    per_class = section.find_element(By.CSS_SELECTOR, "table.per-class")
    assert [row.find_element(By.TAG_NAME, "td").text for row in per_class.find_elements(By.CSS_SELECTOR, "tbody tr")] == [
        "native", "non_native"]
    assert "Balanced accuracy" in section.text and "95% CI" in section.text
    for row in section.find_elements(By.CSS_SELECTOR, "table.wrong-or-unsure tbody tr"):
        assert row.find_element(By.TAG_NAME, "audio").get_attribute("src").startswith(f"{live_server.url}/media/recordings/")
    for _ in range(2):  # the page reflows once the window is taller
        height = browser.execute_script("return document.documentElement.scrollHeight")
        browser.set_window_size(1400, min(max(height + 150, 1000), 6000))
    browser.save_screenshot(SCREENSHOT)

    browser.get(f"{live_server.url}/admin/recognition/job/{job.pk}/change/")
    _assert_inline_png(browser, "confusion matrix")
    assert "Stage timings" in browser.find_element(By.ID, "job-review").text
    browser.save_screenshot(SCREENSHOT.replace(".png", "-job.png"))
