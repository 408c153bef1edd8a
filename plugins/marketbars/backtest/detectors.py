"""The setup detectors: each turns one symbol's bars into the bars whose close signals an entry.

A detector is registered with its name, side (long or short), parameters and their defaults, the
asset classes it applies to, whether it is intraday (its trades close by the session's end), and
the history it needs before its first valid signal. Its function's docstring states its rule.
Every value a rule reads is from the signal bar or earlier: shifting later bars never changes a
signal (the tests check this for every detector).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from marketbars.backtest import indicators as ind
from marketbars.backtest.bars import TIMEFRAME_MINUTES, Bars

LONG, SHORT = 1, -1
STOCKS, INDICES = frozenset({"stocks"}), frozenset({"indices"})

# Setups of the old system that need options data the warehouse does not hold yet.
UNAVAILABLE = {
    "gamma_squeeze": "needs options greeks (gamma exposure by strike), which are not ingested yet",
    "gamma_flip": "needs options greeks (the dealer gamma flip level), which are not ingested yet",
}

Signals = Callable[[Bars, Mapping[str, float]], np.ndarray]
# Parameters that count bars or minutes: whole numbers, at least 1. Every other one is at least 0.
WHOLE_BARS = frozenset({"lookback", "fast", "slow", "trend", "rsi_period", "drive_minutes", "window_minutes"})


@dataclass(frozen=True)
class Detector:
    name: str
    side: int
    defaults: Mapping[str, float]
    history: Callable[[Mapping[str, float]], int]  # bars of history before a signal is valid
    asset_classes: frozenset[str]
    intraday: bool
    signals: Signals = field(repr=False)

    @property
    def rule(self) -> str:
        return " ".join((self.signals.__doc__ or "").split())

    def parameters(self, overrides: Mapping[str, Any] | None = None) -> dict[str, float]:
        """The defaults with ``overrides`` applied; an unknown name is an error that names it."""
        if not isinstance(overrides or {}, Mapping):
            raise ValueError(f"detector {self.name}: parameters must be an object, not {overrides!r}")
        overrides = dict(overrides or {})
        unknown = sorted(set(overrides) - set(self.defaults))
        if unknown:
            raise ValueError(
                f"detector {self.name} has no parameter {', '.join(unknown)}"
                f" (it has {', '.join(self.defaults)})"
            )
        values = {}
        for name, default in self.defaults.items():
            value = overrides.get(name, default)
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise ValueError(f"detector {self.name}: {name}={value!r} is not a number")
            if value < 0 or (name in WHOLE_BARS and (value < 1 or value != int(value))):
                raise ValueError(
                    f"detector {self.name}: {name}={value!r} must be "
                    + ("a whole number of at least 1" if name in WHOLE_BARS else "at least 0")
                )
            values[name] = float(value)
        return values

    def applies_to(self, asset_class: str, timeframe: str) -> str | None:
        """Why this detector does not run on such a symbol and timeframe, or None when it does."""
        if asset_class not in self.asset_classes:
            return f"applies to {', '.join(sorted(self.asset_classes))} only"
        if self.intraday and timeframe == "1d":
            return "intraday setup: needs intraday bars"
        return None


REGISTRY: dict[str, Detector] = {}


def detector(
    name: str,
    *,
    side: int,
    defaults: Mapping[str, float],
    history: Callable[[Mapping[str, float]], int],
    asset_classes: frozenset[str] = STOCKS,
    intraday: bool = False,
) -> Callable[[Signals], Signals]:
    def register(signals: Signals) -> Signals:
        if name in REGISTRY or name in UNAVAILABLE:
            raise ValueError(f"detector {name} is registered twice")
        REGISTRY[name] = Detector(name, side, dict(defaults), history, asset_classes, intraday, signals)
        return signals

    return register


def resolve(names: list[str] | None) -> list[Detector]:
    """The detectors asked for (all of them when empty), with a clear error for an unknown or
    unavailable name."""
    if not names:
        return list(REGISTRY.values())
    problems = []
    for name in names:
        if name in UNAVAILABLE:
            problems.append(f"{name} is unavailable: {UNAVAILABLE[name]}")
        elif name not in REGISTRY:
            problems.append(f"{name} is not a detector (known: {', '.join(REGISTRY)})")
    if problems:
        raise ValueError("; ".join(problems))
    return [REGISTRY[name] for name in dict.fromkeys(names)]


def _int(params: Mapping[str, float], name: str) -> int:
    return int(params[name])


def _fresh(condition: np.ndarray) -> np.ndarray:
    """True where ``condition`` becomes true (false on the bar before): one signal per episode."""
    return condition & ~np.concatenate(([False], condition[:-1]))


# Each setup comes as a pair, long and short, sharing one rule written for a ``side``: for a long,
# side * (a - b) > 0 reads a > b; for a short, a < b (exact: a difference's sign is never rounded).

# ---- breakouts ----------------------------------------------------------------------------------

_BREAKOUT = {"lookback": 20, "volume_multiple": 1.5}


def _breakout(bars: Bars, p: Mapping[str, float], side: int) -> np.ndarray:
    n = _int(p, "lookback")
    level = ind.prior_max(bars.high, n) if side == LONG else ind.prior_min(bars.low, n)
    with np.errstate(invalid="ignore"):
        surge = bars.volume > p["volume_multiple"] * ind.prior_mean(bars.volume, n)
        return np.asarray((side * (bars.close - level) > 0) & surge)


@detector("breakout_bullish", side=LONG, defaults=_BREAKOUT, history=lambda p: _int(p, "lookback") + 1)
def breakout_bullish(bars: Bars, p: Mapping[str, float]) -> np.ndarray:
    """Close above the highest high of the previous `lookback` bars, on volume above
    `volume_multiple` times their average volume."""
    return _breakout(bars, p, LONG)


@detector("breakout_bearish", side=SHORT, defaults=_BREAKOUT, history=lambda p: _int(p, "lookback") + 1)
def breakout_bearish(bars: Bars, p: Mapping[str, float]) -> np.ndarray:
    """Close below the lowest low of the previous `lookback` bars, on volume above
    `volume_multiple` times their average volume."""
    return _breakout(bars, p, SHORT)


# ---- mean reversion -----------------------------------------------------------------------------

_REVERSION = {"lookback": 20, "z_entry": 2.0}


def _mean_reversion(bars: Bars, p: Mapping[str, float], side: int) -> np.ndarray:
    n = _int(p, "lookback")
    with np.errstate(invalid="ignore", divide="ignore"):
        zscore = (bars.close - ind.sma(bars.close, n)) / ind.rolling_std(bars.close, n)
        return _fresh(side * zscore <= -p["z_entry"])


@detector("mean_reversion_long", side=LONG, defaults=_REVERSION, history=lambda p: _int(p, "lookback") + 1)
def mean_reversion_long(bars: Bars, p: Mapping[str, float]) -> np.ndarray:
    """The close's z-score against the last `lookback` closes (mean and population deviation)
    falls to `-z_entry` or below, from above it on the previous bar."""
    return _mean_reversion(bars, p, LONG)


@detector("mean_reversion_short", side=SHORT, defaults=_REVERSION, history=lambda p: _int(p, "lookback") + 1)
def mean_reversion_short(bars: Bars, p: Mapping[str, float]) -> np.ndarray:
    """The close's z-score against the last `lookback` closes rises to `z_entry` or above, from
    below it on the previous bar."""
    return _mean_reversion(bars, p, SHORT)


# ---- trend continuation -------------------------------------------------------------------------

_TREND = {"fast": 20, "slow": 50}


def _trend_continuation(bars: Bars, p: Mapping[str, float], side: int) -> np.ndarray:
    fast, slow = ind.ema(bars.close, _int(p, "fast")), ind.ema(bars.close, _int(p, "slow"))
    previous_slow = np.concatenate(([np.nan], slow[:-1]))
    pullback_end = bars.low if side == LONG else bars.high  # the end of the bar that reaches back
    with np.errstate(invalid="ignore"):
        return np.asarray(
            (side * (fast - slow) > 0)
            & (side * (slow - previous_slow) > 0)
            & (side * (fast - pullback_end) >= 0)
            & (side * (bars.close - fast) > 0)
            & (side * (bars.close - bars.open) > 0)
        )


@detector("trend_continuation_long", side=LONG, defaults=_TREND, history=lambda p: 2 * _int(p, "slow"))
def trend_continuation_long(bars: Bars, p: Mapping[str, float]) -> np.ndarray:
    """Uptrend (fast EMA above slow EMA, slow EMA rising) and a pullback bar: its low touches the
    fast EMA, it closes above the fast EMA and above its open."""
    return _trend_continuation(bars, p, LONG)


@detector("trend_continuation_short", side=SHORT, defaults=_TREND, history=lambda p: 2 * _int(p, "slow"))
def trend_continuation_short(bars: Bars, p: Mapping[str, float]) -> np.ndarray:
    """Downtrend (fast EMA below slow EMA, slow EMA falling) and a pullback bar: its high touches
    the fast EMA, it closes below the fast EMA and below its open."""
    return _trend_continuation(bars, p, SHORT)


# ---- opening drive ------------------------------------------------------------------------------

_DRIVE = {"drive_minutes": 30, "min_move_pct": 0.5, "close_position": 0.75}


def _opening_drive(bars: Bars, p: Mapping[str, float], side: int) -> np.ndarray:
    session_open = ind.session_first_value(bars.open, bars.session_first)
    high = ind.session_cummax(bars.high, bars.session_first)
    low = ind.session_cummin(bars.low, bars.session_first)
    origin = low if side == LONG else high  # the end of the range the drive moves away from
    ends_after = bars.minutes + TIMEFRAME_MINUTES[bars.timeframe] >= p["drive_minutes"]
    drive_bar = _fresh(ends_after) | (ends_after & bars.session_first)  # the first bar ending after it
    with np.errstate(invalid="ignore"):
        moved = side * (bars.close - session_open * (1 + side * p["min_move_pct"] / 100)) >= 0
        placed = side * (bars.close - origin) >= p["close_position"] * (high - low)
    return np.asarray(drive_bar & moved & placed & ~bars.session_last)


@detector("opening_drive_bullish", side=LONG, defaults=_DRIVE, history=lambda p: 1, intraday=True)
def opening_drive_bullish(bars: Bars, p: Mapping[str, float]) -> np.ndarray:
    """At the bar that completes the first `drive_minutes` of the session: the close is at least
    `min_move_pct` % above the session's open and in the top of the range so far (at or above
    `close_position` of the way from its low to its high); and that bar is not the session's last."""
    return _opening_drive(bars, p, LONG)


@detector("opening_drive_bearish", side=SHORT, defaults=_DRIVE, history=lambda p: 1, intraday=True)
def opening_drive_bearish(bars: Bars, p: Mapping[str, float]) -> np.ndarray:
    """At the bar that completes the first `drive_minutes` of the session: the close is at least
    `min_move_pct` % below the session's open and in the bottom of the range so far (at or below
    `1 - close_position` of the way from its low to its high); and that bar is not the session's last."""
    return _opening_drive(bars, p, SHORT)


# ---- power-hour reversal ------------------------------------------------------------------------

_POWER_HOUR = {"window_minutes": 60, "min_move_pct": 0.5}


def _power_hour_reversal(bars: Bars, p: Mapping[str, float], side: int) -> np.ndarray:
    session_open = ind.session_first_value(bars.open, bars.session_first)
    if side == LONG:  # the day's extreme against the trade, and the bar ends either side of it
        extreme, near, far = ind.session_cummin(bars.low, bars.session_first), bars.low, bars.high
    else:
        extreme, near, far = ind.session_cummax(bars.high, bars.session_first), bars.high, bars.low
    previous_near, previous_far = np.roll(near, 1), np.roll(far, 1)  # wrap masked by ~session_first
    with np.errstate(invalid="ignore"):
        reversal = (
            (bars.minutes_to_close < p["window_minutes"])
            & ~bars.session_first
            & ~bars.session_last
            & (side * (session_open * (1 - side * p["min_move_pct"] / 100) - extreme) >= 0)
            & (side * (extreme - previous_near) >= 0)
            & (side * (bars.close - previous_far) > 0)
        )
    seen_before = ind.session_cummax(reversal.astype(np.int8), bars.session_first)
    earlier = np.concatenate(([0], seen_before[:-1]))
    earlier[bars.session_first] = 0
    return np.asarray(reversal & (earlier == 0))  # the first per session


@detector("power_hour_reversal_bullish", side=LONG, defaults=_POWER_HOUR, history=lambda p: 2, intraday=True)
def power_hour_reversal_bullish(bars: Bars, p: Mapping[str, float]) -> np.ndarray:
    """In the last `window_minutes` of the session, after a day down at least `min_move_pct` %
    from the open (the session's low so far that far below it): the previous bar printed the
    session's low and this bar closes above the previous bar's high. First such bar per session,
    never the session's last bar."""
    return _power_hour_reversal(bars, p, LONG)


@detector("power_hour_reversal_bearish", side=SHORT, defaults=_POWER_HOUR, history=lambda p: 2, intraday=True)
def power_hour_reversal_bearish(bars: Bars, p: Mapping[str, float]) -> np.ndarray:
    """In the last `window_minutes` of the session, after a day up at least `min_move_pct` % from
    the open (the session's high so far that far above it): the previous bar printed the session's
    high and this bar closes below the previous bar's low. First such bar per session, never the
    session's last bar."""
    return _power_hour_reversal(bars, p, SHORT)


# ---- index mean reversion -----------------------------------------------------------------------

_INDEX_REVERSION = {"rsi_period": 2, "oversold": 10, "overbought": 90, "trend": 100}


def _index_history(p: Mapping[str, float]) -> int:
    return max(_int(p, "trend"), _int(p, "rsi_period") + 1)


def _index_mean_reversion(bars: Bars, p: Mapping[str, float], side: int) -> np.ndarray:
    rsi, trend = ind.rsi(bars.close, _int(p, "rsi_period")), ind.sma(bars.close, _int(p, "trend"))
    with np.errstate(invalid="ignore"):
        stretched = rsi <= p["oversold"] if side == LONG else rsi >= p["overbought"]
        return np.asarray(_fresh(stretched) & (side * (bars.close - trend) > 0))


@detector(
    "index_mean_reversion_long",
    side=LONG,
    defaults=_INDEX_REVERSION,
    history=_index_history,
    asset_classes=INDICES,
)
def index_mean_reversion_long(bars: Bars, p: Mapping[str, float]) -> np.ndarray:
    """An index in an uptrend (close above its `trend`-bar average) whose `rsi_period` RSI falls to
    `oversold` or below, from above it on the previous bar."""
    return _index_mean_reversion(bars, p, LONG)


@detector(
    "index_mean_reversion_short",
    side=SHORT,
    defaults=_INDEX_REVERSION,
    history=_index_history,
    asset_classes=INDICES,
)
def index_mean_reversion_short(bars: Bars, p: Mapping[str, float]) -> np.ndarray:
    """An index in a downtrend (close below its `trend`-bar average) whose `rsi_period` RSI rises to
    `overbought` or above, from below it on the previous bar."""
    return _index_mean_reversion(bars, p, SHORT)


# ---- end of day ---------------------------------------------------------------------------------


@detector("end_of_day_strength", side=LONG, defaults={"close_position": 0.9}, history=lambda p: 1)
def end_of_day_strength(bars: Bars, p: Mapping[str, float]) -> np.ndarray:
    """At a session's last bar: the session closes in its top range (at or above `close_position`
    of the way from the session's low to its high) and above the previous session's high. The
    entry is the next session's open; the position may be held overnight."""
    high = ind.session_cummax(bars.high, bars.session_first)
    low = ind.session_cummin(bars.low, bars.session_first)
    previous_high = ind.previous_session_value(high, bars.session_last, bars.session_first)
    with np.errstate(invalid="ignore"):
        strong = (bars.close >= low + p["close_position"] * (high - low)) & (bars.close > previous_high)
    return np.asarray(bars.session_last & strong & (high > low))


def describe() -> list[dict[str, Any]]:
    """Every detector, available or not, for the report and the README."""
    listed: list[dict[str, Any]] = [
        {
            "name": d.name,
            "side": "long" if d.side == LONG else "short",
            "asset_classes": sorted(d.asset_classes),
            "intraday": d.intraday,
            "parameters": dict(d.defaults),
            "rule": d.rule,
        }
        for d in REGISTRY.values()
    ]
    listed += [{"name": name, "unavailable": why} for name, why in UNAVAILABLE.items()]
    return listed
