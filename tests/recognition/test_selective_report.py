"""Selective prediction made visible: classify reports and the compare endpoint."""
import pytest

from recognition import review
from recognition.models import Job
from recognition.services.reports import classify_report
from tests.recognition.test_review import _classify_job, _model, _recording, two_model_jobs  # noqa: F401  (fixtures)

pytestmark = pytest.mark.django_db


def test_report_gives_coverage_and_accuracy_on_the_accepted_answers(two_model_jobs):  # noqa: F811
    _, _, a, b = two_model_jobs
    sel = a.report["selective"]
    # a: r0 right, r1 wrong (both sure), r2 right, r3 wrong and uncertain; r4 unlabelled, r5 no speech
    assert (sel["n"], sel["n_accepted"], sel["coverage"]) == (4, 3, pytest.approx(0.75))
    assert sel["accuracy_accepted"] == pytest.approx(2 / 3) and sel["accuracy_all"] == pytest.approx(0.5) == a.report["accuracy"]
    assert sel["abstained"] == {"uncertain": 1, "insufficient_speech": 1}
    assert sel["curve"]["coverage"][-1] == 1.0 and len(sel["curve"]["risk"]) == 4 and sel["aurc"] is not None
    assert b.report["selective"]["coverage"] == 1.0


def test_a_thresholded_job_reports_accepted_and_all_answers_separately(user):
    from recognition.models import Batch

    batch = Batch.objects.create(owner=user, name="t")
    recs = [_recording(user, f"t{i}.wav", label=label) for i, label in enumerate(["native", "native", "non_native", "non_native"])]
    batch.recordings.set(recs)
    job = _classify_job(user, batch, _model(version="t"),
                        {recs[0]: ("native", 0.95), recs[1]: ("non_native", 0.45), recs[2]: ("non_native", 0.05),
                         recs[3]: ("native", 0.58)})
    job.params = {"threshold": 0.6}
    job.save()
    report = classify_report(job=job)
    assert report["accuracy"] == pytest.approx(0.5)
    assert report["selective"]["threshold"] == 0.6 and report["selective"]["accuracy_accepted"] == 1.0
    assert report["selective"]["coverage"] == pytest.approx(0.5)


def test_single_speaker_report_has_no_interval_but_a_reason(user):
    from recognition.models import Batch

    batch = Batch.objects.create(owner=user, name="one")
    recs = [_recording(user, f"o{i}.wav", label=["native", "non_native"][i % 2], speaker="only") for i in range(4)]
    job = _classify_job(user, batch, _model(version="o"), {r: ("native", 0.9) if r.label == "native" else ("non_native", 0.1)
                                                           for r in recs})
    assert job.report["ci"]["accuracy"]["low"] is None and "fewer than 2 speakers" in job.report["ci"]["reason"]
    text = review.job_review(job=job, pictures=False)["report"]["balanced_accuracy_ci"]
    assert text.startswith("no CI: fewer than 2 speakers") and "0.930 to" not in text


def test_compare_shows_how_abstentions_changed(api, two_model_jobs):  # noqa: F811
    _, recs, a, b = two_model_jobs
    body = api.get(f"/api/v1/jobs/{a.pk}/compare/{b.pk}/").json()
    assert body["abstentions"]["transitions"] == {"uncertain -> ok": 1}
    (row,) = body["abstentions"]["newly_answered"]
    assert (row["recording"], row["a_outcome"], row["b_outcome"]) == (recs[3].pk, "uncertain", "ok")
    assert body["abstentions"]["newly_withheld"] == []
    # a: 5 labelled (r5 without speech), 3 answered ok, 2 of them right
    assert (body["a"]["accepted"], body["a"]["uncertain"], body["a"]["abstained"]) == (3, 1, 1)
    assert body["a"]["coverage"] == pytest.approx(0.6) and body["a"]["accuracy_accepted"] == pytest.approx(2 / 3)
    assert body["b"]["coverage"] == pytest.approx(0.8) and body["b"]["accuracy_accepted"] == pytest.approx(3 / 4)
    assert Job.objects.get(pk=a.pk).report["selective"]
