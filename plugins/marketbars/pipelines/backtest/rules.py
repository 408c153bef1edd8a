"""Rules of backtest_run: what a trigger may ask for, which symbols it covers, and how much history
each detector reads before its window. Pure: values in, values out."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from marketbars.backtest import detectors, runner, search
from marketbars.backtest.bars import TIMEFRAME_MINUTES
from marketbars.backtest.detectors import Detector
from marketbars.backtest.engine import Settings
from marketbars.market.calendar import sessions_between
from marketbars.market.corporate_actions import ADJUSTMENTS
from marketbars.market.symbols import asset_class_of, symbol_problems
from marketbars.pipelines.common.mapping import MAX_MAPPED_INSTANCES

BACKTEST_CLASSES = ("stocks", "indices")  # no detector trades option contracts


@dataclass(frozen=True)
class BacktestRequest:
    start: dt.date
    end: dt.date
    timeframe: str
    detectors: list[Detector]
    overrides: dict[str, dict[str, float]]  # detector -> parameter -> value
    settings: Settings
    adjustment: str = "splits"  # market.bars_adjusted's adjust
    follow_renames: bool = True


def window(params: Mapping[str, Any], run_date: dt.date) -> tuple[dt.date, dt.date]:
    """start_date..end_date; an empty end is the run's date, an empty start ``lookback_days``
    before the end (what a run triggered by fresh data uses)."""
    end = dt.date.fromisoformat(params["end_date"]) if params.get("end_date") else run_date
    if params.get("start_date"):
        start = dt.date.fromisoformat(params["start_date"])
    else:
        start = end - dt.timedelta(days=int(params["lookback_days"]) - 1)
    return start, end


def parse_request(params: Mapping[str, Any], run_date: dt.date) -> BacktestRequest:
    """Validate a trigger's params; ValueError names the first problem."""
    start, end = window(params, run_date)
    if start > end:
        raise ValueError(f"start_date {start} is after end_date {end}")
    if params["timeframe"] not in runner.TIMEFRAMES:
        raise ValueError(f"timeframe {params['timeframe']!r} is not one of {', '.join(runner.TIMEFRAMES)}")
    chosen = detectors.resolve(list(params.get("detectors") or []))
    overrides = {name: dict(values) for name, values in dict(params.get("detector_params") or {}).items()}
    strangers = sorted(set(overrides) - {d.name for d in chosen})
    if strangers:
        raise ValueError(f"detector_params names detectors not in this run: {', '.join(strangers)}")
    for d in chosen:
        d.parameters(overrides.get(d.name))  # unknown parameter names fail here, by name
    adjustment = params.get("adjustment", "splits")
    if adjustment not in ADJUSTMENTS:
        raise ValueError(f"adjustment {adjustment!r} is not one of {', '.join(ADJUSTMENTS)}")
    return BacktestRequest(
        start,
        end,
        params["timeframe"],
        chosen,
        overrides,
        Settings.from_params(dict(params)),
        adjustment,
        bool(params.get("follow_renames", True)),
    )


def asset_classes(requested: list[str], watchlist: Mapping[str, str]) -> dict[str, str]:
    """The run's symbols -> asset class: the requested ones, or the active watchlist's stocks and
    indices. ValueError when there are none, a ticker is not in its form, or an option contract is
    among them."""
    problems = symbol_problems(None, requested, every_ticker=False)
    if problems:
        raise ValueError("invalid symbols: " + "; ".join(problems))
    if requested:
        classes = {s: watchlist.get(s) or asset_class_of(s) for s in requested}
    else:
        classes = {s: kind for s, kind in watchlist.items() if kind in BACKTEST_CLASSES}
    options = sorted(s for s, kind in classes.items() if kind not in BACKTEST_CLASSES)
    if options:
        raise ValueError(f"no detector trades option contracts: {', '.join(options)}")
    if not classes:
        raise ValueError("no symbols (the watchlist has no active stock or index)")
    return classes


def read_start(
    start: dt.date,
    timeframe: str,
    detector: Detector,
    overrides: Mapping[str, float] | None,
    settings: Settings,
) -> dt.date:
    """The first session a detector's read needs: its window's start, less the warm-up its signals
    and the stop's ATR need."""
    params = detector.parameters(overrides)
    return runner.warmup_start(start, timeframe, runner.history_bars(detector, params, settings))


def folder_name(run_id: str) -> str:
    """A run id as a folder name (run ids carry colons and plus signs)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", run_id)


def action_lines(actions: Mapping[str, Sequence[Mapping[str, Any]]]) -> list[str]:
    """The log's account of what a run's read applies and ignores."""
    lines = [
        f"applies {a['kind']} {a['ticker']} {a['day']}: {a['detail']}"
        + ("" if a["price_factor"] is not None else " (adjusts nothing)")
        for a in actions["applied"]
    ]
    lines += [
        f"reads {r['earlier_ticker']}'s bars before {r['until']} as {r['symbol']}" for r in actions["renames"]
    ]
    ignored = (
        f"ignores quarantined {q['kind']} {q['ticker']} {q['day'] or '(undated)'}: {q['reason']}"
        for q in actions["quarantined"]
    )
    lines += dict.fromkeys(ignored)  # a conflicting pair's records share one reason: one line
    return lines or ["no corporate action applies in the window"]


# A batch's bars in memory at once: its Arrow read, the engine's columns and one detector's
# indicators at a time stay well under 1 GB per task.
MAX_BARS_PER_BATCH = 2_000_000


def bars_per_symbol(first: dt.date, last: dt.date, timeframe: str) -> int:
    """At most how many regular-session bars one symbol has in first..last (full sessions)."""
    sessions = len(sessions_between(first, last))
    minutes = TIMEFRAME_MINUTES[timeframe]
    return sessions * (390 // minutes if minutes else 1)


def symbol_batches(
    symbols: Sequence[str],
    bars_each: int,
    *,
    budget: int | None = None,
    max_batches: int = MAX_MAPPED_INSTANCES,
) -> list[list[str]]:
    """The symbols (sorted) in batches of at most ``budget`` bars (default ``MAX_BARS_PER_BATCH``),
    sized by bars rather than by symbol count; never more than ``max_batches`` (the mapping's
    limit), however long the window."""
    ordered = sorted(symbols)
    if not ordered:
        return []
    per_batch = max((budget or MAX_BARS_PER_BATCH) // max(bars_each, 1), 1)
    per_batch = max(per_batch, -(-len(ordered) // max_batches))
    return [ordered[i : i + per_batch] for i in range(0, len(ordered), per_batch)]


def batch_label(symbols: Sequence[str]) -> str:
    """How the grid names a batch: its first and last ticker and its size."""
    if len(symbols) == 1:
        return symbols[0]
    return f"{symbols[0]}..{symbols[-1]} ({len(symbols)} symbols)"


def shown(symbols: Sequence[str], limit: int = 20) -> str:
    """Symbols for a log line: all of a few, the first ``limit`` of a universe and how many more."""
    if len(symbols) <= limit:
        return ", ".join(symbols)
    return f"{', '.join(symbols[:limit])} and {len(symbols) - limit} more"


SEARCH_FOLDS = 3  # walk-forward folds when a search does not say
SEARCH_POINTS = 100  # points a search may have when it does not say (at most search.MAX_POINTS)


@dataclass(frozen=True)
class SearchRequest:
    detector: str
    points: list[dict[str, float]]
    segments: list[search.Segment]


def parse_search(spec: Mapping[str, Any] | None, request: BacktestRequest) -> SearchRequest | None:
    """The ``search`` param, checked: None when empty. ValueError names the problem."""
    if not spec:
        return None
    unknown = sorted(set(spec) - {"detector", "parameters", "sample", "seed", "folds", "max_points"})
    if unknown:
        raise ValueError(f"search has no field {', '.join(unknown)}")
    name = spec.get("detector")
    chosen = {d.name: d for d in request.detectors}
    if name not in chosen:
        raise ValueError(f"search detector {name!r} is not one of this run's detectors")
    points = search.points(
        chosen[name],
        dict(spec.get("parameters") or {}),
        sample=int(spec.get("sample", 0)),
        seed=int(spec.get("seed", 0)),
        max_points=int(spec.get("max_points", SEARCH_POINTS)),
    )
    segments = search.segments(
        sessions_between(request.start, request.end), int(spec.get("folds", SEARCH_FOLDS))
    )
    return SearchRequest(name, points, segments)


SEARCH_POINTS_PER_TASK = 10  # a task reads its batch once for this many points at least


def search_work(
    points: int, batches: Sequence[Sequence[str]], limit: int = MAX_MAPPED_INSTANCES
) -> list[dict[str, Any]]:
    """(points x batches) in chunks of points, at most ``limit`` instances: each reads a batch once
    and evaluates its chunk of points on it (``SEARCH_POINTS_PER_TASK`` at least, so the read and
    the task's start are spread over several points)."""
    if not points or not batches:
        return []
    per_instance = max(-(-points * len(batches) // limit), min(points, SEARCH_POINTS_PER_TASK))
    return [
        {"symbols": list(batch), "points": list(range(lo, min(lo + per_instance, points)))}
        for batch in batches
        for lo in range(0, points, per_instance)
    ]


def search_label(work: Mapping[str, Any]) -> str:
    """How the grid names a search instance: its points and its batch."""
    chosen = work["points"]
    points = f"point {chosen[0]}" if len(chosen) == 1 else f"points {chosen[0]}..{chosen[-1]}"
    return f"{points} x {batch_label(work['symbols'])}"


def tally_text(tally: Mapping[str, Any]) -> str:
    """A search tally for a log line: trades, win rate, expectancy in R."""
    if not tally["trades"]:
        return "no trades"
    return f"{tally['trades']} trades, {tally['win_rate']:.0%} won, {tally['expectancy_r']:.3f} R a trade"


def search_line(row: Mapping[str, Any]) -> str:
    """One point of the search's ranking for the log."""
    shown = ", ".join(f"{k}={v:g}" for k, v in sorted(row["parameters"].items()))
    return (
        f"{shown}: out of sample {tally_text(row['out_of_sample'])}; in sample {tally_text(row['in_sample'])}"
    )
