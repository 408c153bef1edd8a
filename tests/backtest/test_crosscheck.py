"""The engine against an independent library: a moving-average crossover on generated daily bars,
run by our simulator and by backtesting.py under equivalent settings, trade for trade.

Equivalences: backtesting.py fills a market order at the next bar's open, places stop-loss and
take-profit orders that can fill in the entry bar, takes the stop first when a bar reaches both,
and fills a gap at the open, as our engine does. It has no slippage, so ours (10 bps a fill) is
charged there as a relative commission on each fill, and our $1 a round trip as $0.50 fixed a
fill: the net P&L is the same sum. Its prices are therefore before slippage.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from marketbars.backtest import indicators as ind
from marketbars.backtest.engine import Settings, simulate
from tests.backtest.sample_bars import daily

FAST, SLOW = 10, 30
SETTINGS = Settings(
    slippage_bps=10, commission=1.0, capital=100_000, risk_fraction=0.01, atr_period=14, stop_atr=1.5,
    target_r=2.0, max_hold_bars=12,
)  # fmt: skip


def generated_bars(seed: int, count: int = 750):
    rng = np.random.default_rng(seed)
    closes = 50 * np.exp(np.cumsum(rng.normal(0.0002, 0.018, count)))
    opens = np.concatenate(([50.0], closes[:-1])) * np.exp(rng.normal(0, 0.006, count))  # overnight gaps
    highs = np.maximum(opens, closes) * np.exp(np.abs(rng.normal(0, 0.008, count)))
    lows = np.minimum(opens, closes) * np.exp(-np.abs(rng.normal(0, 0.008, count)))
    volumes = rng.integers(100_000, 1_000_000, count).astype(float)
    return daily(list(zip(opens, highs, lows, closes, volumes, strict=True)), symbol="GEN")


def crossover_signals(close: np.ndarray, side: int) -> np.ndarray:
    fast, slow = ind.sma(close, FAST), ind.sma(close, SLOW)
    a, b = (fast, slow) if side > 0 else (slow, fast)
    with np.errstate(invalid="ignore"):
        return np.concatenate(([False], (a[:-1] < b[:-1]) & (a[1:] > b[1:])))


def reference_trades(bars, side: int) -> pd.DataFrame:
    from backtesting import Backtest, Strategy
    from backtesting.lib import crossover

    def sma(values, period):
        return pd.Series(values).rolling(period).mean().to_numpy()

    def atr(high, low, close, period):
        previous = pd.Series(close).shift(1)
        ranges = pd.concat(
            [
                pd.Series(high) - pd.Series(low),
                (pd.Series(high) - previous).abs(),
                (pd.Series(low) - previous).abs(),
            ],
            axis=1,
        )
        return ranges.max(axis=1).rolling(period).mean().to_numpy()

    s = SETTINGS

    class Crossover(Strategy):
        def init(self) -> None:
            self.fast = self.I(sma, self.data.Close, FAST)
            self.slow = self.I(sma, self.data.Close, SLOW)
            self.atr = self.I(atr, self.data.High, self.data.Low, self.data.Close, s.atr_period)

        def next(self) -> None:
            i = len(self.data) - 1
            if self.position:
                if i - self.trades[-1].entry_bar + 1 >= s.max_hold_bars:
                    self.position.close()
                return
            crossed = crossover(self.fast, self.slow) if side > 0 else crossover(self.slow, self.fast)
            risk = s.stop_atr * self.atr[-1]
            if not crossed or not risk > 0:
                return
            close = self.data.Close[-1]
            size = math.floor(min(s.capital * s.risk_fraction / risk, s.capital / close))
            if side > 0:
                self.buy(size=size, sl=close - risk, tp=close + s.target_r * risk)
            else:
                self.sell(size=size, sl=close + risk, tp=close - s.target_r * risk)

    frame = pd.DataFrame(
        {"Open": bars.open, "High": bars.high, "Low": bars.low, "Close": bars.close, "Volume": bars.volume},
        index=pd.to_datetime(bars.ts, unit="us"),
    )
    backtest = Backtest(
        frame,
        Crossover,
        cash=100_000_000,  # sizing is the strategy's; the broker must never refuse an order
        commission=(s.commission / 2, s.slippage_bps / 10_000),
        finalize_trades=True,
    )
    return backtest.run()._trades


@pytest.mark.parametrize(("seed", "side"), [(1, 1), (2, 1), (3, -1), (4, -1)])
def test_the_engine_matches_backtesting_py_trade_for_trade(seed: int, side: int) -> None:
    bars = generated_bars(seed)
    ours = simulate(bars, crossover_signals(bars.close, side), side, SETTINGS, start=0, intraday=False).trades
    theirs = reference_trades(bars, side)
    assert len(ours) == len(theirs) >= 10
    index = {int(ts): i for i, ts in enumerate(bars.ts)}
    slip = SETTINGS.slippage_bps / 10_000
    for trade, (_, ref) in zip(ours, theirs.iterrows(), strict=True):
        assert (index[trade.entry_ts], index[trade.exit_ts]) == (ref.EntryBar, ref.ExitBar)
        assert trade.shares * side == ref.Size
        assert trade.entry_price / (1 + side * slip) == pytest.approx(ref.EntryPrice, rel=1e-12)
        assert trade.exit_price / (1 - side * slip) == pytest.approx(ref.ExitPrice, rel=1e-12)
        assert trade.net_pnl == pytest.approx(ref.PnL, rel=1e-9, abs=1e-6)
    assert sum(t.net_pnl for t in ours) == pytest.approx(theirs.PnL.sum(), rel=1e-9)
    reasons = {t.exit_reason for t in ours}
    assert reasons == {"stop", "target", "max_hold"}, reasons  # every kind of exit is compared


def test_the_engine_matches_the_benchmarks_naive_per_bar_loop() -> None:
    """A second, independent reference: the old system's way, one Python iteration per bar."""
    import datetime as dt

    from bench.backtest import naive_breakout_bullish
    from marketbars.backtest import detectors
    from tests.backtest.sample_bars import intraday, random_walk

    rows = random_walk(78 * 30, seed=5)
    bars = intraday([rows[i : i + 78] for i in range(0, len(rows), 78)], minutes=5)
    d = detectors.REGISTRY["breakout_bullish"]
    params = d.parameters({"volume_multiple": 1.2})
    start = bars.first_index_on_or_after(dt.date.fromordinal(int(bars.session[78 * 2])))
    ours = simulate(bars, d.signals(bars, params), 1, SETTINGS, start=start, intraday=False).trades
    tuples = [
        (
            bars.symbol,
            dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(microseconds=int(ts)),
            o,
            h,
            lo,
            c,
            v,
        )
        for ts, o, h, lo, c, v in zip(
            bars.ts, bars.open, bars.high, bars.low, bars.close, bars.volume, strict=True
        )
    ]
    theirs = naive_breakout_bullish(tuples, SETTINGS, params, int(bars.session[start]))
    assert len(ours) == len(theirs) >= 20
    for trade, ref in zip(ours, theirs, strict=True):
        assert (trade.entry_ts, trade.exit_ts) == tuple(
            int((ref[k] - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)) / dt.timedelta(microseconds=1))
            for k in ("entry_ts", "exit_ts")
        )
        assert (trade.exit_reason, trade.shares) == (ref["exit_reason"], ref["shares"])
        assert trade.net_pnl == pytest.approx(ref["net_pnl"], rel=1e-9)


def test_exits_found_a_few_candidates_at_a_time_are_the_same(monkeypatch: pytest.MonkeyPatch) -> None:
    """Long holds are searched in slices of candidates (bounded memory): the slicing changes nothing."""
    from marketbars.backtest import engine

    bars = generated_bars(5)
    signals = crossover_signals(bars.close, 1)
    long_holds = engine.Settings(**{**SETTINGS.to_json(), "max_hold_bars": 400})
    whole = simulate(bars, signals, 1, long_holds, start=0, intraday=False)
    monkeypatch.setattr(engine, "_EXIT_CELLS", 401 * 3)  # three candidates at a time
    sliced = simulate(bars, signals, 1, long_holds, start=0, intraday=False)
    assert sliced == whole and len(whole.trades) >= 5
    assert {t.exit_reason for t in whole.trades} >= {"stop", "target"}
