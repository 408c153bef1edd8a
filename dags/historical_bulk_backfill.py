"""
### Historical bulk backfill from Massive flat files

Loads minute (`1m`) or daily (`1d`) bars for a date range from the vendor's S3 flat files
(one `.csv.gz` per trading day) into `market.historical_bars` (`source = 'flatfile'`).

**Params**
- `start_date`, `end_date`: sessions to load, `YYYY-MM-DD`, inclusive; the end must be in the
  past (a day's file is published the next morning), the range at most ten years.
- `dataset`: `stocks`, `indices` or `options`.
- `timeframe`: `1m` (minute aggregates) or `1d` (day aggregates).
- `symbols`: tickers in the vendor's form (`AAPL`, `I:SPX`, `O:SPY251219C00650000`), at most 500;
  empty means the active watchlist of the dataset; `["*"]` loads every ticker in the files.

**What it does**
1. `plan_sessions` validates the params and lists the XNYS trading sessions of the range
   (holidays and weekends never become tasks), batched so at most 500 instances are mapped.
2. `prepare_warehouse` brings the schema up to date, creates the monthly partitions and
   resolves the symbol selection.
3. `ingest.download` / `ingest.load`, mapped per session (the grid shows the date): fetch the
   file (verified by ETag, reused when already local), then replace the session's bars for the
   selection in one transaction. Bad rows go to `market.quarantine` with a reason; every file
   gets a row in `market.ingest_ledger`. An unchanged file that is already loaded is skipped.
4. `plan_corporate_actions` / `corporate_actions` (stocks only, mapped per batch of 50 tickers, in
   the `massive_api` pool): the selection's splits, cash dividends and ticker changes from the
   REST reference endpoints, from `start_date` on (later actions adjust these bars too), or the
   whole history for tickers never fetched whole; bad
   records are quarantined in `market.reference_quarantine`, never applied. Skipped for `["*"]`,
   and the log says so. A rename is logged (the watchlist is left to the daily run).
5. `summarize` logs rows loaded and quarantined per session and the corporate actions, and fails
   the run if any session did not load or a reference fetch failed.

Re-running with the same params changes nothing. Connections: `massive_s3`, `massive_api`
(corporate actions), `market_db`.
Variables: `massive_flatfiles_bucket` (default `flatfiles`), `massive_download_dir`.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import DAG, Param, task

from marketbars.market.symbols import ASSET_CLASSES
from marketbars.market.timeframes import SOURCE_TIMEFRAMES
from marketbars.pipelines.common.assets import HISTORICAL_BARS
from marketbars.pipelines.common.dag_defaults import dag_header, symbols_param
from marketbars.pipelines.common.flatfile_tasks import backfill_ingest
from marketbars.pipelines.common.reference_tasks import fetch_corporate_actions

with DAG(
    dag_id="historical_bulk_backfill",
    description="Load a date range of bars from Massive flat files into market.historical_bars",
    schedule=None,
    max_active_runs=4,
    doc_md=__doc__,
    tags=["market-data", "flat-files", "backfill"],
    params={
        "start_date": Param(
            type="string", format="date", title="Start date", description="First session to load (inclusive)."
        ),
        "end_date": Param(
            type="string", format="date", title="End date", description="Last session to load (inclusive)."
        ),
        "dataset": Param("stocks", type="string", enum=list(ASSET_CLASSES), description="Which flat files."),
        "timeframe": Param(
            "1m",
            type="string",
            enum=list(SOURCE_TIMEFRAMES),
            description="1m = minute aggregates, 1d = day aggregates.",
        ),
        "symbols": symbols_param(
            "Vendor tickers (AAPL, I:SPX, O:...). Empty: the active watchlist.", every_ticker=True
        ),
    },
    **dag_header(scheduled=False),
) as dag:

    @task
    def plan_sessions(params: dict[str, Any]) -> list[list[str]]:
        """Validate the trigger and list its trading sessions in batches (one mapped instance each)."""
        from marketbars.pipelines.backfill.tasks import plan_sessions

        return plan_sessions(params)

    @task
    def prepare_warehouse(params: dict[str, Any]) -> list[str]:
        """Migrate the schema, create the range's partitions, resolve the symbol selection."""
        from marketbars.pipelines.backfill.tasks import prepare_warehouse

        return prepare_warehouse(params)

    @task
    def plan_corporate_actions(params: dict[str, Any], symbols: list[str]) -> list[Any]:
        """The selection's reference fetches: batches of stock tickers from the start date on."""
        from marketbars.pipelines.backfill.tasks import plan_corporate_actions

        return list(plan_corporate_actions(params, symbols))

    @task(trigger_rule="all_done", outlets=[HISTORICAL_BARS])
    def summarize(
        results: list[list[dict[str, Any]]] | None,
        batches: list[list[str]] | None,
        symbols: list[str] | None,
        reference: list[dict[str, Any]] | None,
        actions: list[dict[str, Any]] | None,
    ) -> dict[str, int]:
        """Log rows per session and totals; fails the run when a planned session or fetch has no result."""
        from marketbars.pipelines.backfill.tasks import summarize

        return summarize(results, batches, symbols, reference, actions)

    batches = plan_sessions()
    symbols = prepare_warehouse()
    batches >> symbols
    loads = backfill_ingest(batches, symbols)
    reference = plan_corporate_actions(symbols=symbols)
    actions = fetch_corporate_actions(reference, follow_watchlist_renames=False)
    summarize(loads.output, batches, symbols, reference, actions.output)
