"""Uploads: single recordings, batches of files, zip archives and labels CSVs."""
from __future__ import annotations

import csv
import hashlib
import io
import logging
import os
import stat
import tempfile
import unicodedata
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import BinaryIO

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.core.files import File
from django.db import transaction

from recognition.errors import ServiceError
from recognition.models import Batch, Recording
from workers.pipeline.audio import AudioError
from workers.pipeline.probe import probe_audio

logger = logging.getLogger(__name__)

_ARCHIVE_EXTENSIONS = (".zip", ".tar", ".gz", ".tgz", ".bz2", ".xz", ".7z", ".rar")
_FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
_MAX_COMPRESSION_RATIO = 200


@dataclass(frozen=True)
class Rejection:
    filename: str
    code: str
    message: str

    def as_dict(self) -> dict:
        return {"filename": self.filename, "code": self.code, "message": self.message}


def _clean_filename(name: str) -> str:
    """A display name for the user's file: NFC, no control characters, at most 255 characters."""
    name = unicodedata.normalize("NFC", name or "upload")
    name = "".join(ch for ch in name if unicodedata.category(ch)[0] != "C")
    if len(name) > 255:
        root, ext = os.path.splitext(name)
        name = root[: 255 - len(ext[:16])] + ext[:16]
    return name or "upload"


def _sha256_and_size(fileobj: BinaryIO) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    fileobj.seek(0)
    for block in iter(lambda: fileobj.read(1 << 20), b""):
        digest.update(block)
        size += len(block)
    fileobj.seek(0)
    return digest.hexdigest(), size


def recording_create(
    *,
    owner: AbstractBaseUser,
    fileobj: BinaryIO,
    filename: str,
    label: str = "",
    speaker: str = "",
    transcript: str = "",
    metadata: dict | None = None,
    batch: Batch | None = None,
) -> tuple[Recording, bool]:
    """Store one uploaded file after a header probe; return ``(recording, created)``.

    An identical file (same sha256) already uploaded by the same owner is not stored twice: the
    existing recording is returned (and added to ``batch``). Raises ``ServiceError`` with an audio
    error code for files that are too large or not audio. Nothing is left in storage on failure.
    """
    filename = _clean_filename(filename)
    if label and label.startswith(_FORMULA_PREFIXES):
        raise ServiceError("invalid_label", f"Label {label[:40]!r} starts with a spreadsheet formula character.")
    sha256, size = _sha256_and_size(fileobj)
    if size > settings.AUDIO_MAX_UPLOAD_BYTES:
        raise ServiceError(
            "too_large",
            f"'{filename}' is {size / 1e6:.1f} MB; the limit is {settings.AUDIO_MAX_UPLOAD_BYTES / 1e6:.0f} MB per file.",
            status_code=413,
        )
    existing = Recording.objects.filter(owner=owner, sha256=sha256).first()
    if existing is not None:
        given = {"label": label, "speaker": speaker, "transcript": transcript.strip()}
        changed = [f for f, v in given.items() if v and getattr(existing, f) != v]
        for field in changed:
            setattr(existing, field, given[field])
        if metadata and any(existing.metadata.get(k) != v for k, v in metadata.items()):
            existing.metadata = {**existing.metadata, **metadata}  # a labels CSV adds context, never removes it
            changed.append("metadata")
        if changed:
            existing.full_clean()
            existing.save(update_fields=changed)
        if batch is not None:
            batch.recordings.add(existing)
        return existing, False
    try:
        info = probe_audio(fileobj, filename=filename, path=getattr(fileobj, "temporary_file_path", lambda: None)())
    except AudioError as exc:
        raise ServiceError(exc.code, exc.message) from exc
    if info.duration_s > settings.AUDIO_MAX_DURATION_S:
        raise ServiceError(
            "too_long",
            f"'{filename}' lasts {info.duration_s / 60:.1f} min; the limit is {settings.AUDIO_MAX_DURATION_S / 60:.0f} min. Split it first.",
        )
    if 0 < info.duration_s < settings.AUDIO_MIN_DURATION_S:
        raise ServiceError(
            "too_short", f"'{filename}' lasts {info.duration_s:.2f} s; at least {settings.AUDIO_MIN_DURATION_S} s is needed."
        )
    recording = Recording(
        owner=owner,
        original_filename=filename,
        sha256=sha256,
        size_bytes=size,
        format=info.format,
        duration_s=round(info.duration_s, 4),
        sample_rate=info.sample_rate,
        channels=info.channels,
        label=label.strip()[:100],
        speaker=speaker.strip()[:200],
        transcript=transcript.strip(),
        metadata=metadata or {},
    )
    recording.file.save("upload", File(fileobj), save=False)
    try:
        with transaction.atomic():
            recording.full_clean()
            recording.save()
            if batch is not None:
                batch.recordings.add(recording)
    except Exception:
        recording.file.storage.delete(recording.file.name)
        raise
    logger.info("recording stored", extra={"recording_id": recording.pk})
    return recording, True


def recording_delete(*, recording: Recording) -> None:
    """Delete a recording and its stored file (results keep the filename for the record)."""
    key = recording.file.name
    recording.results.update(recording_ref=recording.original_filename)
    recording.delete()
    transaction.on_commit(lambda: recording.file.storage.delete(key))


# --- labels CSV -------------------------------------------------------------------------------


@dataclass(frozen=True)
class LabelRow:
    label: str
    speaker: str
    corpus: str = ""
    extra: dict[str, str] = field(default_factory=dict)

    def metadata(self) -> dict[str, str]:
        """What the row adds to the recording's metadata: ``corpus`` and the extra columns, where not blank."""
        return {k: v for k, v in {"corpus": self.corpus, **self.extra}.items() if v}


_LABEL_COLUMNS = {"filename": "filename", "label": "label", "speaker": "speaker", "corpus": "corpus", "source": "corpus"}
_MAX_EXTRA_COLUMNS = 50


def _labels_header(row: list[str]) -> list[str] | None:
    """Column names when ``row`` is a header (it names ``filename`` and ``label``), else None."""
    names = [c.strip().lower() for c in row]
    if "filename" not in names or "label" not in names:
        return None
    return [_LABEL_COLUMNS.get(n, n) for n in names]


def parse_labels_csv(data: bytes) -> tuple[dict[str, LabelRow], list[Rejection]]:
    """Parse a labels CSV: ``filename,label[,speaker[,corpus]]``, a header row optional.

    With a header the columns go by name, in any order: ``filename`` and ``label`` (required),
    ``speaker``, ``corpus`` (or ``source``: where the recording comes from, e.g. ``saa``; the
    reports' per-corpus sections use it) and any other named column, kept in the recording's
    ``metadata`` under its (lower-cased) name, up to 50 of them. Without a header the columns are
    positional and a fifth one on is ignored.

    Returns the rows by filename and the rows refused (duplicates, formula injection, blanks).
    Raises ``ServiceError('bad_labels_csv')`` when the file is not UTF-8 text CSV or its header
    repeats a column.
    """
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ServiceError(
            "bad_labels_csv", f"The labels CSV is not UTF-8 text (byte {exc.start} is invalid). Save it as UTF-8 CSV."
        ) from exc
    rows: dict[str, LabelRow] = {}
    rejected: list[Rejection] = []
    try:
        reader = list(csv.reader(io.StringIO(text)))
    except csv.Error as exc:
        raise ServiceError("bad_labels_csv", f"The labels CSV could not be parsed: {exc}.") from exc
    header = _labels_header(reader[0]) if reader else None
    if header is not None:
        named = [n for n in header if n]
        if len(named) != len(set(named)):
            raise ServiceError("bad_labels_csv", f"The labels CSV header names a column twice: {reader[0]}.")
        if len([n for n in named if n not in _LABEL_COLUMNS.values()]) > _MAX_EXTRA_COLUMNS:
            raise ServiceError("bad_labels_csv", f"The labels CSV has more than {_MAX_EXTRA_COLUMNS} extra columns.")
        reader = reader[1:]
    columns = header or ["filename", "label", "speaker", "corpus"]
    for number, row in enumerate(reader, start=1):
        if not row or not any(c.strip() for c in row):
            continue
        cells = {name: value.strip() for name, value in zip(columns, row, strict=False) if name}
        name, label = cells.get("filename", ""), cells.get("label", "")
        if len(row) < 2 or not name:
            rejected.append(Rejection(row[0][:255], "bad_labels_row", f"Labels row {number} needs filename,label."))
            continue
        if any(v.startswith(_FORMULA_PREFIXES) for v in cells.values()):
            rejected.append(
                Rejection(name[:255], "formula_injection", f"Labels row {number} starts a cell with =, +, -, @: refused.")
            )
            continue
        if name in rows:
            rejected.append(Rejection(name[:255], "duplicate_label", f"'{name}' appears more than once in the labels CSV."))
            continue
        extra = {k[:100]: v[:1000] for k, v in cells.items() if k not in _LABEL_COLUMNS.values()}
        rows[name] = LabelRow(label[:100], cells.get("speaker", "")[:200], cells.get("corpus", "")[:100], extra)
    return rows, rejected


# --- archives -----------------------------------------------------------------------------------


def _archive_open(archive: BinaryIO) -> zipfile.ZipFile:
    """Open a zip, refusing it whole when its declared size or compression ratio says zip bomb."""
    try:
        zf = zipfile.ZipFile(archive)
    except zipfile.BadZipFile as exc:
        raise ServiceError("bad_archive", "The archive is not a readable .zip file.") from exc
    infos = [i for i in zf.infolist() if not i.is_dir()]
    total = sum(i.file_size for i in infos)
    compressed = sum(i.compress_size for i in infos) or 1
    if total > settings.ARCHIVE_MAX_UNCOMPRESSED_BYTES or total / compressed > _MAX_COMPRESSION_RATIO:
        raise ServiceError(
            "zip_bomb",
            f"The archive expands to {total / 1e6:.0f} MB ({total / compressed:.0f}x its size); refused as unsafe.",
        )
    return zf


def _archive_members(zf: zipfile.ZipFile) -> Iterable[tuple[str, BinaryIO | None, Rejection | None]]:
    """Yield ``(name, fileobj, rejection)`` for each file in a zip, refusing unsafe members.

    Refused: absolute paths, ``..`` components, symlinks, nested archives. A member that expands
    past the per-file limit is cut off and refused (declared sizes can lie).
    """
    for info in (i for i in zf.infolist() if not i.is_dir()):
        name = info.filename
        mode = info.external_attr >> 16
        parts = name.replace("\\", "/").split("/")
        if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":") or ".." in parts:
            yield name, None, Rejection(name[:255], "unsafe_path", "Archive member has an absolute or '..' path; skipped.")
        elif stat.S_ISLNK(mode):
            yield name, None, Rejection(name[:255], "symlink", "Archive member is a symbolic link; skipped.")
        elif name.lower().endswith(_ARCHIVE_EXTENSIONS):
            yield name, None, Rejection(name[:255], "nested_archive", "Archives inside archives are not unpacked.")
        elif parts[-1].startswith(".") or "__MACOSX" in parts:
            continue
        else:
            spool = tempfile.SpooledTemporaryFile(max_size=settings.FILE_UPLOAD_MAX_MEMORY_SIZE)
            with zf.open(info) as member:
                copied = 0
                for block in iter(lambda: member.read(1 << 20), b""):
                    copied += len(block)
                    if copied > settings.AUDIO_MAX_UPLOAD_BYTES:
                        break
                    spool.write(block)
            if copied > settings.AUDIO_MAX_UPLOAD_BYTES:
                spool.close()
                yield name, None, Rejection(name[:255], "too_large", "Archive member is over the per-file size limit.")
                continue
            spool.seek(0)
            yield name, spool, None


def batch_create(
    *,
    owner: AbstractBaseUser,
    name: str,
    files: Iterable[tuple[str, BinaryIO]] = (),
    archive: BinaryIO | None = None,
    labels_csv: bytes | None = None,
    description: str = "",
    transcript: str = "",
) -> tuple[Batch, list[Recording], list[Rejection]]:
    """Create a batch from files and/or a zip archive, with optional labels.

    Every file is judged on its own: bad ones land in the returned rejections with a reason and
    the rest are stored. Labels CSV rows match a file by its path in the archive or its basename.
    ``transcript``: the text every speaker of the batch read (e.g. an elicitation passage), if any.
    """
    labels: dict[str, LabelRow] = {}
    rejected: list[Rejection] = []
    if labels_csv is not None:
        labels, rejected = parse_labels_csv(labels_csv)
    zf = _archive_open(archive) if archive is not None else None
    name = (name or "").strip()[:200] or "batch"
    batch = Batch(owner=owner, name=name, description=description)
    batch.full_clean()
    batch.save()
    accepted: list[Recording] = []
    matched: set[str] = set()

    def take(filename: str, fileobj: BinaryIO) -> None:
        key = filename if filename in labels else os.path.basename(filename)
        row = labels.get(key)
        if row is not None:
            matched.add(key)
        try:
            recording, _ = recording_create(
                owner=owner,
                fileobj=fileobj,
                filename=filename,
                label=row.label if row else "",
                speaker=row.speaker if row else "",
                transcript=transcript,
                metadata=row.metadata() if row else None,
                batch=batch,
            )
        except ServiceError as exc:
            rejected.append(Rejection(_clean_filename(filename), exc.code, exc.message))
        else:
            accepted.append(recording)

    for filename, fileobj in files:
        if filename.lower().endswith(_ARCHIVE_EXTENSIONS):
            rejected.append(Rejection(filename, "nested_archive", "Send archives in the 'archive' field."))
            continue
        take(filename, fileobj)
    if zf is not None:
        for member_name, fileobj, rejection in _archive_members(zf):
            if rejection is not None:
                rejected.append(rejection)
                continue
            try:
                take(member_name, fileobj)
            finally:
                fileobj.close()
    for unknown in sorted(set(labels) - matched):
        rejected.append(Rejection(unknown[:255], "unknown_filename", "The labels CSV names a file that was not uploaded."))
    return batch, accepted, rejected
