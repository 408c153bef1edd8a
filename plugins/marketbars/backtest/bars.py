"""One symbol's bars as numpy columns, placed in their trading sessions.

Backtests trade the regular session only: intraday bars outside it (pre- and post-market 1m bars)
are dropped here, so every detector and the simulator see the same bars. Daily bars are one per
session.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, fields

import numpy as np

from marketbars.market.calendar import session_schedule
from marketbars.market.timeframes import DAILY, INTRADAY_MINUTES

_DAY_US = 86_400_000_000
TIMEFRAME_MINUTES = {**INTRADAY_MINUTES, DAILY: 0}  # 0: a daily bar is its whole session


@dataclass(frozen=True)
class Bars:
    """One symbol's regular-session bars in time order (all arrays the same length).

    ``session`` is the session's ordinal date; ``session_first`` / ``session_last`` mark a session's
    first and last bar; ``minutes`` is the bar's start in minutes after the session's open (0 for
    daily bars) and ``minutes_to_close`` the minutes from the bar's end to the close.
    """

    symbol: str
    timeframe: str
    ts: np.ndarray  # int64 epoch microseconds, bar start
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray  # NaN where the source has none (indices)
    session: np.ndarray  # int64 date ordinal
    session_first: np.ndarray  # bool
    session_last: np.ndarray  # bool
    minutes: np.ndarray  # float64
    minutes_to_close: np.ndarray  # float64

    def __len__(self) -> int:
        return len(self.ts)

    @property
    def intraday(self) -> bool:
        return self.timeframe != "1d"

    def first_index_on_or_after(self, day: dt.date) -> int:
        """Index of the first bar of ``day``'s session or later (warm-up bars come before it)."""
        return int(np.searchsorted(self.session, day.toordinal(), side="left"))

    def since(self, day: dt.date) -> Bars:
        """The bars from ``day``'s session on, as views (no copy): one read serves detectors that
        warm up over different spans, each seeing exactly the bars its own read would."""
        first = self.first_index_on_or_after(day)
        if first == 0:
            return self
        return self._slice(first, len(self))

    def until(self, day: dt.date) -> Bars:
        """The bars up to and including ``day``'s session, as views: a walk-forward segment's bars,
        with nothing after it in memory."""
        end = int(np.searchsorted(self.session, day.toordinal(), side="right"))
        return self if end == len(self) else self._slice(0, end)

    def _slice(self, lo: int, hi: int) -> Bars:
        columns = {
            f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("symbol", "timeframe")
        }
        return Bars(self.symbol, self.timeframe, **{name: column[lo:hi] for name, column in columns.items()})


def build(
    symbol: str,
    timeframe: str,
    ts: np.ndarray,
    open_: np.ndarray,
    high: np.ndarray,
    low: np.ndarray,
    close: np.ndarray,
    volume: np.ndarray,
) -> Bars:
    """Place bars (sorted by ``ts``, epoch microseconds) in their XNYS sessions and keep the regular
    session's. Daily bars are stamped 00:00 America/New_York of their session."""
    ts = np.asarray(ts, dtype=np.int64)
    if len(ts) and np.any(np.diff(ts) <= 0):
        raise ValueError(f"{symbol} {timeframe}: bars must be sorted by time without duplicates")
    columns = [np.asarray(a, dtype=np.float64) for a in (open_, high, low, close, volume)]
    if not len(ts):
        return _empty(symbol, timeframe)
    first = dt.datetime.fromtimestamp(ts[0] / 1e6, dt.UTC).date() - dt.timedelta(days=1)
    last = dt.datetime.fromtimestamp(ts[-1] / 1e6, dt.UTC).date() + dt.timedelta(days=1)
    days, opens, closes = session_schedule(first, last)
    opens_us, closes_us = np.asarray(opens, np.int64), np.asarray(closes, np.int64)
    ordinals = np.asarray([d.toordinal() for d in days], np.int64)
    if timeframe == "1d":
        # 00:00 New York of the session precedes its open by 9.5 hours, well within a day.
        index = np.searchsorted(opens_us, ts, side="left")
        keep = (index < len(opens_us)) & (opens_us[np.minimum(index, len(opens_us) - 1)] - ts < _DAY_US)
        index = index[keep]
        minutes = np.zeros(int(keep.sum()))
        to_close = minutes.copy()
    else:
        width_us = TIMEFRAME_MINUTES[timeframe] * 60_000_000
        index = np.searchsorted(opens_us, ts, side="right") - 1
        safe = np.maximum(index, 0)
        keep = (index >= 0) & (ts < closes_us[safe])
        index = index[keep]
        minutes = (ts[keep] - opens_us[index]) / 60e6
        to_close = np.maximum(closes_us[index] - (ts[keep] + width_us), 0) / 60e6
    session = ordinals[index]
    boundary = np.diff(session) != 0
    session_first = np.concatenate(([True], boundary))
    session_last = np.concatenate((boundary, [True]))
    o, h, lo, c, v = (a[keep] for a in columns)
    return Bars(
        symbol, timeframe, ts[keep], o, h, lo, c, v, session, session_first, session_last, minutes, to_close
    )


def _empty(symbol: str, timeframe: str) -> Bars:
    f, i, b = np.empty(0), np.empty(0, np.int64), np.empty(0, bool)
    return Bars(symbol, timeframe, i, f, f, f, f, f, i, b, b, f, f)
