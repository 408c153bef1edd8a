"""watchlist_daily_backfill through dag.test(): routing, newcomers' history, REST only, the key kept out."""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import sqlite3
from pathlib import Path

import psycopg
import pytest

from marketbars.market import calendar
from sandbox import market
from sandbox.services import S3Server
from tests.helpers import expected_bars, publish, warehouse_bars

RUN_DATE = dt.date(2024, 11, 27)  # the file of the run's own session is not published yet
NEW_YORK = calendar.NEW_YORK


def _logical(day: dt.date) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(20, 15), NEW_YORK)


def _rest_rows(symbol: str, timeframe: str, day: dt.date) -> set[tuple]:
    rows = set()
    for r in market.rest_results(symbol, timeframe, day)[0]:
        ts = dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(milliseconds=r["t"])
        rows.add((symbol, ts, r["o"], r["h"], r["l"], r["c"], r.get("v"), r.get("n"), r.get("vw"), "rest"))
    return rows


@pytest.fixture
def daily_setup(
    airflow_metadata_db: None, airflow_connections: dict[str, str], rest_api, conn: psycopg.Connection,
    monkeypatch: pytest.MonkeyPatch,
):  # fmt: skip
    """AAPL and I:SPX already have bars; MSFT is new on the watchlist; history is 4 sessions."""
    from marketbars.warehouse.migrations import migrate
    from marketbars.warehouse.partitions import ensure_partitions

    monkeypatch.setenv("AIRFLOW_VAR_WATCHLIST_INITIAL_HISTORY_SESSIONS", "4")
    monkeypatch.setenv("AIRFLOW_VAR_MASSIVE_API_REQUESTS_PER_MINUTE", "6000")
    migrate(conn)
    conn.execute("UPDATE market.watchlist SET active = symbol IN ('AAPL', 'MSFT', 'I:SPX')")
    ensure_partitions(conn, dt.date(2024, 10, 1), dt.date(2024, 10, 1))
    for symbol in ("AAPL", "I:SPX"):
        conn.execute(
            "INSERT INTO market.historical_bars (symbol, timeframe, ts, open, high, low, close, source)"
            " VALUES (%s, '1m', '2024-10-01 14:30Z', 1, 1, 1, 1, 'flatfile')",
            (symbol,),
        )
    return rest_api


@pytest.mark.dagrun
def test_daily_run_routes_by_published_file_and_gives_a_new_symbol_its_history(
    dagbag, no_retries, daily_setup, s3: S3Server, conn: psycopg.Connection
) -> None:
    history = calendar.sessions_between(dt.date(2024, 11, 20), RUN_DATE)[-4:]  # 11-22 .. 11-27
    published = history[:-1]
    files = {
        (dataset, tf, day): market.build_file(dataset, tf, day)
        for dataset in ("stocks", "indices") for tf in ("1m", "1d") for day in published
    }  # fmt: skip
    publish(s3, *files.values())

    run = dagbag.dags["watchlist_daily_backfill"].test(logical_date=_logical(RUN_DATE), run_conf={"days": 2})

    assert run.state == "success"
    for tf in ("1m", "1d"):  # MSFT, new: the whole history, flat files where published, REST for the rest
        for day in published:
            assert warehouse_bars(conn, tf, day, ["MSFT"]) == expected_bars(
                files["stocks", tf, day], ["MSFT"]
            )
        assert warehouse_bars(conn, tf, RUN_DATE, ["MSFT"]) == _rest_rows("MSFT", tf, RUN_DATE)
    refresh = history[-2:]
    for symbol, dataset in (("AAPL", "stocks"), ("I:SPX", "indices")):  # the others: the `days` sessions only
        assert warehouse_bars(conn, "1m", refresh[0], [symbol]) == expected_bars(
            files[dataset, "1m", refresh[0]], [symbol]
        )
        assert warehouse_bars(conn, "1m", RUN_DATE, [symbol]) == _rest_rows(symbol, "1m", RUN_DATE)
        assert warehouse_bars(conn, "1m", history[0], [symbol]) == set()
    aggregates = [r for r in daily_setup.log if r.path.startswith("/v2/aggs/")]
    assert sorted({(r.ticker, r.status) for r in aggregates}) == [
        ("AAPL", 200), ("I:SPX", 200), ("MSFT", 200),
    ]  # fmt: skip
    first_ms, end_ms = (int(t.timestamp() * 1000) for t in calendar.day_window(RUN_DATE))
    assert all(r.path.endswith(f"/{first_ms}/{end_ms - 1}") for r in aggregates)  # REST: the last day only
    reference = sorted(
        (r.ticker, r.query.get("ticker.any_of")) for r in daily_setup.log if r not in aggregates
    )
    assert reference == [  # the watchlist's stocks, new to the reference ledger: their whole history
        ("dividends", "AAPL,MSFT"), ("events:AAPL", None), ("events:MSFT", None), ("splits", "AAPL,MSFT"),
    ]  # fmt: skip
    history_rows = conn.execute(
        "SELECT symbol, first_session, completed_at IS NOT NULL FROM market.watchlist_history"
    )
    assert history_rows.fetchall() == [("MSFT", history[0], True)]  # done: the next run only refreshes MSFT


@pytest.mark.dagrun
def test_without_a_flat_file_connection_every_session_comes_from_rest(
    dagbag,
    no_retries,
    daily_setup,
    conn: psycopg.Connection,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.delenv("AIRFLOW_CONN_MASSIVE_S3")
    run = dagbag.dags["watchlist_daily_backfill"].test(logical_date=_logical(RUN_DATE), run_conf={"days": 1})
    assert run.state == "success"
    assert {b[9] for b in warehouse_bars(conn, "1m", RUN_DATE)} == {"rest"}
    msft_days = conn.execute(
        "SELECT count(DISTINCT (ts AT TIME ZONE 'America/New_York')::date) FROM market.historical_bars "
        "WHERE symbol = 'MSFT' AND timeframe = '1m'"
    ).fetchone()
    assert msft_days == (4,)
    assert "no massive_s3 connection is configured: every session goes through the REST API" in caplog.text


@pytest.mark.dagrun
def test_a_holiday_run_does_nothing(dagbag, no_retries, daily_setup, conn: psycopg.Connection) -> None:
    run = dagbag.dags["watchlist_daily_backfill"].test(logical_date=_logical(dt.date(2024, 11, 28)))
    assert run.state == "success"
    assert daily_setup.log == []
    assert conn.execute("SELECT count(*) FROM market.historical_bars").fetchone() == (2,)


@pytest.mark.dagrun
def test_a_newcomer_whose_history_rest_has_no_bars_for_stays_incomplete_until_it_is_explained(
    dagbag, no_retries, daily_setup, conn: psycopg.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AIRFLOW_CONN_MASSIVE_S3")  # every history session through REST
    history = calendar.sessions_between(dt.date(2024, 11, 20), RUN_DATE)[-4:]
    daily_setup.faults.empty_sessions = {("MSFT", history[1])}  # answered with "results": null
    dag = dagbag.dags["watchlist_daily_backfill"]

    def completed() -> list[tuple]:
        return conn.execute(
            "SELECT symbol, completed_at IS NOT NULL FROM market.watchlist_history"
        ).fetchall()

    assert dag.test(logical_date=_logical(RUN_DATE), run_conf={"days": 1}).state == "success"
    assert completed() == [("MSFT", False)]  # its history is not all there: the next run tries again
    # The gap DAG explains the session (the vendor has nothing for it): the history is as complete as it gets.
    for timeframe in ("1m", "1d"):
        conn.execute(
            "INSERT INTO market.backfill_gaps (symbol, timeframe, session_date, status, kind, expected,"
            " found) VALUES ('MSFT', %s, %s, 'unfillable', 'missing', 1, 0)",
            (timeframe, history[1]),
        )
    assert dag.test(logical_date=_logical(RUN_DATE), run_conf={"days": 1}).state == "success"
    assert completed() == [("MSFT", True)]


RENAME_RUN = dt.date(2026, 1, 7)  # the sample market's PALT trades as PLTR from 2026-01-02


@pytest.mark.dagrun
def test_a_renamed_watchlist_ticker_is_refreshed_under_its_new_ticker_in_the_same_run(
    dagbag, no_retries, daily_setup, s3: S3Server, conn: psycopg.Connection, capfd: pytest.CaptureFixture
) -> None:
    conn.execute("UPDATE market.watchlist SET active = false")
    conn.execute("INSERT INTO market.watchlist (symbol, asset_class) VALUES ('PALT', 'stocks')")
    history = calendar.sessions_between(dt.date(2025, 12, 29), RENAME_RUN)[-4:]  # 01-02 .. 01-07
    publish(s3, *(market.build_file("stocks", tf, day) for tf in ("1m", "1d") for day in history[:-1]))

    run = dagbag.dags["watchlist_daily_backfill"].test(
        logical_date=_logical(RENAME_RUN), run_conf={"days": 1}
    )

    assert run.state == "success"
    watch = conn.execute("SELECT symbol, active FROM market.watchlist WHERE symbol LIKE 'P%' ORDER BY 1")
    assert watch.fetchall() == [("PALT", False), ("PLTR", True)]
    assert (
        "PALT was renamed: the vendor reports the company (BBG000SMPL01) trading as PLTR"
        in capfd.readouterr().out
    )
    days = conn.execute(
        "SELECT DISTINCT (ts AT TIME ZONE 'America/New_York')::date FROM market.historical_bars"
        " WHERE symbol = 'PLTR' AND timeframe = '1d' ORDER BY 1"
    ).fetchall()
    assert [d for (d,) in days] == history, "the new ticker got a newcomer's history in the same run"
    assert conn.execute("SELECT count(*) FROM market.historical_bars WHERE symbol = 'PALT'").fetchone() == (
        0,
    )
    ledger = conn.execute("SELECT kind, window_from::text FROM market.reference_ledger WHERE symbol = 'PLTR'")
    assert sorted(ledger.fetchall()) == [("dividend", "-infinity"), ("split", "-infinity")]


@pytest.mark.dagrun
def test_an_api_key_the_server_echoes_reaches_no_log_exception_database_or_alert(
    dagbag,
    no_retries,
    daily_setup,
    conn: psycopg.Connection,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture,
) -> None:
    from tests.alerting.test_channels import Webhook

    webhook = Webhook()
    monkeypatch.setenv("AIRFLOW_CONN_ALERTS_WEBHOOK", json.dumps({"conn_type": "http", "host": webhook.url}))
    monkeypatch.delenv("AIRFLOW_CONN_MASSIVE_S3")  # every session through REST
    key = daily_setup.api_key
    faults = daily_setup.faults
    faults.echo_key = True  # every error body and next_url below quotes the key back
    faults.too_many, faults.server_errors, faults.not_authorized = {"AAPL": 1}, {"MSFT": 1}, {"I:SPX"}
    faults.max_page = 200  # several pages, each next_url carrying the key
    caplog.set_level(logging.DEBUG)

    run = dagbag.dags["watchlist_daily_backfill"].test(logical_date=_logical(RUN_DATE), run_conf={"days": 1})

    assert run.state == "failed"  # I:SPX's plan does not cover it
    captured = capfd.readouterr()
    seen = [captured.out, captured.err, caplog.text, *(r["body"] for r in webhook.requests)]
    home = Path(os.environ["AIRFLOW_HOME"])
    seen += [p.read_text(errors="replace") for p in home.rglob("*.log")]
    with sqlite3.connect(home / "airflow.db") as metadata:  # XCom, rendered fields, task instances ...
        for (table,) in metadata.execute("SELECT name FROM sqlite_master WHERE type = 'table'"):
            seen += [repr(row) for row in metadata.execute(f'SELECT * FROM "{table}"')]
    text = "\n".join(seen)
    assert "the API refused the request (HTTP 403" in text and "HTTP 429" in text and "HTTP 500" in text
    assert any("rest_fill" in r["body"] for r in webhook.requests)  # the failed task alerted
    assert any(len(r.query) == 1 and "cursor" in r.query for r in daily_setup.log)  # pages were followed
    assert key not in text
    assert conn.execute("SELECT count(*) FROM market.historical_bars WHERE symbol = 'AAPL'").fetchone()[0] > 0
