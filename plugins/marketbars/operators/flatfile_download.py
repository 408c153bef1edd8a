"""Download trading days' flat files from Massive's S3 endpoint to local disk."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from airflow.sdk import BaseOperator, Context

from marketbars.operators import DEFAULT_DOWNLOAD_DIR


class FlatFileMissingError(FileNotFoundError):
    """A trading session's object is not in the bucket (yet): the task retries with backoff."""


class FlatFileDownloadOperator(BaseOperator):
    """Fetch one flat file per session into ``download_dir``, verified against the object's ETag.

    Guarantees, per session:

    * not an XNYS session (weekend, holiday): skipped, even if the bucket has an object (index
      files exist on holidays); reported with status ``non_session``;
    * a trading session whose object is missing: the task fails naming every missing key, after
      fetching the others, so a retry (files publish ~11:00 ET the next day) resumes cheaply;
    * otherwise a local copy whose size and ETag match the object: an existing copy is reused,
      a new one is streamed to a temporary name and renamed into place (never half-written).

    Returns (XCom) one small dict per session: session, status, key, etag, size, last_modified, path.

    :param dataset: ``stocks``, ``indices`` or ``options``.
    :param timeframe: ``1m`` (minute aggregates) or ``1d`` (day aggregates).
    :param sessions: ISO dates (``YYYY-MM-DD``) to fetch.
    :param bucket: the flat-files bucket (Variable ``massive_flatfiles_bucket``).
    :param download_dir: local cache folder.
    :param aws_conn_id: the S3 connection (``massive_s3``).
    """

    template_fields: Sequence[str] = ("dataset", "timeframe", "sessions", "bucket", "download_dir")
    ui_color = "#e3f2fd"

    def __init__(
        self,
        *,
        dataset: str,
        timeframe: str,
        sessions: Sequence[str],
        bucket: str = "flatfiles",
        download_dir: str = DEFAULT_DOWNLOAD_DIR,
        aws_conn_id: str = "massive_s3",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.dataset = dataset
        self.timeframe = timeframe
        self.sessions = sessions
        self.bucket = bucket
        self.download_dir = download_dir
        self.aws_conn_id = aws_conn_id

    def execute(self, context: Context) -> list[dict[str, Any]]:
        from marketbars import flatfiles, trading_calendar
        from marketbars.hooks.flatfiles import MassiveFlatFilesHook

        hook = MassiveFlatFilesHook(aws_conn_id=self.aws_conn_id, bucket=self.bucket)
        results: list[dict[str, Any]] = []
        missing: list[str] = []
        for session in map(dt.date.fromisoformat, self.sessions):
            if not trading_calendar.is_session(session):
                self.log.info("%s is not an XNYS trading session: skipped", session)
                results.append({"session": session.isoformat(), "status": "non_session"})
                continue
            key = flatfiles.object_key(self.dataset, self.timeframe, session)
            remote = hook.stat(key)
            if remote is None:
                missing.append(f"s3://{self.bucket}/{key}")
                continue
            path, reused = hook.fetch(remote, Path(self.download_dir))
            self.log.info(
                "%s %s: %s (%s bytes, ETag %s)",
                session,
                "reused local copy" if reused else "downloaded",
                remote.url,
                f"{remote.size:,}",
                remote.etag,
            )
            results.append(
                {
                    "session": session.isoformat(),
                    "status": "cached" if reused else "downloaded",
                    "key": key,
                    "etag": remote.etag,
                    "size": remote.size,
                    "last_modified": remote.last_modified.isoformat() if remote.last_modified else None,
                    "path": str(path),
                }
            )
        if missing:
            raise FlatFileMissingError(
                f"{len(missing)} trading session file(s) not found: {', '.join(missing)}. The vendor "
                "publishes a session's file around 11:00 ET the next trading day; the task retries."
            )
        return results
