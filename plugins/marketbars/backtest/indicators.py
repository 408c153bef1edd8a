"""Indicators over numpy columns, each value using only its own bar and earlier ones (NaN until
enough history exists). pandas' rolling and ewm kernels do the work in C."""

from __future__ import annotations

import numpy as np
import pandas as pd


def sma(values: np.ndarray, period: int) -> np.ndarray:
    return pd.Series(values).rolling(period, min_periods=period).mean().to_numpy()


def rolling_std(values: np.ndarray, period: int) -> np.ndarray:
    """Population standard deviation (ddof 0) of the last ``period`` values."""
    return pd.Series(values).rolling(period, min_periods=period).std(ddof=0).to_numpy()


def ema(values: np.ndarray, period: int) -> np.ndarray:
    """Exponential moving average (alpha 2/(period+1)), seeded at the first value and NaN for the
    first ``period - 1`` bars so early values are not trusted."""
    out = pd.Series(values).ewm(span=period, adjust=False).mean().to_numpy(copy=True)
    out[: period - 1] = np.nan
    return out


def prior_max(values: np.ndarray, period: int) -> np.ndarray:
    """Highest of the ``period`` values before each bar (the bar itself excluded)."""
    return pd.Series(values).rolling(period, min_periods=period).max().shift(1).to_numpy()


def prior_min(values: np.ndarray, period: int) -> np.ndarray:
    return pd.Series(values).rolling(period, min_periods=period).min().shift(1).to_numpy()


def prior_mean(values: np.ndarray, period: int) -> np.ndarray:
    return pd.Series(values).rolling(period, min_periods=period).mean().shift(1).to_numpy()


def true_range(high: np.ndarray, low: np.ndarray, close: np.ndarray) -> np.ndarray:
    """max(high - low, |high - previous close|, |low - previous close|); the first bar's is high - low."""
    previous = np.concatenate(([np.nan], close[:-1]))
    # fmax ignores the first bar's NaN, as nanmax would, without stacking three copies.
    return np.asarray(np.fmax(np.fmax(high - low, np.abs(high - previous)), np.abs(low - previous)))


def atr(high: np.ndarray, low: np.ndarray, close: np.ndarray, period: int) -> np.ndarray:
    """Average true range: the simple mean of the last ``period`` true ranges."""
    return sma(true_range(high, low, close), period)


def rsi(close: np.ndarray, period: int) -> np.ndarray:
    """Wilder's relative strength index (smoothing alpha 1/period), 0..100; NaN for the first
    ``period`` bars."""
    change = np.diff(close, prepend=np.nan)
    gains = pd.Series(np.where(change > 0, change, 0.0)[1:])
    losses = pd.Series(np.where(change < 0, -change, 0.0)[1:])
    avg_gain = gains.ewm(alpha=1 / period, adjust=False).mean().to_numpy()
    avg_loss = losses.ewm(alpha=1 / period, adjust=False).mean().to_numpy()
    with np.errstate(divide="ignore", invalid="ignore"):
        value = np.where(avg_loss == 0, 100.0, 100.0 - 100.0 / (1.0 + avg_gain / avg_loss))
    value = np.where((avg_gain == 0) & (avg_loss == 0), 50.0, value)
    out = np.concatenate(([np.nan], value))
    out[:period] = np.nan
    return out


def session_cummax(values: np.ndarray, session_first: np.ndarray) -> np.ndarray:
    """Running maximum that restarts at each session's first bar."""
    return pd.Series(values).groupby(np.cumsum(session_first)).cummax().to_numpy()


def session_cummin(values: np.ndarray, session_first: np.ndarray) -> np.ndarray:
    return pd.Series(values).groupby(np.cumsum(session_first)).cummin().to_numpy()


def session_first_value(values: np.ndarray, session_first: np.ndarray) -> np.ndarray:
    """Each bar's session's first value (the session's open when given opens)."""
    starts = np.flatnonzero(session_first)
    return np.asarray(values[starts][np.cumsum(session_first) - 1])


def previous_session_value(
    values_at_last: np.ndarray, session_last: np.ndarray, session_first: np.ndarray
) -> np.ndarray:
    """For every bar, ``values_at_last`` as it stood at the previous session's last bar (NaN in the
    first session)."""
    per_session = values_at_last[session_last]
    shifted = np.concatenate(([np.nan], per_session[:-1]))
    return np.asarray(shifted[np.cumsum(session_first) - 1])
