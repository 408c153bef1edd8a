"""The row rules on their own, on the project's column view (no vendor format involved)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from marketbars.market import validation
from marketbars.market.validation import BarColumns

MINUTE = validation.NANOS_PER_MINUTE
OPEN_NS = 1_709_647_800_000_000_000  # 2024-03-05 14:30 UTC, 09:30 New York
DAY = (OPEN_NS - 14 * 60 * MINUTE - 30 * MINUTE, OPEN_NS - 14 * 60 * MINUTE - 30 * MINUTE + 24 * 60 * MINUTE)


def columns(
    rows: list[tuple], *, null: list[bool] | None = None, text: list[bool] | None = None
) -> BarColumns:
    """rows: (symbol, start_ns, open, high, low, close, volume)."""
    symbol, start, o, h, lo, c, v = zip(*rows, strict=True)
    n = len(rows)

    def as_float(values: tuple[float, ...]) -> np.ndarray:
        return np.asarray(values, dtype=np.float64)

    return BarColumns(
        symbol=pa.chunked_array([pa.array(symbol, pa.string())]),
        start_ns=np.asarray(start, dtype=np.int64),
        prices={"open": as_float(o), "high": as_float(h), "low": as_float(lo), "close": as_float(c)},
        counts={"volume": as_float(v)},
        null_any=np.asarray(null or [False] * n),
        non_numeric_any=np.asarray(text or [False] * n),
    )


def reasons(cols: BarColumns, asset_class: str = "stocks", timeframe: str = "1m") -> list[str]:
    codes = validation.reason_codes(
        cols, asset_class=asset_class, timeframe=timeframe, window_start_ns=DAY[0], window_end_ns=DAY[1]
    )
    return [validation.REASON_NAMES.get(int(code), "valid") for code in codes]


def test_a_row_gets_the_first_rule_it_breaks_in_the_documented_order() -> None:
    good = ("AAPL", OPEN_NS, 10.0, 11.0, 9.0, 10.5, 100.0)
    rows = [
        good,
        ("AAPL", OPEN_NS + MINUTE, 10.0, 9.0, 11.0, 10.5, -1.0),  # high < low and negative volume
        ("AAPL", OPEN_NS + 2 * MINUTE, 0.0, 11.0, 9.0, 10.5, -1.0),  # non-positive price first
        ("AAPL", OPEN_NS + 3 * MINUTE + 30_000_000_000, 10.0, 11.0, 9.0, 12.0, 1.0),  # misaligned first
        ("AAPL", DAY[1], 10.0, 11.0, 9.0, 10.0, 1.0),  # the next day's first minute
        ("I:SPX", OPEN_NS + 4 * MINUTE, 10.0, 11.0, 9.0, 10.0, 1.0),  # an index ticker in a stock batch
        ("AAPL", OPEN_NS + 5 * MINUTE, 10.0, 11.0, 9.0, 12.0, 1.0),  # close above high
    ]
    assert reasons(columns(rows)) == [
        "valid",
        "high_below_low",
        "non_positive_price",
        "misaligned_timestamp",
        "timestamp_outside_session",
        "invalid_ticker",
        "price_outside_range",
    ]
    flagged = columns([good, good, good], null=[False, True, True], text=[False, False, True])
    assert reasons(flagged) == ["valid", "empty_field", "non_numeric"]


def test_exact_copies_keep_one_and_disagreeing_copies_keep_none() -> None:
    bar = ("MSFT", OPEN_NS, 10.0, 11.0, 9.0, 10.5, 100.0)
    other = ("MSFT", OPEN_NS + MINUTE, 10.0, 11.0, 9.0, 10.5, 100.0)
    disagreeing = ("MSFT", OPEN_NS + MINUTE, 10.0, 11.0, 9.0, 10.0, 100.0)
    assert reasons(columns([bar, bar, other])) == ["valid", "duplicate_row", "valid"]
    assert reasons(columns([bar, other, disagreeing])) == [
        "valid",
        "conflicting_duplicate",
        "conflicting_duplicate",
    ]


def test_daily_bars_must_be_stamped_at_the_days_start() -> None:
    at_midnight = ("AAPL", DAY[0], 10.0, 11.0, 9.0, 10.5, 100.0)
    at_open = ("AAPL", OPEN_NS, 10.0, 11.0, 9.0, 10.5, 100.0)
    assert reasons(columns([at_midnight, at_open]), timeframe="1d") == ["valid", "misaligned_timestamp"]


def test_vendor_order_and_the_key_range_ignore_rows_that_broke_a_rule() -> None:
    ordered = columns(
        [
            ("AAPL", OPEN_NS, 10.0, 11.0, 9.0, 10.5, 1.0),
            ("AAPL", OPEN_NS + MINUTE, 0.0, 11.0, 9.0, 10.5, 1.0),  # rejected: out of order does not matter
            ("MSFT", OPEN_NS - MINUTE, 10.0, 11.0, 9.0, 10.5, 1.0),
        ]
    )
    codes = validation.reason_codes(
        ordered, asset_class="stocks", timeframe="1m", window_start_ns=DAY[0], window_end_ns=DAY[1]
    )
    assert validation.in_vendor_order(ordered, codes)
    assert validation.key_range(ordered, codes) == (("AAPL", OPEN_NS), ("MSFT", OPEN_NS - MINUTE))
    backwards = columns(
        [("MSFT", OPEN_NS, 10.0, 11.0, 9.0, 10.5, 1.0), ("AAPL", OPEN_NS, 10.0, 11.0, 9.0, 10.5, 1.0)]
    )
    codes = validation.reason_codes(
        backwards, asset_class="stocks", timeframe="1m", window_start_ns=DAY[0], window_end_ns=DAY[1]
    )
    assert not validation.in_vendor_order(backwards, codes)
