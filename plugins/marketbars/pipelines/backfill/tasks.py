"""Task bodies of historical_bulk_backfill: Airflow's side (params, connections, failures) of the
rules in ``rules``. XCom carries session dates, symbols and counts."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from marketbars.pipelines.backfill import rules
from marketbars.pipelines.common.reference_rules import ReferenceWork


def _request(params: Mapping[str, Any]) -> rules.BackfillRequest:
    from airflow.sdk.exceptions import AirflowFailException

    try:
        return rules.parse_request(params)
    except ValueError as exc:
        raise AirflowFailException(str(exc)) from exc


def plan_sessions(params: Mapping[str, Any]) -> list[list[str]]:
    """The trigger's trading sessions in batches (one mapped instance each); bad params fail at once."""
    return rules.plan_batches(_request(params))


def prepare_warehouse(params: Mapping[str, Any]) -> list[str]:
    """Create the range's partitions and resolve the symbol selection (the hook brings the schema up
    to date). An empty selection means the dataset's active watchlist; an empty watchlist is an
    error, not a silent no-op."""
    from airflow.sdk.exceptions import AirflowFailException

    from marketbars.warehouse import partitions, watchlist
    from marketbars.warehouse.hook import WarehouseHook

    request = _request(params)
    with WarehouseHook().connect() as conn:
        partitions.ensure_partitions(conn, request.start, request.end)
        if request.symbols:
            return list(request.symbols)
        symbols = watchlist.active_symbols(conn, request.dataset)
    if not symbols:
        raise AirflowFailException(
            f"the watchlist has no active {request.dataset} symbols: pass symbols explicitly, "
            f"or add some to market.watchlist (asset_class = '{request.dataset}')"
        )
    return symbols


def plan_corporate_actions(params: Mapping[str, Any], symbols: list[str]) -> list[ReferenceWork]:
    """The selection's corporate-action fetches from the range's start on (none for ``["*"]``)."""
    from marketbars.pipelines.common import reference_tasks

    request = _request(params)
    return reference_tasks.plan_for_backfill(request.dataset, request.symbols, symbols, request.start)


def summarize(
    results: Any, batches: list[list[str]] | None, symbols: list[str] | None, reference: Any, actions: Any
) -> dict[str, int]:
    """Print rows per session and totals. The DAG's only leaf runs even after failures, so it fails the
    run itself when planning or preparation failed, a planned session has no result, or a planned
    corporate-action fetch failed."""
    from airflow.sdk.exceptions import AirflowFailException

    from marketbars.pipelines.common import reference_tasks
    from marketbars.pipelines.common.mapping import outputs

    if batches is None or symbols is None:
        raise AirflowFailException("the run failed before loading (see plan_sessions / prepare_warehouse)")
    summary = rules.summarize(outputs(results, each=list), batches)
    print("\n".join(summary.lines))
    if summary.missing_sessions:
        missing = summary.missing_sessions
        raise AirflowFailException(f"{len(missing)} session(s) did not load: {', '.join(missing)}")
    unfetched = reference_tasks.summarize(reference, actions)
    if unfetched:
        raise AirflowFailException(f"corporate actions not fetched: {', '.join(unfetched)}")
    return {
        "sessions": summary.sessions_done,
        "rows_loaded": summary.rows_loaded,
        "rows_quarantined": summary.rows_quarantined,
    }
