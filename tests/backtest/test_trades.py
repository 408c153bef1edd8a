"""Trades as columns: rows in and out unchanged, the statistics' order, the stored types."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa

from marketbars.backtest.trades import EXIT_REASONS, Trade, Trades, repeated, to_arrow

US = 1_709_562_600_000_000  # 2024-03-04 14:30 UTC


def _trade(symbol: str, entry: int, exit_: int, pnl: float, reason: str = "stop") -> Trade:
    return Trade(symbol, -1, US + entry - 60_000_000, US + entry, US + exit_, 10.0, 9.5, 7, 10.5, 9.0,
                 0.5, 3.5, 1.0, pnl, pnl / 3.5, pnl / 70, 3, reason)  # fmt: skip


def test_rows_go_through_the_columns_unchanged() -> None:
    rows = [_trade("MSFT", 0, 180_000_000, 2.5, "target"), _trade("AAPL", 60_000_000, 120_000_000, -1.0)]
    trades = Trades.of(rows)
    assert trades.rows() == rows and len(trades) == 2 and trades[1] == rows[1]
    assert Trades.concat([Trades.empty(), trades, Trades.empty()]) == trades
    assert Trades.of([]).rows() == [] and Trades.empty() == Trades.of([])


def test_trade_order_is_exit_time_then_symbol_then_entry_time() -> None:
    rows = [
        _trade("MSFT", 0, 300, 1.0),
        _trade("AAPL", 100, 300, 2.0),  # same exit as MSFT: the symbol decides
        _trade("AAPL", 50, 300, 3.0),  # same exit and symbol: the entry decides
        _trade("ZZZ", 0, 200, 4.0),  # first out
    ]
    ordered = Trades.of(rows).in_trade_order()
    assert ordered.net_pnl.tolist() == [4.0, 3.0, 2.0, 1.0]


def test_arrow_columns_are_typed_as_the_table_stores_them() -> None:
    trades = Trades.of([_trade("AAPL", 0, 120_000_000, 2.0, reason) for reason in EXIT_REASONS])
    columns = to_arrow(trades)
    assert list(columns) == list(Trade._fields)
    assert columns["exit_reason"].to_pylist() == list(EXIT_REASONS)
    assert columns["entry_ts"].type == pa.timestamp("us", tz="UTC")
    assert columns["entry_ts"][0].as_py() == dt.datetime(2024, 3, 4, 14, 30, tzinfo=dt.UTC)
    assert (columns["side"].type, columns["bars_held"].type) == (pa.int16(), pa.int32())
    assert np.array_equal(columns["net_pnl"].to_numpy(), trades.net_pnl)
    assert repeated("breakout_bullish", 3).to_pylist() == ["breakout_bullish"] * 3
