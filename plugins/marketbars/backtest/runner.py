"""One detector over a run's symbols: signals, trades and statistics, from bars already read.

This is the whole backtest of one mapped task minus the database, so the benchmark and the tests
run exactly what the DAG runs.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from marketbars.backtest import metrics
from marketbars.backtest.bars import TIMEFRAME_MINUTES, Bars
from marketbars.backtest.detectors import Detector
from marketbars.backtest.engine import Settings, Trade, simulate
from marketbars.market.calendar import CALENDAR_START, sessions_between
from marketbars.market.symbols import ALL_SYMBOLS

TIMEFRAMES = tuple(TIMEFRAME_MINUTES)


@dataclass
class DetectorResult:
    detector: str
    trades: list[Trade] = field(default_factory=list)
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


def run_detector(
    detector: Detector,
    params: Mapping[str, float],
    settings: Settings,
    batches: Iterable[Mapping[str, Bars]],
    asset_classes: Mapping[str, str],
    timeframe: str,
    start: dt.date,
) -> DetectorResult:
    """Signals from ``start`` on (earlier bars are warm-up), trades and statistics per symbol and
    over all of them. ``batches`` yields the symbols' bars a few symbols at a time, so memory holds
    one batch of bars and the trades. A symbol the detector does not apply to, or without bars in
    the range, gets a note instead of statistics."""
    result = DetectorResult(detector.name)
    seen: set[str] = set()
    bars_total = held_total = skipped_total = 0
    for batch in batches:
        for symbol in sorted(batch):
            bars = batch[symbol]
            seen.add(symbol)
            why_not = detector.applies_to(asset_classes.get(symbol, "stocks"), timeframe)
            first = bars.first_index_on_or_after(start)
            if why_not or first >= len(bars):
                result.notes[symbol] = why_not or "no bars in the range"
                continue
            signals = detector.signals(bars, params)
            outcome = simulate(
                bars, signals, detector.side, settings, start=first, intraday=detector.intraday
            )
            result.trades += outcome.trades
            result.metrics[symbol] = metrics.summarize(
                outcome.trades,
                capital=settings.capital,
                bars=outcome.bars,
                bars_in_position=outcome.bars_in_position,
            ) | {"bars": outcome.bars, "skipped_signals": outcome.skipped_signals}
            bars_total += outcome.bars
            held_total += outcome.bars_in_position
            skipped_total += outcome.skipped_signals
    for symbol in sorted(set(asset_classes) - seen):
        result.notes[symbol] = detector.applies_to(asset_classes[symbol], timeframe) or "no bars in the range"
    # Always an all-symbol row, so a detector that traded nowhere still shows (and is flagged).
    capital = settings.capital * max(len(result.metrics), 1)
    result.metrics[ALL_SYMBOLS] = metrics.summarize(
        result.trades, capital=capital, bars=bars_total, bars_in_position=held_total
    ) | {"bars": bars_total, "skipped_signals": skipped_total}
    return result
