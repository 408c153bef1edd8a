"""Corporate actions in the DAGs: the planning task bodies (which tickers, which window), the mapped
``corporate_actions`` fetch, and the run's summary of them. XCom carries tickers, dates and counts."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from typing import Any

from marketbars import settings
from marketbars.operators.corporate_actions import CorporateActionsOperator
from marketbars.pipelines.common import reference_rules
from marketbars.pipelines.common.reference_rules import ReferenceWork

log = logging.getLogger(__name__)
REFERENCE_CLASS = "stocks"  # the vendor's splits, dividends and ticker events are for stocks
# The grid's name of a batch: its first and last tickers and its window.
BATCH_LABEL = (
    "{{ task.symbols[0] }}{{ '..' ~ task.symbols[-1] if task.symbols | length > 1 else '' }}"
    " {{ task.first or 'all' }}..{{ task.last or '' }}"
)


def plan_for_watchlist(run_date: dt.date) -> list[ReferenceWork]:
    """The active watchlist's stocks: a recent window (``reference_recent_days`` before the run's
    date, open-ended), the whole history for tickers never fetched whole; rename checks when due."""
    from marketbars.warehouse import watchlist
    from marketbars.warehouse.hook import WarehouseHook

    recent = run_date - dt.timedelta(days=settings.REFERENCE_RECENT_DAYS.get())
    with WarehouseHook().connect() as conn:
        stocks = watchlist.active_symbols(conn, REFERENCE_CLASS)
        work = _plan(conn, stocks, recent)
    whole = sorted(s for w in work if w["first"] is None for s in w["symbols"])
    log.info(
        "corporate actions of %d watchlist stock(s) from %s on; whole history for %s",
        len(stocks),
        recent,
        ", ".join(whole) or "none",
    )
    return work


def plan_for_backfill(
    dataset: str, requested: Sequence[str], symbols: Sequence[str], start: dt.date
) -> list[ReferenceWork]:
    """A backfill's stocks from its start date on (later actions adjust its bars too); nothing for
    every ticker (``["*"]``, no per-ticker query could cover it) or another dataset, said in the log."""
    from marketbars.market.symbols import selects_all
    from marketbars.warehouse.hook import WarehouseHook

    if dataset != REFERENCE_CLASS:
        log.info("corporate actions: none for %s (the vendor's reference data covers stocks)", dataset)
        return []
    if selects_all(requested):
        log.warning(
            'corporate actions: skipped for ["*"] (every ticker in the files); the watchlist daily run '
            "fetches its stocks' actions, or backfill named tickers to fetch theirs"
        )
        return []
    if not _api_configured():
        log.warning(
            "corporate actions: skipped, no massive_api connection is configured (the bars load from "
            "the flat files; configure massive_api to fetch splits, dividends and ticker changes)"
        )
        return []
    with WarehouseHook().connect() as conn:
        work = _plan(conn, list(symbols), start)
    log.info("corporate actions of %d stock(s) from %s on", len(symbols), start)
    return work


def _api_configured() -> bool:
    from airflow.sdk.exceptions import AirflowNotFoundException

    from marketbars.massive.rest_hook import MassiveRestHook

    try:
        MassiveRestHook.get_connection(MassiveRestHook.default_conn_name)
    except AirflowNotFoundException:
        return False
    return True


def _plan(conn: Any, symbols: list[str], first: dt.date) -> list[ReferenceWork]:
    from marketbars.warehouse import corporate_actions

    whole = set(corporate_actions.without_full_history(conn, "split", symbols))
    whole |= set(corporate_actions.without_full_history(conn, "dividend", symbols))
    due = corporate_actions.events_due(conn, symbols, settings.TICKER_EVENTS_MAX_AGE_DAYS.get())
    return reference_rules.plan_work(symbols, whole_history=whole, events_due=due, first=first)


def fetch_corporate_actions(work: Any, *, follow_watchlist_renames: bool) -> Any:
    """``corporate_actions`` mapped per batch of tickers, in pool massive_api (the aggregates' rate)."""
    return CorporateActionsOperator.partial(
        task_id="corporate_actions",
        pool="massive_api",
        follow_watchlist_renames=follow_watchlist_renames,
        requests_per_minute=settings.REST_REQUESTS_PER_MINUTE.template,
        map_index_template=BATCH_LABEL,
    ).expand_kwargs(work)


def summarize(planned: Sequence[ReferenceWork] | None, results: Any) -> list[str]:
    """Log what the run's fetches did; the labels of planned batches without a result."""
    from marketbars.pipelines.common.mapping import outputs

    if planned is None:
        return ["corporate actions (planning failed)"]
    done = outputs(results, each=dict)
    for line in reference_rules.summary_lines(planned, done):
        log.info(line)
    return reference_rules.missing(planned, done)
