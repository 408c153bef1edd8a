"""Massive's S3-compatible flat-file endpoint, over the Airflow connection ``massive_s3``."""

from __future__ import annotations

import datetime as dt
import logging
import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseHook

from marketbars.market.provenance import FileVersion
from marketbars.massive.flatfiles import DEFAULT_BUCKET, month_prefixes, object_key
from marketbars.massive.local_copies import abandoned_partials, local_path, partial_path

if TYPE_CHECKING:
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

log = logging.getLogger(__name__)

# botocore's own retries for throttling and 5xx on every call (the task retries on top of this).
BOTO_CONFIG = {
    "retries": {"mode": "standard", "max_attempts": 8},
    "connect_timeout": 10,
    "read_timeout": 120,
}
CHUNK_BYTES = 1 << 20


# Answers no retry can change: bad credentials or permissions, a wrong endpoint or bucket.
_REFUSED_STATUS = frozenset({400, 401, 403, 405, 501})
_REFUSED_CODES = frozenset(
    {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "NotImplemented", "NoSuchBucket",
     "InvalidBucketName", "AuthorizationHeaderMalformed", "InvalidToken"}
)  # fmt: skip


class FlatFileAccessError(RuntimeError):
    """The endpoint refused the request for good (credentials, permissions, endpoint or bucket):
    a retry would send the same request. Timeouts, resets, 5xx and throttling are not this."""


@contextmanager
def _refusals(url: str) -> Iterator[None]:
    """Turn the endpoint's permanent refusals into FlatFileAccessError, naming the object."""
    from botocore.exceptions import ClientError

    try:
        yield
    except ClientError as exc:
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        code = exc.response.get("Error", {}).get("Code")
        if status in _REFUSED_STATUS or code in _REFUSED_CODES:
            raise FlatFileAccessError(
                f"{url}: the endpoint refused the request (HTTP {status} {code}): check the massive_s3 "
                "connection's keys and endpoint_url and the massive_flatfiles_bucket Variable; retrying "
                "will not help"
            ) from exc
        raise


class FlatFileDownloadError(RuntimeError):
    """A download that did not produce the object's exact bytes. Retrying may succeed."""


class MassiveFlatFilesHook(BaseHook):
    """Reads flat files from Massive's S3 endpoint (or any S3-compatible server).

    The connection is an ``aws`` connection: login = access key id, password = secret key,
    extra ``{"endpoint_url": "https://files.massive.com", "region_name": "us-east-1"}``.
    """

    conn_name_attr = "aws_conn_id"
    default_conn_name = "massive_s3"
    conn_type = "aws"
    hook_name = "Massive flat files"

    def __init__(self, aws_conn_id: str = default_conn_name, bucket: str = DEFAULT_BUCKET) -> None:
        super().__init__()
        self.aws_conn_id = aws_conn_id
        self.bucket = bucket

    @cached_property
    def s3(self) -> S3Hook:
        """The provider's S3 hook; the secret key is registered with Airflow's secrets masker first,
        so no log line or traceback that quotes it shows it."""
        from airflow.providers.amazon.aws.hooks.s3 import S3Hook
        from airflow.sdk.log import mask_secret

        secret = self.get_connection(self.aws_conn_id).password
        if secret:
            mask_secret(secret)
        return S3Hook(aws_conn_id=self.aws_conn_id, config=BOTO_CONFIG)

    @cached_property
    def client(self) -> Any:
        return self.s3.get_conn()

    def url(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"

    def stat(self, dataset: str, timeframe: str, session: dt.date) -> FileVersion | None:
        """The current version of a session's file, or None when it does not exist (yet)."""
        key = object_key(dataset, timeframe, session)
        with _refusals(self.url(key)):
            head = self.s3.head_object(key=key, bucket_name=self.bucket)
        if head is None:
            return None
        return FileVersion(
            dataset=dataset,
            timeframe=timeframe,
            session=session,
            key=key,
            etag=str(head["ETag"]).strip('"'),
            size=int(head["ContentLength"]),
            last_modified=head.get("LastModified"),
        )

    def objects(self, prefix: str) -> dict[str, str]:
        """key -> ETag (without quotes) of the objects under a prefix."""
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
        with _refusals(self.url(prefix)):
            return {
                item["Key"]: str(item["ETag"]).strip('"')
                for page in pages
                for item in page.get("Contents", [])
            }

    def published(self, datasets: Iterable[str], sessions: Iterable[dt.date]) -> dict[str, str]:
        """key -> ETag of every file of these datasets (both timeframes) in the sessions' months:
        one LIST per dataset, timeframe and month instead of a HEAD per session."""
        found: dict[str, str] = {}
        for prefix in month_prefixes(datasets, sessions):
            found.update(self.objects(prefix))
        return found

    def fetch(self, version: FileVersion, download_dir: Path) -> tuple[Path, bool]:
        """A verified local copy of exactly this version; True when an existing copy was reused.

        Streams to a temporary name in the target folder and renames it into place only once
        the byte count matches, so a reader never sees a partial file. The GET is conditional
        on the ETag: an object replaced mid-download fails instead of mixing versions.
        """
        target = local_path(download_dir, version)
        if target.is_file() and target.stat().st_size == version.size:
            return target, True
        target.parent.mkdir(parents=True, exist_ok=True)
        for abandoned in abandoned_partials(target):  # left by an attempt killed mid-download
            log.info("removing %s: a download of %s that was cut short", abandoned.name, version.key)
            abandoned.unlink(missing_ok=True)
        partial = partial_path(target)
        try:
            self._download(version, partial)
            partial.replace(target)
        finally:
            partial.unlink(missing_ok=True)
        self._remove_other_versions(target)
        return target, False

    def _download(self, version: FileVersion, partial: Path) -> None:
        """Stream exactly this version into ``partial`` and make it durable."""
        from botocore.exceptions import ClientError

        url = self.url(version.key)
        try:
            response = self.client.get_object(
                Bucket=self.bucket, Key=version.key, IfMatch=f'"{version.etag}"'
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("PreconditionFailed", "412"):
                raise FlatFileDownloadError(
                    f"{url} was replaced while it was being fetched (ETag {version.etag} is gone)"
                ) from exc
            raise
        with partial.open("wb") as out:
            for chunk in response["Body"].iter_chunks(CHUNK_BYTES):
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        received = partial.stat().st_size
        if received != version.size:
            raise FlatFileDownloadError(f"{url}: received {received} of {version.size} bytes")

    @staticmethod
    def _remove_other_versions(target: Path) -> None:
        day = target.name.split(".", 1)[0]
        for stale in target.parent.glob(f"{day}.*.csv.gz"):
            if stale != target:
                stale.unlink(missing_ok=True)
