"""Derived bars against an independent recomputation (tests/helpers.reference_rollups)."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa
import pytest

from marketbars.market import rollups
from marketbars.market.bars import BAR_SCHEMA
from marketbars.market.calendar import NEW_YORK, session_hours
from tests.helpers import reference_rollups


def _synthetic(session: dt.date, seed: int) -> list[tuple]:
    """Extended-hours minute bars of a stock with REST vwaps on some minutes, a flat-file-like stock
    with fractional volume, and an index (no volume, vwap or trades); a fifth of minutes missing."""
    rng = np.random.default_rng(seed)
    first = dt.datetime.combine(session, dt.time(4), NEW_YORK).astimezone(dt.UTC)
    bars = []
    for symbol in ("AAPL", "BRK.B", "I:SPX"):
        price = 100.0
        for minute in range(16 * 60):
            if rng.random() < 0.2:
                continue
            price = round(max(1.0, price + rng.normal(0, 0.2)), 4)
            close = round(max(0.5, price + rng.normal(0, 0.1)), 4)
            high, low = (
                round(max(price, close) + rng.random() / 10, 4),
                round(min(price, close) - rng.random() / 10, 4),
            )
            ts = first + dt.timedelta(minutes=minute)
            if symbol == "I:SPX":
                volume = trades = vwap = None
            else:
                volume = round(float(rng.integers(1, 5000)) + rng.random(), 4 if symbol == "BRK.B" else 0)
                trades = int(rng.integers(1, 60))
                vwap = round(rng.uniform(low, high), 4) if symbol == "AAPL" and rng.random() < 0.6 else None
            bars.append((symbol, ts, price, high, low, close, volume, trades, vwap))
    return bars


def _table(bars: list[tuple]) -> pa.Table:
    columns = list(zip(*bars, strict=True))
    names = ["symbol", "ts", "open", "high", "low", "close", "volume", "trades", "vwap"]
    return pa.table(dict(zip(names, columns, strict=True))).select(BAR_SCHEMA.names).cast(BAR_SCHEMA)


def _as_tuples(table: pa.Table) -> set[tuple]:
    return {
        (
            r["symbol"],
            r["ts"],
            r["open"],
            r["high"],
            r["low"],
            r["close"],
            r["volume"],
            r["trades"],
            r["vwap"],
        )
        for r in table.to_pylist()
    }


@pytest.mark.parametrize(
    ("session", "close"),
    [
        (dt.date(2024, 3, 5), dt.time(16)),  # a plain session
        (dt.date(2025, 12, 24), dt.time(13)),  # early close: the last 1h bar is 12:30-13:00
        (dt.date(2025, 3, 10), dt.time(16)),  # the first session of daylight saving time
        (dt.date(2025, 11, 3), dt.time(16)),  # the first session after it ends
    ],
)
def test_rollups_match_an_independent_recomputation_exactly(
    session: dt.date, close: dt.time, monkeypatch: pytest.MonkeyPatch
) -> None:
    bars = _synthetic(session, seed=session.toordinal())
    shuffled = [bars[i] for i in np.random.default_rng(1).permutation(len(bars))]
    expected = reference_rollups(bars, session, close)
    for order in (bars, shuffled):
        derived = rollups.roll_up(_table(order), session_hours(session))
        assert {tf: _as_tuples(t) for tf, t in derived.items()} == expected
    monkeypatch.setattr(rollups, "SLICE_ROWS", 100)  # many slices, cut only between symbols
    derived = rollups.roll_up(_table(shuffled), session_hours(session))
    assert {tf: _as_tuples(t) for tf, t in derived.items()} == expected
    # 3 symbols x (09:30, 13:30), or only 09:30 when the session closes at 13:00
    assert len(expected["4h"]) == (6 if close == dt.time(16) else 3)


def test_buckets_start_at_the_open_and_the_last_is_cut_at_an_early_close() -> None:
    session = dt.date(2025, 12, 24)
    hours = session_hours(session)
    minutes = [hours.open + dt.timedelta(minutes=m) for m in range(-30, 240)]  # 09:00..13:30 ET
    table = _table([("X", ts, 10.0, 11.0, 9.0, 10.5, 100.0, 2, None) for ts in minutes])
    derived = rollups.roll_up(table, hours)
    hourly = derived["1h"].to_pylist()
    assert [r["ts"].astimezone(NEW_YORK).time() for r in hourly] == [
        dt.time(9, 30), dt.time(10, 30), dt.time(11, 30), dt.time(12, 30)
    ]  # fmt: skip
    assert hourly[-1]["volume"] == 30 * 100.0  # 12:30-13:00: the close cuts it at 30 minutes
    assert derived["5m"].num_rows == 210 // 5
    assert sum(r["trades"] for r in derived["4h"].to_pylist()) == 2 * 210  # pre-open and post-close left out


def test_vwap_weighs_only_minutes_that_have_one_and_is_null_without() -> None:
    hours = session_hours(dt.date(2024, 3, 5))
    t0 = hours.open
    table = _table(
        [
            ("X", t0, 10.0, 10.0, 10.0, 10.0, 100.0, 1, 10.0),
            ("X", t0 + dt.timedelta(minutes=1), 12.0, 12.0, 12.0, 12.0, 300.0, 1, 12.0),
            ("X", t0 + dt.timedelta(minutes=2), 50.0, 50.0, 50.0, 50.0, 1000.0, 1, None),  # flat-file minute
            ("Y", t0, 10.0, 10.0, 10.0, 10.0, 100.0, 1, None),
        ]
    )
    by_symbol = {r["symbol"]: r for r in rollups.roll_up(table, hours)["5m"].to_pylist()}
    assert by_symbol["X"]["vwap"] == (10.0 * 100 + 12.0 * 300) / 400
    assert by_symbol["X"]["volume"] == 1400.0
    assert by_symbol["Y"]["vwap"] is None


def test_slices_never_split_a_symbol() -> None:
    codes = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2, 3])
    assert rollups._symbol_slices(codes, 4) == [(0, 5), (5, 9), (9, 10)]
    assert rollups._symbol_slices(codes, 100) == [(0, 10)]
    assert rollups._symbol_slices(np.zeros(7, dtype=np.int64), 2) == [(0, 7)]


def test_no_regular_session_minutes_give_no_bars() -> None:
    hours = session_hours(dt.date(2024, 3, 5))
    table = _table([("X", hours.close, 1.0, 1.0, 1.0, 1.0, 1.0, 1, None)])  # 16:00 is after the close
    assert all(t.num_rows == 0 for t in rollups.roll_up(table, hours).values())
    assert all(t.num_rows == 0 for t in rollups.roll_up(BAR_SCHEMA.empty_table(), hours).values())


def test_zero_volume_gives_no_vwap_and_missing_volumes_are_skipped() -> None:
    hours = session_hours(dt.date(2024, 3, 5))
    t0 = hours.open
    table = _table(
        [
            ("Z", t0, 10.0, 10.0, 10.0, 10.0, 0.0, 0, 10.0),  # a REST minute with no volume
            ("Z", t0 + dt.timedelta(minutes=1), 11.0, 11.0, 11.0, 11.0, 0.0, 0, 11.0),
            ("P", t0, 10.0, 10.0, 10.0, 10.0, None, None, None),
            ("P", t0 + dt.timedelta(minutes=1), 11.0, 11.0, 11.0, 11.0, 5.5, 2, None),
        ]
    )
    bars = rollups.roll_up(table, hours)["5m"]
    assert (
        _as_tuples(bars)
        == reference_rollups(
            [
                tuple(r.values())
                for r in table.select(
                    ["symbol", "ts", "open", "high", "low", "close", "volume", "trades", "vwap"]
                ).to_pylist()
            ],
            hours.session,
        )["5m"]
    )
    by_symbol = {r["symbol"]: r for r in bars.to_pylist()}
    assert (by_symbol["Z"]["volume"], by_symbol["Z"]["vwap"]) == (0.0, None)
    assert (by_symbol["P"]["volume"], by_symbol["P"]["trades"]) == (5.5, 2)
