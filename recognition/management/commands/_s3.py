"""``import_recordings``' S3 source: an ``s3://bucket/prefix`` listed a page at a time, or a manifest
CSV object read row by row, each object fetched only when its group is stored.

The client is boto3's, against ``AWS_S3_ENDPOINT_URL`` (empty: AWS itself; MinIO, moto, Ceph...) in
region ``AWS_S3_REGION_NAME`` with ``AWS_S3_ADDRESSING_STYLE`` (path-style by default when an endpoint
is set), the same settings the S3 storage backend reads; credentials come from boto3's own chain
(``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY``, a profile, an instance role). The source bucket
need not be the storage bucket: objects are copied into the service's storage like an upload.
"""
from __future__ import annotations

import csv
import io
import posixpath
import tempfile
from collections.abc import Iterator
from typing import BinaryIO

from django.conf import settings
from django.core.management.base import CommandError

from recognition import services

#: objects listed per request (S3's own page limit is 1,000)
MAX_PAGE = 1000


def parse(url: str) -> tuple[str, str]:
    """``(bucket, key or prefix)`` of an ``s3://`` URL."""
    rest = url.removeprefix("s3://")
    bucket, _, key = rest.partition("/")
    if not bucket:
        raise CommandError(f"{url}: an S3 source is s3://bucket/prefix or s3://bucket/prefix/manifest.csv.")
    return bucket, key


def client():
    """A boto3 S3 client configured like the storage backend (endpoint, region, addressing style)."""
    import boto3
    from botocore.config import Config

    endpoint = settings.AWS_S3_ENDPOINT_URL or None
    style = settings.AWS_S3_ADDRESSING_STYLE or ("path" if endpoint else "auto")
    return boto3.client("s3", endpoint_url=endpoint, region_name=settings.AWS_S3_REGION_NAME or None,
                        config=Config(s3={"addressing_style": style}, retries={"max_attempts": 5, "mode": "standard"}))


def _hidden(name: str) -> bool:
    return any(part.startswith(".") for part in name.split("/")) or "__MACOSX" in name.split("/")


class S3Source:
    """What the command reads from S3: ``header`` (a manifest's, else ``None``), :meth:`rows`,
    :meth:`refusal` per name, :meth:`opened` per group, and :meth:`failures` (objects that could not
    be fetched). Names are paths below the prefix (a listing) or the manifest's folder."""

    def __init__(self, url: str, *, page_size: int = MAX_PAGE, s3=None) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        self.errors = (BotoCoreError, ClientError)
        self.s3 = s3 or client()
        self.bucket, key = parse(url)
        self.page_size = max(1, min(page_size, MAX_PAGE))
        self.manifest = key if key.lower().endswith(".csv") else None
        folder = posixpath.dirname(key) if self.manifest else key.rstrip("/")
        self.root = f"{folder}/" if folder else ""
        self.header: list[str] | None = None
        self._sizes: dict[str, int] = {}  # sizes of listed objects not yet judged (at most a page and a group)
        self._failed: list[services.Rejection] = []
        self._body = None
        if self.manifest:
            try:
                self._body = self.s3.get_object(Bucket=self.bucket, Key=self.manifest)["Body"]
            except self.errors as exc:
                raise CommandError(f"{url}: the manifest could not be read ({exc}).") from exc
            self._reader = csv.reader(io.TextIOWrapper(self._body, encoding="utf-8-sig", newline=""))
            header = next(self._reader, None)
            if not header or "filename" not in [c.strip().lower() for c in header]:
                raise CommandError(f"{url}: a manifest needs a header row naming 'filename' and 'label' (the labels CSV format).")
            self.header = header
        else:
            try:  # a wrong bucket or credentials fail here, before a batch is made
                self.s3.head_bucket(Bucket=self.bucket)
            except self.errors as exc:
                raise CommandError(f"{url}: the bucket could not be read ({exc}).") from exc

    def rows(self) -> Iterator[list[str]]:
        """A manifest's rows, or ``[name]`` per object below the prefix, a listing page at a time (the
        listing is never held whole); folders' placeholder keys and hidden names are skipped."""
        if self.manifest:
            yield from self._reader
            return
        pages = self.s3.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=self.root, PaginationConfig={"PageSize": self.page_size})
        for page in pages:
            for obj in page.get("Contents", []):
                name = obj["Key"][len(self.root):]
                if not name or name.endswith("/") or _hidden(name):
                    continue
                self._sizes[name] = int(obj["Size"])
                yield [name]

    def refusal(self, name: str) -> services.Rejection | None:
        """Why ``name`` is not fetched at all: a path that leaves the folder, no such object, or an
        object over ``AUDIO_MAX_UPLOAD_BYTES`` (refused from its size, without reading it)."""
        parts = name.split("/")
        if not name or name.startswith("/") or ".." in parts:
            return services.Rejection(name[:255] or "(blank)", "unsafe_path", "The path is empty, absolute or leaves the folder; skipped.")
        size = self._sizes.pop(name, None)  # a listed object's size; a manifest's names are asked for
        if size is None:
            try:
                size = int(self.s3.head_object(Bucket=self.bucket, Key=self.root + name)["ContentLength"])
            except self.errors:
                return services.Rejection(name[:255], "missing_file", "No such object below the prefix; skipped.")
        if size > settings.AUDIO_MAX_UPLOAD_BYTES:
            return services.Rejection(name[:255], "too_large", f"'{name}' is {size / 1e6:.1f} MB; the limit is "
                                      f"{settings.AUDIO_MAX_UPLOAD_BYTES / 1e6:.0f} MB per file.")
        return None

    def opened(self, names: list[str]) -> Iterator[tuple[str, BinaryIO]]:
        """Each object fetched into a spooled temporary file (memory up to ``FILE_UPLOAD_MAX_MEMORY_SIZE``,
        then disk) as ``services.batch_append`` asks for it, and closed once it is stored. An object that
        cannot be fetched is not offered; :meth:`failures` says why."""
        for name in names:
            spool = tempfile.SpooledTemporaryFile(max_size=settings.FILE_UPLOAD_MAX_MEMORY_SIZE)
            try:
                try:
                    body = self.s3.get_object(Bucket=self.bucket, Key=self.root + name)["Body"]
                    for block in iter(lambda: body.read(1 << 20), b""):  # noqa: B023 (read before the next name)
                        spool.write(block)
                except self.errors as exc:
                    self._failed.append(services.Rejection(name[:255], "fetch_failed", f"The object could not be read: {exc}"[:300]))
                    continue
                spool.seek(0)
                yield name, spool
            finally:
                spool.close()

    def failures(self) -> list[services.Rejection]:
        """The objects :meth:`opened` could not fetch since the last call."""
        failed, self._failed = self._failed, []
        return failed

    def close(self) -> None:
        self._sizes.clear()
        if self._body is not None:
            self._body.close()
