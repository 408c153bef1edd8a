"""The trade simulator: signals on a bar's close become trades filled at the next bar's open.

Rules (one open position per symbol per detector; a signal while in a position is ignored):

- **Entry** at the open of the bar after the signal, plus slippage against us (``slippage_bps`` of
  the price; a long pays more, a short receives less). A signal on the last bar has no entry.
- **Levels** are fixed at the signal: risk per share R = ``stop_atr`` x ATR(``atr_period``) of the
  signal bar; the stop is R below the signal bar's close (above, for a short), the target
  ``target_r`` x R above it (below).
- **Size** = floor(``capital`` x ``risk_fraction`` / R), at most ``capital`` / close (no
  leverage); a signal that affords no share is skipped.
- **Exits**, checked bar by bar from the entry bar on: the stop when the bar's low reaches it (high,
  for a short), filled at the stop or at the open when the bar opened through it; else the target
  when the high reaches it, filled at the target or at a better open. When one bar reaches both,
  the stop is assumed first (the pessimistic reading of a bar). After ``max_hold_bars`` bars in the
  trade, the decision at that bar's close fills at the next bar's open. An intraday detector's
  trade that is still open closes at the session's last bar's close; a trade open when the data
  ends closes at the last close. Every exit fill pays slippage too.
- **Costs**: ``commission`` dollars per round trip, half at entry and half at exit.
- **P&L**: gross = side x (exit fill - entry fill) x shares, net = gross - commission, the
  R-multiple = net / (shares x R), the return = net / (entry fill x shares).

Signals are searched with numpy; the Python loop runs once per trade, not once per bar.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np

from marketbars.backtest.bars import Bars
from marketbars.backtest.indicators import atr

EXIT_REASONS = ("stop", "target", "max_hold", "end_of_session", "end_of_data")


@dataclass(frozen=True)
class Settings:
    """Engine parameters; the defaults are the DAG's."""

    slippage_bps: float = 10.0
    commission: float = 1.0
    capital: float = 100_000.0
    risk_fraction: float = 0.01
    atr_period: int = 14
    stop_atr: float = 1.5
    target_r: float = 2.0
    max_hold_bars: int = 20

    def __post_init__(self) -> None:
        problems = []
        if not 0 <= self.slippage_bps < 1000:
            problems.append(f"slippage_bps={self.slippage_bps} must be in [0, 1000)")
        if self.commission < 0:
            problems.append(f"commission={self.commission} must not be negative")
        if self.capital <= 0 or not 0 < self.risk_fraction <= 1:
            problems.append(
                f"capital={self.capital} must be positive and risk_fraction={self.risk_fraction} in (0, 1]"
            )
        if self.atr_period < 1 or self.max_hold_bars < 1:
            problems.append(
                f"atr_period={self.atr_period} and max_hold_bars={self.max_hold_bars} must be at least 1"
            )
        if self.stop_atr <= 0 or self.target_r <= 0:
            problems.append(f"stop_atr={self.stop_atr} and target_r={self.target_r} must be positive")
        if problems:
            raise ValueError("; ".join(problems))

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> Settings:
        """The settings among a run's params (other keys are ignored), with their types."""
        kinds = {f.name: f.type for f in fields(cls)}
        values: dict[str, Any] = {
            k: (int if kinds[k] == "int" else float)(params[k]) for k in kinds if k in params
        }
        return cls(**values)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Trade:
    symbol: str
    side: int
    signal_ts: int  # epoch microseconds of the bar starts
    entry_ts: int
    exit_ts: int
    entry_price: float  # fills, slippage included
    exit_price: float
    shares: int
    stop: float
    target: float
    risk_per_share: float
    gross_pnl: float
    commission: float
    net_pnl: float
    r_multiple: float
    return_pct: float
    bars_held: int
    exit_reason: str


@dataclass(frozen=True)
class Outcome:
    """One detector on one symbol: its trades, the bars it could trade and those it held."""

    trades: list[Trade]
    bars: int
    bars_in_position: int
    skipped_signals: int  # signals that afforded no share


def simulate(
    bars: Bars, signals: np.ndarray, side: int, settings: Settings, *, start: int, intraday: bool
) -> Outcome:
    """Trade ``signals`` (bool per bar) from bar index ``start`` on (earlier bars are warm-up)."""
    n = len(bars)
    window = max(n - start, 0)
    if n == 0 or window == 0:
        return Outcome([], 0, 0, 0)
    ranges = atr(bars.high, bars.low, bars.close, settings.atr_period)
    session_end = np.flatnonzero(bars.session_last)[np.cumsum(bars.session_first) - 1]
    candidates = np.flatnonzero(np.asarray(signals, bool)[: n - 1])
    candidates = candidates[candidates >= start]
    slip = settings.slippage_bps / 10_000.0
    trades: list[Trade] = []
    held = skipped = 0
    free_from = start  # the first bar whose close may signal a new entry
    for s in candidates.tolist():
        if s < free_from or (intraday and bars.session_last[s]):
            continue
        risk = settings.stop_atr * ranges[s]
        if not risk > 0:  # NaN while the ATR warms up
            continue
        reference = bars.close[s]
        shares = math.floor(
            min(settings.capital * settings.risk_fraction / risk, settings.capital / reference)
        )
        if shares < 1:
            skipped += 1
            continue
        stop, target = reference - side * risk, reference + side * settings.target_r * risk
        entry = s + 1
        timeout = entry + settings.max_hold_bars  # bar whose open a time exit fills at
        last = min(timeout - 1, n - 1)
        if intraday:
            last = min(last, int(session_end[entry]))
        exit_index, exit_raw, reason = _exit(bars, side, entry, last, stop, target)
        if reason is None:
            if intraday and last == session_end[entry]:
                exit_index, exit_raw, reason = last, bars.close[last], "end_of_session"
            elif timeout <= n - 1:
                exit_index, exit_raw, reason = timeout, bars.open[timeout], "max_hold"
            else:
                exit_index, exit_raw, reason = n - 1, bars.close[n - 1], "end_of_data"
        bars_held = (exit_index - entry) if reason == "max_hold" else (exit_index - entry + 1)
        entry_fill = bars.open[entry] * (1 + side * slip)
        exit_fill = exit_raw * (1 - side * slip)
        gross = side * (exit_fill - entry_fill) * shares
        net = gross - settings.commission
        trades.append(
            Trade(
                symbol=bars.symbol,
                side=side,
                signal_ts=int(bars.ts[s]),
                entry_ts=int(bars.ts[entry]),
                exit_ts=int(bars.ts[exit_index]),
                entry_price=float(entry_fill),
                exit_price=float(exit_fill),
                shares=shares,
                stop=float(stop),
                target=float(target),
                risk_per_share=float(risk),
                gross_pnl=float(gross),
                commission=settings.commission,
                net_pnl=float(net),
                r_multiple=float(net / (shares * risk)),
                return_pct=float(net / (entry_fill * shares)),
                bars_held=bars_held,
                exit_reason=reason,
            )
        )
        held += bars_held
        free_from = exit_index
    return Outcome(trades, window, held, skipped)


def _exit(
    bars: Bars, side: int, first: int, last: int, stop: float, target: float
) -> tuple[int, float, str | None]:
    """The first bar in [first, last] that reaches the stop or the target, its fill before
    slippage, and which; (-1, nan, None) when neither is reached."""
    if side > 0:
        stop_hit = bars.low[first : last + 1] <= stop
        target_hit = bars.high[first : last + 1] >= target
    else:
        stop_hit = bars.high[first : last + 1] >= stop
        target_hit = bars.low[first : last + 1] <= target
    k_stop = int(np.argmax(stop_hit)) if stop_hit.any() else None
    k_target = int(np.argmax(target_hit)) if target_hit.any() else None
    if k_stop is None and k_target is None:
        return -1, math.nan, None
    if k_target is None or (k_stop is not None and k_stop <= k_target):
        k = first + k_stop  # type: ignore[operator]
        fill = min(bars.open[k], stop) if side > 0 else max(bars.open[k], stop)
        return k, float(fill), "stop"
    k = first + k_target
    fill = max(bars.open[k], target) if side > 0 else min(bars.open[k], target)
    return k, float(fill), "target"
