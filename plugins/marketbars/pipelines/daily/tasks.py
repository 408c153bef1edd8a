"""Task bodies of watchlist_daily_backfill: Airflow's side (Variables, connections, the warehouse) of
the rules in ``rules``. XCom carries the plan: dates, symbols and work items."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping
from typing import Any

from marketbars.pipelines.common.reference_rules import ReferenceWork
from marketbars.pipelines.daily import rules

log = logging.getLogger(__name__)


def plan(params: Mapping[str, Any], dag_run: Any) -> rules.DailyPlanXCom:
    """Route the run. Its date is the New York date of its logical date (a scheduled run's trigger
    time), or of when it was triggered for a manual run without one. The warehouse's facts (the
    watchlist, symbols without history, recent REST sessions) and the bucket's listing go into the
    rules; newcomers' history is recorded as planned and the partitions are created."""
    from airflow.sdk.exceptions import AirflowFailException

    from marketbars import settings
    from marketbars.market import calendar
    from marketbars.pipelines.common.published import exists_in, published_files
    from marketbars.warehouse import corporate_actions, ledgers, partitions, watchlist
    from marketbars.warehouse.hook import WarehouseHook

    run_date = calendar.today_in_new_york(dag_run.logical_date or dag_run.run_after)
    days = int(params["days"])
    history = settings.INITIAL_HISTORY_SESSIONS.get()
    with WarehouseHook().connect() as conn:
        active = watchlist.active_asset_classes(conn)
        new = watchlist.symbols_needing_history(conn, list(active))
        lookback = rules.sessions_ending(run_date, max(days, rules.UPGRADE_LOOKBACK_SESSIONS))
        listed = rules.sessions_ending(
            run_date, max(days, rules.UPGRADE_LOOKBACK_SESSIONS, history if new else 0)
        )
        try:
            routed = rules.plan_daily(
                run_date=run_date,
                days=days,
                history_sessions=history,
                watchlist=active,
                new_symbols=new,
                object_exists=exists_in(published_files(active.values(), listed)),
                rest_filled=ledgers.rest_sessions_since(conn, lookback[0]) if lookback else {},
                renamed_on=corporate_actions.renamed_on(conn, new),
            )
        except ValueError as exc:
            raise AirflowFailException(str(exc)) from exc
        if routed.new_symbols:
            watchlist.plan_history(conn, routed.new_symbols, routed.history[0], routed.history[-1])
        if lookback:
            first = min(routed.history[0], lookback[0]) if routed.history else lookback[0]
            partitions.ensure_partitions(conn, first, run_date)
    _log_plan(routed)
    return routed.to_xcom()


def plan_corporate_actions(dag_run: Any) -> list[ReferenceWork]:
    """The watchlist stocks' corporate-action fetches for the run's date (none on a day that is not
    a trading session: the run does nothing then)."""
    from marketbars.market import calendar
    from marketbars.pipelines.common import reference_tasks

    run_date = calendar.today_in_new_york(dag_run.logical_date or dag_run.run_after)
    if not calendar.is_session(run_date):
        log.info("%s is not a trading session: no corporate actions to refresh", run_date)
        return []
    return reference_tasks.plan_for_watchlist(run_date)


def _log_plan(routed: rules.DailyPlan) -> None:
    for note in routed.notes:
        log.warning(note)
    if routed.refresh:
        log.info(
            "run date %s: %d symbols, sessions %s..%s; new symbols %s (history from %s); "
            "%d flat-file loads, %d symbols through REST",
            routed.run_date,
            len(routed.symbols),
            routed.refresh[0],
            routed.refresh[-1],
            ", ".join(routed.new_symbols) or "none",
            routed.history[0] if routed.history else "-",
            len(routed.flatfile),
            len(routed.rest),
        )


def summarize(
    routed: Mapping[str, Any] | None, loads: Any, fills: Any, reference: Any, actions: Any
) -> dict[str, Any]:
    """Log the per-symbol summary; fail when planning failed or planned work did not happen. A new
    symbol is established once all of its history loaded or is explained; otherwise the next run
    retries it."""
    from airflow.sdk.exceptions import AirflowFailException

    from marketbars.pipelines.common import reference_tasks
    from marketbars.pipelines.common.mapping import outputs

    unfetched = reference_tasks.summarize(reference, actions)
    from marketbars.warehouse import bars, gap_ledger, watchlist
    from marketbars.warehouse.hook import WarehouseHook

    if routed is None:
        raise AirflowFailException("the run failed before loading anything (see the plan task)")
    gaps, missing, failed = rules.check_results(routed, outputs(loads, each=list), outputs(fills, each=dict))
    window = routed["history"] or routed["refresh"]
    rows: list[tuple[str, str, str, int, int]] = []
    done: list[str] = []
    if window:
        with WarehouseHook().connect() as conn:
            first, last = dt.date.fromisoformat(window[0]), dt.date.fromisoformat(window[-1])
            rows = bars.bars_by_symbol(conn, routed["symbols"], first, last)
            new = routed["new_symbols"]
            unfillable = gap_ledger.list_gaps(conn, status="unfillable", symbols=new) if gaps else []
            explained = {f"{g.symbol} {g.timeframe} {g.session}" for g in unfillable}
            done = rules.established(new, failed, gaps, explained)
            watchlist.complete_history(conn, done)
    for symbol in sorted(set(routed["new_symbols"]) - set(done)):
        log.warning("%s: its initial history is not complete yet; the next run tries again", symbol)
    for line in rules.summary_lines(rows, gaps):
        log.info(line)
    if gaps:
        log.warning("REST had no bars for %d symbol(s) on trading sessions: recorded as gaps", len(gaps))
    missing += [f"corporate actions {label}" for label in unfetched]
    if missing:
        raise AirflowFailException(f"{len(missing)} planned load(s) did not happen: {', '.join(missing)}")
    return {"symbols": len(routed["symbols"]), "gaps": sum(len(g) for g in gaps.values())}
