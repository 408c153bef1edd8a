"""
### Daily watchlist backfill (flat files + REST)

Keeps the active watchlist's minute (`1m`) and daily (`1d`) bars current every trading day.
Scheduled on weekdays at 20:15 America/New_York, after the extended session ends; a run whose
date is not an XNYS session (a holiday) does nothing.

**Params**
- `days` (default 2): the sessions to refresh, ending at the run's date.

**What it does**
1. `plan` lists the last `days` sessions and, for symbols new to `market.watchlist` (no bars
   yet), the last `watchlist_initial_history_sessions` sessions (Variable, default 90). It routes
   each (dataset, timeframe, session) by fact: through its flat file when the object exists in
   the bucket (usually everything but the last session or two), through the REST API otherwise.
   Without a `massive_s3` connection everything goes through REST, and the run says so.
2. `flatfiles.download` / `flatfiles.load` load the flat-file sessions exactly as
   `historical_bulk_backfill` does (unchanged files are skipped).
3. `rest_fill`, mapped per symbol in the `massive_api` pool, fetches the other sessions from the
   aggregates endpoint (`adjusted=false`, every page, paced by the shared rate limit: Variable
   `massive_api_requests_per_minute`, default 5, the free plan). A session the API has no bars for
   is recorded as a gap in `market.rest_ledger`, not as complete. A flat file loaded later replaces
   REST bars; REST never overwrites a flat-file session.
4. `summarize` logs per symbol the sessions and bars by timeframe and source, and the gaps; it
   fails the run when planning failed or a planned load did not happen.

**Alerts.** A task that fails after its retries alerts through the configured channels; three
failed runs in a row pause the DAG; a run not finished 3 hours after it was queued
(`MARKETBARS_DAILY_DEADLINE_MINUTES` on the scheduler, default 180) raises a deadline alert.

Connections: `massive_s3` (optional), `massive_api`, `market_db`. Pool: `massive_api`.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from airflow.sdk import (
    DAG,
    CronTriggerTimetable,
    Param,
    task,
)

from marketbars.assets import HISTORICAL_BARS
from marketbars.dag_defaults import DEFAULT_ARGS, MAX_CONSECUTIVE_FAILED_RUNS, daily_deadline
from marketbars.dag_parts import flatfile_loads, rest_fills
from marketbars.notifications import DagRunFailureNotifier

with DAG(
    dag_id="watchlist_daily_backfill",
    description="Refresh the watchlist's bars every trading day: flat files where published, REST otherwise",
    schedule=CronTriggerTimetable("15 20 * * 1-5", timezone="America/New_York"),
    start_date=dt.datetime(2024, 1, 1, tzinfo=dt.UTC),
    catchup=False,
    max_active_runs=1,
    max_consecutive_failed_dag_runs=MAX_CONSECUTIVE_FAILED_RUNS,
    on_failure_callback=DagRunFailureNotifier(pause_after=MAX_CONSECUTIVE_FAILED_RUNS),
    deadline=daily_deadline(),
    default_args=DEFAULT_ARGS,
    doc_md=__doc__,
    tags=["market-data", "flat-files", "rest", "daily"],
    params={
        "days": Param(
            2,
            type="integer",
            minimum=1,
            maximum=30,
            title="Sessions to refresh",
            description="How many trading sessions to refresh, ending at the run's date.",
        ),
    },
) as dag:

    @task
    def plan(params: dict[str, Any], dag_run: Any = None) -> dict[str, Any]:
        """Route the run's sessions and symbols to flat files or REST."""
        from marketbars.daily_tasks import plan_for_run

        return plan_for_run(params, dag_run)

    @task
    def flatfile_work(routed: dict[str, Any]) -> list[dict[str, Any]]:
        return routed["flatfile"]

    @task
    def rest_work(routed: dict[str, Any]) -> list[dict[str, Any]]:
        return routed["rest"]

    @task(trigger_rule="all_done", outlets=[HISTORICAL_BARS])
    def summarize(
        routed: dict[str, Any] | None,
        loads: list[list[dict[str, Any]]] | None,
        fills: list[dict[str, Any]] | None,
    ) -> dict[str, Any]:
        """Per-symbol sessions and bars by source, and gaps; fails the run if planned work did not happen."""
        from marketbars.daily_tasks import summarize_run

        return summarize_run(routed, loads, fills)

    routed = plan()
    loads = flatfile_loads(flatfile_work(routed))
    fills = rest_fills(rest_work(routed))
    summarize(routed, loads.output, fills.output)
