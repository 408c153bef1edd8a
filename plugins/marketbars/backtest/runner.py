"""One detector over a run's symbols: signals, trades and statistics, from bars already read.

This is the whole backtest of one mapped task minus the database, so the benchmark and the tests
run exactly what the DAG runs.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from marketbars.backtest import metrics
from marketbars.backtest.bars import TIMEFRAME_MINUTES, Bars
from marketbars.backtest.detectors import Detector
from marketbars.backtest.engine import Settings, simulate
from marketbars.backtest.trades import Trades
from marketbars.market.calendar import CALENDAR_START, sessions_between
from marketbars.market.symbols import ALL_SYMBOLS

TIMEFRAMES = tuple(TIMEFRAME_MINUTES)


@dataclass
class DetectorResult:
    detector: str
    trades: Trades = field(default_factory=Trades.empty)
    metrics: dict[str, dict[str, Any]] = field(default_factory=dict)  # symbol (and ALL) -> statistics
    notes: dict[str, str] = field(default_factory=dict)  # symbol -> why the detector did not run on it


def history_bars(detector: Detector, params: Mapping[str, float], settings: Settings) -> int:
    """Bars a signal needs behind it: the detector's own history and the ATR of the stop."""
    return max(detector.history(params), settings.atr_period) + 1


def warmup_start(start: dt.date, timeframe: str, bars_needed: int) -> dt.date:
    """The first session to read so that ``bars_needed`` regular-session bars precede ``start``
    (a full session holds 390 / minutes bars; early closes are covered by one spare session)."""
    per_session = 1 if timeframe == "1d" else max(390 // TIMEFRAME_MINUTES[timeframe], 1)
    sessions_back = math.ceil(bars_needed / per_session) + 1
    days = sessions_back * 7 // 5 + 14  # weekends; holidays may need more: widen until enough
    while True:
        first = max(start - dt.timedelta(days=days), CALENDAR_START)
        earlier = sessions_between(first, start - dt.timedelta(days=1))
        if len(earlier) >= sessions_back or first == CALENDAR_START:
            return (
                earlier[-sessions_back]
                if len(earlier) >= sessions_back
                else (earlier[0] if earlier else start)
            )
        days *= 2


def eligible(detector: Detector, asset_classes: Mapping[str, str], timeframe: str) -> list[str]:
    """The symbols the detector applies to on this timeframe (the only ones worth reading)."""
    return sorted(s for s, kind in asset_classes.items() if detector.applies_to(kind, timeframe) is None)


@dataclass(frozen=True)
class Job:
    """One detector in a batch: its parameters and the first session its warm-up reads."""

    detector: Detector
    params: Mapping[str, float]
    read_start: dt.date


def run_symbols(
    detector: Detector,
    params: Mapping[str, float],
    settings: Settings,
    bars_by_symbol: Mapping[str, Bars],
    asset_classes: Mapping[str, str],
    timeframe: str,
    start: dt.date,
) -> DetectorResult:
    """Signals from ``start`` on (earlier bars are warm-up), trades and statistics per symbol
    (no all-symbol row: ``overall`` makes it from every batch's trades). A symbol the detector does
    not apply to, or without bars in the range, gets a note instead of statistics."""
    result, parts = DetectorResult(detector.name), []
    for symbol in sorted(bars_by_symbol):
        bars = bars_by_symbol[symbol]
        why_not = detector.applies_to(asset_classes.get(symbol, "stocks"), timeframe)
        first = bars.first_index_on_or_after(start)
        if why_not or first >= len(bars):
            result.notes[symbol] = why_not or "no bars in the range"
            continue
        signals = detector.signals(bars, params)
        outcome = simulate(bars, signals, detector.side, settings, start=first, intraday=detector.intraday)
        parts.append(outcome.trades)
        result.metrics[symbol] = metrics.summarize(
            outcome.trades,
            capital=settings.capital,
            bars=outcome.bars,
            bars_in_position=outcome.bars_in_position,
        ) | {
            "bars": outcome.bars,
            "bars_in_position": outcome.bars_in_position,
            "skipped_signals": outcome.skipped_signals,
        }
    result.trades = Trades.concat(parts)
    return result


NO_COUNTS = {"symbols": 0, "bars": 0, "bars_in_position": 0, "skipped_signals": 0}  # traded nowhere


def overall_counts(per_symbol: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    """The all-symbol row's counts: sums over the symbols that traded (exact, being integers)."""
    rows = list(per_symbol)
    return {
        "symbols": len(rows),
        "bars": sum(int(r["bars"]) for r in rows),
        "bars_in_position": sum(int(r["bars_in_position"]) for r in rows),
        "skipped_signals": sum(int(r["skipped_signals"]) for r in rows),
    }


def overall(trades: Trades, counts: Mapping[str, int], settings: Settings) -> dict[str, Any]:
    """The all-symbol row: statistics of every trade against the capital of every symbol traded."""
    ordered = trades.in_trade_order()
    return overall_columns(ordered.net_pnl, ordered.return_pct, ordered.r_multiple, counts, settings)


def overall_columns(
    net_pnl: np.ndarray,
    return_pct: np.ndarray,
    r_multiple: np.ndarray,
    counts: Mapping[str, int],
    settings: Settings,
) -> dict[str, Any]:
    """``overall`` from trade columns already in ``Trades.in_trade_order`` (as the tables give them back
    after every batch wrote its own): the same figures, bit for bit."""
    capital = settings.capital * max(counts["symbols"], 1)
    return metrics.summarize_columns(
        net_pnl,
        return_pct,
        r_multiple,
        capital=capital,
        bars=counts["bars"],
        bars_in_position=counts["bars_in_position"],
    ) | {k: counts[k] for k in ("bars", "bars_in_position", "skipped_signals")}


def run_detector(
    detector: Detector,
    params: Mapping[str, float],
    settings: Settings,
    batches: Iterable[Mapping[str, Bars]],
    asset_classes: Mapping[str, str],
    timeframe: str,
    start: dt.date,
) -> DetectorResult:
    """One detector over every batch of symbols, with the all-symbol row: what one task computes
    when it holds everything (the reference the batched run must equal, and the bench's baseline)."""
    result, parts = DetectorResult(detector.name), []
    for batch in batches:
        part = run_symbols(detector, params, settings, batch, asset_classes, timeframe, start)
        parts.append(part.trades)
        result.metrics |= part.metrics
        result.notes |= part.notes
    _note_absent(result, detector, asset_classes, asset_classes, timeframe)
    result.trades = Trades.concat(parts)
    # Always an all-symbol row, so a detector that traded nowhere still shows (and is flagged).
    result.metrics[ALL_SYMBOLS] = overall(result.trades, overall_counts(result.metrics.values()), settings)
    return result


def run_batch(
    jobs: Sequence[Job],
    settings: Settings,
    bars_by_symbol: Mapping[str, Bars],
    symbols: Sequence[str],
    asset_classes: Mapping[str, str],
    timeframe: str,
    start: dt.date,
) -> list[DetectorResult]:
    """Every detector over one batch of symbols whose bars were read once (from the earliest
    warm-up): each detector sees the bars from its own ``read_start`` on, so its results are those
    of a read of its own. Per-symbol rows only; ``symbols`` without bars get a note."""
    results = []
    for job in jobs:
        own = {s: bars.since(job.read_start) for s, bars in bars_by_symbol.items()}
        result = run_symbols(job.detector, job.params, settings, own, asset_classes, timeframe, start)
        _note_absent(result, job.detector, symbols, asset_classes, timeframe)
        results.append(result)
    return results


def _note_absent(
    result: DetectorResult,
    detector: Detector,
    symbols: Iterable[str],
    asset_classes: Mapping[str, str],
    timeframe: str,
) -> None:
    """A note for each of ``symbols`` that got neither statistics nor a note (no bars were read for
    it): why the detector does not apply, or that it had no bars in the range."""
    for symbol in sorted(set(symbols) - set(result.metrics) - set(result.notes)):
        kind = asset_classes.get(symbol, "stocks")
        result.notes[symbol] = detector.applies_to(kind, timeframe) or "no bars in the range"
