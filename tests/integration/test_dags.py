"""DAG integrity, and full runs of historical_bulk_backfill through Airflow's dag.test()."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from marketbars import trading_calendar
from sandbox import market
from sandbox.services import S3Server
from tests.helpers import expected_bars, publish, warehouse_bars

ROOT = Path(__file__).resolve().parents[2]
CONTRACT_PARAMS = {
    "historical_bulk_backfill": {"start_date", "end_date", "dataset", "timeframe", "symbols"},
    "watchlist_daily_backfill": {"days"},
    "gap_detection_and_retry": {"lookback_days", "symbols"},
    "weekly_cleanup": {"retention_days", "dry_run"},  # the contract's, and the dry run
}
# backtest_run: the contract's params, plus engine parameters with defaults.
BACKTEST_CONTRACT = {"start_date", "end_date", "symbols", "detectors", "timeframe"}
HEAVY_MODULES = ("pandas", "numpy", "pyarrow", "pgpq", "psycopg", "boto3", "exchange_calendars", "requests")
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


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(ROOT / "dags"))


@pytest.fixture
def no_retries(dagbag):
    """dag.test() waits out real retry delays: in a DAG run test a failing task fails the test at once."""
    saved = {(d, t.task_id): t.retries for d, dag in dagbag.dags.items() for t in dag.tasks}
    for dag in dagbag.dags.values():
        for task in dag.tasks:
            task.retries = 0
    yield
    for dag_id, dag in dagbag.dags.items():
        for task in dag.tasks:
            task.retries = saved[(dag_id, task.task_id)]


def test_every_dag_imports_and_declares_what_operators_need(dagbag) -> None:
    assert dagbag.import_errors == {}
    assert set(dagbag.dag_ids) >= set(CONTRACT_PARAMS)
    for dag_id, dag in dagbag.dags.items():
        assert dag.tags, dag_id
        assert dag.doc_md and len(dag.doc_md) > 200, dag_id
        for task in dag.tasks:
            assert task.owner == "market-data", (dag_id, task.task_id)
            assert task.retries >= 1 and task.retry_exponential_backoff and task.max_retry_delay, task.task_id
            assert task.execution_timeout is not None, task.task_id


def test_params_are_exactly_the_contract(dagbag) -> None:
    for dag_id, names in CONTRACT_PARAMS.items():
        params = dagbag.dags[dag_id].params
        assert set(params.keys()) == names, dag_id
        assert all(params.get_param(name).description for name in names), dag_id
    backtest = dagbag.dags["backtest_run"].params
    assert set(backtest.keys()) >= BACKTEST_CONTRACT
    assert backtest["symbols"] == [] and backtest["detectors"] == [] and backtest["timeframe"] == "5m"
    assert backtest["slippage_bps"] == 10
    params = dagbag.dags["historical_bulk_backfill"].params
    assert params.get_param("dataset").schema["enum"] == ["stocks", "indices", "options"]
    assert params.get_param("timeframe").schema["enum"] == ["1m", "1d"]
    assert params.get_param("start_date").schema["format"] == "date"
    assert params["symbols"] == [] and params["dataset"] == "stocks" and params["timeframe"] == "1m"


def test_mapped_tasks_name_their_instances(dagbag) -> None:
    mapped = {
        "historical_bulk_backfill": {"ingest.download": "session", "ingest.load": "session"},
        "watchlist_daily_backfill": {"flatfiles.download": "session", "flatfiles.load": "session",
                                     "rest_fill": "symbol"},
        "backtest_run": {"run_detector": "detector"},
    }  # fmt: skip
    for dag_id, tasks in mapped.items():
        for task_id, shown in tasks.items():
            assert shown in dagbag.dags[dag_id].get_task(task_id).map_index_template, (dag_id, task_id)


def test_the_daily_backfill_runs_on_weekdays_after_the_close_in_new_york(dagbag) -> None:
    timetable = dagbag.dags["watchlist_daily_backfill"].timetable
    assert (timetable.expression, str(timetable.timezone)) == ("15 20 * * 1-5", "America/New_York")
    assert dagbag.dags["watchlist_daily_backfill"].get_task("rest_fill").pool == "massive_api"


def test_scheduled_dags_pause_after_three_failed_runs_and_every_task_alerts(dagbag) -> None:
    from marketbars.notifications import DagRunFailureNotifier, FailureAlertNotifier

    for dag_id in ("watchlist_daily_backfill", "gap_detection_and_retry", "weekly_cleanup", "backtest_run"):
        dag = dagbag.dags[dag_id]
        assert dag.max_consecutive_failed_dag_runs == 3, dag_id
        callback = dag.on_failure_callback
        assert isinstance(callback, DagRunFailureNotifier) and callback.pause_after == 3, dag_id
    for dag in dagbag.dags.values():
        for task in dag.tasks:
            assert any(isinstance(c, FailureAlertNotifier) for c in task.on_failure_callback), task.task_id


def test_the_daily_backfill_alerts_when_not_finished_three_hours_after_it_was_queued(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from airflow.dag_processing.dagbag import DagBag
    from airflow.sdk import AsyncCallback, DeadlineReference

    monkeypatch.delenv("MARKETBARS_DAILY_DEADLINE_MINUTES")  # as deployed (the tests turn it off)
    [deadline] = DagBag(dag_folder=str(ROOT / "dags")).dags["watchlist_daily_backfill"].deadline
    assert deadline.reference == DeadlineReference.DAGRUN_QUEUED_AT
    assert deadline.interval == dt.timedelta(hours=3)
    assert isinstance(deadline.callback, AsyncCallback)
    assert deadline.callback.path == "marketbars.notifications.deadline_missed"


def test_the_weekly_cleanup_runs_on_saturday_mornings_in_new_york(dagbag) -> None:
    dag = dagbag.dags["weekly_cleanup"]
    assert (dag.timetable.expression, str(dag.timetable.timezone)) == ("0 3 * * 6", "America/New_York")
    assert dag.params["retention_days"] == 365 and dag.params["dry_run"] is False


def test_parsing_a_dag_file_imports_no_heavy_library() -> None:
    for dag_file in sorted((ROOT / "dags").glob("*.py")):
        code = (
            f"import runpy, sys; runpy.run_path({str(dag_file)!r}); "
            f"print(','.join(m for m in {HEAVY_MODULES!r} if m in sys.modules))"
        )
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        assert result.stdout.strip() == "", f"{dag_file.name} imports {result.stdout.strip()} at parse time"


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
    files = [market.build_file("stocks", "1m", day) for day in trading_calendar.sessions_between(start, end)]
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
def test_a_bad_trigger_fails_at_the_first_task_and_touches_nothing(
    dagbag,
    no_retries,
    airflow_metadata_db: None,
    airflow_connections: dict[str, str],
    conn: psycopg.Connection,
) -> None:
    dag = dagbag.dags["historical_bulk_backfill"]
    run = dag.test(run_conf={"start_date": "2024-12-03", "end_date": "2024-11-25", "symbols": ["aapl"]})
    assert run.state == "failed"
    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    assert states["plan_sessions"] == "failed"
    assert states["prepare_warehouse"] == "upstream_failed"
    assert conn.execute("SELECT to_regclass('market.historical_bars')").fetchone() == (None,)


RUN_DATE = dt.date(2024, 11, 27)  # the file of the run's own session is not published yet
NEW_YORK = trading_calendar.NEW_YORK


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
    from marketbars import warehouse

    monkeypatch.setenv("AIRFLOW_VAR_WATCHLIST_INITIAL_HISTORY_SESSIONS", "4")
    monkeypatch.setenv("AIRFLOW_VAR_MASSIVE_API_REQUESTS_PER_MINUTE", "6000")
    warehouse.migrate(conn)
    conn.execute("UPDATE market.watchlist SET active = symbol IN ('AAPL', 'MSFT', 'I:SPX')")
    warehouse.ensure_partitions(conn, dt.date(2024, 10, 1), dt.date(2024, 10, 1))
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
    history = trading_calendar.sessions_between(dt.date(2024, 11, 20), RUN_DATE)[-4:]  # 11-22 .. 11-27
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
    assert sorted({(r.ticker, r.status) for r in daily_setup.log}) == [
        ("AAPL", 200), ("I:SPX", 200), ("MSFT", 200),
    ]  # fmt: skip
    first_ms, end_ms = (int(t.timestamp() * 1000) for t in trading_calendar.day_window(RUN_DATE))
    assert all(
        r.path.endswith(f"/{first_ms}/{end_ms - 1}") for r in daily_setup.log
    )  # REST: the last day only
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
