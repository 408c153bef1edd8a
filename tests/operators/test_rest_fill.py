"""RestFillOperator end to end: loopback REST server -> validated bars -> PostgreSQL, ledger and gaps."""

from __future__ import annotations

import datetime as dt
import math

import psycopg
import pytest
from airflow.sdk.exceptions import AirflowFailException

from marketbars.massive.rest_hook import MassiveApiError, MassiveRestHook
from marketbars.warehouse.migrations import migrate
from marketbars.warehouse.rate_limits import PostgresRateLimiter
from sandbox import market
from sandbox.rest_server import RestServer
from tests.helpers import expected_rest, fill, warehouse_bars

pytestmark = pytest.mark.integration
MON, TUE = dt.date(2024, 3, 4), dt.date(2024, 3, 5)


def test_pages_are_followed_and_rows_match_the_api_exactly(
    db_conn: psycopg.Connection, rest_api: RestServer
) -> None:
    rest_api.faults.max_page = 400  # force several pages
    result = fill("AAPL", {"1m": [MON, TUE], "1d": [MON, TUE]})
    assert warehouse_bars(db_conn, "1m") == expected_rest("AAPL", "1m", [MON, TUE])
    assert warehouse_bars(db_conn, "1d") == expected_rest("AAPL", "1d", [MON, TUE])
    minute_bars = sum(len(market.rest_results("AAPL", "1m", d)[0]) for d in (MON, TUE))
    assert result["1m"]["requests"] == math.ceil(minute_bars / 400)  # the minimum the pagination allows
    assert result["1m"]["loaded"] == ["2024-03-04", "2024-03-05"] and result["1m"]["gaps"] == []
    first_pages = [r.query for r in rest_api.log if "cursor" not in r.query]
    assert first_pages and all(
        q == {"adjusted": "false", "sort": "asc", "limit": "50000"} for q in first_pages
    )
    assert all(set(r.query) == {"cursor"} for r in rest_api.log if "cursor" in r.query)
    ledger = db_conn.execute(
        "SELECT timeframe, session_date, status, rows_loaded FROM market.rest_ledger ORDER BY 1, 2"
    )
    assert [row[2] for row in ledger.fetchall()] == ["loaded"] * 4


def test_not_authorized_fails_at_once_naming_the_ticker_and_the_plan(
    db_conn: psycopg.Connection, rest_api: RestServer
) -> None:
    rest_api.faults.not_authorized = {"O:SPY240315C00510000"}
    with pytest.raises(
        AirflowFailException, match=r"O:SPY240315C00510000 1m .*refused.*plan does not include"
    ):
        fill("O:SPY240315C00510000", {"1m": [TUE]}, dataset="options")
    assert len(rest_api.log) == 1  # no retry storm


def test_an_error_status_fails_clearly(db_conn: psycopg.Connection, rest_api: RestServer) -> None:
    with db_conn:
        migrate(db_conn)
        hook = MassiveRestHook(limiter=PostgresRateLimiter(db_conn, "massive", 0))
        with pytest.raises(
            MassiveApiError, match=r"AAPL 1m 2024-03-05\.\.2024-03-04: .*ERROR: 'to' is before 'from'"
        ):
            hook.aggregates("AAPL", "1m", TUE, MON)


def test_no_results_for_a_trading_session_is_a_gap_not_complete(
    db_conn: psycopg.Connection, rest_api: RestServer
) -> None:
    rest_api.faults.empty_sessions = {("JPM", TUE)}
    result = fill("JPM", {"1m": [MON, TUE]})
    assert result["1m"]["gaps"] == ["2024-03-05"] and result["1m"]["loaded"] == ["2024-03-04"]
    statuses = db_conn.execute(
        "SELECT session_date, status, rows_loaded FROM market.rest_ledger ORDER BY 1"
    ).fetchall()
    assert statuses == [(MON, "loaded", len(market.rest_results("JPM", "1m", MON)[0])), (TUE, "empty", 0)]
    only_empty = fill("JPM", {"1m": [TUE]})
    assert only_empty["1m"]["gaps"] == ["2024-03-05"]
    assert rest_api.log[-1].status == 200  # the API answered {"results": null}: recorded, not retried


def test_index_bars_have_no_volume_vwap_or_trades(db_conn: psycopg.Connection, rest_api: RestServer) -> None:
    fill("I:SPX", {"1m": [TUE]}, dataset="indices")
    bars = warehouse_bars(db_conn, "1m")
    assert bars == expected_rest("I:SPX", "1m", [TUE]) and len(bars) == 390
    assert {(b[6], b[7], b[8]) for b in bars} == {(None, None, None)}


def test_bars_on_a_non_trading_day_are_quarantined_once(
    db_conn: psycopg.Connection, rest_api: RestServer
) -> None:
    saturday_ms = int(dt.datetime(2024, 3, 9, 15, tzinfo=dt.UTC).timestamp() * 1000)
    bar = {"o": 1, "h": 1, "l": 1, "c": 1, "v": 1, "n": 1, "vw": 1}
    rest_api.faults.extra_bars = {"AAPL": [bar | {"t": saturday_ms}, bar | {"t": 0}]}
    rest_api.faults.max_page = 100_000
    for _ in range(2):  # a re-run replaces, never duplicates
        fill("AAPL", {"1m": [MON, TUE]})
    rows = db_conn.execute(
        "SELECT session_date, reason, source FROM market.quarantine ORDER BY session_date"
    ).fetchall()
    assert rows == [
        (dt.date(1969, 12, 31), "timestamp_outside_session", "rest"),
        (dt.date(2024, 3, 9), "timestamp_outside_session", "rest"),
    ]
    assert warehouse_bars(db_conn, "1m") == expected_rest("AAPL", "1m", [MON, TUE])
