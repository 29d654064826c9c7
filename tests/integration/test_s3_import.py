"""``manage.py import_recordings s3://bucket/prefix`` against a real S3-compatible server (moto's, in its
own process): the listing is read a page at a time, each object is judged like an uploaded file, a bad
object is a rejection that leaves no row and no stored file, and a manifest object is honoured."""
from __future__ import annotations

import io

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from recognition.models import Batch, BatchMember, Recording
from tests.factories import audio_bytes, pulse_train
from tests.integration.test_multihost import s3_server  # noqa: F401  (fixture: moto's server process)

pytest.importorskip("moto", reason="moto[server] not installed (the S3-compatible server of this test)")

pytestmark = [pytest.mark.integration, pytest.mark.django_db]

SOURCE = "accentsite-import-source"


def _wav(seed: int) -> bytes:
    return audio_bytes(pulse_train(120.0 + seed, seconds=1.5, seed=seed))


@pytest.fixture
def source(s3_server, settings):  # noqa: F811
    endpoint, s3 = s3_server
    settings.AWS_S3_ENDPOINT_URL = endpoint
    settings.AWS_S3_REGION_NAME = "us-east-1"
    settings.AWS_S3_ADDRESSING_STYLE = "path"
    s3.create_bucket(Bucket=SOURCE)
    return s3


def _stored(media_root) -> set[str]:
    return {str(p.relative_to(media_root)) for p in media_root.rglob("*") if p.is_file()}


def test_an_s3_prefix_is_imported_page_by_page_with_the_upload_checks(source, user, media_root, monkeypatch):
    objects = {"study/a.wav": _wav(1), "study/sub/b.wav": _wav(2), "study/broken.wav": b"not audio at all",
               "study/c.flac": _wav(3), "study/.hidden.wav": _wav(4), "study/sub/": b"", "other/d.wav": _wav(5),
               "study/e.wav": _wav(6)}
    for key, body in objects.items():
        source.put_object(Bucket=SOURCE, Key=key, Body=body)
    pages = []
    import botocore.paginate

    real = botocore.paginate.PageIterator._make_request

    def counted(self, current_kwargs):  # every listing request the command makes, and its page size
        pages.append(current_kwargs.get("MaxKeys"))
        return real(self, current_kwargs)

    monkeypatch.setattr(botocore.paginate.PageIterator, "_make_request", counted)
    before = _stored(media_root)
    out, err = io.StringIO(), io.StringIO()
    call_command("import_recordings", f"s3://{SOURCE}/study", batch="s3 study", owner=user.username, group=2,
                 stdout=out, stderr=err)

    batch = Batch.objects.get(owner=user, name="s3 study")
    names = sorted(batch.recordings.values_list("original_filename", flat=True))
    assert names == ["a.wav", "c.flac", "e.wav", "sub/b.wav"]  # not the hidden one, the folder key or other/
    assert pages == [2, 2, 2, 2]  # the 7 keys below study/ listed 2 a request (--group), never whole
    assert "rejected broken.wav: not_audio" in err.getvalue()
    lines = out.getvalue().splitlines()
    assert lines[0].startswith(f"Batch #{batch.pk} 's3 study' created") and "2 read:" in lines[1]
    assert "5 read: 4 in the batch, 1 rejected" in out.getvalue()
    # the bad object left nothing behind: no row, no stored file; each good one is one stored file
    assert not Recording.objects.filter(owner=user, original_filename="broken.wav").exists()
    assert _stored(media_root) - before == set(batch.recordings.values_list("file", flat=True))

    # a second run adds only what is new; the files already in the batch stay one member each
    source.put_object(Bucket=SOURCE, Key="study/f.wav", Body=_wav(7))
    call_command("import_recordings", f"s3://{SOURCE}/study/", batch="s3 study", owner=user.username,
                 stdout=io.StringIO(), stderr=io.StringIO())
    assert batch.recordings.count() == 5 and Batch.objects.filter(owner=user, name="s3 study").count() == 1


def test_an_s3_manifest_brings_labels_and_refuses_missing_unsafe_and_oversized_objects(source, user, settings):
    source.put_object(Bucket=SOURCE, Key="m/clips/a.wav", Body=_wav(1))
    source.put_object(Bucket=SOURCE, Key="m/clips/b.wav", Body=_wav(2))
    source.put_object(Bucket=SOURCE, Key="outside.wav", Body=_wav(3))
    source.put_object(Bucket=SOURCE, Key="m/clips/huge.wav", Body=_wav(4) + b"\0" * 400_000)
    source.put_object(Bucket=SOURCE, Key="m/manifest.csv", Body=(
        b"filename,label,speaker,corpus\nclips/a.wav,native,s1,saa\nclips/b.wav,non_native,s2,l2arctic\n"
        b"clips/gone.wav,native,s3,saa\n../outside.wav,native,s4,saa\nclips/huge.wav,native,s5,saa\n"))
    settings.AUDIO_MAX_UPLOAD_BYTES = 300_000  # huge.wav is refused from its size, before it is fetched
    err = io.StringIO()
    call_command("import_recordings", f"s3://{SOURCE}/m/manifest.csv", batch="m", owner=user.username, group=10,
                 stdout=io.StringIO(), stderr=err)
    batch = Batch.objects.get(owner=user, name="m")
    members = {m.recording.original_filename: (m.label, m.speaker, m.recording.metadata.get("corpus"))
               for m in BatchMember.objects.filter(batch=batch).select_related("recording")}
    assert members == {"clips/a.wav": ("native", "s1", "saa"), "clips/b.wav": ("non_native", "s2", "l2arctic")}
    text = err.getvalue()
    assert "rejected clips/gone.wav: missing_file" in text and "rejected ../outside.wav: unsafe_path" in text
    assert "rejected clips/huge.wav: too_large" in text and "unknown_filename" not in text


def test_an_unreadable_bucket_fails_before_any_batch_is_made(source, user):
    with pytest.raises(CommandError, match="bucket could not be read"):
        call_command("import_recordings", "s3://no-such-bucket/x", batch="none", owner=user.username,
                     stdout=io.StringIO(), stderr=io.StringIO())
    assert not Batch.objects.filter(owner=user, name="none").exists()


def test_an_object_that_cannot_be_fetched_is_refused_alone(source):
    """Gone between the listing and its group's turn: ``fetch_failed`` for it, the others are offered."""
    from recognition.management.commands._s3 import S3Source

    source.put_object(Bucket=SOURCE, Key="f/a.wav", Body=_wav(1))
    source.put_object(Bucket=SOURCE, Key="f/b.wav", Body=_wav(2))
    s3 = S3Source(f"s3://{SOURCE}/f", page_size=10)
    names = [row[0] for row in s3.rows()]
    assert names == ["a.wav", "b.wav"] and all(s3.refusal(n) is None for n in names)
    source.delete_object(Bucket=SOURCE, Key="f/a.wav")
    offered = [(name, fh.read()) for name, fh in s3.opened(names)]
    assert offered == [("b.wav", _wav(2))]
    assert [(r.filename, r.code) for r in s3.failures()] == [("a.wav", "fetch_failed")] and s3.failures() == []
    s3.close()
