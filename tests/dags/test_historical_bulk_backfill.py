"""historical_bulk_backfill through Airflow's dag.test(): the range loaded exactly, re-runs, bad triggers."""

from __future__ import annotations

import datetime as dt

import psycopg
import pytest

from marketbars.market import calendar
from sandbox import market
from sandbox.services import S3Server
from tests.helpers import expected_bars, publish, warehouse_bars

WATCHLIST_STOCKS = [
    "AAPL",
    "AMZN",
    "DIA",
    "GOOGL",
    "IWM",
    "JPM",
    "META",
    "MSFT",
    "NVDA",
    "QQQ",
    "SPY",
    "TSLA",
]


@pytest.mark.dagrun
def test_backfill_run_loads_the_range_exactly_and_a_rerun_changes_nothing(
    dagbag,
    no_retries,
    airflow_metadata_db: None,
    airflow_connections: dict[str, str],
    s3: S3Server,
    conn: psycopg.Connection,
) -> None:
    start, end = dt.date(2024, 11, 25), dt.date(2024, 12, 3)  # Thanksgiving, then an early close
    files = [market.build_file("stocks", "1m", day) for day in calendar.sessions_between(start, end)]
    publish(s3, *files)
    dag = dagbag.dags["historical_bulk_backfill"]
    conf = {
        "start_date": start.isoformat(),
        "end_date": end.isoformat(),
        "dataset": "stocks",
        "timeframe": "1m",
    }

    run = dag.test(run_conf=conf)

    assert run.state == "success"
    expected = set().union(*(expected_bars(f, WATCHLIST_STOCKS) for f in files))
    assert warehouse_bars(conn) == expected
    assert len(expected) > 20_000
    days = conn.execute(
        "SELECT DISTINCT (ts AT TIME ZONE 'America/New_York')::date FROM market.historical_bars"
    )
    assert sorted(d for (d,) in days.fetchall()) == [f.session for f in files]  # no Thanksgiving
    quarantine = conn.execute("SELECT s3_key, line_number, reason FROM market.quarantine").fetchall()
    assert {(k, n): r for k, n, r in quarantine} == {
        (f.key, n): r for f in files for n, r in f.expected_quarantine(WATCHLIST_STOCKS).items()
    }
    ledger_before = conn.execute(
        "SELECT session_date, etag, loaded_at FROM market.ingest_ledger ORDER BY 1"
    ).fetchall()
    assert [row[0] for row in ledger_before] == [f.session for f in files]

    again = dag.test(run_conf=conf)

    assert again.state == "success"
    assert warehouse_bars(conn) == expected
    assert conn.execute(
        "SELECT session_date, etag, loaded_at FROM market.ingest_ledger ORDER BY 1"
    ).fetchall() == (ledger_before)


@pytest.mark.dagrun
@pytest.mark.parametrize(
    "conf",
    [
        {"start_date": "2024-12-03", "end_date": "2024-11-25", "symbols": ["aapl"]},
        {"start_date": "2024-11-25", "end_date": "2024-11-26", "symbols": ["AAPL\n"]},  # $ matched before \n
    ],
    ids=["reversed-range-and-lowercase", "trailing-newline"],
)
def test_a_bad_trigger_fails_at_the_first_task_and_touches_nothing(
    dagbag,
    no_retries,
    airflow_metadata_db: None,
    airflow_connections: dict[str, str],
    conn: psycopg.Connection,
    conf: dict,
) -> None:
    dag = dagbag.dags["historical_bulk_backfill"]
    run = dag.test(run_conf=conf)
    assert run.state == "failed"
    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    assert states["plan_sessions"] == "failed"
    assert states["prepare_warehouse"] == "upstream_failed"
    assert conn.execute("SELECT to_regclass('market.historical_bars')").fetchone() == (None,)


@pytest.mark.dagrun
def test_a_single_session_backfill_summarizes_its_only_load(
    dagbag,
    no_retries,
    airflow_metadata_db: None,
    airflow_connections: dict[str, str],
    s3: S3Server,
    conn: psycopg.Connection,
) -> None:
    sample = market.build_file("stocks", "1m", dt.date(2024, 11, 29))
    publish(s3, sample)
    conf = {"start_date": "2024-11-29", "end_date": "2024-11-29", "symbols": ["AAPL"]}
    run = dagbag.dags["historical_bulk_backfill"].test(run_conf=conf)
    assert run.state == "success"  # one mapped instance hands its output over bare; the summary copes
    assert warehouse_bars(conn) == expected_bars(sample, ["AAPL"])
    summary = {ti.task_id: ti for ti in run.get_task_instances()}["summarize"]
    assert summary.state == "success"


@pytest.mark.dagrun
def test_a_backfill_fetches_its_stocks_corporate_actions_but_not_for_every_ticker(
    dagbag, no_retries, airflow_metadata_db: None, airflow_connections: dict[str, str], rest_api,
    s3: S3Server, conn: psycopg.Connection, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch,
):  # fmt: skip
    monkeypatch.setenv("AIRFLOW_VAR_MASSIVE_API_REQUESTS_PER_MINUTE", "6000")
    day = dt.date(2025, 12, 19)  # none of the three tickers' rows is spoilt in this file
    publish(s3, market.build_file("stocks", "1d", day))
    conf = {"start_date": day.isoformat(), "end_date": day.isoformat(), "timeframe": "1d"}
    dag = dagbag.dags["historical_bulk_backfill"]

    assert dag.test(run_conf={**conf, "symbols": ["NVDA", "TSLA", "AAPL"]}).state == "success"

    splits = conn.execute("SELECT symbol, execution_date::text, split_to::int FROM market.splits").fetchall()
    assert splits == [("NVDA", "2025-12-29", 10)]
    dividends = conn.execute("SELECT symbol, ex_dividend_date::text FROM market.dividends").fetchall()
    assert dividends == [("AAPL", "2025-12-22")]
    assert conn.execute("SELECT DISTINCT symbol FROM market.reference_quarantine").fetchall() == [("TSLA",)]
    windows = conn.execute("SELECT DISTINCT window_from::text, window_to::text FROM market.reference_ledger")
    assert windows.fetchall() == [("-infinity", "infinity")], "never fetched: the whole history"
    assert dag.test(run_conf={**conf, "symbols": ["NVDA"]}).state == "success"
    windows = conn.execute("SELECT window_from::text, window_to::text FROM market.reference_ledger")
    assert ("2025-12-19", "infinity") in windows.fetchall(), "then from the range's start on, open-ended"
    assert "corporate actions of 3 ticker(s) in 1 batch(es)" in caplog.text

    requests = len(rest_api.log)
    assert dag.test(run_conf={**conf, "symbols": ["*"]}).state == "success"
    assert len(rest_api.log) == requests
    assert 'corporate actions: skipped for ["*"] (every ticker in the files)' in caplog.text


def test_a_symbols_list_over_the_limit_is_refused_when_triggered(
    dagbag, airflow_metadata_db: None, airflow_connections: dict[str, str], conn: psycopg.Connection
) -> None:
    from airflow.sdk.exceptions import ParamValidationError

    dag = dagbag.dags["historical_bulk_backfill"]
    too_many = {
        "start_date": "2024-11-25",
        "end_date": "2024-11-26",
        "symbols": [f"A{i}" for i in range(501)],
    }
    with pytest.raises(ParamValidationError, match="is too long"):
        dag.test(run_conf=too_many)
    assert "At most 500 by name" in dag.params.get_param("symbols").description
    assert conn.execute("SELECT to_regclass('market.historical_bars')").fetchone() == (None,)
