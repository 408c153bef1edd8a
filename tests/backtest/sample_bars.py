"""Bars for the backtest tests, on real XNYS sessions: daily, or intraday from each session's open."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import numpy as np

from marketbars.backtest import bars as bars_module
from marketbars.backtest.bars import Bars
from marketbars.market.calendar import day_window, session_schedule

FIRST = dt.date(2024, 1, 2)
Row = tuple[float, float, float, float, float]  # open, high, low, close, volume


def sessions(count: int, first: dt.date = FIRST) -> list[dt.date]:
    days, _, _ = session_schedule(first, first + dt.timedelta(days=count * 3 // 2 + 10))
    assert len(days) >= count
    return days[:count]


def daily(rows: Sequence[Row], symbol: str = "T", first: dt.date = FIRST) -> Bars:
    days = sessions(len(rows), first)
    ts = [int(day_window(d)[0].timestamp() * 1_000_000) for d in days]
    o, h, lo, c, v = (np.array(column, dtype=float) for column in zip(*rows, strict=True))
    return bars_module.build(symbol, "1d", ts, o, h, lo, c, v)


def intraday(per_session: Sequence[Sequence[Row]], minutes: int = 5, symbol: str = "T") -> Bars:
    """Session i gets per_session[i] as consecutive bars from its open."""
    _, opens, _ = session_schedule(FIRST, FIRST + dt.timedelta(days=len(per_session) * 2 + 10))
    ts, rows = [], []
    for open_us, session_rows in zip(opens, per_session, strict=False):
        ts += [open_us + i * minutes * 60_000_000 for i in range(len(session_rows))]
        rows += list(session_rows)
    o, h, lo, c, v = (np.array(column, dtype=float) for column in zip(*rows, strict=True))
    return bars_module.build(symbol, f"{minutes}m" if minutes < 60 else "1h", ts, o, h, lo, c, v)


def random_walk(count: int, seed: int = 7, start: float = 100.0) -> list[Row]:
    rng = np.random.default_rng(seed)
    closes = start * np.exp(np.cumsum(rng.normal(0, 0.004, count)))
    opens = np.concatenate(([start], closes[:-1])) * (1 + rng.normal(0, 0.0005, count))
    highs = np.maximum(opens, closes) * (1 + rng.uniform(0, 0.003, count))
    lows = np.minimum(opens, closes) * (1 - rng.uniform(0, 0.003, count))
    volumes = rng.integers(1_000, 50_000, count).astype(float)
    return list(zip(opens, highs, lows, closes, volumes, strict=True))
