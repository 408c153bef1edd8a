"""Rules of the historical bulk backfill: what a trigger may ask for, how the work is split, and what
the run achieved. Pure: values in, values out."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from marketbars.market import calendar
from marketbars.market.symbols import ASSET_CLASSES, symbol_problems
from marketbars.massive.flatfiles import check_dataset
from marketbars.pipelines.common.mapping import batch_sessions

# A bound on one run: ten years of sessions is ~2,520 files (batched to <= 500 task instances).
MAX_RANGE_DAYS = 3660


@dataclass(frozen=True)
class BackfillRequest:
    start: dt.date
    end: dt.date
    dataset: str
    timeframe: str
    symbols: tuple[str, ...]  # () = the dataset's active watchlist; ("*",) = every ticker


def _date(params: Mapping[str, Any], name: str, problems: list[str]) -> dt.date | None:
    value = params.get(name)
    if value in (None, ""):
        problems.append(f"{name} is required (YYYY-MM-DD)")
        return None
    try:
        return dt.date.fromisoformat(str(value))
    except ValueError:
        problems.append(f"{name}={value!r} is not a date in the form YYYY-MM-DD")
        return None


def parse_request(params: Mapping[str, Any], today: dt.date | None = None) -> BackfillRequest:
    """Validate a trigger's params; raise ValueError listing every problem at once."""
    problems: list[str] = []
    start = _date(params, "start_date", problems)
    end = _date(params, "end_date", problems)
    dataset = str(params.get("dataset") or "stocks")
    timeframe = str(params.get("timeframe") or "1m")
    try:
        check_dataset(dataset, timeframe)
    except ValueError as exc:
        problems.append(str(exc))
    raw_symbols = params.get("symbols") or []
    if isinstance(raw_symbols, str) or not isinstance(raw_symbols, Iterable):
        problems.append(f'symbols must be a list of tickers (or ["*"]), got {raw_symbols!r}')
        raw_symbols = []
    symbols = tuple(str(s) for s in raw_symbols)
    if dataset in ASSET_CLASSES:
        problems.extend(symbol_problems(dataset, symbols))
    today = today or calendar.today_in_new_york()
    if start and end:
        if end < start:
            problems.append(f"end_date {end} is before start_date {start}")
        if (end - start).days > MAX_RANGE_DAYS:
            problems.append(
                f"{start}..{end} spans {(end - start).days} days; one run covers at most {MAX_RANGE_DAYS} "
                "(split the range into several runs)"
            )
        if end >= today:
            problems.append(
                f"end_date {end} is not in the past: a session's flat file is published the next "
                f"day (today is {today} in New York); use the daily backfill for recent sessions"
            )
        if start < calendar.CALENDAR_START:
            problems.append(
                f"start_date {start} is before {calendar.CALENDAR_START}, where the calendar starts"
            )
    if problems:
        raise ValueError("invalid historical_bulk_backfill params: " + "; ".join(problems))
    assert start and end  # for type checkers: problems would have been raised
    return BackfillRequest(start, end, dataset, timeframe, symbols)


def plan_batches(request: BackfillRequest) -> list[list[str]]:
    """The request's trading sessions (XNYS), batched for mapping. Holidays and weekends never appear."""
    return batch_sessions(calendar.sessions_between(request.start, request.end))


@dataclass(frozen=True)
class BackfillSummary:
    lines: list[str]
    sessions_done: int
    rows_loaded: int
    rows_quarantined: int
    missing_sessions: list[str]


def summarize(
    results: Iterable[Sequence[Mapping[str, Any]]], planned: Sequence[Sequence[str]]
) -> BackfillSummary:
    """Per-session lines and totals from the load tasks' results; lists planned sessions with no result."""
    by_session: dict[str, Mapping[str, Any]] = {}
    for batch in results:
        for entry in batch or ():
            by_session[entry["session"]] = entry
    lines = [f"{'session':<10}  {'action':<8}  {'loaded':>10}  {'quarantined':>11}  {'file rows':>10}"]
    loaded = quarantined = read = 0
    for session in sorted(by_session):
        entry = by_session[session]
        loaded += entry.get("rows_loaded", 0)
        quarantined += entry.get("rows_quarantined", 0)
        read += entry.get("rows_read", 0)
        lines.append(
            f"{session:<10}  {entry['action']:<8}  {entry.get('rows_loaded', 0):>10,}  "
            f"{entry.get('rows_quarantined', 0):>11,}  {entry.get('rows_read', 0):>10,}"
        )
    missing = sorted({s for batch in planned for s in batch} - set(by_session))
    lines.append(f"{'total':<10}  {len(by_session):>3} days  {loaded:>10,}  {quarantined:>11,}  {read:>10,}")
    if missing:
        lines.append(
            f"{len(missing)} planned session(s) without a result (their load task failed; sessions of a "
            f"failed batch that did load are in market.ingest_ledger): {', '.join(missing)}"
        )
    return BackfillSummary(lines, len(by_session), loaded, quarantined, missing)
