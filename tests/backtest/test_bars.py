"""One symbol's bars placed in their sessions (regular session only)."""

from __future__ import annotations

import datetime as dt

import numpy as np

from marketbars.backtest import bars as bars_module
from marketbars.market.calendar import session_hours


def test_bars_keep_the_regular_session_only() -> None:
    hours = session_hours(dt.date(2024, 11, 29))  # early close at 13:00
    start = int(hours.open.timestamp() * 1e6) - 30 * 60_000_000
    ts = start + np.arange(300) * 60_000_000  # 09:00..13:59
    ones = np.ones(300)
    bars = bars_module.build("T", "1m", ts, ones, ones, ones, ones, ones)
    assert len(bars) == 210 and bars.minutes[0] == 0 and bars.session_last[-1]
    assert bars.minutes_to_close[-1] == 0 and bars.minutes_to_close[0] == 209
