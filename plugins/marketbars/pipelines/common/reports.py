"""Where reports go: a local folder per report, copied to S3 when ``market_reports_s3_uri`` is set."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

from marketbars import settings

log = logging.getLogger(__name__)


def local_root(setting: settings.Setting[str]) -> Path:
    """The folder a reports setting names (by default under ``$AIRFLOW_HOME/reports``)."""
    return Path(setting.get())


def upload(paths: Iterable[Path], folder: str) -> list[str]:
    """Copy the files to s3://bucket/prefix/<folder>/<name> when ``market_reports_s3_uri`` is set
    (with connection ``market_reports_aws_conn_id``); returns the URIs written."""
    from urllib.parse import urlsplit

    target = settings.REPORTS_S3_URI.get()
    if not target:
        return []
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

    where = urlsplit(target)
    hook = S3Hook(aws_conn_id=settings.REPORTS_AWS_CONN_ID.get())
    written = []
    for path in paths:
        key = "/".join(p for p in (where.path.strip("/"), folder.strip("/"), path.name) if p)
        hook.load_file(str(path), key=key, bucket_name=where.netloc, replace=True)
        written.append(f"s3://{where.netloc}/{key}")
        log.info("report uploaded: s3://%s/%s", where.netloc, key)
    return written
