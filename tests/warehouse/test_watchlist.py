"""The watchlist: a newcomer's history is done only once completed; the REST ledger follows flat files."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import psycopg
import pytest

from marketbars.market.symbols import TICKER_PATTERNS
from marketbars.operators.flatfile_download import FlatFileDownloadOperator
from marketbars.operators.flatfile_load import FlatFileLoadOperator
from marketbars.warehouse.ledgers import rest_sessions_since
from marketbars.warehouse.migrations import MIGRATIONS_DIR, migrate
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


def test_the_watchlist_refuses_a_symbol_not_in_its_asset_classs_form(
    warehouse_conn: psycopg.Connection,
) -> None:
    for symbol, asset_class in (
        ("AAPL\n", "stocks"),
        ("aapl", "stocks"),
        ("SPX", "indices"),
        ("AAPL", "options"),
    ):
        with pytest.raises(psycopg.errors.CheckViolation):
            warehouse_conn.execute(
                "INSERT INTO market.watchlist (symbol, asset_class) VALUES (%s, %s)", (symbol, asset_class)
            )
    warehouse_conn.execute("INSERT INTO market.watchlist (symbol, asset_class) VALUES ('BRK.B', 'stocks')")


def test_the_watchlists_check_is_the_ticker_forms_of_the_code() -> None:
    """The migration repeats market.symbols.TICKER_PATTERNS in SQL: they must not drift apart."""
    text = (MIGRATIONS_DIR / "0007_watchlist_ticker_forms.sql").read_text()
    for asset_class, pattern in TICKER_PATTERNS.items():
        assert f"asset_class = '{asset_class}' AND symbol ~ '\\A{pattern.pattern}\\Z'" in text
