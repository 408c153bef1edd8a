"""Each detector fires on a series built to meet its rule and not on a near miss; no detector looks
ahead; the registry's interface holds."""

from __future__ import annotations

import numpy as np
import pytest

from marketbars.backtest import detectors
from marketbars.backtest import indicators as ind
from tests.backtest.sample_bars import daily, intraday, random_walk

FLAT = [(100, 101, 99, 100, 1000.0)] * 25


def fires_last(name: str, bars) -> bool:
    """Whether the detector signals on the last bar, and on no other."""
    d = detectors.REGISTRY[name]
    signals = d.signals(bars, d.parameters())
    assert signals.dtype == bool and len(signals) == len(bars)
    assert not signals[:-1].any() or name.startswith(("trend_", "index_")), np.flatnonzero(signals)
    return bool(signals[-1])


def test_breakouts_need_the_level_and_the_volume() -> None:
    assert fires_last("breakout_bullish", daily([*FLAT, (100, 102.5, 100, 102, 2000)]))
    assert not fires_last("breakout_bullish", daily([*FLAT, (100, 102.5, 100, 102, 1400)]))
    assert not fires_last("breakout_bullish", daily([*FLAT, (100, 101, 100, 100.9, 2000)]))
    assert fires_last("breakout_bearish", daily([*FLAT, (100, 100, 97.5, 98, 2000)]))
    assert not fires_last("breakout_bearish", daily([*FLAT, (100, 100, 97.5, 98, 1400)]))


def test_mean_reversion_fires_on_a_fresh_two_sigma_stretch() -> None:
    calm = [(c, c + 0.2, c - 0.2, c, 1000.0) for c in [100, 101] * 12]
    assert fires_last("mean_reversion_long", daily([*calm, (99, 99.2, 97.8, 98, 1000)]))
    assert not fires_last("mean_reversion_long", daily([*calm, (100, 100.2, 99.8, 100, 1000)]))
    assert fires_last("mean_reversion_short", daily([*calm, (102, 103.2, 102, 103, 1000)]))
    assert not fires_last("mean_reversion_short", daily([*calm, (101, 101.2, 100.8, 101, 1000)]))


def _trend(step: float) -> list[tuple]:
    closes = 100 + step * np.arange(120)
    return [(c - step / 2, c + 0.3, c - 0.3, c, 1000.0) for c in closes]


def test_trend_continuation_buys_a_pullback_that_closes_strong() -> None:
    up = _trend(0.5)
    last = up[-1][3]
    fast = ind.ema(np.array([r[3] for r in up]), 20)[-1]
    assert fires_last("trend_continuation_long", daily([*up, (last - 0.2, last + 0.1, fast - 1, last, 1000)]))
    assert not fires_last(
        "trend_continuation_long", daily([*up, (last + 0.2, last + 0.3, fast - 1, last, 1000)])
    )
    down = _trend(-0.5)
    last = down[-1][3]
    fast = ind.ema(np.array([r[3] for r in down]), 20)[-1]
    assert fires_last(
        "trend_continuation_short", daily([*down, (last + 0.2, fast + 1, last - 0.1, last, 1000)])
    )
    assert not fires_last(
        "trend_continuation_short", daily([*down, (last - 0.2, fast + 1, last - 0.3, last, 1000)])
    )


def _drive(step: float, bars_: int = 6) -> list[tuple]:
    """A session opening at 100 and moving ``step`` a 5-minute bar, then flat until the close."""
    rows = []
    price = 100.0
    for _ in range(bars_):
        rows.append(
            (price, max(price, price + step) + 0.01, min(price, price + step) - 0.01, price + step, 1e4)
        )
        price += step
    return rows + [(price, price + 0.05, price - 0.05, price, 1e4)] * (78 - bars_)


def test_opening_drives_signal_at_the_end_of_the_first_half_hour() -> None:
    name = "opening_drive_bullish"
    d = detectors.REGISTRY[name]
    signals = d.signals(intraday([_drive(0.15)]), d.parameters())
    assert np.flatnonzero(signals).tolist() == [5]  # the 09:55 bar ends the first 30 minutes
    assert not d.signals(intraday([_drive(0.05)]), d.parameters()).any()  # +0.3 %: too little
    bearish = detectors.REGISTRY["opening_drive_bearish"]
    assert np.flatnonzero(bearish.signals(intraday([_drive(-0.15)]), bearish.parameters())).tolist() == [5]
    assert not bearish.signals(intraday([_drive(0.15)]), bearish.parameters()).any()
    # On hourly bars the first bar already ends after 30 minutes: it is the drive bar.
    hourly = intraday([[(100, 101.1, 99.9, 101, 1e5)] + [(101, 101.1, 100.9, 101, 1e5)] * 6], minutes=60)
    assert np.flatnonzero(d.signals(hourly, d.parameters())).tolist() == [0]


def _power_hour(direction: int, reverse: bool) -> list[tuple]:
    """A session drifting ``direction`` from 100 all day; at 15:15 a bar extends the move and, when
    ``reverse``, the 15:20 bar closes back beyond it."""
    rows, price = [], 100.0
    for i in range(78):
        if i == 69:  # 15:15: the extreme of the day
            extreme = price + direction * 0.4
            rows.append((price, max(price, extreme), min(price, extreme), extreme, 1e4))
            price = extreme
        elif i == 70 and reverse:  # 15:20: closes beyond the previous bar's other end
            close = price - direction * 0.8
            rows.append((price, max(price, close), min(price, close), close, 1e4))
            price = close
        else:
            nxt = price + direction * 0.02
            rows.append((price, max(price, nxt) + 0.005, min(price, nxt) - 0.005, nxt, 1e4))
            price = nxt
    return rows


def test_power_hour_reversals_need_a_move_and_a_reversal_bar_late_in_the_day() -> None:
    bull, bear = (
        detectors.REGISTRY["power_hour_reversal_bullish"],
        detectors.REGISTRY["power_hour_reversal_bearish"],
    )
    assert np.flatnonzero(bull.signals(intraday([_power_hour(-1, True)]), bull.parameters())).tolist() == [70]
    assert not bull.signals(intraday([_power_hour(-1, False)]), bull.parameters()).any()
    assert np.flatnonzero(bear.signals(intraday([_power_hour(1, True)]), bear.parameters())).tolist() == [70]
    assert not bear.signals(intraday([_power_hour(1, False)]), bear.parameters()).any()
    early = bull.parameters({"window_minutes": 30})  # 15:20 is 40 minutes before the close
    assert not bull.signals(intraday([_power_hour(-1, True)]), early).any()


def _moves(last: float, changes: list[float]) -> list[tuple]:
    rows = []
    for change in changes:
        rows.append(
            (last, max(last, last + change) + 0.1, min(last, last + change) - 0.1, last + change, 0.0)
        )
        last += change
    return rows


def test_index_mean_reversion_buys_oversold_in_an_uptrend_only() -> None:
    # RSI(2) after +0.5 steps: a -2 bar takes it to 20, a second to 7.7, a third -0.5 to 6.7.
    up = _trend(0.5)
    long_ = detectors.REGISTRY["index_mean_reversion_long"]
    signals = long_.signals(daily([*up, *_moves(up[-1][3], [-2, -2, -0.5])]), long_.parameters())
    assert signals[-2] and not signals[-1] and not signals[-3]  # crosses 10 once, on the second drop
    down = _trend(-0.5)
    assert not long_.signals(daily([*down, *_moves(down[-1][3], [-2, -2])]), long_.parameters())[-1]
    short = detectors.REGISTRY["index_mean_reversion_short"]
    assert short.signals(daily([*down, *_moves(down[-1][3], [2, 2])]), short.parameters())[-1]
    assert not short.signals(daily([*up, *_moves(up[-1][3], [2, 2])]), short.parameters())[-1]


def test_end_of_day_strength_on_daily_and_intraday_bars() -> None:
    name = "end_of_day_strength"
    assert fires_last(name, daily([(100, 101, 99, 100, 1e6), (100, 102.1, 100, 102, 1e6)]))
    assert not fires_last(name, daily([(100, 101, 99, 100, 1e6), (100, 103, 100, 101.5, 1e6)]))
    d = detectors.REGISTRY[name]
    day1 = [(100, 101, 99, 100, 1e4)] * 78
    day2 = [(100, 100.5, 99.9, 100.4, 1e4)] * 77 + [(100.4, 101.6, 100.4, 101.5, 1e4)]
    assert np.flatnonzero(d.signals(intraday([day1, day2]), d.parameters())).tolist() == [155]


@pytest.mark.parametrize("name", list(detectors.REGISTRY))
def test_no_detector_looks_ahead(name: str) -> None:
    """Rewriting every bar after bar k never changes a signal at or before k."""
    d = detectors.REGISTRY[name]
    params = d.parameters()
    rows = random_walk(78 * 8, seed=11)
    base = intraday([rows[i : i + 78] for i in range(0, len(rows), 78)])
    signals = d.signals(base, params)
    other = random_walk(len(rows), seed=99, start=80)
    for k in (100, 300, 500):
        mixed = rows[: k + 1] + other[k + 1 :]
        shifted = intraday([mixed[i : i + 78] for i in range(0, len(mixed), 78)])
        assert np.array_equal(d.signals(shifted, params)[: k + 1], signals[: k + 1]), (name, k)


def test_the_registry_and_its_errors() -> None:
    assert len(detectors.REGISTRY) == 13
    for d in detectors.REGISTRY.values():
        assert d.side in (1, -1) and d.rule and d.history(d.parameters()) >= 1
    with pytest.raises(ValueError, match="gamma_flip is unavailable: needs options greeks"):
        detectors.resolve(["breakout_bullish", "gamma_flip"])
    with pytest.raises(ValueError, match="nope is not a detector"):
        detectors.resolve(["nope"])
    with pytest.raises(ValueError, match="breakout_bullish has no parameter lookbak"):
        detectors.REGISTRY["breakout_bullish"].parameters({"lookbak": 3})
    assert detectors.REGISTRY["breakout_bullish"].parameters({"lookback": 30})["lookback"] == 30
    assert detectors.REGISTRY["opening_drive_bullish"].applies_to("stocks", "1d") is not None
    assert detectors.REGISTRY["index_mean_reversion_long"].applies_to("stocks", "5m") is not None
    assert [d["name"] for d in detectors.describe()][-2:] == ["gamma_squeeze", "gamma_flip"]


def test_parameter_values_are_checked_by_name() -> None:
    trend = detectors.REGISTRY["trend_continuation_long"]
    for bad, message in (
        ({"fast": 0}, "fast=0 must be a whole number of at least 1"),
        ({"slow": 2.5}, "slow=2.5 must be a whole number"),
        ({"fast": "20"}, "fast='20' is not a number"),
        ({"fast": float("nan")}, "is not a number"),
    ):
        with pytest.raises(ValueError, match=message):
            trend.parameters(bad)
    with pytest.raises(ValueError, match="must be at least 0"):
        detectors.REGISTRY["mean_reversion_long"].parameters({"z_entry": -1})
    with pytest.raises(ValueError, match="parameters must be an object"):
        trend.parameters(5)  # type: ignore[arg-type]
