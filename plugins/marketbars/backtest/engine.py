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

Every candidate signal's levels, size and exit are found with numpy at once (the exits in slices
of candidates, so long holds stay in bounded memory), and so are the trades' prices and P&L, as
columns (``Trades``); Python only follows the chain of trades taken, one position at a time.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np

from marketbars.backtest.bars import Bars
from marketbars.backtest.indicators import atr
from marketbars.backtest.trades import EXIT_REASONS, Trades


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
class Outcome:
    """One detector on one symbol: its trades, the bars it could trade and those it held."""

    trades: Trades
    bars: int
    bars_in_position: int
    skipped_signals: int  # signals that afforded no share


_STOP, _TARGET, _MAX_HOLD, _END_OF_SESSION, _END_OF_DATA = range(len(EXIT_REASONS))


def simulate(
    bars: Bars, signals: np.ndarray, side: int, settings: Settings, *, start: int, intraday: bool
) -> Outcome:
    """Trade ``signals`` (bool per bar) from bar index ``start`` on (earlier bars are warm-up)."""
    n = len(bars)
    window = max(n - start, 0)
    if n == 0 or window == 0:
        return Outcome(Trades.empty(), 0, 0, 0)
    ranges = atr(bars.high, bars.low, bars.close, settings.atr_period)
    session_end = np.flatnonzero(bars.session_last)[np.cumsum(bars.session_first) - 1]
    candidates = np.flatnonzero(np.asarray(signals, bool)[: n - 1])
    candidates = candidates[candidates >= start]
    # Every candidate's levels, size and exit, as if it were taken (vectorised); then only which
    # candidates are taken (one position at a time) is left to decide.
    risks = settings.stop_atr * ranges[candidates]
    references = bars.close[candidates]
    with np.errstate(divide="ignore", invalid="ignore"):
        sizes = np.floor(
            np.minimum(settings.capital * settings.risk_fraction / risks, settings.capital / references)
        )
    # No entry into the next session, nor while the ATR warms up (NaN risk).
    enterable = ~bars.session_last[candidates] if intraday else np.ones(len(candidates), bool)
    with np.errstate(invalid="ignore"):
        enterable &= risks > 0
        affordable = enterable & (sizes >= 1)
    entries = candidates + 1
    timeouts = entries + settings.max_hold_bars  # bars whose open a time exit fills at
    lasts = np.minimum(timeouts - 1, n - 1)
    if intraday:
        lasts = np.minimum(lasts, session_end[entries])
    stops = references - side * risks
    targets = references + side * settings.target_r * risks
    exits, fills, reasons = _exits(bars, side, entries, lasts, stops, targets)
    # Neither level reached: the session's end, the time-out or the end of the data.
    unresolved = exits < 0
    at_session_end = unresolved & (session_end[entries] == lasts) if intraday else np.zeros_like(unresolved)
    timed_out = unresolved & ~at_session_end & (timeouts <= n - 1)
    data_end = unresolved & ~at_session_end & ~timed_out
    exits = np.where(at_session_end, lasts, np.where(timed_out, timeouts, np.where(data_end, n - 1, exits)))
    fills = np.where(
        at_session_end | data_end, bars.close[exits], np.where(timed_out, bars.open[exits], fills)
    )
    reasons = np.where(
        at_session_end,
        _END_OF_SESSION,
        np.where(timed_out, _MAX_HOLD, np.where(data_end, _END_OF_DATA, reasons)),
    )
    taken = _one_at_a_time(candidates[affordable], exits[affordable])
    held_from = np.flatnonzero(affordable)[taken]
    skipped = _reached(candidates[enterable & ~affordable], candidates[held_from], exits[held_from])
    trades = _trades(
        bars, side, settings, held_from, entries, exits, fills, reasons, risks, sizes, stops, targets
    )
    return Outcome(trades, window, int(trades.bars_held.sum()), skipped)


def _one_at_a_time(starts: np.ndarray, exits: np.ndarray) -> np.ndarray:
    """Which of the candidates (bar indices ``starts``, ascending, each exiting at ``exits``) are taken
    when a position must close before the next opens: the first one, then the first whose signal bar
    is at or after the taken one's exit bar, and so on. Only the chain is walked in Python."""
    following = np.searchsorted(starts, exits, side="left").tolist()
    taken, i, count = [], 0, len(starts)
    while i < count:
        taken.append(i)
        i = following[i]
    return np.asarray(taken, np.int64)


def _reached(signals: np.ndarray, starts: np.ndarray, exits: np.ndarray) -> int:
    """How many of ``signals`` (bar indices) came while no position was open: those a trade taken
    at ``starts`` (ascending) and closed at ``exits`` did not cover."""
    if not len(starts):
        return len(signals)
    before = np.searchsorted(starts, signals, side="left") - 1
    return int(np.count_nonzero((before < 0) | (signals >= exits[np.maximum(before, 0)])))


def _trades(
    bars: Bars,
    side: int,
    settings: Settings,
    taken: np.ndarray,
    entries: np.ndarray,
    exits: np.ndarray,
    fills: np.ndarray,
    reasons: np.ndarray,
    risks: np.ndarray,
    sizes: np.ndarray,
    stops: np.ndarray,
    targets: np.ndarray,
) -> Trades:
    """The taken candidates' trades, their prices and P&L as the module docstring states them."""
    slip = settings.slippage_bps / 10_000.0
    entry, exit_index, reason = entries[taken], exits[taken], reasons[taken]
    shares, risk = sizes[taken].astype(np.int64), risks[taken]
    entry_fill = bars.open[entry] * (1 + side * slip)
    exit_fill = fills[taken] * (1 - side * slip)
    gross = side * (exit_fill - entry_fill) * shares
    net = gross - settings.commission
    count = len(taken)
    return Trades(
        symbol=np.full(count, bars.symbol),
        side=np.full(count, side, np.int64),
        signal_ts=bars.ts[entry - 1],
        entry_ts=bars.ts[entry],
        exit_ts=bars.ts[exit_index],
        entry_price=entry_fill,
        exit_price=exit_fill,
        shares=shares,
        stop=stops[taken],
        target=targets[taken],
        risk_per_share=risk,
        gross_pnl=gross,
        commission=np.full(count, settings.commission),
        net_pnl=net,
        r_multiple=net / (shares * risk),
        return_pct=net / (entry_fill * shares),
        bars_held=exit_index - entry + (reason != _MAX_HOLD),
        exit_reason=reason.astype(np.int8),
    )


_EXIT_CELLS = 1 << 21  # candidates x bars compared at once (bounds memory for long holds)


def _exits(
    bars: Bars,
    side: int,
    entries: np.ndarray,
    lasts: np.ndarray,
    stops: np.ndarray,
    targets: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each candidate, the first bar in [entry, last] that reaches its stop or target, the fill
    before slippage, and which (``_STOP`` or ``_TARGET``; -1 and exit -1: neither). The stop counts
    first when one bar reaches both; a bar that opens through a level fills at the open."""
    count = len(entries)
    exits, fills, reasons = np.full(count, -1, np.int64), np.full(count, np.nan), np.full(count, -1, np.int8)
    if count == 0:
        return exits, fills, reasons
    width = int((lasts - entries).max()) + 1
    step = max(_EXIT_CELLS // width, 1)
    offsets = np.arange(width)
    for lo in range(0, count, step):
        part = slice(lo, lo + step)
        index = entries[part, None] + offsets
        inside = index <= lasts[part, None]
        index = np.minimum(index, len(bars) - 1)
        low, high = bars.low[index], bars.high[index]
        if side > 0:
            stop_hit = inside & (low <= stops[part, None])
            target_hit = inside & (high >= targets[part, None])
        else:
            stop_hit = inside & (high >= stops[part, None])
            target_hit = inside & (low <= targets[part, None])
        k_stop = np.where(stop_hit.any(axis=1), stop_hit.argmax(axis=1), width)
        k_target = np.where(target_hit.any(axis=1), target_hit.argmax(axis=1), width)
        by_stop, by_target = (k_stop <= k_target) & (k_stop < width), k_target < k_stop
        k = np.where(by_stop, k_stop, k_target)
        at = entries[part] + np.minimum(k, width - 1)
        opens = bars.open[np.minimum(at, len(bars) - 1)]
        if side > 0:
            stop_fill, target_fill = np.minimum(opens, stops[part]), np.maximum(opens, targets[part])
        else:
            stop_fill, target_fill = np.maximum(opens, stops[part]), np.minimum(opens, targets[part])
        exits[part] = np.where(by_stop | by_target, at, -1)
        fills[part] = np.where(by_stop, stop_fill, np.where(by_target, target_fill, np.nan))
        reasons[part] = np.where(by_stop, _STOP, np.where(by_target, _TARGET, -1))
    return exits, fills, reasons
