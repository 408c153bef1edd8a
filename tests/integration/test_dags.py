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
}
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
    params = dagbag.dags["historical_bulk_backfill"].params
    assert params.get_param("dataset").schema["enum"] == ["stocks", "indices", "options"]
    assert params.get_param("timeframe").schema["enum"] == ["1m", "1d"]
    assert params.get_param("start_date").schema["format"] == "date"
    assert params["symbols"] == [] and params["dataset"] == "stocks" and params["timeframe"] == "1m"


def test_mapped_tasks_name_their_instances(dagbag) -> None:
    dag = dagbag.dags["historical_bulk_backfill"]
    for task_id in ("ingest.download", "ingest.load"):
        assert "session" in dag.get_task(task_id).map_index_template


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
    dagbag, airflow_metadata_db: None, airflow_connections: dict[str, str], conn: psycopg.Connection
) -> None:
    dag = dagbag.dags["historical_bulk_backfill"]
    run = dag.test(run_conf={"start_date": "2024-12-03", "end_date": "2024-11-25", "symbols": ["aapl"]})
    assert run.state == "failed"
    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    assert states["plan_sessions"] == "failed"
    assert states["prepare_warehouse"] == "upstream_failed"
    assert conn.execute("SELECT to_regclass('market.historical_bars')").fetchone() == (None,)
