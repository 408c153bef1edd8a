"""Rules of the daily watchlist backfill: which sessions, which symbols, and flat file or REST.

Routing is by fact, not by clock: a (dataset, timeframe, session) goes through its flat file when
the object exists in the bucket, and through the REST API otherwise.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from marketbars import flatfiles, trading_calendar
from marketbars.backfill import batch_sessions

TIMEFRAMES = ("1m", "1d")
MAX_DAYS = 30
DEFAULT_HISTORY_SESSIONS = 90
# Sessions filled through REST are loaded again from their flat file once it is published, for
# this many sessions back (minute files can lag the day files and a run can be missed).
UPGRADE_LOOKBACK_SESSIONS = 10
MAX_MAPPED_INSTANCES = 500
# Flat-file work comes in at most 3 datasets x 2 timeframes x 2 selections (everyone, newcomers):
# this many batches per group keeps one run's expansion under MAX_MAPPED_INSTANCES.
BATCHES_PER_GROUP = MAX_MAPPED_INSTANCES // 12


def sessions_ending(run_date: dt.date, count: int) -> list[dt.date]:
    """The last ``count`` XNYS sessions up to and including run_date; empty when run_date is not a session."""
    if count < 1 or not trading_calendar.is_session(run_date):
        return []
    start = run_date - dt.timedelta(days=count * 2 + 14)  # enough calendar days for any run of holidays
    return trading_calendar.sessions_between(start, run_date)[-count:]


def months_of(sessions: Iterable[dt.date]) -> list[tuple[int, int]]:
    return sorted({(d.year, d.month) for d in sessions})


@dataclass
class DailyPlan:
    run_date: dt.date
    refresh: list[dt.date]  # the `days` sessions every active symbol gets
    history: list[dt.date]  # the sessions a symbol new to the watchlist gets
    new_symbols: list[str]
    symbols: list[str] = field(default_factory=list)  # the active watchlist
    flatfile: list[dict[str, Any]] = field(default_factory=list)  # one per (dataset, timeframe, batch)
    rest: list[dict[str, Any]] = field(default_factory=list)  # one per symbol
    notes: list[str] = field(default_factory=list)

    def to_xcom(self) -> dict[str, Any]:
        return {
            "run_date": self.run_date.isoformat(),
            "refresh": [d.isoformat() for d in self.refresh],
            "history": [d.isoformat() for d in self.history],
            "new_symbols": self.new_symbols,
            "symbols": self.symbols,
            "flatfile": self.flatfile,
            "rest": self.rest,
            "notes": self.notes,
        }


def plan_daily(
    *,
    run_date: dt.date,
    days: int,
    history_sessions: int,
    watchlist: Mapping[str, str],
    new_symbols: Iterable[str],
    object_exists: Callable[[str, str, dt.date], bool] | None,
    rest_filled: Mapping[tuple[str, str], Iterable[dt.date]] | None = None,
) -> DailyPlan:
    """Route every (symbol, timeframe, session) of the run to a flat file or to REST.

    watchlist: active symbol -> dataset. object_exists(dataset, timeframe, session), or None when
    no flat-file connection is configured (then everything goes through REST). rest_filled:
    (symbol, timeframe) -> recent sessions that hold REST bars or a REST gap; those whose flat file
    is now published are loaded from it.
    """
    if not 1 <= days <= MAX_DAYS:
        raise ValueError(f"days={days} must be between 1 and {MAX_DAYS}")
    refresh = sessions_ending(run_date, days)
    if not refresh:
        return DailyPlan(
            run_date, [], [], [], notes=[f"{run_date} is not an XNYS trading session: nothing to do"]
        )
    new = sorted(set(new_symbols) & set(watchlist))
    history = sessions_ending(run_date, max(history_sessions, days)) if new else []
    plan = DailyPlan(run_date, refresh, history, new, sorted(watchlist))
    if object_exists is None:
        plan.notes.append(
            "no massive_s3 connection is configured: every session goes through the REST API "
            "(configure massive_s3 to load history from the flat files)"
        )
    rest: dict[str, dict[str, list[str]]] = {}
    by_dataset: dict[str, list[str]] = {}
    for symbol, dataset in sorted(watchlist.items()):
        by_dataset.setdefault(dataset, []).append(symbol)
    for dataset, symbols in sorted(by_dataset.items()):
        newcomers = [s for s in symbols if s in new]
        for timeframe in TIMEFRAMES:
            flat: dict[tuple[str, ...], list[dt.date]] = {}
            for session in sorted(set(refresh) | (set(history) if newcomers else set())):
                wanted = symbols if session in refresh else newcomers
                if object_exists is not None and object_exists(dataset, timeframe, session):
                    flat.setdefault(tuple(wanted), []).append(session)
                else:
                    for symbol in wanted:
                        rest.setdefault(symbol, {}).setdefault(timeframe, []).append(session.isoformat())
            if object_exists is not None:  # REST sessions of the recent past whose file is out now
                upgrades: dict[dt.date, list[str]] = {}
                for symbol in symbols:
                    for session in (rest_filled or {}).get((symbol, timeframe), ()):
                        if session not in refresh and not (symbol in new and session in history):
                            upgrades.setdefault(session, []).append(symbol)
                for session, upgraded in sorted(upgrades.items()):
                    if object_exists(dataset, timeframe, session):
                        flat.setdefault(tuple(sorted(upgraded)), []).append(session)
            for selection, sessions in flat.items():
                for batch in batch_sessions(sessions, max_instances=BATCHES_PER_GROUP):
                    plan.flatfile.append(
                        {
                            "dataset": dataset,
                            "timeframe": timeframe,
                            "sessions": batch,
                            "symbols": list(selection),
                        }
                    )
    plan.rest = [
        {"symbol": symbol, "dataset": watchlist[symbol], "sessions": sessions}
        for symbol, sessions in sorted(rest.items())
    ]
    if len(plan.rest) > MAX_MAPPED_INSTANCES:
        raise ValueError(
            f"{len(plan.rest)} symbols need REST fills, more than one run maps ({MAX_MAPPED_INSTANCES}): "
            "load their history with historical_bulk_backfill first"
        )
    return plan


def flatfile_keys_lookup(
    list_keys: Callable[[str], Iterable[str]], datasets: Iterable[str], sessions: Iterable[dt.date]
) -> Callable[[str, str, dt.date], bool]:
    """object_exists for plan_daily from one LIST per (dataset, timeframe, month), not a HEAD per session."""
    existing: set[str] = set()
    months = months_of(sessions)
    for dataset in sorted(set(datasets)):
        for timeframe in TIMEFRAMES:
            for year, month in months:
                prefix = (
                    flatfiles.object_key(dataset, timeframe, dt.date(year, month, 1)).rsplit("/", 1)[0] + "/"
                )
                existing.update(list_keys(prefix))

    def exists(dataset: str, timeframe: str, session: dt.date) -> bool:
        return flatfiles.object_key(dataset, timeframe, session) in existing

    return exists


def build_plan(
    conn: Any,
    list_keys: Callable[[str], Iterable[str]] | None,
    *,
    run_date: dt.date,
    days: int,
    history_sessions: int,
) -> DailyPlan:
    """The run's plan from the warehouse (watchlist, symbols without bars) and the bucket's listing.

    list_keys is None when no flat-file connection is configured.
    """
    from marketbars import warehouse

    warehouse.migrate(conn)
    watchlist = warehouse.active_watchlist_by_symbol(conn)
    new = warehouse.symbols_needing_history(conn, list(watchlist))
    lookback = sessions_ending(run_date, max(days, UPGRADE_LOOKBACK_SESSIONS))
    rest_filled = warehouse.rest_sessions_since(conn, lookback[0]) if lookback else {}
    object_exists = None
    if list_keys is not None:
        window = sessions_ending(
            run_date, max(days, UPGRADE_LOOKBACK_SESSIONS, history_sessions if new else 0)
        )
        object_exists = flatfile_keys_lookup(list_keys, watchlist.values(), window)
    plan = plan_daily(
        run_date=run_date,
        days=days,
        history_sessions=history_sessions,
        watchlist=watchlist,
        new_symbols=new,
        object_exists=object_exists,
        rest_filled=rest_filled,
    )
    if plan.new_symbols:
        warehouse.plan_history(conn, plan.new_symbols, plan.history[0], plan.history[-1])
    if lookback:
        first = min(plan.history[0], lookback[0]) if plan.history else lookback[0]
        warehouse.ensure_partitions(conn, first, run_date)
    return plan


def summary_lines(rows: Iterable[tuple[str, str, str, int, int]], gaps: Mapping[str, list[str]]) -> list[str]:
    """The per-symbol summary: sessions and bars by timeframe and source, and the REST gaps."""
    table: dict[str, dict[str, str]] = {}
    for symbol, timeframe, source, sessions, bars in rows:
        cell = table.setdefault(symbol, {})
        cell[timeframe] = (cell.get(timeframe, "") + f" {source} {sessions}d/{bars:,}").strip()
    lines = [f"{'symbol':<8} {'1m (source sessions/bars)':<44} {'1d':<30} gaps"]
    for symbol in sorted(set(table) | set(gaps)):
        cell = table.get(symbol, {})
        missing = ", ".join(gaps.get(symbol, [])) or "-"
        lines.append(f"{symbol:<8} {cell.get('1m', '-'):<44} {cell.get('1d', '-'):<30} {missing}")
    return lines


def check_results(
    plan: Mapping[str, Any], loads: Iterable[Iterable[Mapping[str, Any]]], fills: Iterable[Mapping[str, Any]]
) -> tuple[dict[str, list[str]], list[str], set[str]]:
    """From the mapped tasks' results: (REST gaps by symbol, what the run planned but did not get,
    the symbols that work was for)."""
    loaded = {(r["dataset"], r["timeframe"], r["session"]) for batch in loads for r in batch or ()}
    missing, failed = [], set()
    for work in plan["flatfile"]:
        for session in work["sessions"]:
            if (work["dataset"], work["timeframe"], session) not in loaded:
                missing.append(f"flat file {work['dataset']} {work['timeframe']} {session}")
                failed.update(work["symbols"])
    filled = {f["symbol"]: f for f in fills if f}
    for work in plan["rest"]:
        if work["symbol"] not in filled:
            missing.append(f"REST {work['symbol']}")
            failed.add(work["symbol"])
    gaps = {
        symbol: sorted(f"{tf} {day}" for tf in TIMEFRAMES for day in (fill.get(tf) or {}).get("gaps", []))
        for symbol, fill in filled.items()
    }
    return {s: g for s, g in gaps.items() if g}, sorted(missing), failed
