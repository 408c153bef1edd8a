"""NYSE (XNYS) sessions, holidays and early closes, from the exchange_calendars library.

Every "is this a trading day" and "when does it close" question in the project is answered
here, so weekend arithmetic never creeps in.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo

NEW_YORK = ZoneInfo("America/New_York")
# Massive's flat files start in 2003; the calendar reaches back a little further.
CALENDAR_START = dt.date(2000, 1, 3)


@dataclass(frozen=True)
class SessionHours:
    """The regular session of one trading day, in UTC."""

    session: dt.date
    open: dt.datetime
    close: dt.datetime

    @property
    def early_close(self) -> bool:
        return self.close.astimezone(NEW_YORK).time() < dt.time(16, 0)

    @property
    def regular_minutes(self) -> int:
        return int((self.close - self.open).total_seconds() // 60)


@lru_cache(maxsize=1)
def _xnys() -> Any:
    import exchange_calendars

    return exchange_calendars.get_calendar("XNYS", start=CALENDAR_START.isoformat())


def _check_bounds(day: dt.date) -> None:
    calendar = _xnys()
    first, last = calendar.first_session.date(), calendar.last_session.date()
    if not first <= day <= last:
        raise ValueError(f"{day} is outside the XNYS calendar's range {first}..{last}")


def is_session(day: dt.date) -> bool:
    """True when the NYSE traded on this date (weekends, holidays and closures are False)."""
    _check_bounds(day)
    return bool(_xnys().is_session(day.isoformat()))


def sessions_between(start: dt.date, end: dt.date) -> list[dt.date]:
    """Trading sessions from start to end, both inclusive, in order."""
    if end < start:
        return []
    _check_bounds(start)
    _check_bounds(end)
    return [ts.date() for ts in _xnys().sessions_in_range(start.isoformat(), end.isoformat())]


def session_hours(session: dt.date) -> SessionHours:
    """Open and close of a trading session (early closes included)."""
    if not is_session(session):
        raise ValueError(f"{session} is not an XNYS trading session")
    calendar = _xnys()
    return SessionHours(
        session=session,
        open=calendar.session_open(session.isoformat()).to_pydatetime(),
        close=calendar.session_close(session.isoformat()).to_pydatetime(),
    )


def day_window(day: dt.date) -> tuple[dt.datetime, dt.datetime]:
    """[00:00, next 00:00) America/New_York of a date, in UTC: the span one day's file may cover.

    Daily bars are stamped at the start of this window. DST days are 23 or 25 hours long.
    """
    start = dt.datetime.combine(day, dt.time(0), NEW_YORK)
    end = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(0), NEW_YORK)
    return start.astimezone(dt.UTC), end.astimezone(dt.UTC)


def today_in_new_york(now: dt.datetime | None = None) -> dt.date:
    """The current calendar date on the exchange's clock."""
    return (now or dt.datetime.now(dt.UTC)).astimezone(NEW_YORK).date()


def session_schedule(start: dt.date, end: dt.date) -> tuple[list[dt.date], list[int], list[int]]:
    """Every session from start to end inclusive with its regular open and close, as epoch
    microseconds (UTC): what a backtest needs to place thousands of bars in their sessions at once."""
    days = sessions_between(start, end)
    if not days:
        return [], [], []
    calendar = _xnys()
    schedule = calendar.schedule.loc[days[0].isoformat() : days[-1].isoformat()]
    opens = [int(ts.value // 1000) for ts in schedule["open"]]
    closes = [int(ts.value // 1000) for ts in schedule["close"]]
    return days, opens, closes
