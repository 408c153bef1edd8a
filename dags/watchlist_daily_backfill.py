"""
### Daily watchlist backfill (flat files + REST)

Keeps the active watchlist's minute (`1m`) and daily (`1d`) bars current every trading day.
Scheduled on weekdays at 20:15 America/New_York, after the extended session ends; a run whose
date is not an XNYS session (a holiday) does nothing.

**Params**
- `days` (default 2): the sessions to refresh, ending at the run's date.

**What it does**
1. `plan_corporate_actions` and `corporate_actions` (mapped per batch of 50 stocks, in the
   `massive_api` pool) refresh the active watchlist's splits, cash dividends and ticker changes
   from the REST reference endpoints: the last `reference_recent_days` (Variable, default 30) and
   later, or the whole history for stocks never fetched whole; each ticker's rename check when
   its last one is `reference_ticker_events_max_age_days` old (default 7). Records are checked
   and the bad ones quarantined in `market.reference_quarantine`, never applied. A ticker the
   vendor reports renamed is refreshed under its new ticker from then on (the watchlist gets the
   new ticker; the old one stays listed, inactive), and the run logs it as a warning.
2. `plan` lists the last `days` sessions and, for symbols new to `market.watchlist` (no bars
   yet), the last `watchlist_initial_history_sessions` sessions (Variable, default 90). It routes
   each (dataset, timeframe, session) by fact: through its flat file when the object exists in
   the bucket (usually everything but the last session or two), through the REST API otherwise.
   Without a `massive_s3` connection everything goes through REST, and the run says so.
3. `flatfiles.download` / `flatfiles.load` load the flat-file sessions exactly as
   `historical_bulk_backfill` does (unchanged files are skipped).
4. `rest_fill`, mapped per symbol in the `massive_api` pool, fetches the other sessions from the
   aggregates endpoint (`adjusted=false`, every page, paced by the shared rate limit: Variable
   `massive_api_requests_per_minute`, default 5, the free plan). A session the API has no bars for
   is recorded as a gap in `market.rest_ledger`, not as complete. A flat file loaded later replaces
   REST bars; REST never overwrites a flat-file session.
5. `summarize` logs per symbol the sessions and bars by timeframe and source, the gaps and the
   corporate actions; it fails the run when planning failed or a planned load or fetch did not
   happen (bars load even when the reference fetch fails).

**Alerts.** A task that fails after its retries alerts through the configured channels; three
failed runs in a row pause the DAG; a run not finished 3 hours after it was queued
(`MARKETBARS_DAILY_DEADLINE_MINUTES` on the scheduler, default 180) raises a deadline alert.

Connections: `massive_s3` (optional), `massive_api`, `market_db`. Pool: `massive_api`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from airflow.sdk import DAG, CronTriggerTimetable, Param, task

from marketbars.pipelines.common.assets import HISTORICAL_BARS
from marketbars.pipelines.common.dag_defaults import dag_header, daily_deadline
from marketbars.pipelines.common.flatfile_tasks import flatfile_loads, rest_fills
from marketbars.pipelines.common.reference_tasks import fetch_corporate_actions

with DAG(
    dag_id="watchlist_daily_backfill",
    description="Refresh the watchlist's bars every trading day: flat files where published, REST otherwise",
    schedule=CronTriggerTimetable("15 20 * * 1-5", timezone="America/New_York"),
    max_active_runs=1,
    deadline=daily_deadline(),
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
    **dag_header(scheduled=True),
) as dag:

    @task
    def plan_corporate_actions(dag_run: Any = None) -> list[Any]:
        """The watchlist stocks' reference fetches: batches of tickers and their windows."""
        from marketbars.pipelines.daily.tasks import plan_corporate_actions

        return list(plan_corporate_actions(dag_run))

    @task(trigger_rule="all_done")  # bars load even when the reference data could not be fetched
    def plan(params: dict[str, Any], dag_run: Any = None) -> Mapping[str, Any]:
        """Route the run's sessions and symbols to flat files or REST."""
        from marketbars.pipelines.daily.tasks import plan

        return plan(params, dag_run)

    @task
    def flatfile_work(routed: Mapping[str, Any]) -> list[Any]:
        return list(routed["flatfile"])

    @task
    def rest_work(routed: Mapping[str, Any]) -> list[Any]:
        return list(routed["rest"])

    @task(trigger_rule="all_done", outlets=[HISTORICAL_BARS])
    def summarize(
        routed: dict[str, Any] | None,
        loads: list[list[dict[str, Any]]] | None,
        fills: list[dict[str, Any]] | None,
        reference: list[dict[str, Any]] | None,
        actions: list[dict[str, Any]] | None,
    ) -> dict[str, Any]:
        """Per-symbol sessions and bars by source, gaps, corporate actions; fails the run if planned
        work did not happen."""
        from marketbars.pipelines.daily.tasks import summarize

        return summarize(routed, loads, fills, reference, actions)

    reference = plan_corporate_actions()
    actions = fetch_corporate_actions(reference, follow_watchlist_renames=True)
    routed = plan()
    actions >> routed  # a rename found here is loaded under its new ticker by this run
    loads = flatfile_loads(flatfile_work(routed))
    fills = rest_fills(rest_work(routed))
    summarize(routed, loads.output, fills.output, reference, actions.output)
