"""Log in to the admin in a real browser and upload a labelled batch through the upload page."""
import pytest

from recognition.models import Batch
from tests.factories import audio_bytes, pulse_train

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_upload_a_labelled_batch_in_the_browser(live_server, admin_login, tmp_path):
    from selenium.webdriver.common.by import By

    browser = admin_login
    paths = []
    for i, f0 in enumerate((120, 180)):
        path = tmp_path / f"voice{i}.wav"
        path.write_bytes(audio_bytes(pulse_train(f0=f0, seed=i)))
        paths.append(str(path))
    (tmp_path / "broken.wav").write_bytes(b"this is not audio")
    paths.append(str(tmp_path / "broken.wav"))
    labels = tmp_path / "labels.csv"
    labels.write_text("filename,label,speaker\nvoice0.wav,native,a\nvoice1.wav,non_native,b\n")

    browser.get(f"{live_server.url}/admin/recognition/batch/")
    browser.find_element(By.CSS_SELECTOR, "a[href$=\"/batch/upload/\"]").click()
    browser.find_element(By.NAME, "name").send_keys("browser batch")
    browser.find_element(By.NAME, "files").send_keys("\n".join(paths))
    browser.find_element(By.NAME, "labels").send_keys(str(labels))
    browser.find_element(By.NAME, "_upload").click()

    heading = browser.find_element(By.ID, "upload-result").text
    assert "2 stored, 1 rejected" in heading
    assert "broken.wav" in browser.find_element(By.ID, "rejected").text
    batch = Batch.objects.get(name="browser batch")
    assert sorted(batch.recordings.values_list("label", flat=True)) == ["native", "non_native"]
