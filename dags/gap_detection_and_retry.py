"""
### Gap detection and retry

Measures, every day after fresh data, whether `market.historical_bars` holds what the XNYS calendar
says it should, repairs what it can, explains what it cannot, and alerts when a gap ages.

Runs when `market.historical_bars` is updated (the Asset the backfills produce), and manually.

**Params**
- `lookback_days` (default 30): the trading sessions of the last this many calendar days.
- `symbols` (list): tickers to check; empty = the active watchlist.

**What it does**
1. `detect_gaps` counts, in one SQL pass over the primary key, the bars of every (symbol,
   timeframe `1m`/`1d`, session) cell and classifies it: `complete`; `partial` (a liquid symbol
   below `gaps_coverage_threshold`, default 0.95, of its regular-session minutes: 390, or 210 on an
   early close); `missing`; or `no_trading` (the vendor's flat file was loaded and holds none).
   Indices must print every minute; options need one bar. It opens gaps in `market.backfill_gaps`
   (also for a flat file whose ETag changed since it was loaded), re-checks open ones, and routes
   those due for a retry, alternating: through the flat file when it is published, through REST
   the next time (or when it is not).
2. `flatfiles.*` and `rest_fill` retry them (mapped per file batch and per symbol); the REST fill
   only adds the bars a flat-file session lacks, never overwriting one.
3. `rebuild_pending_rollups` (alongside) rebuilds the derived 5m..4h bars of any 1m write in the
   window whose rebuild never ran (`rollups_at` still NULL in the ingest or REST ledger).
4. `verify_and_report` re-counts: a filled gap closes; otherwise its attempts grow and the next
   retry backs off exponentially (`gaps_backoff_hours`, default 12, doubling, at most 7 days) until
   `gaps_max_attempts` (default 5) make it `unfillable`, with the reason. It writes
   `completeness.json` and a heatmap `completeness.png` under `market_reports_dir`/<date>/ (and to
   `market_reports_s3_uri` if set), and raises an alert for every gap open more than 1 trading
   session (warning) or 7 (critical).

Connections: `market_db`, `massive_s3` (optional), `massive_api`. Pool: `massive_api`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from airflow.sdk import DAG, Param, task

from marketbars.pipelines.common.assets import HISTORICAL_BARS
from marketbars.pipelines.common.dag_defaults import dag_header, symbols_param
from marketbars.pipelines.common.flatfile_tasks import flatfile_loads, rest_fills

with DAG(
    dag_id="gap_detection_and_retry",
    description="Completeness against the XNYS calendar: find gaps, retry them, report, alert",
    schedule=[HISTORICAL_BARS],
    max_active_runs=1,
    doc_md=__doc__,
    tags=["market-data", "gaps", "quality"],
    params={
        "lookback_days": Param(
            30,
            type="integer",
            minimum=1,
            maximum=366,
            title="Lookback (calendar days)",
            description="Check the trading sessions of the last this many days, ending at the run's date.",
        ),
        "symbols": symbols_param(
            "Vendor tickers to check (AAPL, I:SPX, O:...). Empty: the active watchlist."
        ),
    },
    **dag_header(scheduled=True),
) as dag:

    @task
    def detect_gaps(params: dict[str, Any], dag_run: Any = None) -> Mapping[str, Any]:
        """Classify every cell, open and close gaps, route the due retries."""
        from marketbars.pipelines.gaps.tasks import detect

        return detect(params, dag_run)

    @task
    def flatfile_work(plan: Mapping[str, Any]) -> list[Any]:
        return list(plan["flatfile"])

    @task
    def rest_work(plan: Mapping[str, Any]) -> list[Any]:
        return list(plan["rest"])

    @task(trigger_rule="all_done")
    def verify_and_report(
        plan: dict[str, Any] | None,
        loads: list[list[dict[str, Any]]] | None,
        fills: list[dict[str, Any]] | None,
    ) -> dict[str, Any]:
        """Settle the retried gaps, write the report, alert on aging gaps."""
        from marketbars.pipelines.gaps.tasks import verify

        return verify(plan, loads, fills)

    @task
    def rebuild_pending_rollups(params: dict[str, Any], dag_run: Any = None) -> dict[str, int]:
        """Derived bars of 1m writes whose rebuild never ran."""
        from marketbars.pipelines.gaps.tasks import rebuild_pending_rollups

        return rebuild_pending_rollups(params, dag_run)

    rebuild_pending_rollups()
    plan = detect_gaps()
    # A retry loads a handful of symbols: one bad row is "all rejected". The gap ledger explains
    # it (the quarantined rows and their reasons), so it must not also fail the task and alert.
    loads = flatfile_loads(flatfile_work(plan), max_quarantine_fraction=1.0)
    fills = rest_fills(rest_work(plan))
    verify_and_report(plan, loads.output, fills.output)
