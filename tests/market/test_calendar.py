import datetime as dt

import pytest

from marketbars.market import calendar as cal

D = dt.date


@pytest.mark.parametrize(
    ("day", "expected"),
    [
        (D(2024, 11, 27), True),
        (D(2024, 11, 28), False),  # Thanksgiving
        (D(2024, 11, 30), False),  # Saturday
        (D(2025, 1, 9), False),  # national day of mourning (President Carter): an unscheduled closure
        (D(2025, 12, 25), False),  # Christmas
        (D(2025, 12, 26), True),
        (D(2026, 1, 1), False),  # New Year's Day
        (D(2024, 7, 5), True),
    ],
)
def test_is_session(day: dt.date, expected: bool) -> None:
    assert cal.is_session(day) is expected


def test_sessions_between_skips_weekends_and_holidays() -> None:
    assert cal.sessions_between(D(2024, 11, 25), D(2024, 12, 2)) == [
        D(2024, 11, 25), D(2024, 11, 26), D(2024, 11, 27), D(2024, 11, 29), D(2024, 12, 2),
    ]  # fmt: skip
    assert cal.sessions_between(D(2024, 12, 2), D(2024, 11, 25)) == []
    assert cal.sessions_between(D(2024, 11, 28), D(2024, 11, 28)) == []


def test_early_close_day_has_210_regular_minutes() -> None:
    hours = cal.session_hours(D(2024, 11, 29))
    assert hours.early_close
    assert hours.regular_minutes == 210
    assert hours.close.astimezone(cal.NEW_YORK).time() == dt.time(13, 0)


def test_regular_day_opens_0930_new_york_in_summer_and_winter() -> None:
    summer, winter = cal.session_hours(D(2024, 7, 1)), cal.session_hours(D(2024, 12, 2))
    assert (summer.open.hour, winter.open.hour) == (13, 14)  # UTC: EDT is UTC-4, EST is UTC-5
    assert summer.regular_minutes == winter.regular_minutes == 390
    assert not summer.early_close


def test_day_window_follows_dst() -> None:
    spring_start, spring_end = cal.day_window(D(2025, 3, 9))  # clocks go forward: 23 hours
    fall_start, fall_end = cal.day_window(D(2025, 11, 2))  # clocks go back: 25 hours
    assert spring_end - spring_start == dt.timedelta(hours=23)
    assert fall_end - fall_start == dt.timedelta(hours=25)
    start, _ = cal.day_window(D(2025, 3, 10))
    assert start == dt.datetime(2025, 3, 10, 4, 0, tzinfo=dt.UTC)  # 00:00 EDT


def test_session_hours_rejects_a_holiday() -> None:
    with pytest.raises(ValueError, match="2024-11-28 is not an XNYS trading session"):
        cal.session_hours(D(2024, 11, 28))


def test_dates_outside_the_calendar_are_an_error() -> None:
    with pytest.raises(ValueError, match="outside the XNYS calendar"):
        cal.is_session(D(1999, 6, 1))


def test_today_in_new_york_uses_the_exchange_clock() -> None:
    just_after_midnight_utc = dt.datetime(2024, 3, 6, 2, 0, tzinfo=dt.UTC)  # still 5 March in New York
    assert cal.today_in_new_york(just_after_midnight_utc) == D(2024, 3, 5)
