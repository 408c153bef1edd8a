"""One symbol's bars placed in their sessions (regular session only), and split adjustment."""

from __future__ import annotations

import datetime as dt

import numpy as np

from marketbars.backtest import bars as bars_module
from marketbars.market.calendar import session_hours
from tests.backtest.sample_bars import daily


def test_bars_keep_the_regular_session_only() -> None:
    hours = session_hours(dt.date(2024, 11, 29))  # early close at 13:00
    start = int(hours.open.timestamp() * 1e6) - 30 * 60_000_000
    ts = start + np.arange(300) * 60_000_000  # 09:00..13:59
    ones = np.ones(300)
    bars = bars_module.build("T", "1m", ts, ones, ones, ones, ones, ones)
    assert len(bars) == 210 and bars.minutes[0] == 0 and bars.session_last[-1]
    assert bars.minutes_to_close[-1] == 0 and bars.minutes_to_close[0] == 209


def test_split_adjustment_puts_earlier_bars_on_todays_terms() -> None:
    bars = daily([(400, 404, 396, 400, 1000)] * 2 + [(100, 101, 99, 100, 4000)] * 2)
    split = bars_module.Split("T", bars_module.dt.date.fromordinal(int(bars.session[2])), 1, 4)
    adjusted = bars_module.adjust(bars, [split])
    assert adjusted.close.tolist() == [100, 100, 100, 100]
    assert adjusted.volume.tolist() == [4000] * 4
    assert bars_module.adjust(bars, []) is bars
