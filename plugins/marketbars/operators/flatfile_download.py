"""Download trading days' flat files from Massive's S3 endpoint to local disk."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, TypedDict

from airflow.sdk import BaseOperator, Context
from airflow.sdk.exceptions import AirflowFailException

from marketbars.market.provenance import FileVersionXCom
from marketbars.massive.flatfiles import DEFAULT_BUCKET
from marketbars.settings import DEFAULT_DOWNLOAD_DIR


class FlatFileMissingError(FileNotFoundError):
    """A trading session's object is not in the bucket (yet): the task retries with backoff."""


class DownloadedFile(FileVersionXCom):
    """A session whose file is on local disk: its version, and where."""

    status: Literal["downloaded", "cached"]
    path: str


class SkippedSession(TypedDict):
    """A date that is not a trading session: no file is loaded for it."""

    session: str
    status: Literal["non_session"]


class FlatFileDownloadOperator(BaseOperator):
    """Fetch one flat file per session into ``download_dir``, verified against the object's ETag.

    Guarantees, per session:

    * not an XNYS session (weekend, holiday): skipped, even if the bucket has an object (index
      files exist on holidays); reported with status ``non_session``;
    * a trading session whose object is missing: the task fails naming every missing key, after
      fetching the others, so a retry (files publish ~11:00 ET the next day) resumes cheaply;
    * otherwise a local copy whose size and ETag match the object: an existing copy is reused,
      a new one is streamed to a temporary name and renamed into place (never half-written);
    * a refusal no retry can change (bad credentials, a wrong endpoint or bucket: HTTP 400, 401,
      403, 405, 501) fails the task at once, without retries; timeouts, resets, 5xx and throttling
      are retried (by botocore, then by the task).

    Returns (XCom) per session a ``DownloadedFile`` (the file version, status and local path) or a
    ``SkippedSession``.

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
        bucket: str = DEFAULT_BUCKET,
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

    def execute(self, context: Context) -> list[DownloadedFile | SkippedSession]:
        from marketbars.massive.s3_hook import FlatFileAccessError

        try:
            return self._download_all()
        except FlatFileAccessError as exc:  # credentials or configuration: no retry can change it
            raise AirflowFailException(str(exc)) from exc

    def _download_all(self) -> list[DownloadedFile | SkippedSession]:
        from marketbars.market.calendar import is_session
        from marketbars.massive.flatfiles import object_key
        from marketbars.massive.s3_hook import MassiveFlatFilesHook

        hook = MassiveFlatFilesHook(aws_conn_id=self.aws_conn_id, bucket=self.bucket)
        results: list[DownloadedFile | SkippedSession] = []
        missing: list[str] = []
        for session in map(dt.date.fromisoformat, self.sessions):
            if not is_session(session):
                self.log.info("%s is not an XNYS trading session: skipped", session)
                results.append({"session": session.isoformat(), "status": "non_session"})
                continue
            version = hook.stat(self.dataset, self.timeframe, session)
            if version is None:
                missing.append(hook.url(object_key(self.dataset, self.timeframe, session)))
                continue
            path, reused = hook.fetch(version, Path(self.download_dir))
            self.log.info(
                "%s %s: %s (%s bytes, ETag %s)",
                session,
                "reused local copy" if reused else "downloaded",
                hook.url(version.key),
                f"{version.size:,}",
                version.etag,
            )
            results.append(
                {**version.to_xcom(), "status": "cached" if reused else "downloaded", "path": str(path)}
            )
        if missing:
            raise FlatFileMissingError(
                f"{len(missing)} trading session file(s) not found: {', '.join(missing)}. The vendor "
                "publishes a session's file around 11:00 ET the next trading day; the task retries."
            )
        return results
