"""Stream a server folder, an S3 prefix or a manifest CSV of audio files into a batch, a group of files at a time.

    manage.py import_recordings /data/study1 --batch study1 --owner alice
    manage.py import_recordings /data/study1/manifest.csv --batch study1 --owner alice [--group 200]
    manage.py import_recordings s3://bucket/study1 --batch study1 --owner alice
    manage.py import_recordings s3://bucket/study1/manifest.csv --batch study1 --owner alice

A folder: every file under it (walked with ``os.scandir``, one directory's iterator at a time, never a
list of the whole tree), named by its path below the folder. A manifest: a labels CSV with a header
(``filename,label[,speaker][,corpus][,...]``, the upload's format) whose ``filename`` is a path below
the manifest's folder; read row by row. An ``s3://bucket/prefix``: every object below the prefix,
listed a page (``--group`` keys, at most 1,000) at a time, or an ``s3://.../manifest.csv`` object read
row by row, its paths below its folder; each object is fetched only when its group is stored
(``_s3.py``: the endpoint, region and credentials it uses). Each group of ``--group`` files is one call of
``services.batch_append`` (one transaction): the same per-file checks and rejections as an upload. The
batch is the owner's newest of that name, made empty first when there is none. Progress and every
rejection are printed as they happen.
"""
from __future__ import annotations

import csv
import io
import os
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from recognition import services
from recognition.errors import ServiceError
from recognition.models import Batch


def _walk(root: Path) -> Iterator[str]:
    """Paths of the files below ``root``, relative to it, in the directory's own order (read from
    ``os.scandir``'s iterator as they come, so a folder of 100,000 files is never a list); hidden
    files and folders and symbolic links are skipped."""
    stack = [root]
    while stack:
        folder = stack.pop()
        with os.scandir(folder) as entries:
            for entry in entries:
                if entry.name.startswith("."):
                    continue
                if entry.is_dir(follow_symlinks=False):
                    stack.append(folder / entry.name)
                elif entry.is_file(follow_symlinks=False):
                    yield str((folder / entry.name).relative_to(root))


def _manifest(path: Path) -> tuple[list[str], Iterator[list[str]]]:
    """The manifest's header and an iterator over its rows (read as they are asked for)."""
    fh = path.open(newline="", encoding="utf-8-sig")
    reader = csv.reader(fh)
    header = next(reader, None)
    if not header or "filename" not in [c.strip().lower() for c in header]:
        fh.close()
        raise CommandError(f"{path}: a manifest needs a header row naming 'filename' and 'label' (the labels CSV format).")
    return header, reader


def _groups(items: Iterator, size: int) -> Iterator[list]:
    group: list = []
    for item in items:
        group.append(item)
        if len(group) == size:
            yield group
            group = []
    if group:
        yield group


def _refusal(root: Path, name: str) -> services.Rejection | None:
    """Why ``name`` is not read at all (a path outside the folder, or no such file), else None."""
    path = (root / name).resolve() if name else root
    if not name or Path(name).is_absolute() or ".." in Path(name).parts or root.resolve() not in path.parents:
        return services.Rejection(name[:255] or "(blank)", "unsafe_path", "The path is empty, absolute or leaves the folder; skipped.")
    if not path.is_file():
        return services.Rejection(name[:255], "missing_file", "No such file below the folder; skipped.")
    return None


def _opened(root: Path, names: list[str]) -> Iterator[tuple[str, io.BufferedReader]]:
    """Each file opened as ``services.batch_append`` asks for it and closed once it is stored."""
    for name in names:
        with (root / name).open("rb") as fh:
            yield name, fh


class Command(BaseCommand):
    help = __doc__.split("\n")[0]

    def add_arguments(self, parser):
        parser.add_argument("source", help="a folder of audio files, an s3://bucket/prefix, or a manifest .csv (a file or an "
                                           "s3:// object; paths below its folder)")
        parser.add_argument("--batch", required=True, help="the batch's name: the owner's newest of that name, else a new one")
        parser.add_argument("--owner", required=True, help="username of the batch's owner")
        parser.add_argument("--group", type=int, default=200, help="files per transaction and progress line (200)")

    def handle(self, *args, source: str, batch: str, owner: str, group: int, **options):
        user = get_user_model().objects.filter(username=owner).first()
        if user is None:
            raise CommandError(f"No user named {owner!r}.")
        s3 = None
        if source.startswith("s3://"):
            from recognition.management.commands._s3 import S3Source

            s3 = S3Source(source, page_size=group)
            header, rows, refusal, opened = s3.header, s3.rows(), s3.refusal, s3.opened
        else:
            src = Path(source)
            if src.is_dir():
                root, header, rows = src, None, ([name] for name in _walk(src))
            elif src.is_file():
                root = src.parent
                header, rows = _manifest(src)
            else:
                raise CommandError(f"{source}: no such folder or manifest.")

            def refusal(name: str) -> services.Rejection | None:
                return _refusal(root, name)

            def opened(names: list[str]) -> Iterator[tuple[str, io.BufferedReader]]:
                return _opened(root, names)
        target = Batch.objects.filter(owner=user, name=batch).order_by("-created_at", "-id").first()
        if target is None:
            target = services.batch_create(owner=user, name=batch)[0]
            self.stdout.write(f"Batch #{target.pk} '{target.name}' created for {owner}.")
        else:
            self.stdout.write(f"Adding to batch #{target.pk} '{target.name}' of {owner}.")
        start, seen, stored, codes = time.monotonic(), 0, 0, Counter()
        column = [c.strip().lower() for c in header].index("filename") if header else 0
        for chunk in _groups(iter(rows), max(1, group)):
            names = [row[column].strip() if len(row) > column else "" for row in chunk]
            labels = None
            if header:
                text = io.StringIO()
                csv.writer(text).writerows([header, *chunk])
                labels = text.getvalue().encode()
            refused = {n: r for n in names if (r := refusal(n)) is not None}
            try:
                accepted, rejected = services.batch_append(owner=user, batch=target, labels_csv=labels,
                                                           files=opened([n for n in names if n not in refused]))
            except ServiceError as exc:
                raise CommandError(f"files {seen + 1}-{seen + len(chunk)}: {exc.message}") from exc
            if s3 is not None:  # objects that could not be fetched: refused like a missing file
                refused.update((r.filename, r) for r in s3.failures())
            # a refused file's labels row is not "a file that was not uploaded": its refusal says why
            rejected = [*refused.values(), *(r for r in rejected if not (r.code == "unknown_filename" and r.filename in refused))]
            for r in rejected:
                self.stderr.write(f"rejected {r.filename}: {r.code}: {r.message}")
            seen += len(chunk)
            stored += len(accepted)
            codes.update(r.code for r in rejected)
            self.stdout.write(f"{seen:,} read: {stored:,} in the batch, {sum(codes.values()):,} rejected "
                              f"({time.monotonic() - start:.0f} s)")
        if s3 is not None:
            s3.close()
        self.stdout.write(f"Batch #{target.pk} '{target.name}': {target.recordings.count():,} recordings; "
                          f"rejected {dict(codes) or 'none'}.")
