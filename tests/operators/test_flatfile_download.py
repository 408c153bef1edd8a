"""The download and load operators end to end: moto S3 -> local disk -> PostgreSQL, via their connections."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from marketbars.operators.flatfile_download import FlatFileMissingError
from sandbox import market
from sandbox.services import S3Server
from tests.helpers import download, publish

pytestmark = pytest.mark.integration
DAY = dt.date(2024, 11, 29)  # an early close


def test_download_skips_non_sessions_even_when_the_bucket_has_a_file(
    airflow_connections: dict[str, str], s3: S3Server, download_dir: Path
) -> None:
    thanksgiving = dt.date(2024, 11, 28)
    publish(s3, market.build_file("indices", "1m", thanksgiving), market.build_file("indices", "1m", DAY))
    files = download(s3, download_dir, ["2024-11-28", "2024-11-29", "2024-11-30"], dataset="indices")
    assert [(f["session"], f["status"]) for f in files] == [
        ("2024-11-28", "non_session"), ("2024-11-29", "downloaded"), ("2024-11-30", "non_session"),
    ]  # fmt: skip
    assert Path(files[1]["path"]).read_bytes() == market.build_file("indices", "1m", DAY).body
    assert [f["status"] for f in download(s3, download_dir, ["2024-11-29"], dataset="indices")] == ["cached"]


def test_a_missing_trading_session_file_fails_naming_the_key_after_fetching_the_rest(
    airflow_connections: dict[str, str], s3: S3Server, download_dir: Path
) -> None:
    publish(s3, market.build_file("stocks", "1m", DAY))
    with pytest.raises(FlatFileMissingError) as error:
        download(s3, download_dir, ["2024-11-27", "2024-11-29"])
    assert f"s3://{s3.bucket}/us_stocks_sip/minute_aggs_v1/2024/11/2024-11-27.csv.gz" in str(error.value)
    assert "2024-11-29" not in str(error.value)
    assert len(list(download_dir.rglob("2024-11-29.*.csv.gz"))) == 1  # the retry will reuse it
