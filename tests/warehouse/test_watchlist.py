"""The watchlist: a newcomer's history is done only once completed; the REST ledger follows flat files."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import psycopg
import pytest

from marketbars.operators.flatfile_download import FlatFileDownloadOperator
from marketbars.operators.flatfile_load import FlatFileLoadOperator
from marketbars.warehouse.ledgers import rest_sessions_since
from marketbars.warehouse.migrations import migrate
from marketbars.warehouse.watchlist import complete_history, plan_history, symbols_needing_history
from sandbox import market
from sandbox.rest_server import RestServer
from sandbox.services import S3Server
from tests.helpers import fill, publish

pytestmark = pytest.mark.integration
MON, TUE = dt.date(2024, 3, 4), dt.date(2024, 3, 5)


def test_history_is_only_done_when_completed_and_rest_ledger_follows_flat_files(
    db_conn: psycopg.Connection, rest_api: RestServer, s3: S3Server, download_dir: Path
) -> None:
    migrate(db_conn)
    fill("AAPL", {"1m": [TUE]})  # bars, but no history record: loaded some other way, established
    assert symbols_needing_history(db_conn, ["AAPL", "MSFT"]) == ["MSFT"]  # MSFT: nothing yet
    plan_history(db_conn, ["MSFT"], MON, TUE)
    fill("MSFT", {"1m": [TUE]})  # part of its history loaded, the run failed before the rest
    assert symbols_needing_history(db_conn, ["AAPL", "MSFT"]) == ["MSFT"]
    complete_history(db_conn, ["MSFT"])
    assert symbols_needing_history(db_conn, ["AAPL", "MSFT"]) == []
    assert rest_sessions_since(db_conn, MON) == {("AAPL", "1m"): [TUE], ("MSFT", "1m"): [TUE]}
    publish(s3, market.build_file("stocks", "1m", TUE))
    common = {"dataset": "stocks", "timeframe": "1m", "bucket": s3.bucket, "download_dir": str(download_dir)}
    files = FlatFileDownloadOperator(task_id="d", sessions=[TUE.isoformat()], **common).execute({})
    FlatFileLoadOperator(task_id="l", files=files, symbols=["AAPL"], **common).execute({})
    assert rest_sessions_since(db_conn, MON) == {("MSFT", "1m"): [TUE]}  # AAPL's is a flat file now
