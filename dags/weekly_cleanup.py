"""
### Weekly cleanup

Keeps the warehouse within its retention and healthy, every Saturday at 03:00 America/New_York
(and manually). Safe to re-run: what is gone stays gone, and nothing newer is touched.

**Params**
- `retention_days` (default 365, at least 30): bars of sessions more than this many calendar days
  before the run's date are removed.
- `dry_run` (default off): report what would be removed, remove nothing.

**What it does**
1. `plan_cleanup` lists the monthly partitions of `market.historical_bars`, the cutoff, the rows
   to trim and the warehouse's size.
2. `apply_retention` drops every partition entirely before the cutoff (`DROP TABLE`: instant, no
   row-by-row delete) and trims the one straddling it, one day per transaction. Every timeframe
   goes, derived bars included.
3. `prune_ledgers` removes quarantine rows older than `cleanup_quarantine_retention_days` (default
   365) and ledger rows (`ingest_ledger`, `rest_ledger`, closed `backfill_gaps`) older than
   `cleanup_ledger_retention_days` (default 730); `0` keeps them forever. The watchlist is never
   touched.
4. `remove_temp_files` removes downloaded flat files and abandoned partial downloads in
   `massive_download_dir` not modified for 24 hours, by the download's own name patterns only.
5. `vacuum_analyze` runs `VACUUM (ANALYZE)` on the tables that changed.
6. `summarize` logs partitions dropped, rows trimmed and pruned, files removed and bytes freed
   (from `pg_total_relation_size` before and after).

Connection: `market_db`.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import DAG, CronTriggerTimetable, Param, task

from marketbars.pipelines.common.dag_defaults import dag_header

with DAG(
    dag_id="weekly_cleanup",
    description="Retention of bars by dropping old monthly partitions, ledger pruning, temp files, VACUUM",
    schedule=CronTriggerTimetable("0 3 * * 6", timezone="America/New_York"),
    max_active_runs=1,
    doc_md=__doc__,
    tags=["market-data", "maintenance"],
    params={
        "retention_days": Param(
            365,
            type="integer",
            minimum=30,
            maximum=36500,
            title="Retention (calendar days)",
            description="Remove bars of sessions more than this many days before the run's date.",
        ),
        "dry_run": Param(
            False,
            type="boolean",
            title="Dry run",
            description="Only report what would be removed.",
        ),
    },
    **dag_header(scheduled=True),
) as dag:

    @task
    def plan_cleanup(params: dict[str, Any], dag_run: Any = None) -> dict[str, Any]:
        """The cutoff and what it removes."""
        from marketbars.pipelines.cleanup.tasks import plan

        return plan(params, dag_run)

    @task
    def apply_retention(plan: dict[str, Any]) -> dict[str, Any]:
        """Drop old partitions, trim the straddling one."""
        from marketbars.pipelines.cleanup import tasks

        return tasks.apply_retention(plan)

    @task
    def prune_ledgers(plan: dict[str, Any]) -> dict[str, int]:
        """Old quarantine and ledger rows, by their own settings."""
        from marketbars.pipelines.cleanup import tasks

        return tasks.prune_ledgers(plan)

    @task
    def remove_temp_files(plan: dict[str, Any]) -> dict[str, int]:
        """Downloads older than 24 h."""
        from marketbars.pipelines.cleanup import tasks

        return tasks.remove_temp_files(plan)

    @task
    def vacuum_analyze(plan: dict[str, Any], retention: dict[str, Any], pruned: dict[str, int]) -> list[str]:
        """VACUUM (ANALYZE) what changed."""
        from marketbars.pipelines.cleanup import tasks

        return tasks.vacuum(plan, retention, pruned)

    @task
    def summarize(
        plan: dict[str, Any], retention: dict[str, Any], pruned: dict[str, int], files: dict[str, int]
    ) -> dict[str, Any]:
        """What was removed and the bytes freed."""
        from marketbars.pipelines.cleanup import tasks

        return tasks.summarize(plan, retention, pruned, files)

    planned = plan_cleanup()
    retained = apply_retention(planned)
    pruned = prune_ledgers(planned)
    files = remove_temp_files(planned)
    vacuumed = vacuum_analyze(planned, retained, pruned)
    summary = summarize(planned, retained, pruned, files)
    vacuumed >> summary
