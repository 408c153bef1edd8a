"""What every DAG of the project shares: ownership, retries with capped exponential backoff, the
failure alerts, the header keywords, and the ``symbols`` param."""

from __future__ import annotations

import datetime as dt
import os
from typing import Any

from airflow.sdk import Param

from marketbars.alerting.channels import DagRunFailureNotifier, FailureAlertNotifier
from marketbars.market.symbols import ALL_SYMBOLS, MAX_SYMBOLS

OWNER = "market-data"
START_DATE = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
# Scheduled DAGs are paused by the scheduler after this many failed runs in a row.
MAX_CONSECUTIVE_FAILED_RUNS = 3
DAILY_DEADLINE_ENV = "MARKETBARS_DAILY_DEADLINE_MINUTES"
MAX_SYMBOL_CHARS = 32

DEFAULT_ARGS: dict[str, Any] = {
    "owner": OWNER,
    "retries": 3,
    "retry_delay": dt.timedelta(minutes=1),
    "retry_exponential_backoff": True,
    "max_retry_delay": dt.timedelta(minutes=30),
    "execution_timeout": dt.timedelta(hours=2),
    # Runs once the retries are exhausted: an alert means somebody has to look.
    "on_failure_callback": [FailureAlertNotifier()],
}


def dag_header(*, scheduled: bool) -> dict[str, Any]:
    """The DAG keywords every DAG shares. A scheduled DAG (on a clock or an Asset) also alerts on
    every failed run and is paused by the scheduler after ``MAX_CONSECUTIVE_FAILED_RUNS`` in a row."""
    header: dict[str, Any] = {"start_date": START_DATE, "catchup": False, "default_args": DEFAULT_ARGS}
    if scheduled:
        header["max_consecutive_failed_dag_runs"] = MAX_CONSECUTIVE_FAILED_RUNS
        header["on_failure_callback"] = DagRunFailureNotifier(pause_after=MAX_CONSECUTIVE_FAILED_RUNS)
    return header


def symbols_param(description: str, *, every_ticker: bool = False) -> Param:
    """The ``symbols`` param: a list of vendor tickers, each listed once, at most ``MAX_SYMBOLS``
    (the form says so, and how to select every ticker where that is a choice)."""
    limit = (
        f'At most {MAX_SYMBOLS} by name; ["{ALL_SYMBOLS}"] selects every ticker.'
        if every_ticker
        else (f"At most {MAX_SYMBOLS}.")
    )
    return Param(
        [],
        type="array",
        items={"type": "string", "minLength": 1, "maxLength": MAX_SYMBOL_CHARS},
        uniqueItems=True,
        maxItems=MAX_SYMBOLS,
        title="Symbols",
        description=f"{description} {limit}",
    )


def daily_deadline() -> Any:
    """watchlist_daily_backfill's Deadline Alert: a warning when a run has not finished
    ``MARKETBARS_DAILY_DEADLINE_MINUTES`` (default 180) after it was queued; ``0`` turns it off.

    Off in the sandbox and the tests: ``dag.test()`` in Airflow 3.3.2 fails on a DAG with a
    deadline once the run succeeds (it looks the alert up by its serialized dict instead of the id
    the scheduler's serialized DAG carries), and the scheduler path is unaffected.
    """
    from airflow.sdk.definitions.callback import AsyncCallback
    from airflow.sdk.definitions.deadline import DeadlineAlert, DeadlineReference

    minutes = int(os.environ.get(DAILY_DEADLINE_ENV, "180"))
    if minutes <= 0:
        return None
    interval = dt.timedelta(minutes=minutes)
    return DeadlineAlert(
        reference=DeadlineReference.DAGRUN_QUEUED_AT,
        interval=interval,
        callback=AsyncCallback(
            "marketbars.alerting.channels.deadline_missed",
            kwargs={"dag_id": "watchlist_daily_backfill", "deadline": str(interval)},
        ),
        name="daily backfill not finished in time",
    )
