"""Task bodies of watchlist_daily_backfill: Airflow's side (Variables, connections, hooks) of the
rules in ``marketbars.daily``."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

log = logging.getLogger(__name__)


def plan_for_run(params: Mapping[str, Any], dag_run: Any) -> dict[str, Any]:
    """Route the run. Its date is the New York date of its logical date (a scheduled run's trigger
    time), or of when it was triggered for a manual run without one."""
    from airflow.sdk import Variable
    from airflow.sdk.exceptions import AirflowFailException, AirflowNotFoundException

    from marketbars import daily, trading_calendar
    from marketbars.hooks.flatfiles import MassiveFlatFilesHook
    from marketbars.hooks.warehouse import WarehouseHook

    run_date = trading_calendar.today_in_new_york(dag_run.logical_date or dag_run.run_after)
    history = int(Variable.get("watchlist_initial_history_sessions", default=daily.DEFAULT_HISTORY_SESSIONS))
    files = MassiveFlatFilesHook(bucket=Variable.get("massive_flatfiles_bucket", default="flatfiles"))
    try:
        files.get_connection(files.aws_conn_id)
        list_keys = files.objects
    except AirflowNotFoundException:
        list_keys = None
    with WarehouseHook().connect() as conn:
        try:
            plan = daily.build_plan(
                conn, list_keys, run_date=run_date, days=int(params["days"]), history_sessions=history
            )
        except ValueError as exc:
            raise AirflowFailException(str(exc)) from exc
    for note in plan.notes:
        log.warning(note)
    if plan.refresh:
        log.info(
            "run date %s: %d symbols, sessions %s..%s; new symbols %s (history from %s); "
            "%d flat-file loads, %d symbols through REST",
            run_date,
            len(plan.symbols),
            plan.refresh[0],
            plan.refresh[-1],
            ", ".join(plan.new_symbols) or "none",
            plan.history[0] if plan.history else "-",
            len(plan.flatfile),
            len(plan.rest),
        )
    return plan.to_xcom()


def summarize_run(
    routed: Mapping[str, Any] | None,
    loads: Iterable[Iterable[Mapping[str, Any]]],
    fills: Iterable[Mapping[str, Any]],
) -> dict[str, Any]:
    """Log the per-symbol summary; fail when planning failed or planned work did not happen."""
    import datetime as dt

    from airflow.sdk.exceptions import AirflowFailException

    from marketbars import daily, warehouse
    from marketbars.hooks.warehouse import WarehouseHook
    from marketbars.mapped import outputs

    if routed is None:
        raise AirflowFailException("the run failed before loading anything (see the plan task)")
    gaps, missing, failed = daily.check_results(routed, outputs(loads, each=list), outputs(fills, each=dict))
    window = routed["history"] or routed["refresh"]
    rows: list[tuple[str, str, str, int, int]] = []
    if window:
        with WarehouseHook().connect() as conn:
            first, last = dt.date.fromisoformat(window[0]), dt.date.fromisoformat(window[-1])
            rows = warehouse.bars_by_symbol(conn, routed["symbols"], first, last)
            # A new symbol is established once all of its history loaded; otherwise the next run retries.
            warehouse.complete_history(conn, [s for s in routed["new_symbols"] if s not in failed])
    for line in daily.summary_lines(rows, gaps):
        log.info(line)
    if gaps:
        log.warning("REST had no bars for %d symbol(s) on trading sessions: recorded as gaps", len(gaps))
    if missing:
        raise AirflowFailException(f"{len(missing)} planned load(s) did not happen: {', '.join(missing)}")
    return {"symbols": len(routed["symbols"]), "gaps": sum(len(g) for g in gaps.values())}
