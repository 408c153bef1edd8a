"""The mapped task groups that load flat files (download >> load) and fill from REST, built at DAG
parse time: the one place their operators, labels and concurrency are wired."""

from __future__ import annotations

from typing import Any, cast

from airflow.sdk import task_group

from marketbars import settings
from marketbars.operators.flatfile_download import DownloadedFile, FlatFileDownloadOperator, SkippedSession
from marketbars.operators.flatfile_load import FlatFileLoadOperator
from marketbars.operators.rest_fill import RestFillOperator

LOAD_CONCURRENCY = 2  # COPY is bound by one PostgreSQL backend's CPU per load


def _date_range(first: str, last: str, length: str) -> str:
    """Jinja naming a mapped instance by its date, or first..last for a batch."""
    return f"{{{{ {first} if {length} == 1 else {first} ~ '..' ~ {last} }}}}"


SESSIONS_LABEL = _date_range("task.sessions[0]", "task.sessions[-1]", "task.sessions | length")
FILES_LABEL = _date_range("task.files[0]['session']", "task.files[-1]['session']", "task.files | length")
WHAT_LABEL = "{{ task.dataset }} {{ task.timeframe }} "


def _download_and_load(
    *,
    dataset: Any,
    timeframe: Any,
    sessions: Any,
    symbols: Any,
    label_prefix: str,
    download_concurrency: int | None,
    max_quarantine_fraction: float,
) -> FlatFileLoadOperator:
    download = FlatFileDownloadOperator(
        task_id="download",
        dataset=dataset,
        timeframe=timeframe,
        sessions=sessions,
        bucket=settings.BUCKET.template,
        download_dir=settings.DOWNLOAD_DIR.template,
        map_index_template=label_prefix + SESSIONS_LABEL,
        max_active_tis_per_dagrun=download_concurrency,
    )
    return FlatFileLoadOperator(
        task_id="load",
        dataset=dataset,
        timeframe=timeframe,
        files=cast("list[DownloadedFile | SkippedSession]", download.output),  # the value, when it runs
        symbols=symbols,
        bucket=settings.BUCKET.template,
        download_dir=settings.DOWNLOAD_DIR.template,
        map_index_template=label_prefix + FILES_LABEL,
        max_active_tis_per_dagrun=LOAD_CONCURRENCY,
        max_quarantine_fraction=max_quarantine_fraction,
    )


def backfill_ingest(batches: Any, symbols: Any) -> Any:
    """``ingest.download`` >> ``ingest.load`` mapped per batch of sessions, for the dataset and
    timeframe of the run's params (the grid names each instance by its dates)."""

    @task_group(group_id="ingest")
    def ingest(sessions: list[str], symbols: list[str]) -> FlatFileLoadOperator:
        return _download_and_load(
            dataset="{{ params.dataset }}",
            timeframe="{{ params.timeframe }}",
            sessions=sessions,
            symbols=symbols,
            label_prefix="",
            download_concurrency=4,
            max_quarantine_fraction=0.1,
        )

    return ingest.partial(symbols=symbols).expand(sessions=batches)


def flatfile_loads(work: Any, *, max_quarantine_fraction: float = 0.1) -> Any:
    """``flatfiles.download`` >> ``flatfiles.load`` mapped over work items {dataset, timeframe,
    sessions, symbols}; returns the load task (its ``.output`` lists every item's results).

    ``max_quarantine_fraction``: the share of a file's selected rows rejected above which the load
    task fails (after loading the valid rows)."""

    @task_group(group_id="flatfiles")
    def flatfiles(
        dataset: str, timeframe: str, sessions: list[str], symbols: list[str]
    ) -> FlatFileLoadOperator:
        return _download_and_load(
            dataset=dataset,
            timeframe=timeframe,
            sessions=sessions,
            symbols=symbols,
            label_prefix=WHAT_LABEL,
            download_concurrency=None,
            max_quarantine_fraction=max_quarantine_fraction,
        )

    return flatfiles.expand_kwargs(work)


def rest_fills(work: Any) -> Any:
    """``rest_fill`` mapped per symbol over work items {symbol, dataset, sessions}, in pool massive_api."""
    return RestFillOperator.partial(
        task_id="rest_fill",
        pool="massive_api",
        requests_per_minute=settings.REST_REQUESTS_PER_MINUTE.template,
        map_index_template="{{ task.symbol }}",
    ).expand_kwargs(work)
