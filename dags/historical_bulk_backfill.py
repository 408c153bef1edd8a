"""
### Historical bulk backfill from Massive flat files

Loads minute (`1m`) or daily (`1d`) bars for a date range from the vendor's S3 flat files
(one `.csv.gz` per trading day) into `market.historical_bars` (`source = 'flatfile'`).

**Params**
- `start_date`, `end_date`: sessions to load, `YYYY-MM-DD`, inclusive; the end must be in the
  past (a day's file is published the next morning), the range at most ten years.
- `dataset`: `stocks`, `indices` or `options`.
- `timeframe`: `1m` (minute aggregates) or `1d` (day aggregates).
- `symbols`: tickers in the vendor's form (`AAPL`, `I:SPX`, `O:SPY251219C00650000`); empty
  means the active watchlist of the dataset; `["*"]` loads every ticker in the files.

**What it does**
1. `plan_sessions` validates the params and lists the XNYS trading sessions of the range
   (holidays and weekends never become tasks), batched so at most 500 instances are mapped.
2. `prepare_warehouse` brings the schema up to date, creates the monthly partitions and
   resolves the symbol selection.
3. `ingest.download` / `ingest.load`, mapped per session (the grid shows the date): fetch the
   file (verified by ETag, reused when already local), then replace the session's bars for the
   selection in one transaction. Bad rows go to `market.quarantine` with a reason; every file
   gets a row in `market.ingest_ledger`. An unchanged file that is already loaded is skipped.
4. `summarize` logs rows loaded and quarantined per session, and fails the run if any
   session did not load.

Re-running with the same params changes nothing. Connections: `massive_s3`, `market_db`.
Variables: `massive_flatfiles_bucket` (default `flatfiles`), `massive_download_dir`.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from airflow.sdk import DAG, Param, task, task_group

from marketbars.assets import HISTORICAL_BARS
from marketbars.dag_defaults import BUCKET_TEMPLATE, DEFAULT_ARGS, DOWNLOAD_DIR_TEMPLATE
from marketbars.flatfiles import DATASETS, TIMEFRAMES
from marketbars.operators.flatfile_download import FlatFileDownloadOperator
from marketbars.operators.flatfile_load import FlatFileLoadOperator

SESSION_LABEL = (
    "{{ task.sessions[0] if task.sessions | length == 1 else task.sessions[0] ~ '..' ~ task.sessions[-1] }}"
)
FILES_LABEL = (
    "{{ task.files[0]['session'] if task.files | length == 1 "
    "else task.files[0]['session'] ~ '..' ~ task.files[-1]['session'] }}"
)

with DAG(
    dag_id="historical_bulk_backfill",
    description="Load a date range of bars from Massive flat files into market.historical_bars",
    schedule=None,
    start_date=dt.datetime(2024, 1, 1, tzinfo=dt.UTC),
    catchup=False,
    max_active_runs=4,
    default_args=DEFAULT_ARGS,
    doc_md=__doc__,
    tags=["market-data", "flat-files", "backfill"],
    params={
        "start_date": Param(
            type="string", format="date", title="Start date", description="First session to load (inclusive)."
        ),
        "end_date": Param(
            type="string", format="date", title="End date", description="Last session to load (inclusive)."
        ),
        "dataset": Param("stocks", type="string", enum=list(DATASETS), description="Which flat files."),
        "timeframe": Param(
            "1m",
            type="string",
            enum=list(TIMEFRAMES),
            description="1m = minute aggregates, 1d = day aggregates.",
        ),
        "symbols": Param(
            [],
            type="array",
            items={"type": "string", "minLength": 1, "maxLength": 32},
            uniqueItems=True,
            title="Symbols",
            description='Vendor tickers (AAPL, I:SPX, O:...). Empty: the active watchlist. ["*"]: all.',
        ),
    },
) as dag:

    @task
    def plan_sessions(params: dict[str, Any]) -> list[list[str]]:
        """Validate the trigger and list its trading sessions in batches (one mapped instance each)."""
        from airflow.sdk.exceptions import AirflowFailException

        from marketbars.backfill import parse_request, plan_batches

        try:
            return plan_batches(parse_request(params))
        except ValueError as exc:
            raise AirflowFailException(str(exc)) from exc

    @task
    def prepare_warehouse(params: dict[str, Any]) -> list[str]:
        """Migrate the schema, create the range's partitions, resolve the symbol selection."""
        from airflow.sdk.exceptions import AirflowFailException

        from marketbars.backfill import parse_request, prepare_warehouse
        from marketbars.hooks.warehouse import WarehouseHook

        with WarehouseHook().connect() as conn:
            try:
                return prepare_warehouse(conn, parse_request(params))
            except ValueError as exc:
                raise AirflowFailException(str(exc)) from exc

    @task_group(group_id="ingest")
    def ingest(sessions: list[str], symbols: list[str]) -> FlatFileLoadOperator:
        download = FlatFileDownloadOperator(
            task_id="download",
            dataset="{{ params.dataset }}",
            timeframe="{{ params.timeframe }}",
            sessions=sessions,
            bucket=BUCKET_TEMPLATE,
            download_dir=DOWNLOAD_DIR_TEMPLATE,
            map_index_template=SESSION_LABEL,
            max_active_tis_per_dagrun=4,
        )
        return FlatFileLoadOperator(
            task_id="load",
            dataset="{{ params.dataset }}",
            timeframe="{{ params.timeframe }}",
            files=download.output,
            symbols=symbols,
            bucket=BUCKET_TEMPLATE,
            download_dir=DOWNLOAD_DIR_TEMPLATE,
            map_index_template=FILES_LABEL,
            max_active_tis_per_dagrun=2,  # COPY is bound by one PostgreSQL backend's CPU per load
        )

    @task(trigger_rule="all_done", outlets=[HISTORICAL_BARS])
    def summarize(
        results: list[list[dict[str, Any]]] | None, batches: list[list[str]] | None, symbols: list[str] | None
    ) -> dict[str, int]:
        """Log rows per session and totals. Runs even after failures (it is the DAG's only leaf), so it
        fails the run itself when planning or preparation failed or a planned session has no result."""
        from airflow.sdk.exceptions import AirflowFailException

        from marketbars.backfill import summarize as build_summary
        from marketbars.mapped import outputs

        if batches is None or symbols is None:
            raise AirflowFailException(
                "the run failed before loading (see plan_sessions / prepare_warehouse)"
            )
        summary = build_summary(outputs(results, each=list), batches)
        print("\n".join(summary.lines))
        if summary.missing_sessions:
            missing = summary.missing_sessions
            raise AirflowFailException(f"{len(missing)} session(s) did not load: {', '.join(missing)}")
        return {
            "sessions": summary.sessions_done,
            "rows_loaded": summary.rows_loaded,
            "rows_quarantined": summary.rows_quarantined,
        }

    batches = plan_sessions()
    symbols = prepare_warehouse()
    batches >> symbols
    loads = ingest.partial(symbols=symbols).expand(sessions=batches)
    summarize(loads.output, batches, symbols)
