"""Backtest results in the warehouse: a batch's trades belong to a recorded run, and go with it."""

from __future__ import annotations

import datetime as dt

import psycopg
import pytest

from marketbars.backtest import metrics
from marketbars.backtest.runner import DetectorResult
from marketbars.backtest.trades import Trade, Trades
from marketbars.warehouse import backtests
from marketbars.warehouse.migrations import migrate

pytestmark = pytest.mark.integration
DAY = dt.date(2024, 3, 4)
US = 1_709_562_600_000_000  # 2024-03-04 14:30 UTC, the open


def _spec(run_id: str) -> backtests.RunSpec:
    return backtests.RunSpec(
        run_id, DAY, DAY, "1m", {"AAPL": "stocks", "MSFT": "stocks"}, ["breakout_bullish"], {}, {}
    )


def _result(*symbols: str) -> DetectorResult:
    """One target hit per symbol, with the per-symbol rows a batch writes beside its trades."""
    result, parts = DetectorResult("breakout_bullish"), []
    for symbol in symbols:
        row = Trade(symbol, 1, US, US + 60_000_000, US + 120_000_000, 100.0, 101.0, 10, 99.0, 102.0,
                    1.0, 10.0, 1.0, 9.0, 0.9, 0.009, 2, "target")  # fmt: skip
        parts.append(Trades.of([row]))
        result.metrics[symbol] = metrics.summarize(
            parts[-1], capital=100_000, bars=390, bars_in_position=2
        ) | {"bars": 390, "bars_in_position": 2, "skipped_signals": 0}
    result.trades = Trades.concat(parts)
    return result


def _trades(conn: psycopg.Connection) -> list[tuple[str, str]]:
    return conn.execute("SELECT run_id, symbol FROM market.backtest_trades ORDER BY 1, 2").fetchall()


def test_a_runs_trades_are_deleted_with_it_and_no_other_runs(
    conn: psycopg.Connection,
) -> None:
    migrate(conn)
    for run_id in ("old", "new"):
        backtests.start_run(conn, _spec(run_id), {}, "/tmp", DAY)
        backtests.replace_batch_results(conn, run_id, ["AAPL", "MSFT"], [_result("AAPL", "MSFT")])
    assert _trades(conn) == [("new", "AAPL"), ("new", "MSFT"), ("old", "AAPL"), ("old", "MSFT")]
    backtests.replace_batch_results(conn, "old", ["MSFT"], [_result()])  # a retry that found none
    assert _trades(conn) == [("new", "AAPL"), ("new", "MSFT"), ("old", "AAPL")]
    conn.execute("DELETE FROM market.backtest_runs WHERE run_id = 'old'")  # as weekly_cleanup prunes
    assert _trades(conn) == [("new", "AAPL"), ("new", "MSFT")]


def test_results_of_a_run_that_is_not_recorded_are_refused_whole(
    conn: psycopg.Connection,
) -> None:
    migrate(conn)
    with pytest.raises(LookupError, match=r"'ghost' is not in market\.backtest_runs"):
        backtests.replace_batch_results(conn, "ghost", ["AAPL"], [_result("AAPL")])
    assert _trades(conn) == []
