"""Review: plots (valid PNGs from small hand-made data), projection, wrong-or-unsure, job comparison,
the projection / compare API endpoints and the admin review pages."""
from __future__ import annotations

import base64
import uuid

import numpy as np
import pytest

from recognition import model_cards, review
from recognition.models import Batch, Embedding, Job, ModelVersion, Prediction, Recording, RecordingResult
from workers.pipeline.evaluation import evaluation_report

PNG = b"\x89PNG\r\n\x1a\n"
LABELS = ["native", "non_native"]


def _png_size(png: bytes) -> tuple[int, int]:
    assert png.startswith(PNG) and png[12:16] == b"IHDR" and png.endswith(b"IEND\xaeB`\x82")
    return int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")


# --- plots: pure, no database ---------------------------------------------------------------


def test_confusion_matrix_png_and_data_uri():
    png = review.confusion_matrix_png(["native", "non_native", "other"], [[5, 1, 0], [2, 3, 0], [0, 0, 0]])
    width, height = _png_size(png)
    assert width > 100 and height > 100
    uri = review.data_uri(png)
    assert uri.startswith("data:image/png;base64,") and base64.b64decode(uri.split(",", 1)[1]) == png


def test_reliability_png_from_a_report_with_empty_bins():
    rng = np.random.default_rng(0)
    p = rng.uniform(0.5, 1.0, size=20)
    report = evaluation_report(["native"] * 10 + ["non_native"] * 10, np.stack([p, 1 - p], axis=1), LABELS, n_boot=0)
    assert None in report["reliability"]["accuracy"]  # most of the 15 bins are empty
    _png_size(review.reliability_png(report["reliability"], ece=report["ece"]))


def test_window_timeline_png_with_and_without_windows():
    windows = [{"start_s": 0.5 * i, "end_s": 0.5 * i + 1.0, "probabilities": {"native": i / 5, "non_native": 1 - i / 5}}
               for i in range(6)]
    _png_size(review.window_timeline_png(windows, LABELS))
    _png_size(review.window_timeline_png(windows))
    _png_size(review.window_timeline_png([]))


def test_projection_png_with_unlabelled_points():
    points = [{"x": 0.0, "y": 1.0, "label": "native"}, {"x": 1.0, "y": 0.0, "label": ""}, {"x": 2.0, "y": 1.0, "label": "non_native"}]
    _png_size(review.projection_png(points, title="test"))
    _png_size(review.projection_png([]))


def test_pca_separates_clearly_separated_clusters():
    rng = np.random.default_rng(1)
    centre = rng.standard_normal(32)
    a = centre + 0.05 * rng.standard_normal((10, 32))
    b = -centre + 0.05 * rng.standard_normal((12, 32))
    coords, method = review.project_2d(np.vstack([a, b]), method="pca")
    assert method == "pca" and coords.shape == (22, 2)
    first = coords[:, 0]
    assert first[:10].min() > first[10:].max() or first[:10].max() < first[10:].min()
    gap = abs(first[:10].mean() - first[10:].mean())
    assert gap > 10 * max(first[:10].std(), first[10:].std())


def test_pca_degenerate_inputs():
    assert review.pca_2d(np.ones((1, 4))).shape == (1, 2)
    assert np.allclose(review.pca_2d(np.ones((3, 4))), 0)
    one_dim = review.pca_2d(np.array([[0.0], [1.0], [2.0]]))
    assert one_dim.shape == (3, 2) and np.allclose(one_dim[:, 1], 0)


# --- selectors over rows ---------------------------------------------------------------------


def _recording(owner, name: str, label: str = "", speaker: str = "") -> Recording:
    return Recording.objects.create(owner=owner, file=f"recordings/{name}", original_filename=name, sha256=uuid.uuid4().hex,
                                    format="wav", duration_s=3.0, label=label, speaker=speaker or name)


def _model(task: str = "classify", version: str = "1") -> ModelVersion:
    return ModelVersion.objects.create(name=f"m-{task}", version=version, family="cnn", task=task,
                                       labels=LABELS if task == "classify" else [])


def _classify_job(owner, batch, mv, said: dict[Recording, tuple[str, float]]) -> Job:
    """A succeeded classify job whose predictions are ``said`` ({recording: (class or "", p_native)}), with its report."""
    from recognition.services.reports import classify_report

    job = Job.objects.create(owner=owner, kind="classify", batch=batch, model_version=mv, status="succeeded", total=len(said),
                             done=len(said), timings={"forward": 1.5, "decode": 0.5})
    for rec, (predicted, p_native) in said.items():
        result = RecordingResult.objects.create(job=job, recording=rec, recording_ref=rec.original_filename, status="succeeded")
        outcome = "insufficient_speech" if not predicted else ("uncertain" if max(p_native, 1 - p_native) < 0.6 else "ok")
        probs = {"native": p_native, "non_native": 1 - p_native} if predicted else {}
        windows = [{"start_s": 0.0, "end_s": 1.0, "probabilities": probs}, {"start_s": 0.5, "end_s": 1.5, "probabilities": probs}]
        Prediction.objects.create(result=result, model_version=mv, checkpoint_sha256="0" * 64, outcome=outcome,
                                  predicted_class=predicted, confidence=max(p_native, 1 - p_native) if predicted else None,
                                  probabilities=probs, windows=windows if predicted else [])
    job.report = classify_report(job=job)
    job.save()
    return job


@pytest.fixture
def two_model_jobs(user):
    """One labelled batch classified by two model versions; b changes its mind on r1 and r4 only."""
    batch = Batch.objects.create(owner=user, name="study")
    recs = [_recording(user, f"r{i}.wav", label=label) for i, label in enumerate(["native", "native", "non_native", "non_native"])]
    recs.append(_recording(user, "r4.wav"))  # unlabelled
    recs.append(_recording(user, "r5.wav", label="native"))  # no speech in both
    batch.recordings.set(recs)
    mv1, mv2 = _model(version="1"), _model(version="2")
    a = _classify_job(user, batch, mv1, {recs[0]: ("native", 0.9), recs[1]: ("non_native", 0.2), recs[2]: ("non_native", 0.1),
                                         recs[3]: ("native", 0.55), recs[4]: ("native", 0.8), recs[5]: ("", 0.0)})
    b = _classify_job(user, batch, mv2, {recs[0]: ("native", 0.95), recs[1]: ("native", 0.7), recs[2]: ("non_native", 0.2),
                                         recs[3]: ("native", 0.8), recs[4]: ("non_native", 0.3), recs[5]: ("", 0.0)})
    return batch, recs, a, b


@pytest.mark.django_db
def test_compare_lists_exactly_the_changed_recordings(two_model_jobs):
    _, recs, a, b = two_model_jobs
    diff = review.jobs_compare(job_a=a, job_b=b)
    assert [row["recording"] for row in diff["changed"]] == [recs[1].pk, recs[4].pk]
    assert diff["changed"][0] | {"a_confidence": None, "b_confidence": None} == {
        "recording": recs[1].pk, "filename": "r1.wav", "label": "native", "a": "non_native", "b": "native",
        "a_confidence": None, "b_confidence": None}
    assert (diff["n_common"], diff["n_changed"]) == (6, 2)
    assert diff["transitions"] == {"native -> non_native": 1, "non_native -> native": 1}
    # five labelled recordings in both; r5 had no speech and counts as not correct
    assert (diff["a"]["n_labelled"], diff["a"]["correct"], diff["a"]["abstained"]) == (5, 2, 1)
    assert (diff["b"]["correct"], diff["b"]["accuracy"]) == (3, pytest.approx(0.6))
    assert review.jobs_compare(job_a=a, job_b=a)["changed"] == []


@pytest.mark.django_db
def test_wrong_or_unsure(two_model_jobs):
    _, recs, a, _ = two_model_jobs
    rows = {row["filename"]: row["reasons"] for row in review.job_wrong_or_unsure(job=a)}
    # r1 wrong; r3 wrong and uncertain (0.55); r5 no speech; r0, r2 right; r4 unlabelled and sure
    assert rows == {"r1.wav": ["wrong"], "r3.wav": ["wrong", "uncertain"], "r5.wav": ["insufficient_speech"]}


@pytest.mark.django_db
def test_job_review_pieces(two_model_jobs):
    _, _, a, b = two_model_jobs
    r = review.job_review(job=a)
    assert r["report"]["n"] == 4 and [row["label"] for row in r["report"]["per_class"]] == LABELS
    assert r["confusion_matrix_uri"].startswith("data:image/png;base64,") and r["reliability_uri"].startswith("data:image/png")
    assert [t["stage"] for t in r["timings"]] == ["forward", "decode"] and r["timings"][0]["share"] == pytest.approx(75)
    assert list(review.job_compare_candidates(job=a)) == [b]


def _embed_job(owner, batch, vectors: dict[Recording, list[float]]) -> Job:
    mv = _model(task="embed")
    job = Job.objects.create(owner=owner, kind="embed", batch=batch, model_version=mv, status="succeeded", total=len(vectors))
    for rec, vector in vectors.items():
        result = RecordingResult.objects.create(job=job, recording=rec, status="succeeded")
        v = np.asarray(vector) / np.linalg.norm(vector)
        Embedding.objects.create(result=result, recording=rec, model_version=mv, checkpoint_sha256="0" * 64, dim=len(v), vector=v.tolist())
    return job


@pytest.fixture
def embedded(user):
    batch = Batch.objects.create(owner=user, name="emb")
    rng = np.random.default_rng(2)
    centre = rng.standard_normal(8)
    recs = {}
    for i in range(8):
        label = ["native", "non_native", ""][i % 3]
        sign = -1 if label == "non_native" else 1
        recs[_recording(user, f"e{i}.wav", label=label)] = (sign * centre + 0.05 * rng.standard_normal(8)).tolist()
    batch.recordings.set(recs)
    return batch, list(recs), _embed_job(user, batch, recs)


@pytest.mark.django_db
def test_job_projection(embedded):
    _, recs, job = embedded
    projection = review.job_projection(job=job)
    assert projection["method"] == "pca" and [p["recording"] for p in projection["points"]] == [r.pk for r in recs]
    xs = {p["label"]: [] for p in projection["points"]}
    for p in projection["points"]:
        xs[p["label"]].append(p["x"])
    assert min(xs["non_native"]) > max(xs["native"]) or max(xs["non_native"]) < min(xs["native"])
    assert review.job_review(job=job)["projection_uri"].startswith("data:image/png;base64,")


# --- API -------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_projection_endpoint_is_owner_scoped(api, embedded, two_model_jobs, other_user):
    from rest_framework.test import APIClient

    _, _, job = embedded
    data = api.get(f"/api/v1/jobs/{job.pk}/projection/").json()
    assert data["job"] == job.pk and len(data["points"]) == 8 and {"x", "y", "label", "filename"} <= set(data["points"][0])
    assert api.get(f"/api/v1/jobs/{job.pk}/projection/?method=tsne").status_code == 400
    classify = two_model_jobs[2]
    assert api.get(f"/api/v1/jobs/{classify.pk}/projection/").json()["error"]["code"] == "no_embeddings"
    stranger = APIClient()
    stranger.force_authenticate(other_user)
    assert stranger.get(f"/api/v1/jobs/{job.pk}/projection/").status_code == 404


@pytest.mark.django_db
def test_compare_endpoint(api, two_model_jobs, embedded, other_user):
    _, recs, a, b = two_model_jobs
    data = api.get(f"/api/v1/jobs/{a.pk}/compare/{b.pk}/").json()
    assert [row["recording"] for row in data["changed"]] == [recs[1].pk, recs[4].pk] and data["b"]["correct"] == 3
    theirs = _classify_job(other_user, None, a.model_version, {})
    assert api.get(f"/api/v1/jobs/{a.pk}/compare/{theirs.pk}/").status_code == 404
    assert api.get(f"/api/v1/jobs/{theirs.pk}/compare/{a.pk}/").status_code == 404
    assert api.get(f"/api/v1/jobs/{a.pk}/compare/{embedded[2].pk}/").json()["error"]["code"] == "not_classify"


# --- admin -----------------------------------------------------------------------------------


@pytest.fixture
def staff_client(client, django_user_model):
    admin = django_user_model.objects.create_superuser("boss", "boss@example.com", "pw-123456789")
    client.force_login(admin)
    return client


@pytest.mark.django_db
def test_admin_review_pages(staff_client, two_model_jobs, embedded):
    batch, recs, a, b = two_model_jobs
    page = staff_client.get(f"/admin/recognition/batch/{batch.pk}/change/").content.decode()
    assert page.count('alt="confusion matrix"') == 2 and 'alt="reliability diagram"' in page
    assert "<td>non_native</td>" in page and f'src="/media/recordings/{recs[1].pk}/"' in page
    assert f'href="/admin/recognition/recording/{recs[3].pk}/change/?batch={batch.pk}"' in page
    assert 'alt="embedding projection"' in staff_client.get(f"/admin/recognition/batch/{embedded[0].pk}/change/").content.decode()

    page = staff_client.get(f"/admin/recognition/job/{a.pk}/change/").content.decode()
    assert 'alt="confusion matrix"' in page and "Stage timings" in page and "95% CI" in page
    assert f"/admin/recognition/job/{a.pk}/compare/?other={b.pk}" in page

    page = staff_client.get(f"/admin/recognition/job/{a.pk}/compare/?other={b.pk}")
    assert page.status_code == 200
    assert page.content.decode().count("<audio") == 2
    assert staff_client.get(f"/admin/recognition/job/{a.pk}/compare/?other=999999").status_code == 404

    Prediction.objects.filter(result__recording=recs[0], result__job=a).update(reading={
        "fused": True, "words_read": 12, "prompt_words": 69, "read_share": 0.93, "words_per_s": 2.41, "gop_mean": -21.7,
        "skipped_word_share": 0.08, "oov": [], "words": [
            {"word": "please", "start_s": 0.31, "end_s": 0.62, "gop": -12.5, "weakest": "IY", "low": False},
            {"word": "stella", "start_s": 0.9, "end_s": 1.4, "gop": -41.0, "weakest": "EH", "low": True}]})
    page = staff_client.get(f"/admin/recognition/recording/{recs[0].pk}/change/").content.decode()
    assert page.count('class="timeline"') == 2 and "no_embedding" not in page and "run an embed job first" in page
    assert "Transcript used" in page and "12 of 69 words read" in page and "93 % of the recording" in page
    assert '<span class="word low" title="0.9-1.4 s, goodness -41.0, weakest phone EH">stella</span>' in page
    assert '<span class="word" title="0.31-0.62 s, goodness -12.5, weakest phone IY">please</span>' in page
    page = staff_client.get(f"/admin/recognition/recording/{embedded[1][0].pk}/change/").content.decode()
    assert "cosine similarity" in page and "e3.wav" in page


@pytest.mark.django_db
def test_admin_pages_escape_user_text(staff_client, user):
    batch = Batch.objects.create(owner=user, name="x")
    rec = _recording(user, "<script>alert(1)</script>.wav", label="native")
    batch.recordings.set([rec])
    _classify_job(user, batch, _model(), {rec: ("non_native", 0.3)})
    page = staff_client.get(f"/admin/recognition/batch/{batch.pk}/change/").content.decode()
    assert "<script>alert(1)</script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;.wav" in page


@pytest.mark.django_db
def test_admin_classify_with_a_chosen_model(staff_client, user, monkeypatch):
    monkeypatch.setattr("recognition.services.jobs._enqueue_chunks", lambda job, ids: None)
    batch = Batch.objects.create(owner=user, name="pick")
    batch.recordings.set([_recording(user, "p.wav")])
    default, chosen = _model(version="1"), _model(version="2")
    ModelVersion.objects.filter(pk=default.pk).update(is_default=True)
    form = staff_client.post("/admin/recognition/batch/", {"action": "classify_with_model", "_selected_action": [batch.pk]})
    assert form.status_code == 200 and 'name="model"' in form.content.decode() and Job.objects.count() == 0
    done = staff_client.post("/admin/recognition/batch/", {"action": "classify_with_model", "_selected_action": [batch.pk],
                                                           "model": chosen.pk, "apply": "Classify"})
    assert done.status_code == 302
    job = Job.objects.get()
    assert (job.kind, job.model_version_id, job.batch_id) == ("classify", chosen.pk, batch.pk)


@pytest.mark.django_db
def test_a_card_says_how_many_speakers_its_numbers_rest_on_and_warns_under_10():
    """A user's model evaluated on 3 speakers (the old cnn card said 0.933 "held out" over 3) is
    flagged; one evaluated on 62 is not. The warning shows on the card page."""
    few = ModelVersion.objects.create(name="few", version="1", family="cnn", task="classify", labels=LABELS,
                                      metrics={"test": {"n": 6, "balanced_accuracy": 0.933}},
                                      training_data={"splits": {"train": {"items": 30, "speakers": 9},
                                                                "test": {"items": 6, "speakers": 3}}})
    card = model_cards.model_card(model_version=few, pictures=False)
    assert card["speakers"] == {"train": 9, "test": 3, "val": None}
    assert "3 speakers" in card["evaluation_warning"] and "at least 10" in card["evaluation_warning"]
    many = ModelVersion.objects.create(name="many", version="1", family="cnn", task="classify", labels=LABELS,
                                       metrics={"test": {"n": 150, "balanced_accuracy": 0.85}},
                                       training_data={"splits": {"test": {"items": 150, "speakers": 62}}})
    assert model_cards.model_card(model_version=many, pictures=False)["evaluation_warning"] == ""
