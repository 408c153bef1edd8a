"""Task wiring shared by the DAGs that load flat files and fill from REST, built at DAG parse time."""

from __future__ import annotations

from typing import Any

from airflow.sdk import task_group

from marketbars.dag_defaults import BUCKET_TEMPLATE, DOWNLOAD_DIR_TEMPLATE
from marketbars.operators.flatfile_download import FlatFileDownloadOperator
from marketbars.operators.flatfile_load import FlatFileLoadOperator
from marketbars.operators.rest_fill import RestFillOperator

RATE_TEMPLATE = "{{ var.value.get('massive_api_requests_per_minute', 5) }}"
_ITEM_LABEL = (
    "{{ task.dataset }} {{ task.timeframe }} "
    "{{ task.sessions[0] if task.sessions | length == 1 else task.sessions[0] ~ '..' ~ task.sessions[-1] }}"
)
_LOAD_LABEL = (
    "{{ task.dataset }} {{ task.timeframe }} {{ task.files[0]['session'] if task.files | length == 1 "
    "else task.files[0]['session'] ~ '..' ~ task.files[-1]['session'] }}"
)


def flatfile_loads(work: Any, *, max_quarantine_fraction: float = 0.1) -> Any:
    """Mapped ``flatfiles.download`` >> ``flatfiles.load`` over work items {dataset, timeframe,
    sessions, symbols}; returns the load task (its ``.output`` lists every item's results).

    ``max_quarantine_fraction``: the share of a file's selected rows rejected above which the load
    task fails (after loading the valid rows)."""

    @task_group(group_id="flatfiles")
    def flatfiles(
        dataset: str, timeframe: str, sessions: list[str], symbols: list[str]
    ) -> FlatFileLoadOperator:
        download = FlatFileDownloadOperator(
            task_id="download",
            dataset=dataset,
            timeframe=timeframe,
            sessions=sessions,
            bucket=BUCKET_TEMPLATE,
            download_dir=DOWNLOAD_DIR_TEMPLATE,
            map_index_template=_ITEM_LABEL,
        )
        return FlatFileLoadOperator(
            task_id="load",
            dataset=dataset,
            timeframe=timeframe,
            files=download.output,
            symbols=symbols,
            bucket=BUCKET_TEMPLATE,
            download_dir=DOWNLOAD_DIR_TEMPLATE,
            map_index_template=_LOAD_LABEL,
            max_active_tis_per_dagrun=2,
            max_quarantine_fraction=max_quarantine_fraction,
        )

    return flatfiles.expand_kwargs(work)


def rest_fills(work: Any) -> Any:
    """``rest_fill`` mapped per symbol over work items {symbol, dataset, sessions}, in pool massive_api."""
    return RestFillOperator.partial(
        task_id="rest_fill",
        pool="massive_api",
        requests_per_minute=RATE_TEMPLATE,
        map_index_template="{{ task.symbol }}",
    ).expand_kwargs(work)
