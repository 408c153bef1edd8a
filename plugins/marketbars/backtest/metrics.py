"""Statistics of a list of trades, with every edge case defined.

- No trades: ``trades`` is 0, the sums are 0 and every ratio or average is None.
- ``win_rate`` counts trades with net P&L > 0; a trade at exactly 0 is neither a win nor a loss.
- ``profit_factor`` = gross profit / gross loss; infinite when there are wins and no loss, None
  when there is neither.
- ``max_drawdown`` is the deepest fall of realised equity (``capital`` plus the net P&L of the
  trades closed so far, in exit order) below its running peak, in dollars; ``max_drawdown_pct``
  the deepest such fall as a fraction of its peak (the two can come from different falls).
- ``sharpe`` is the mean over the sample standard deviation of per-trade returns (not
  annualised: trades are not evenly spaced); None with fewer than 2 trades or no dispersion.
- ``exposure`` is the share of the tradable bars spent in a position.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from marketbars.backtest.trades import Trades

FIELDS = (
    "trades",
    "wins",
    "losses",
    "win_rate",
    "net_pnl",
    "gross_profit",
    "gross_loss",
    "profit_factor",
    "expectancy",
    "expectancy_r",
    "avg_win",
    "avg_loss",
    "largest_win",
    "largest_loss",
    "max_drawdown",
    "max_drawdown_pct",
    "sharpe",
    "exposure",
)


def summarize(trades: Trades, *, capital: float, bars: int, bars_in_position: int) -> dict[str, Any]:
    """Statistics of trades in any order (they are put in ``Trades.in_trade_order`` first)."""
    ordered = trades.in_trade_order()
    return summarize_columns(
        ordered.net_pnl,
        ordered.return_pct,
        ordered.r_multiple,
        capital=capital,
        bars=bars,
        bars_in_position=bars_in_position,
    )


def summarize_columns(
    pnl: np.ndarray,
    returns: np.ndarray,
    r_multiples: np.ndarray,
    *,
    capital: float,
    bars: int,
    bars_in_position: int,
) -> dict[str, Any]:
    """Statistics of trades given as columns already in ``Trades.in_trade_order``: net P&L, return and
    R-multiple. Trades combined from several batches give exactly the one-batch figures."""
    wins, losses = pnl[pnl > 0], pnl[pnl < 0]
    gross_profit, gross_loss = float(wins.sum()), float(abs(losses.sum()))
    n = len(pnl)
    if gross_loss > 0:
        profit_factor: float | None = gross_profit / gross_loss
    else:
        profit_factor = math.inf if gross_profit > 0 else None
    drawdown, drawdown_pct = _max_drawdown(pnl, capital)
    sharpe = None
    if n >= 2:
        spread = float(np.std(returns, ddof=1))
        sharpe = float(np.mean(returns)) / spread if spread > 0 else None
    return {
        "trades": n,
        "wins": len(wins),
        "losses": len(losses),
        "win_rate": len(wins) / n if n else None,
        "net_pnl": float(pnl.sum()),
        "gross_profit": gross_profit,
        "gross_loss": gross_loss,
        "profit_factor": profit_factor,
        "expectancy": float(pnl.mean()) if n else None,
        "expectancy_r": float(np.mean(r_multiples)) if n else None,
        "avg_win": float(wins.mean()) if len(wins) else None,
        "avg_loss": float(losses.mean()) if len(losses) else None,
        "largest_win": float(wins.max()) if len(wins) else None,
        "largest_loss": float(losses.min()) if len(losses) else None,
        "max_drawdown": drawdown,
        "max_drawdown_pct": drawdown_pct,
        "sharpe": sharpe,
        "exposure": bars_in_position / bars if bars else None,
    }


def equity_curve(pnl: np.ndarray, capital: float) -> np.ndarray:
    """Realised equity before the first trade and after each one."""
    return capital + np.concatenate(([0.0], np.cumsum(pnl)))


def _max_drawdown(pnl: np.ndarray, capital: float) -> tuple[float, float]:
    equity = equity_curve(pnl, capital)
    peaks = np.maximum.accumulate(equity)
    falls = peaks - equity
    with np.errstate(divide="ignore", invalid="ignore"):
        fractions = np.where(peaks > 0, falls / peaks, 0.0)
    return float(falls.max()), float(fractions.max())
