"""The trade statistics: their edge cases defined, and the figures by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from marketbars.backtest import metrics
from marketbars.backtest.engine import Settings, simulate
from marketbars.backtest.trades import Trades
from tests.backtest.sample_bars import daily

# ATR(3) of three bars 99..101 is 2.00; with stop_atr 1 the risk R is 2.00 a share.
FLAT = [(100, 101, 99, 100, 1e6)] * 3
SETTINGS = Settings(atr_period=3, stop_atr=1, target_r=2, max_hold_bars=3, slippage_bps=10, commission=1)


def signal_at(bars, *indices):
    signals = np.zeros(len(bars), bool)
    signals[list(indices)] = True
    return signals


def only_trade(bars, signals, side=1, settings=SETTINGS, intraday_=False):
    outcome = simulate(bars, signals, side, settings, start=0, intraday=intraday_)
    assert len(outcome.trades) == 1
    return outcome.trades[0], outcome


def test_metrics_edge_cases_are_defined() -> None:
    empty = metrics.summarize(Trades.empty(), capital=1000, bars=10, bars_in_position=0)
    assert empty["trades"] == 0 and empty["net_pnl"] == 0 and empty["max_drawdown"] == 0
    assert all(empty[k] is None for k in ("win_rate", "profit_factor", "expectancy", "sharpe", "avg_win"))
    assert empty["exposure"] == 0

    winners = daily([*FLAT, (100.5, 102, 99.5, 101, 1e6), (101, 104.5, 100.5, 104, 1e6)])
    trade, _ = only_trade(winners, signal_at(winners, 2))
    all_wins = metrics.summarize(Trades.of([trade, trade]), capital=100_000, bars=5, bars_in_position=4)
    assert all_wins["profit_factor"] == math.inf and all_wins["losses"] == 0 and all_wins["avg_loss"] is None
    assert all_wins["sharpe"] is None  # no dispersion
    assert all_wins["win_rate"] == 1 and all_wins["max_drawdown"] == 0


def test_metrics_by_hand() -> None:
    bars = daily([*FLAT, (100.5, 102, 99.5, 101, 1e6), (101, 104.5, 100.5, 104, 1e6)])
    base, _ = only_trade(bars, signal_at(bars, 2))
    pnls = [300.0, -100.0, -200.0, 500.0]
    trades = [
        base._replace(exit_ts=base.exit_ts + i, net_pnl=p, r_multiple=p / 1000, return_pct=p / 50_000)
        for i, p in enumerate(pnls)
    ]
    m = metrics.summarize(Trades.of(trades), capital=10_000, bars=100, bars_in_position=25)
    assert (m["trades"], m["wins"], m["losses"], m["win_rate"]) == (4, 2, 2, 0.5)
    assert m["profit_factor"] == pytest.approx(800 / 300)
    assert m["expectancy"] == pytest.approx(125) and m["expectancy_r"] == pytest.approx(0.125)
    assert (m["avg_win"], m["avg_loss"], m["largest_win"], m["largest_loss"]) == (400, -150, 500, -200)
    # Equity 10000, 10300, 10200, 10000, 10500: the deepest fall is 300 from the 10300 peak.
    assert m["max_drawdown"] == pytest.approx(300) and m["max_drawdown_pct"] == pytest.approx(300 / 10_300)
    returns = np.array(pnls) / 50_000
    assert m["sharpe"] == pytest.approx(returns.mean() / returns.std(ddof=1))
    assert m["exposure"] == 0.25
