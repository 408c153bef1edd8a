"""The sample market is the tests' ground truth: check that it keeps the vendor's promises."""

import datetime as dt

from marketbars.market import calendar
from marketbars.massive.flatfiles import HEADERS
from sandbox import market

NS = 1_000_000_000


def test_files_are_deterministic_byte_for_byte() -> None:
    first = market.build_file("stocks", "1m", dt.date(2024, 3, 5))
    second = market.build_file("stocks", "1m", dt.date(2024, 3, 5))
    assert first is not None and second is not None
    assert first.body == second.body and first.quarantine == second.quarantine


def test_holidays_have_index_files_but_no_stock_files() -> None:
    thanksgiving = dt.date(2024, 11, 28)
    assert market.build_file("stocks", "1m", thanksgiving) is None
    index_file = market.build_file("indices", "1m", thanksgiving)
    assert index_file is not None and {line.split(",")[0] for line in index_file.lines} == set(
        market.HOLIDAY_INDICES
    )
    assert market.build_file("indices", "1m", dt.date(2024, 11, 30)) is None  # Saturday


def test_rows_are_sorted_by_ticker_then_time_with_the_exact_header() -> None:
    sample = market.build_file("stocks", "1m", dt.date(2024, 3, 5), pathologies=[])
    assert sample is not None and sample.quarantine == {}
    keys = [(f[0], int(f[6])) for f in (line.split(",") for line in sample.lines)]
    assert keys == sorted(keys) and len(set(keys)) == len(keys)
    assert sample.header == HEADERS["stocks"]


def test_stocks_trade_extended_hours_and_indices_the_regular_session_to_the_early_close() -> None:
    day = dt.date(2024, 11, 29)  # early close 13:00; extended hours until 17:00
    hours = calendar.session_hours(day)
    stocks = market.build_file("stocks", "1m", day, pathologies=[])
    indices = market.build_file("indices", "1m", day, pathologies=[])
    assert stocks is not None and indices is not None
    stock_ts = [int(line.split(",")[6]) for line in stocks.lines if line.startswith("AAPL,")]
    index_ts = [int(line.split(",")[5]) for line in indices.lines if line.startswith("I:SPX,")]
    assert min(index_ts) == int(hours.open.timestamp()) * NS
    assert max(index_ts) == int(hours.close.timestamp()) * NS - 60 * NS
    assert len(index_ts) == 210
    new_york = [dt.datetime.fromtimestamp(t / NS, calendar.NEW_YORK).time() for t in stock_ts]
    assert (
        min(new_york) < dt.time(9, 30) and max(new_york) >= dt.time(13, 0) and max(new_york) < dt.time(17, 0)
    )


def test_volume_is_fractional_from_2026_only() -> None:
    def volumes(day: dt.date) -> list[str]:
        sample = market.build_file("stocks", "1m", day, pathologies=[])
        assert sample is not None
        return [line.split(",")[1] for line in sample.lines]

    assert all("." not in v for v in volumes(dt.date(2025, 12, 31)))
    assert any("." in v for v in volumes(dt.date(2026, 1, 2)))


def test_thin_tickers_miss_minutes_and_liquid_ones_do_not() -> None:
    sample = market.build_file("stocks", "1m", dt.date(2024, 3, 5), pathologies=[])
    assert sample is not None
    hours = calendar.session_hours(dt.date(2024, 3, 5))
    open_ns, close_ns = int(hours.open.timestamp()) * NS, int(hours.close.timestamp()) * NS
    regular: dict[str, int] = {}
    for fields in (line.split(",") for line in sample.lines):
        if open_ns <= int(fields[6]) < close_ns:
            regular[fields[0]] = regular.get(fields[0], 0) + 1
    assert regular["AAPL"] == 390  # liquidity 1.0: every regular-session minute has a bar
    assert regular.get("ZVZZT", 0) < 39  # liquidity 0.03: most minutes are missing


def test_day_bars_aggregate_the_minute_bars_at_midnight_new_york() -> None:
    day = dt.date(2024, 3, 5)
    minute = market.build_file("stocks", "1m", day, pathologies=[])
    daily = market.build_file("stocks", "1d", day, pathologies=[])
    assert minute is not None and daily is not None
    aapl = [line.split(",") for line in minute.lines if line.startswith("AAPL,")]
    [bar] = [line.split(",") for line in daily.lines if line.startswith("AAPL,")]
    assert bar[2] == aapl[0][2] and bar[3] == aapl[-1][3]  # open first, close last
    assert float(bar[4]) == max(float(r[4]) for r in aapl) and float(bar[5]) == min(float(r[5]) for r in aapl)
    assert int(bar[1]) == sum(int(r[1]) for r in aapl)
    assert int(bar[6]) == int(calendar.day_window(day)[0].timestamp()) * NS


def test_seeded_pathologies_are_listed_with_their_lines() -> None:
    sample = market.build_file(
        "stocks", "1m", dt.date(2024, 3, 5), pathologies=["conflicting_duplicate", "malformed_row"]
    )
    assert sample is not None
    assert sorted(sample.quarantine.values()) == [
        "conflicting_duplicate",
        "conflicting_duplicate",
        "malformed_row",
    ]
    [malformed] = [n for n, r in sample.quarantine.items() if r == "malformed_row"]
    assert len(sample.lines[malformed - 2].split(",")) == 7
    assert len(sample.expected_rows()) == len(sample.lines) - 3
