"""Rules of the daily watchlist backfill: which sessions, which symbols, and flat file or REST.

Routing is by fact, not by clock: a (dataset, timeframe, session) goes through its flat file when
the object exists in the bucket, and through the REST API otherwise. Pure: values in, values out.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypedDict

from marketbars.market import calendar
from marketbars.market.timeframes import SOURCE_TIMEFRAMES
from marketbars.pipelines.common.mapping import (
    MAX_MAPPED_INSTANCES,
    FlatFileWork,
    RestWork,
    batch_sessions,
)
from marketbars.pipelines.common.published import REST_ONLY, ObjectExists

MAX_DAYS = 30
# Sessions filled through REST are loaded again from their flat file once it is published, for
# this many sessions back (minute files can lag the day files and a run can be missed).
UPGRADE_LOOKBACK_SESSIONS = 10
# Flat-file work comes in at most 3 datasets x 2 timeframes x 2 selections (everyone, newcomers):
# this many batches per group keeps one run's expansion under MAX_MAPPED_INSTANCES.
BATCHES_PER_GROUP = MAX_MAPPED_INSTANCES // 12

Selection = tuple[str, ...]
RestSessions = dict[str, dict[str, list[str]]]  # symbol -> timeframe -> ISO sessions


class DailyPlanXCom(TypedDict):
    run_date: str
    refresh: list[str]
    history: list[str]
    new_symbols: list[str]
    symbols: list[str]
    flatfile: list[FlatFileWork]
    rest: list[RestWork]
    notes: list[str]


def sessions_ending(run_date: dt.date, count: int) -> list[dt.date]:
    """The last ``count`` XNYS sessions up to and including run_date; empty when run_date is not a session."""
    if count < 1 or not calendar.is_session(run_date):
        return []
    start = run_date - dt.timedelta(days=count * 2 + 14)  # enough calendar days for any run of holidays
    return calendar.sessions_between(start, run_date)[-count:]


@dataclass
class DailyPlan:
    run_date: dt.date
    refresh: list[dt.date]  # the `days` sessions every active symbol gets
    history: list[dt.date]  # the sessions a symbol new to the watchlist gets
    new_symbols: list[str]
    symbols: list[str] = field(default_factory=list)  # the active watchlist
    flatfile: list[FlatFileWork] = field(default_factory=list)  # one per (dataset, timeframe, batch)
    rest: list[RestWork] = field(default_factory=list)  # one per symbol
    notes: list[str] = field(default_factory=list)
    renamed_on: dict[str, dt.date] = field(default_factory=dict)  # newcomer -> when it got its ticker

    def to_xcom(self) -> DailyPlanXCom:
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
    object_exists: ObjectExists | None,
    rest_filled: Mapping[tuple[str, str], Iterable[dt.date]] | None = None,
    renamed_on: Mapping[str, dt.date] | None = None,
) -> DailyPlan:
    """Route every (symbol, timeframe, session) of the run to a flat file or to REST.

    watchlist: active symbol -> dataset. object_exists(dataset, timeframe, session), or None when
    no flat-file connection is configured (then everything goes through REST). rest_filled:
    (symbol, timeframe) -> recent sessions that hold REST bars or a REST gap; those whose flat file
    is now published are loaded from it. renamed_on: symbol -> the day its company took that ticker
    (``market.ticker_history``); a newcomer's history sessions before it are not asked of REST, which
    knows no bars under the new ticker then (its company's bars before are the earlier ticker's, which
    a read with follow_renames stitches in).
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
    plan = DailyPlan(run_date, refresh, history, new, sorted(watchlist), renamed_on=dict(renamed_on or {}))
    if object_exists is None:
        plan.notes.append(REST_ONLY)
    rest: RestSessions = {}
    for dataset, symbols in _by_dataset(watchlist).items():
        for timeframe in SOURCE_TIMEFRAMES:
            flat = _route(plan, dataset, timeframe, symbols, object_exists, rest)
            if object_exists is not None:
                for selection, session in _upgrades(
                    plan, dataset, timeframe, symbols, object_exists, rest_filled
                ):
                    flat.setdefault(selection, []).append(session)
            plan.flatfile += _batched(dataset, timeframe, flat)
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


def _by_dataset(watchlist: Mapping[str, str]) -> dict[str, list[str]]:
    by_dataset: dict[str, list[str]] = {}
    for symbol, dataset in sorted(watchlist.items()):
        by_dataset.setdefault(dataset, []).append(symbol)
    return dict(sorted(by_dataset.items()))


def _route(
    plan: DailyPlan,
    dataset: str,
    timeframe: str,
    symbols: list[str],
    object_exists: ObjectExists | None,
    rest: RestSessions,
) -> dict[Selection, list[dt.date]]:
    """The run's sessions of one dataset and timeframe: published ones by selection (everyone on the
    refresh sessions, newcomers on their history); the others into ``rest``, per symbol."""
    newcomers = [s for s in symbols if s in plan.new_symbols]
    flat: dict[Selection, list[dt.date]] = {}
    for session in sorted(set(plan.refresh) | (set(plan.history) if newcomers else set())):
        wanted = symbols if session in plan.refresh else newcomers
        if object_exists is not None and object_exists(dataset, timeframe, session):
            flat.setdefault(tuple(wanted), []).append(session)
        else:
            for symbol in wanted:
                if session in plan.refresh or session >= plan.renamed_on.get(symbol, session):
                    rest.setdefault(symbol, {}).setdefault(timeframe, []).append(session.isoformat())
    return flat


def _upgrades(
    plan: DailyPlan,
    dataset: str,
    timeframe: str,
    symbols: list[str],
    object_exists: ObjectExists,
    rest_filled: Mapping[tuple[str, str], Iterable[dt.date]] | None,
) -> list[tuple[Selection, dt.date]]:
    """(selection, session) of recent REST sessions outside this run whose flat file is out now."""
    upgrades: dict[dt.date, list[str]] = {}
    for symbol in symbols:
        for session in (rest_filled or {}).get((symbol, timeframe), ()):
            if session not in plan.refresh and not (symbol in plan.new_symbols and session in plan.history):
                upgrades.setdefault(session, []).append(symbol)
    return [
        (tuple(sorted(upgraded)), session)
        for session, upgraded in sorted(upgrades.items())
        if object_exists(dataset, timeframe, session)
    ]


def _batched(dataset: str, timeframe: str, flat: Mapping[Selection, list[dt.date]]) -> list[FlatFileWork]:
    return [
        {"dataset": dataset, "timeframe": timeframe, "sessions": batch, "symbols": list(selection)}
        for selection, sessions in flat.items()
        for batch in batch_sessions(sessions, max_instances=BATCHES_PER_GROUP)
    ]


def established(
    new_symbols: Iterable[str], failed: set[str], gaps: Mapping[str, list[str]], explained: set[str]
) -> list[str]:
    """The newcomers whose initial history is done: all of their work happened, and every session
    REST had no bars for is explained (``explained``: "SYMBOL TIMEFRAME SESSION" labels of gaps the
    gap DAG found unfillable). The others stay planned, and the next run tries them again."""
    return [
        symbol
        for symbol in new_symbols
        if symbol not in failed and all(f"{symbol} {gap}" in explained for gap in gaps.get(symbol, []))
    ]


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
        symbol: sorted(
            f"{tf} {day}" for tf in SOURCE_TIMEFRAMES for day in (fill.get(tf) or {}).get("gaps", [])
        )
        for symbol, fill in filled.items()
    }
    return {s: g for s, g in gaps.items() if g}, sorted(missing), failed
