"""Defaults every DAG of the project shares: ownership, retries with capped exponential backoff."""

from __future__ import annotations

import datetime as dt
import os
from typing import Any

from marketbars.notifications import FailureAlertNotifier
from marketbars.operators import DEFAULT_DOWNLOAD_DIR

OWNER = "market-data"
# Scheduled DAGs are paused by the scheduler after this many failed runs in a row.
MAX_CONSECUTIVE_FAILED_RUNS = 3
DAILY_DEADLINE_ENV = "MARKETBARS_DAILY_DEADLINE_MINUTES"

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

# Templates for the shared Variables, with the defaults that apply when they are not set.
BUCKET_TEMPLATE = "{{ var.value.get('massive_flatfiles_bucket', 'flatfiles') }}"
DOWNLOAD_DIR_TEMPLATE = "{{ var.value.get('massive_download_dir', '" + DEFAULT_DOWNLOAD_DIR + "') }}"


def daily_deadline() -> Any:
    """watchlist_daily_backfill's Deadline Alert: a warning when a run has not finished
    ``MARKETBARS_DAILY_DEADLINE_MINUTES`` (default 180) after it was queued; ``0`` turns it off.

    Off in the sandbox and the tests: ``dag.test()`` in Airflow 3.3.2 fails on a DAG with a
    deadline once the run succeeds (it looks the alert up by its serialized dict instead of the id
    the scheduler's serialized DAG carries), and the scheduler path is unaffected.
    """
    from airflow.sdk import AsyncCallback, DeadlineAlert, DeadlineReference

    minutes = int(os.environ.get(DAILY_DEADLINE_ENV, "180"))
    if minutes <= 0:
        return None
    interval = dt.timedelta(minutes=minutes)
    return DeadlineAlert(
        reference=DeadlineReference.DAGRUN_QUEUED_AT,
        interval=interval,
        callback=AsyncCallback(
            "marketbars.notifications.deadline_missed",
            kwargs={"dag_id": "watchlist_daily_backfill", "deadline": str(interval)},
        ),
        name="daily backfill not finished in time",
    )
