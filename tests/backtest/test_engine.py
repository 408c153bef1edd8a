"""The simulator against hand-computed price paths, to the cent: fills, stops, targets, time-outs, costs."""

from __future__ import annotations

import numpy as np
import pytest

from marketbars.backtest.engine import Settings, simulate
from tests.backtest.sample_bars import daily, intraday

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


def test_a_long_reaches_its_target_on_the_second_bar() -> None:
    bars = daily(
        [*FLAT, (100.5, 102, 99.5, 101, 1e6), (101, 104.5, 100.5, 104, 1e6), (104, 105, 103, 104, 1e6)]
    )
    trade, outcome = only_trade(bars, signal_at(bars, 2))
    # Levels from the signal close 100 and R 2: stop 98, target 104. 500 shares (1% of 100k / 2).
    assert (trade.stop, trade.target, trade.shares) == (98, 104, 500)
    assert trade.entry_price == pytest.approx(100.5 * 1.001)  # next open plus 10 bps
    assert trade.exit_price == pytest.approx(104 * 0.999)  # the target less 10 bps
    assert trade.gross_pnl == pytest.approx(1647.75)  # (103.896 - 100.6005) x 500
    assert trade.net_pnl == pytest.approx(1646.75)
    assert trade.r_multiple == pytest.approx(1646.75 / 1000)
    assert (trade.exit_reason, trade.bars_held, trade.entry_ts) == ("target", 2, int(bars.ts[3]))
    assert (outcome.bars, outcome.bars_in_position) == (6, 2)


def test_a_gap_through_the_stop_fills_at_the_open() -> None:
    bars = daily([*FLAT, (100, 100.5, 99, 100, 1e6), (97, 97.5, 96, 97, 1e6)])
    trade, _ = only_trade(bars, signal_at(bars, 2))
    assert trade.exit_reason == "stop"
    assert trade.exit_price == pytest.approx(97 * 0.999)  # the open, not the stop at 98
    assert trade.net_pnl == pytest.approx((96.903 - 100.1) * 500 - 1)  # -1599.50


def test_when_one_bar_reaches_stop_and_target_the_stop_is_assumed_first() -> None:
    bars = daily([*FLAT, (100, 105, 97, 101, 1e6)])
    trade, _ = only_trade(bars, signal_at(bars, 2))
    assert (trade.exit_reason, trade.exit_ts) == ("stop", int(bars.ts[3]))
    assert trade.exit_price == pytest.approx(98 * 0.999)
    assert trade.net_pnl == pytest.approx((97.902 - 100.1) * 500 - 1)  # -1100.00


def test_a_trade_times_out_at_the_open_after_max_hold_bars() -> None:
    inside = (100, 101, 99.5, 100.5, 1e6)
    bars = daily([*FLAT, inside, inside, inside, (100.8, 101, 100, 100.2, 1e6), inside])
    trade, outcome = only_trade(bars, signal_at(bars, 2))
    # Held bars 3, 4, 5; decided at bar 5's close, filled at bar 6's open.
    assert (trade.exit_reason, trade.bars_held, trade.exit_ts) == ("max_hold", 3, int(bars.ts[6]))
    assert trade.exit_price == pytest.approx(100.8 * 0.999)
    assert trade.net_pnl == pytest.approx((100.6992 - 100.1) * 500 - 1)  # 298.60
    assert outcome.bars_in_position == 3


def test_a_short_and_its_costs() -> None:
    bars = daily([*FLAT, (99.5, 100.2, 98.8, 99, 1e6), (98.5, 98.9, 95.5, 96, 1e6)])
    trade, _ = only_trade(bars, signal_at(bars, 2), side=-1)
    assert (trade.stop, trade.target) == (102, 96)
    assert trade.entry_price == pytest.approx(99.5 * 0.999)  # a short receives less
    assert trade.exit_price == pytest.approx(96 * 1.001)  # and pays more to cover
    assert trade.net_pnl == pytest.approx((99.4005 - 96.096) * 500 - 1)  # 1651.25
    assert trade.exit_reason == "target"


def test_an_open_trade_ends_with_the_data_at_the_last_close() -> None:
    bars = daily([*FLAT, (100, 101, 99.5, 100.5, 1e6), (100.5, 101, 99.5, 100.7, 1e6)])
    trade, _ = only_trade(bars, signal_at(bars, 2))
    assert (trade.exit_reason, trade.exit_price) == ("end_of_data", pytest.approx(100.7 * 0.999))


def test_an_intraday_trade_closes_at_the_sessions_last_close_and_never_carries_over() -> None:
    session = [(100, 101, 99, 100, 1e4)] * 3 + [(100, 100.8, 99.6, 100.4, 1e4)] * 2
    bars = intraday([session, [(100.4, 100.6, 100.2, 100.5, 1e4)] * 3], minutes=5)
    settings = Settings(atr_period=3, stop_atr=1, target_r=2, max_hold_bars=10, slippage_bps=0, commission=0)
    trade, _ = only_trade(bars, signal_at(bars, 2), settings=settings, intraday_=True)
    assert (trade.exit_reason, trade.exit_ts, trade.bars_held) == ("end_of_session", int(bars.ts[4]), 2)
    assert trade.net_pnl == pytest.approx((100.4 - 100) * 500)
    # A signal on a session's last bar would enter in the next session: an intraday setup skips it.
    assert simulate(bars, signal_at(bars, 4), 1, settings, start=0, intraday=True).trades.rows() == []


def test_signals_while_in_a_position_are_ignored_and_size_follows_risk() -> None:
    inside = (100, 101, 99.5, 100.5, 1e6)
    bars = daily([*FLAT, inside, inside, inside, inside, inside, inside])
    outcome = simulate(bars, signal_at(bars, 2, 3, 4, 5), 1, SETTINGS, start=0, intraday=False)
    # The first trade (entry bar 3) times out at bar 6's open; the signals of bars 3 and 4 come
    # while it is open; bar 5's too (the exit is at bar 6). Nothing else trades.
    assert [t.entry_ts for t in outcome.trades] == [int(bars.ts[3])]
    tiny = Settings(atr_period=3, stop_atr=1, capital=150, risk_fraction=0.01)
    assert simulate(bars, signal_at(bars, 2), 1, tiny, start=0, intraday=False).skipped_signals == 1


def test_bars_before_start_are_warm_up_only() -> None:
    bars = daily([*FLAT, *FLAT, (100, 101, 99.5, 100.5, 1e6)])
    assert simulate(bars, signal_at(bars, 2), 1, SETTINGS, start=3, intraday=False).trades.rows() == []
    assert len(simulate(bars, signal_at(bars, 3), 1, SETTINGS, start=3, intraday=False).trades) == 1


def test_settings_reject_nonsense_with_the_names() -> None:
    with pytest.raises(ValueError, match="slippage_bps=-1"):
        Settings(slippage_bps=-1)
    with pytest.raises(ValueError, match="max_hold_bars=0"):
        Settings(max_hold_bars=0)
    assert Settings.from_params({"atr_period": "5", "stop_atr": 2, "timeframe": "5m"}).atr_period == 5
