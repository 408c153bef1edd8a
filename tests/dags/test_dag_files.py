"""The DAG files as Airflow parses them: ids, params, schedules, instance names, alerts, light imports."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
from pathlib import Path

import pytest

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
        "historical_bulk_backfill": {"ingest.download": "session", "ingest.load": "session",
                                     "corporate_actions": "task.symbols"},
        "watchlist_daily_backfill": {"flatfiles.download": "session", "flatfiles.load": "session",
                                     "rest_fill": "symbol", "corporate_actions": "task.symbols"},
        "backtest_run": {"run_batch": "batch_label"},
    }  # fmt: skip
    for dag_id, tasks in mapped.items():
        for task_id, shown in tasks.items():
            assert shown in dagbag.dags[dag_id].get_task(task_id).map_index_template, (dag_id, task_id)


def test_the_daily_backfill_runs_on_weekdays_after_the_close_in_new_york(dagbag) -> None:
    timetable = dagbag.dags["watchlist_daily_backfill"].timetable
    assert (timetable.expression, str(timetable.timezone)) == ("15 20 * * 1-5", "America/New_York")
    assert dagbag.dags["watchlist_daily_backfill"].get_task("rest_fill").pool == "massive_api"


def test_scheduled_dags_pause_after_three_failed_runs_and_every_task_alerts(dagbag) -> None:
    from marketbars.alerting.channels import DagRunFailureNotifier, FailureAlertNotifier

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
    assert deadline.callback.path == "marketbars.alerting.channels.deadline_missed"


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
