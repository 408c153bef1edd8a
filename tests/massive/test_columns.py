"""The vendor's columns to the project's: the validation view and BAR_SCHEMA bars."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from marketbars.market.bars import BAR_SCHEMA
from marketbars.massive.columns import bar_columns, to_bars

NS = 1_709_647_800_000_000_000  # 2024-03-05 14:30 UTC


def test_an_empty_field_and_a_nan_are_told_apart() -> None:
    table = pa.table(
        {
            "ticker": ["A", "B", "C"],
            "volume": pa.array([1.0, None, 2.0]),
            "open": pa.array([1.0, 1.0, float("nan")]),
            "close": [1.0, 1.0, 1.0],
            "high": [1.0, 1.0, 1.0],
            "low": [1.0, 1.0, 1.0],
            "window_start": pa.array([NS, NS, NS], pa.int64()),
            "transactions": pa.array([3, 4, 5], pa.int64()),
            "ordinal": pa.array([0, 1, 2], pa.int64()),
        }
    )
    view = bar_columns(table)
    assert view.null_any.tolist() == [False, True, False]
    assert view.non_numeric_any.tolist() == [False, False, True]
    assert sorted(view.counts) == ["transactions", "volume"] and view.start_ns.tolist() == [NS] * 3


def test_traded_bars_keep_volume_trades_and_a_given_vwap_and_indices_have_none() -> None:
    stock = pa.table(
        {
            "ticker": ["AAPL"],
            "volume": [1234.5],
            "open": [10.0],
            "close": [10.5],
            "high": [11.0],
            "low": [9.5],
            "window_start": pa.array([NS + 999], pa.int64()),  # nanoseconds: truncated to microseconds
            "transactions": pa.array([7], pa.int64()),
        }
    )
    bars = to_bars(stock, "stocks", vwap=pa.array([10.2]))
    assert bars.schema == BAR_SCHEMA
    assert bars.to_pylist()[0] | {"ts": None} == {
        "symbol": "AAPL", "ts": None, "open": 10.0, "high": 11.0, "low": 9.5, "close": 10.5,
        "volume": 1234.5, "vwap": 10.2, "trades": 7,
    }  # fmt: skip
    assert bars["ts"].cast(pa.int64()).to_pylist() == [NS // 1000]
    assert to_bars(stock, "stocks")["vwap"].null_count == 1  # flat files carry no vwap
    index = to_bars(stock.drop_columns(["volume", "transactions"]), "indices", vwap=pa.array([1.0]))
    assert [index[c].null_count for c in ("volume", "vwap", "trades")] == [1, 1, 1]
    assert np.isclose(index["close"][0].as_py(), 10.5)
