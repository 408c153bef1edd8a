"""REST writes: flat files win in either order; gap repair only adds the minutes a flat-file session lacks."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import psycopg
import pytest

from marketbars.market.calendar import day_window
from marketbars.operators.flatfile_download import FlatFileDownloadOperator
from marketbars.operators.flatfile_load import FlatFileLoadOperator
from sandbox import market
from sandbox.rest_server import RestServer
from sandbox.services import S3Server
from tests.helpers import (
    counted_bars,
    expected_bars,
    expected_rest,
    fill,
    publish,
    stored_counts,
    warehouse_bars,
)

pytestmark = pytest.mark.integration
MON, TUE = dt.date(2024, 3, 4), dt.date(2024, 3, 5)


def test_flat_files_win_over_rest_in_both_orders(
    db_conn: psycopg.Connection, rest_api: RestServer, s3: S3Server, download_dir: Path
) -> None:
    sample = market.build_file("stocks", "1m", TUE)
    publish(s3, sample)
    fill("AAPL", {"1m": [TUE]})  # REST first: the file was not published yet
    assert {b[9] for b in warehouse_bars(db_conn, "1m")} == {"rest"}
    assert stored_counts(db_conn) == counted_bars(db_conn) != {}
    common = {"dataset": "stocks", "timeframe": "1m", "bucket": s3.bucket, "download_dir": str(download_dir)}
    files = FlatFileDownloadOperator(task_id="d", sessions=[TUE.isoformat()], **common).execute({})
    FlatFileLoadOperator(task_id="l", files=files, symbols=["AAPL"], **common).execute({})
    assert warehouse_bars(db_conn, "1m") == expected_bars(
        sample, ["AAPL"]
    )  # replaced, no duplicates, no REST
    again = fill("AAPL", {"1m": [TUE]})  # REST after the flat file: left alone
    assert again["1m"]["flatfile"] == ["2024-03-05"] and again["1m"]["loaded"] == []
    assert warehouse_bars(db_conn, "1m") == expected_bars(sample, ["AAPL"])
    start, end = day_window(TUE)
    assert db_conn.execute(
        "SELECT count(*) FROM market.historical_bars WHERE source = 'rest' AND ts >= %s AND ts < %s",
        (start, end),
    ).fetchone() == (0,)


def test_gap_repair_patches_only_the_minutes_a_flat_file_session_lacks(
    db_conn: psycopg.Connection, rest_api: RestServer, s3: S3Server, download_dir: Path
) -> None:
    sample = market.build_file("stocks", "1m", TUE)
    publish(s3, sample)
    common = {"dataset": "stocks", "timeframe": "1m", "bucket": s3.bucket, "download_dir": str(download_dir)}
    files = FlatFileDownloadOperator(task_id="d", sessions=[TUE.isoformat()], **common).execute({})
    FlatFileLoadOperator(task_id="l", files=files, symbols=["AAPL"], **common).execute({})
    from_file = warehouse_bars(db_conn, "1m")
    holes = sorted(b[1] for b in from_file)[100:110]
    db_conn.execute("DELETE FROM market.historical_bars WHERE ts = ANY(%s)", (holes,))

    result = fill("AAPL", {"1m": [TUE]}, patch=True)

    kept = {b for b in from_file if b[1] not in holes}
    rest_rows = {b[1]: b for b in expected_rest("AAPL", "1m", [TUE])}
    lacking = set(rest_rows) - {b[1] for b in kept}  # the holes and the minute the file's row was bad
    assert set(holes) < lacking and len(lacking) == len(holes) + 1
    assert result["1m"]["patched"] == ["2024-03-05"] and result["1m"]["bars"] == len(lacking)
    after = warehouse_bars(db_conn, "1m")
    assert after == kept | {rest_rows[ts] for ts in lacking}
    assert stored_counts(db_conn) == counted_bars(db_conn)  # the holes punched by hand are counted again
    assert fill("AAPL", {"1m": [TUE]}, patch=True)["1m"]["bars"] == 0  # a re-run adds nothing
    assert warehouse_bars(db_conn, "1m") == after
    ledger = db_conn.execute("SELECT status, rows_loaded FROM market.rest_ledger").fetchall()
    assert ledger == [("patched", 0)]
    # The flat file stays canonical: loading it again replaces the patch with the file's own bars.
    db_conn.execute("DELETE FROM market.historical_bars WHERE ts = %s", (holes[0],))
    FlatFileLoadOperator(task_id="l", files=files, symbols=["AAPL"], **common).execute({})
    assert warehouse_bars(db_conn, "1m") == from_file == expected_bars(sample, ["AAPL"])
    assert stored_counts(db_conn) == counted_bars(db_conn)
