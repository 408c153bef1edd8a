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

Every candidate signal's levels, size and first exit are found with numpy at once (the exits in
slices of candidates, so long holds stay in bounded memory); Python only walks the candidates to
keep one position at a time, never the bars.
"""

from __future__ import annotations

import bisect
from dataclasses import asdict, dataclass, fields
from typing import Any, NamedTuple

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


class Trade(NamedTuple):
    """One round trip. A named tuple: immutable like a frozen dataclass, and ten times cheaper to
    make, which matters at tens of thousands of trades a run."""

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
    # Every candidate's levels, size and first exit, as if it were taken (vectorised); the loop
    # below only decides which candidates are taken (one position at a time).
    risks = settings.stop_atr * ranges[candidates]
    references = bars.close[candidates]
    with np.errstate(divide="ignore", invalid="ignore"):
        sizes = np.floor(
            np.minimum(settings.capital * settings.risk_fraction / risks, settings.capital / references)
        )
    stops = references - side * risks
    targets = references + side * settings.target_r * risks
    entries = candidates + 1
    timeouts = entries + settings.max_hold_bars  # bars whose open a time exit fills at
    lasts = np.minimum(timeouts - 1, n - 1)
    if intraday:
        lasts = np.minimum(lasts, session_end[entries])
    exits, fills, reasons = _exits(bars, side, entries, lasts, stops, targets)
    trades: list[Trade] = []
    held = skipped = 0
    # Python scalars for the walk (indexing numpy one element at a time is what made it slow).
    starts, risk_of, size_of = candidates.tolist(), risks.tolist(), sizes.tolist()
    exit_of, fill_of, reason_of = exits.tolist(), fills.tolist(), reasons.tolist()
    last_of, timeout_of = lasts.tolist(), timeouts.tolist()
    at_close = (bars.session_last[candidates] if intraday else np.zeros(len(candidates), bool)).tolist()
    i, free_from = 0, start  # free_from: the first bar whose close may signal a new entry
    while i < len(starts):
        s = starts[i]
        if s < free_from:  # in a position: jump to the first candidate after it
            i = bisect.bisect_left(starts, free_from, i)
            continue
        risk, i = risk_of[i], i + 1
        if at_close[i - 1] or not risk > 0:  # no entry into the next session; NaN: ATR warming up
            continue
        if not size_of[i - 1] >= 1:
            skipped += 1
            continue
        shares = int(size_of[i - 1])
        entry, last, timeout = s + 1, last_of[i - 1], timeout_of[i - 1]
        if reason_of[i - 1]:
            exit_index, exit_raw, reason = exit_of[i - 1], fill_of[i - 1], EXIT_REASONS[reason_of[i - 1] - 1]
        elif intraday and last == session_end[entry]:
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
                stop=float(stops[i - 1]),
                target=float(targets[i - 1]),
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
    before slippage, and which (1 = stop, 2 = target, as in ``EXIT_REASONS``; 0 = neither). The
    stop counts first when one bar reaches both; a bar that opens through a level fills at the open."""
    count = len(entries)
    exits, fills, reasons = np.full(count, -1, np.int64), np.full(count, np.nan), np.zeros(count, np.int8)
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
        reasons[part] = np.where(by_stop, 1, np.where(by_target, 2, 0))
    return exits, fills, reasons
