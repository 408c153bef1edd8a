"""Where reports go: a local folder per report, copied to S3 when ``market_reports_s3_uri`` is set."""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

log = logging.getLogger(__name__)


def local_root(variable: str, kind: str) -> Path:
    """The folder Variable ``variable`` names, or ``$AIRFLOW_HOME/reports/<kind>``."""
    from airflow.sdk import Variable

    default = Path(os.environ.get("AIRFLOW_HOME", tempfile.gettempdir())) / "reports" / kind
    return Path(Variable.get(variable, default=str(default)))


def upload(paths: Iterable[Path], folder: str) -> list[str]:
    """Copy the files to s3://bucket/prefix/<folder>/<name> when Variable market_reports_s3_uri is
    set (with connection ``market_reports_aws_conn_id``); returns the URIs written."""
    from urllib.parse import urlsplit

    from airflow.sdk import Variable

    target = Variable.get("market_reports_s3_uri", default="")
    if not target:
        return []
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

    where = urlsplit(target)
    hook = S3Hook(aws_conn_id=Variable.get("market_reports_aws_conn_id", default="aws_default"))
    written = []
    for path in paths:
        key = "/".join(p for p in (where.path.strip("/"), folder.strip("/"), path.name) if p)
        hook.load_file(str(path), key=key, bucket_name=where.netloc, replace=True)
        written.append(f"s3://{where.netloc}/{key}")
        log.info("report uploaded: s3://%s/%s", where.netloc, key)
    return written
