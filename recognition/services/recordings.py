"""Uploads: single recordings, batches of files, zip archives and labels CSVs."""
from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import logging
import lzma
import os
import stat
import struct
import tempfile
import unicodedata
import zipfile
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import BinaryIO

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.core.files import File
from django.db import IntegrityError, transaction

from recognition.errors import ServiceError
from recognition.models import Batch, BatchMember, Recording
from recognition.validation import json_check, text_check
from workers.pipeline.audio import AudioError
from workers.pipeline.probe import probe_audio

logger = logging.getLogger(__name__)

_ARCHIVE_EXTENSIONS = (".zip", ".tar", ".gz", ".tgz", ".bz2", ".xz", ".7z", ".rar")
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
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
    label, speaker, transcript = label.strip(), speaker.strip(), transcript.strip()
    for field, value in (("label", label), ("speaker", speaker), ("transcript", transcript)):
        text_check(value, field=field)
    if metadata is not None:
        if not isinstance(metadata, dict):
            raise ServiceError("invalid_metadata", "'metadata' must be a JSON object.")
        json_check(metadata, field="metadata")
    if label and label.startswith(FORMULA_PREFIXES):
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
        # context a re-upload brings fills only what the recording lacks (a transcript, metadata keys it has
        # not got): nothing it already says changes, so earlier batches' reports stay as they were
        changed = []
        if transcript and not existing.transcript:
            existing.transcript, changed = transcript, ["transcript"]
        if metadata and any(k not in existing.metadata for k in metadata):
            existing.metadata = {**metadata, **existing.metadata}
            changed.append("metadata")
        if changed:
            existing.full_clean()
            existing.save(update_fields=changed)
        return _duplicate(existing, batch=batch, label=label, speaker=speaker), False
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
        label=label[:100],
        speaker=speaker[:200],
        transcript=transcript,
        metadata=metadata or {},
    )
    recording.file.save("upload", File(fileobj), save=False)
    try:
        with transaction.atomic():
            recording.full_clean(validate_unique=False, validate_constraints=False)  # the database decides races
            recording.save()
            if batch is not None:
                _join(batch, recording, label=label, speaker=speaker, duplicate=False)
    except IntegrityError:
        # the same bytes arrived at the same moment in another request, which stored them first:
        # this upload is a duplicate of that recording, not an error
        recording.file.storage.delete(recording.file.name)
        existing = Recording.objects.filter(owner=owner, sha256=sha256).first()
        if existing is None:
            raise
        return _duplicate(existing, batch=batch, label=label, speaker=speaker), False
    except Exception:
        recording.file.storage.delete(recording.file.name)
        raise
    logger.info("recording stored", extra={"recording_id": recording.pk})
    return recording, True


def _join(batch: Batch, recording: Recording, *, label: str, speaker: str, duplicate: bool) -> None:
    """Add ``recording`` to ``batch`` with the label and speaker this batch gives it."""
    batch.recordings.add(recording)
    BatchMember.objects.get_or_create(
        batch=batch, recording=recording, defaults={"label": label[:100], "speaker": speaker[:200], "duplicate": duplicate})


def _duplicate(existing: Recording, *, batch: Batch | None, label: str, speaker: str) -> Recording:
    """An upload of bytes this owner already stored: the existing recording, unchanged.

    Its label and speaker are never rewritten by a re-upload (another batch's report depends on
    them); the batch records the label and speaker *it* gave (``BatchMember``) and uses those."""
    if batch is not None:
        with transaction.atomic():
            _join(batch, existing, label=label, speaker=speaker, duplicate=True)
    return existing


def batch_labels(*, batch: Batch, recording_ids: Iterable[int] | None = None) -> dict[int, tuple[str, str]]:
    """``{recording id: (label, speaker)}`` as ``batch`` gave them (only ``recording_ids``, e.g. one
    page's, when given). Recordings that joined before batches kept their own labels (no member row)
    fall back to the recording's. Two queries whatever the batch's size: the fallback excludes the
    members by a subquery, never by a list of ids sent back to the database."""
    members = BatchMember.objects.filter(batch=batch)
    recordings = batch.recordings.all()
    if recording_ids is not None:
        ids = list(recording_ids)
        members, recordings = members.filter(recording_id__in=ids), recordings.filter(pk__in=ids)
    own = {rec_id: (label, speaker) for rec_id, label, speaker in members.values_list("recording_id", "label", "speaker")}
    fallback = recordings.exclude(pk__in=BatchMember.objects.filter(batch=batch).values("recording_id"))
    for rec_id, label, speaker in fallback.values_list("id", "label", "speaker"):
        own[rec_id] = (label, speaker)
    return own


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
    extra: dict[str, str] = dataclasses.field(default_factory=dict)

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
    if len(data) > settings.LABELS_MAX_BYTES:
        raise ServiceError("labels_too_large", f"The labels CSV is {len(data) / 1e6:.1f} MB; the limit is "
                           f"{settings.LABELS_MAX_BYTES / 1e6:.0f} MB (LABELS_MAX_BYTES).", status_code=413)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ServiceError(
            "bad_labels_csv", f"The labels CSV is not UTF-8 text (byte {exc.start} is invalid). Save it as UTF-8 CSV."
        ) from exc
    if "\x00" in text:
        raise ServiceError("bad_labels_csv", "The labels CSV contains NUL characters; save it as plain UTF-8 CSV.")
    lines = text.count("\n") + 1
    if lines > settings.LABELS_MAX_ROWS + 1:  # + the header; rows spanning lines only make this stricter
        raise ServiceError("too_many_label_rows", f"The labels CSV has {lines:,} lines; at most {settings.LABELS_MAX_ROWS:,} "
                           "rows are read per upload (LABELS_MAX_ROWS).")
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
        if any(v.startswith(FORMULA_PREFIXES) for v in cells.values()):
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


# What reading a hostile zip can raise: bad CRC or headers (BadZipFile), an encrypted member
# (RuntimeError), an unsupported compression method (NotImplementedError), corrupt deflate / bz2 /
# lzma data (zlib.error, OSError, EOFError, lzma.LZMAError), sizes that lie (BadZipFile, EOFError),
# odd header values (ValueError, struct.error, OverflowError).
_ZIP_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, RuntimeError, NotImplementedError, zlib.error, lzma.LZMAError,
               OSError, EOFError, ValueError, struct.error, OverflowError, UnicodeDecodeError)


def _archive_open(archive: BinaryIO) -> zipfile.ZipFile:
    """Open a zip, refusing it whole when its declared size or compression ratio says zip bomb."""
    try:
        zf = zipfile.ZipFile(archive)
    except _ZIP_ERRORS as exc:
        raise ServiceError("bad_archive", "The archive is not a readable .zip file.") from exc
    infos = [i for i in zf.infolist() if not i.is_dir()]
    if len(infos) > settings.ARCHIVE_MAX_MEMBERS:
        raise ServiceError(
            "too_many_members",
            f"The archive holds {len(infos):,} files; one upload takes at most {settings.ARCHIVE_MAX_MEMBERS:,} "
            "(ARCHIVE_MAX_MEMBERS). Split it into several archives and add them to the batch one by one.")
    total = sum(i.file_size for i in infos)
    compressed = sum(i.compress_size for i in infos) or 1
    if total > settings.ARCHIVE_MAX_UNCOMPRESSED_BYTES or total / compressed > _MAX_COMPRESSION_RATIO:
        raise ServiceError(
            "zip_bomb",
            f"The archive expands to {total / 1e6:.0f} MB ({total / compressed:.0f}x its size); refused as unsafe.",
        )
    return zf


_ZIP_METHODS = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA)


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
        elif info.flag_bits & 0x1:
            yield name, None, Rejection(name[:255], "encrypted", "Archive member is encrypted; send it unencrypted.")
        elif info.compress_type not in _ZIP_METHODS:
            yield name, None, Rejection(
                name[:255], "unsupported_compression",
                f"Archive member uses compression method {info.compress_type}; use stored or deflate.")
        else:
            spool = tempfile.SpooledTemporaryFile(max_size=settings.FILE_UPLOAD_MAX_MEMORY_SIZE)
            copied = 0
            try:
                with zf.open(info) as member:
                    for block in iter(lambda: member.read(1 << 20), b""):
                        copied += len(block)
                        if copied > settings.AUDIO_MAX_UPLOAD_BYTES:
                            break
                        spool.write(block)
            except _ZIP_ERRORS as exc:
                spool.close()
                yield name, None, Rejection(
                    name[:255], "bad_member", f"Archive member could not be unpacked ({type(exc).__name__}: {str(exc)[:120]}).")
                continue
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
    More files join the batch later through :func:`batch_append`.
    """
    for field, value in (("name", name or ""), ("description", description)):
        text_check(value, field=field)
    batch = Batch(owner=owner, name=(name or "").strip()[:200] or "batch", description=description)
    accepted, rejected = _batch_fill(batch, files=files, archive=archive, labels_csv=labels_csv, transcript=transcript)
    return batch, accepted, rejected


def batch_append(
    *,
    owner: AbstractBaseUser,
    batch: Batch,
    files: Iterable[tuple[str, BinaryIO]] = (),
    archive: BinaryIO | None = None,
    labels_csv: bytes | None = None,
    transcript: str = "",
) -> tuple[list[Recording], list[Rejection]]:
    """Add files and/or a zip archive (with optional labels) to an existing batch of ``owner``'s, so a
    batch of 100,000 recordings arrives over many requests, each within the web timeout.

    The same per-file rules and rejections as :func:`batch_create`; the labels CSV matches this
    request's files. A file already in the batch stays one member (a duplicate, its label kept).
    Raises ``NotFound`` for another user's batch."""
    from recognition.errors import NotFound

    if batch.owner_id != owner.pk:
        raise NotFound("not_found", "No such batch.")
    return _batch_fill(batch, files=files, archive=archive, labels_csv=labels_csv, transcript=transcript)


def _batch_fill(
    batch: Batch,
    *,
    files: Iterable[tuple[str, BinaryIO]],
    archive: BinaryIO | None,
    labels_csv: bytes | None,
    transcript: str,
) -> tuple[list[Recording], list[Rejection]]:
    """Store ``files`` and the archive's members into ``batch`` (saved first when new), in one transaction."""
    owner = batch.owner
    labels: dict[str, LabelRow] = {}
    rejected: list[Rejection] = []
    text_check(transcript, field="transcript")
    if labels_csv is not None:
        labels, rejected = parse_labels_csv(labels_csv)
    zf = _archive_open(archive) if archive is not None else None
    accepted: list[Recording] = []
    matched: set[str] = set()
    stored: list[str] = []  # storage keys this request wrote, deleted again if it fails as a whole

    # the server cleans names it stores (control and zero-width marks, over 255 characters): a labels
    # row matches a file by its path, its basename, or either as cleaned
    cleaned = {_clean_filename(name): name for name in labels}

    def take(filename: str, fileobj: BinaryIO) -> None:
        key = filename if filename in labels else os.path.basename(filename)
        if key not in labels:
            key = cleaned.get(_clean_filename(filename)) or cleaned.get(_clean_filename(os.path.basename(filename)), key)
        row = labels.get(key)
        if row is not None:
            matched.add(key)
        try:
            recording, created = recording_create(
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
            if created:
                stored.append(recording.file.name)
            accepted.append(recording)

    # One transaction: a request refused part-way (or a bug) leaves no batch row, no recording
    # row and no stored file behind; each bad file is still only that file's rejection.
    try:
        with transaction.atomic():
            if batch.pk is None:
                batch.full_clean()
                batch.save()
            for filename, fileobj in files:
                if filename.lower().endswith(_ARCHIVE_EXTENSIONS):
                    rejected.append(Rejection(_clean_filename(filename), "nested_archive", "Send archives in the 'archive' field."))
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
    except BaseException:
        from django.core.files.storage import default_storage

        for key in stored:
            default_storage.delete(key)
        raise
    for unknown in sorted(set(labels) - matched):
        rejected.append(Rejection(unknown[:255], "unknown_filename", "The labels CSV names a file that was not uploaded."))
    return accepted, rejected
