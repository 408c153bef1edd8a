import datetime as dt

import pytest

from marketbars.market import calendar
from marketbars.pipelines.gaps import rules as gaps

D = dt.date
S = gaps.Settings()


def test_expectations_follow_the_calendar() -> None:
    regular = calendar.session_hours(D(2024, 11, 27))
    early = calendar.session_hours(D(2024, 11, 29))  # day after Thanksgiving: 13:00 close
    assert gaps.expected_bars("stocks", "1m", regular) == 390
    assert gaps.expected_bars("stocks", "1m", early) == 210
    assert gaps.expected_bars("indices", "1m", early) == 210
    assert gaps.expected_bars("stocks", "1d", early) == 1
    assert gaps.expected_bars("options", "1m", regular) == 1
    with pytest.raises(ValueError, match="not an XNYS trading session"):
        calendar.session_hours(D(2024, 11, 28))  # a holiday has no cells at all


def test_a_dst_week_keeps_390_minutes_and_moves_the_open_in_utc() -> None:
    friday, monday = (
        calendar.session_hours(D(2024, 3, 8)),
        calendar.session_hours(D(2024, 3, 11)),
    )
    assert gaps.expected_bars("stocks", "1m", friday) == gaps.expected_bars("stocks", "1m", monday) == 390
    assert (friday.open.hour, monday.open.hour) == (14, 13)  # 09:30 EST, then 09:30 EDT


@pytest.mark.parametrize(
    ("asset_class", "timeframe", "found", "total", "liquid", "vendor_has_none", "state"),
    [
        ("stocks", "1m", 371, 600, True, False, "complete"),  # 95.1 %
        ("stocks", "1m", 370, 600, True, False, "partial"),  # 94.9 %
        ("stocks", "1m", 10, 12, False, False, "complete"),  # an illiquid stock trades now and then
        ("indices", "1m", 370, 370, True, False, "partial"),
        ("options", "1m", 1, 1, False, False, "complete"),
        ("stocks", "1m", 0, 0, True, False, "missing"),
        ("stocks", "1m", 0, 0, False, True, "no_trading"),
        ("stocks", "1d", 0, 0, True, False, "missing"),
        ("stocks", "1d", 1, 1, True, False, "complete"),
        ("stocks", "1m", 0, 40, True, False, "partial"),  # extended-hours bars only
    ],
)
def test_classification_thresholds(
    asset_class: str, timeframe: str, found: int, total: int, liquid: bool, vendor_has_none: bool, state: str
) -> None:
    expected = 1 if timeframe == "1d" or asset_class == "options" else 390
    assert (
        gaps.classify(
            asset_class=asset_class, timeframe=timeframe, expected=expected, found=found, total=total,
            liquid=liquid, vendor_has_none=vendor_has_none, settings=S,
        )
        == state
    )  # fmt: skip


def test_liquidity_is_judged_by_a_symbols_own_history() -> None:
    coverages = {
        "AAPL": [1.0, 0.99, 0.0, 0.98],  # a missing session does not make it illiquid
        "IWM": [0.98, 0.975, 0.97],  # median 0.975: halfway from 0.95 to 1
        "DIA": [0.9, 0.89, 0.91, 0.99],  # normally trades in 90 % of minutes: a 90 % day is not short
        "ZVZZT": [0.05, 0.0, 0.1],
        "I:SPX": [0.0],
        "O:X": [1.0],
    }
    classes = {s: "stocks" for s in ("AAPL", "IWM", "DIA", "ZVZZT")} | {"I:SPX": "indices", "O:X": "options"}
    assert gaps.liquid_symbols(coverages, classes, S) == {"AAPL", "IWM", "I:SPX"}
    strict = gaps.Settings(coverage=0.8)  # the margin follows the threshold: 0.9
    assert gaps.liquid_symbols(coverages, classes, strict) == {"AAPL", "IWM", "DIA", "I:SPX"}


def test_the_backoff_doubles_and_is_capped() -> None:
    hours = [gaps.retry_delay(n, S) / dt.timedelta(hours=1) for n in range(1, 7)]
    assert hours == [12, 24, 48, 96, 168, 168]


def test_gap_age_counts_trading_sessions_and_sets_the_alert_level() -> None:
    monday = D(2024, 11, 25)
    assert gaps.sessions_open(monday, monday) == 0
    assert gaps.sessions_open(monday, D(2024, 11, 26)) == 1
    assert gaps.sessions_open(monday, D(2024, 11, 29)) == 3  # Thanksgiving does not count
    assert [gaps.alert_level(n, S) for n in (0, 1, 2, 7, 8)] == [None, None, "warning", "warning", "critical"]


def test_replaced_files_point_at_the_cells_they_hold() -> None:
    loaded = [
        ("stocks", "1m", D(2024, 11, 25), "k1", "old", ["AAPL"]),
        ("stocks", "1m", D(2024, 11, 26), "k2", "same", ["AAPL", "MSFT"]),
        ("indices", "1d", D(2024, 11, 26), "k3", "old", None),
        ("stocks", "1d", D(2024, 11, 26), "k4", "old", None),  # no longer in the bucket: not replaced
    ]
    current = {"k1": "new", "k2": "same", "k3": "new"}
    classes = {"AAPL": "stocks", "MSFT": "stocks", "I:SPX": "indices", "I:VIX": "indices"}
    assert gaps.replaced_cells(loaded, current, classes) == {
        ("AAPL", "1m", D(2024, 11, 25)),
        ("I:SPX", "1d", D(2024, 11, 26)),
        ("I:VIX", "1d", D(2024, 11, 26)),
    }


def test_retries_are_grouped_per_file_batch_or_per_symbol_never_a_cross_product() -> None:
    days = (D(2024, 11, 25), D(2024, 11, 26), D(2024, 11, 27))
    due = {(s, "1m", d): True for s in ("AAPL", "MSFT") for d in days}
    due[("I:SPX", "1d", D(2024, 11, 27))] = True
    classes = {"AAPL": "stocks", "MSFT": "stocks", "I:SPX": "indices"}
    published = {D(2024, 11, 25), D(2024, 11, 26)}
    flat, rest, routes = gaps.route_retries(due, classes, lambda _ds, _tf, day: day in published)
    assert flat == [  # one mapped instance per file, both symbols in it
        {"dataset": "stocks", "timeframe": "1m", "sessions": [day], "symbols": ["AAPL", "MSFT"]}
        for day in ("2024-11-25", "2024-11-26")
    ]
    patch = {"patch_flatfile_sessions": True}
    assert rest == [
        {"symbol": "AAPL", "dataset": "stocks", "sessions": {"1m": ["2024-11-27"]}} | patch,
        {"symbol": "I:SPX", "dataset": "indices", "sessions": {"1d": ["2024-11-27"]}} | patch,
        {"symbol": "MSFT", "dataset": "stocks", "sessions": {"1m": ["2024-11-27"]}} | patch,
    ]
    assert (
        routes[("AAPL", "1m", D(2024, 11, 25))] == "flatfile"
        and routes[("I:SPX", "1d", D(2024, 11, 27))] == "rest"
    )
    everything_rest = gaps.route_retries(due, classes, None)
    assert everything_rest[0] == [] and len(everything_rest[1]) == 3
    due[("AAPL", "1m", D(2024, 11, 25))] = False  # its flat file was tried: REST this time
    flat, rest, routes = gaps.route_retries(due, classes, lambda _ds, _tf, day: day in published)
    assert {(w["sessions"][0], tuple(w["symbols"])) for w in flat} == {
        ("2024-11-25", ("MSFT",)),
        ("2024-11-26", ("AAPL", "MSFT")),
    }
    assert routes[("AAPL", "1m", D(2024, 11, 25))] == "rest"
    assert rest[0]["sessions"] == {"1m": ["2024-11-25", "2024-11-27"]}


def test_retries_alternate_between_the_flat_file_and_rest() -> None:
    assert [gaps.tries_flat_file(n, "missing") for n in range(5)] == [True, False, True, False, True]
    assert all(gaps.tries_flat_file(n, "replaced_file") for n in range(5))
