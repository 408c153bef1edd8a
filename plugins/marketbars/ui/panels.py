"""The Market data view's panels, each the answer of one API endpoint, read from the warehouse with the
pipelines' own rules: a cell's completeness is the gap DAG's (``pipelines.gaps``), a search's verdict
is backtest_run's (``pipelines.backtest.tasks.search_verdict``). Nothing here writes."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from marketbars.market import calendar
from marketbars.market.symbols import ALL_SYMBOLS
from marketbars.market.timeframes import SOURCE_TIMEFRAMES, TIMEFRAMES
from marketbars.warehouse.connection import Connection

# A cell's state on the heatmap: the gap DAG's classification of its bars, or its gap's status when
# the gap DAG has one open or gave up on it (and the bars are still short).
STATES = ("complete", "partial", "missing", "no_trading", "open_gap", "unfillable")
SHORT = ("missing", "partial")  # the states a gap's status may stand in for
DATASETS = ("stocks", "indices", "options")
MAX_COVERAGE_CELLS = 40_000  # symbols x sessions on one heatmap: a year of 150 symbols


class BadChoice(Exception):
    """A request the view cannot answer as asked (an unknown dataset, too wide a window): a 400."""


class UnknownRun(Exception):
    """No backtest run of that id: a 404."""


def coverage(conn: Connection, dataset: str, timeframe: str, first: dt.date, last: dt.date) -> dict[str, Any]:
    """The active watchlist's ``dataset`` symbols x the sessions first..last: each cell's state, bars
    found against expected, and for a cell with a gap its attempts, last error and next retry."""
    from marketbars.pipelines.gaps import tasks as gap_tasks
    from marketbars.warehouse import gap_ledger, watchlist

    _check_choice("dataset", dataset, DATASETS)
    _check_choice("timeframe", timeframe, SOURCE_TIMEFRAMES)
    sessions = calendar.sessions_between(first, last)
    symbols = watchlist.active_symbols(conn, dataset)
    if len(symbols) * len(sessions) > MAX_COVERAGE_CELLS:
        raise BadChoice(
            f"{len(symbols)} symbols x {len(sessions)} sessions is over {MAX_COVERAGE_CELLS:,} cells:"
            " choose a shorter window"
        )
    settings = gap_tasks.settings_from_variables(fallback_to_defaults=True)
    cells = gap_tasks.evaluate(
        conn, {s: dataset for s in symbols}, sessions, settings, [timeframe], recount=False
    )
    gaps = {
        g.key: g
        for status in ("open", "unfillable")
        for g in gap_ledger.list_gaps(conn, status=status, symbols=symbols)
        if g.timeframe == timeframe and first <= g.session <= last
    }
    index = {day: i for i, day in enumerate(sessions)}
    states = [[0] * len(sessions) for _ in symbols]
    found = [[0] * len(sessions) for _ in symbols]
    expected = [[0] * len(sessions) for _ in symbols]
    row_of = {symbol: i for i, symbol in enumerate(symbols)}
    for cell in cells:
        row, col = row_of[cell.symbol], index[cell.session]
        gap = gaps.get(cell.key)
        state = cell.state  # no_trading stays so: the gap DAG closes such a gap as unfillable
        if gap is not None and state in SHORT:
            state = "open_gap" if gap.status == "open" else "unfillable"
        states[row][col] = STATES.index(state)
        found[row][col], expected[row][col] = cell.found, cell.expected
    return {
        "dataset": dataset,
        "timeframe": timeframe,
        "first": first.isoformat(),
        "last": last.isoformat(),
        "states": list(STATES),
        "symbols": symbols,
        "sessions": [d.isoformat() for d in sessions],
        "state": states,
        "found": found,
        "expected": expected,
        "gaps": [
            {
                "symbol": g.symbol,
                "session": g.session.isoformat(),
                "status": g.status,
                "kind": g.kind,
                "attempts": g.attempts,
                "last_error": g.last_error,
                "next_retry_at": g.next_retry_at.isoformat(),
            }
            for g in sorted(gaps.values(), key=lambda g: (g.symbol, g.session))
        ],
        "counts": {name: sum(row.count(i) for row in states) for i, name in enumerate(STATES)},
    }


def freshness(conn: Connection, now: dt.datetime) -> dict[str, Any]:
    """Per dataset and timeframe: the latest session with bars against the latest session that has
    closed, and which active symbols are behind it."""
    from marketbars.warehouse import status, watchlist

    expected = latest_closed_session(now)
    classes = watchlist.active_asset_classes(conn)
    latest = status.latest_bars(conn, sorted(classes))
    rows = []
    for dataset in DATASETS:
        symbols = sorted(s for s, kind in classes.items() if kind == dataset)
        if not symbols:
            continue
        for timeframe in TIMEFRAMES:
            sessions = {s: _session_of(latest[(s, timeframe)]) for s in symbols if (s, timeframe) in latest}
            behind = sorted(s for s in symbols if sessions.get(s) is None or sessions[s] < expected)
            newest = max(sessions.values(), default=None)
            rows.append(
                {
                    "dataset": dataset,
                    "timeframe": timeframe,
                    "latest_session": newest.isoformat() if newest else None,
                    "expected_session": expected.isoformat(),
                    "symbols": len(symbols),
                    "behind": behind,
                    "fresh": not behind,
                }
            )
    return {"as_of": now.isoformat(), "expected_session": expected.isoformat(), "rows": rows}


def latest_closed_session(now: dt.datetime) -> dt.date:
    """The last session whose regular close is at or before ``now``: the newest one a complete
    warehouse holds."""
    today = calendar.today_in_new_york(now)
    for day in reversed(calendar.sessions_between(today - dt.timedelta(days=14), today)):
        if calendar.session_hours(day).close <= now:
            return day
    raise ValueError(f"no session closed in the two weeks before {now}")  # the calendar says otherwise


def _session_of(ts: dt.datetime) -> dt.date:
    """The New York date of a bar (a daily bar is stamped at its session's 00:00 New York)."""
    return ts.astimezone(calendar.NEW_YORK).date()


def ledgers(conn: Connection, now: dt.datetime, *, limit: int = 50) -> dict[str, Any]:
    """Gaps open and given up (with why and the next retry), the latest file loads, the rows
    quarantined in the last 90 days by reason (a sample row each) and the corporate actions held
    back."""
    from marketbars.warehouse import gap_ledger, status

    gaps = sorted(
        (g for status in ("open", "unfillable") for g in gap_ledger.list_gaps(conn, status=status)),
        key=lambda g: (g.session, g.symbol, g.timeframe),
    )
    return {
        "gaps": [
            {
                "symbol": g.symbol,
                "timeframe": g.timeframe,
                "session": g.session.isoformat(),
                "status": g.status,
                "kind": g.kind,
                "expected": g.expected,
                "found": g.found,
                "attempts": g.attempts,
                "last_error": g.last_error,
                "first_seen": g.first_seen.isoformat(),
                "next_retry_at": g.next_retry_at.isoformat() if g.status == "open" else None,
            }
            for g in gaps
        ],
        "file_loads": status.recent_file_loads(conn, limit),
        "quarantine": status.quarantine_reasons(conn, now - dt.timedelta(days=90)),
        "corporate_actions_held_back": status.held_back_actions(conn, limit),
    }


def backtests(conn: Connection, *, limit: int = 20) -> dict[str, Any]:
    """The latest backtest runs: window, status, and whether a later load made them stale."""
    from marketbars.warehouse import status

    return {"runs": status.backtest_runs(conn, limit)}


def backtest(conn: Connection, run_id: str) -> dict[str, Any]:
    """One run: its detectors ranked (by expectancy in R, then profit factor; flagged against the
    default thresholds), every detector's equity curve, and its search's out-of-sample table."""
    from marketbars.backtest import report
    from marketbars.pipelines.backtest.tasks import search_verdict
    from marketbars.warehouse import backtests as stored
    from marketbars.warehouse import status

    run = status.backtest_run(conn, run_id)
    if run is None:
        raise UnknownRun(f"no backtest run {run_id!r}")
    rows = stored.metrics_of(conn, run_id, ALL_SYMBOLS)
    curves = status.equity_curves(conn, run_id)
    return {
        "run": run,
        "ranking": report.rank(rows, report.Thresholds()),
        "equity": [
            {
                "detector": c["detector"],
                "trades": c["trades"],
                "times": c["times"],
                "returns": c["returns"],
            }
            for c in curves
        ],
        "search": search_verdict(conn, run_id),
    }


def _check_choice(name: str, value: str, choices: Sequence[str]) -> None:
    if value not in choices:
        raise BadChoice(f"{name} must be one of {', '.join(choices)}, not {value!r}")
