"""Massive's S3-compatible flat-file endpoint, over the Airflow connection ``massive_s3``."""

from __future__ import annotations

import datetime as dt
import os
import re
import uuid
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseHook

if TYPE_CHECKING:
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

# botocore's own retries for throttling and 5xx on every call (the task retries on top of this).
BOTO_CONFIG = {
    "retries": {"mode": "standard", "max_attempts": 8},
    "connect_timeout": 10,
    "read_timeout": 120,
}
CHUNK_BYTES = 1 << 20


class FlatFileDownloadError(RuntimeError):
    """A download that did not produce the object's exact bytes. Retrying may succeed."""


@dataclass(frozen=True)
class RemoteFile:
    """One version of one object: the ETag and size say which."""

    bucket: str
    key: str
    etag: str  # without quotes
    size: int
    last_modified: dt.datetime | None

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.key}"


def local_path(download_dir: Path, remote: RemoteFile) -> Path:
    """Where a version is cached: the ETag is in the name, so a replaced object never matches."""
    key = Path(remote.key)
    tag = re.sub(r"[^A-Za-z0-9-]", "", remote.etag) or "noetag"
    name = key.name.removesuffix(".csv.gz")
    return download_dir / key.parent / f"{name}.{tag}.csv.gz"


class MassiveFlatFilesHook(BaseHook):
    """Reads flat files from Massive's S3 endpoint (or any S3-compatible server).

    The connection is an ``aws`` connection: login = access key id, password = secret key,
    extra ``{"endpoint_url": "https://files.massive.com", "region_name": "us-east-1"}``.
    """

    conn_name_attr = "aws_conn_id"
    default_conn_name = "massive_s3"
    conn_type = "aws"
    hook_name = "Massive flat files"

    def __init__(self, aws_conn_id: str = default_conn_name, bucket: str = "flatfiles") -> None:
        super().__init__()
        self.aws_conn_id = aws_conn_id
        self.bucket = bucket

    @cached_property
    def s3(self) -> S3Hook:
        from airflow.providers.amazon.aws.hooks.s3 import S3Hook

        return S3Hook(aws_conn_id=self.aws_conn_id, config=BOTO_CONFIG)

    @cached_property
    def client(self) -> Any:
        return self.s3.get_conn()

    def stat(self, key: str) -> RemoteFile | None:
        """The object's current version, or None when it does not exist."""
        head = self.s3.head_object(key=key, bucket_name=self.bucket)
        if head is None:
            return None
        return RemoteFile(
            bucket=self.bucket,
            key=key,
            etag=str(head["ETag"]).strip('"'),
            size=int(head["ContentLength"]),
            last_modified=head.get("LastModified"),
        )

    def objects(self, prefix: str) -> dict[str, str]:
        """key -> ETag (without quotes) of the objects under a prefix, e.g. one month of one dataset:
        a LIST (1,000 keys a page) instead of a HEAD per day."""
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
        return {
            item["Key"]: str(item["ETag"]).strip('"') for page in pages for item in page.get("Contents", [])
        }

    def fetch(self, remote: RemoteFile, download_dir: Path) -> tuple[Path, bool]:
        """A verified local copy of exactly this version; True when an existing copy was reused.

        Streams to a temporary name in the target folder and renames it into place only once
        the byte count matches, so a reader never sees a partial file. The GET is conditional
        on the ETag: an object replaced mid-download fails instead of mixing versions.
        """
        from botocore.exceptions import ClientError

        target = local_path(download_dir, remote)
        if target.is_file() and target.stat().st_size == remote.size:
            return target, True
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".{target.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.part")
        try:
            try:
                response = self.client.get_object(
                    Bucket=self.bucket, Key=remote.key, IfMatch=f'"{remote.etag}"'
                )
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") in ("PreconditionFailed", "412"):
                    raise FlatFileDownloadError(
                        f"{remote.url} was replaced while it was being fetched (ETag {remote.etag} is gone)"
                    ) from exc
                raise
            with partial.open("wb") as out:
                for chunk in response["Body"].iter_chunks(CHUNK_BYTES):
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            received = partial.stat().st_size
            if received != remote.size:
                raise FlatFileDownloadError(f"{remote.url}: received {received} of {remote.size} bytes")
            partial.replace(target)
        finally:
            partial.unlink(missing_ok=True)
        self._remove_other_versions(target)
        return target, False

    @staticmethod
    def _remove_other_versions(target: Path) -> None:
        day = target.name.split(".", 1)[0]
        for stale in target.parent.glob(f"{day}.*.csv.gz"):
            if stale != target:
                stale.unlink(missing_ok=True)
