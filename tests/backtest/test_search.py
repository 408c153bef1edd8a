"""The walk-forward search, pure: its points, its folds, no look-ahead, and winners judged out of sample."""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Callable

import numpy as np
import pytest

from marketbars.backtest import detectors, search
from marketbars.backtest.bars import Bars
from marketbars.backtest.detectors import STOCKS, Detector
from marketbars.backtest.engine import Settings
from tests.backtest.sample_bars import daily, random_walk, sessions

SETTINGS = Settings(atr_period=3, stop_atr=1, target_r=0.5, max_hold_bars=5, slippage_bps=0, commission=0)


def every_nth(bars: Bars, params) -> np.ndarray:
    """Signal on the sessions whose ordinal is a multiple of ``period`` (7 would be every Sunday)."""
    return (bars.session % int(params["period"])) == 0


EVERY_NTH = Detector("every_nth", 1, {"period": 9.0}, lambda p: 3, STOCKS, False, every_nth)


def planted(count: int, wins_after: Callable[[int], bool]) -> Bars:
    """Daily bars that jump 5 up after a session for which ``wins_after(ordinal)`` holds and 5 down
    after any other: a long entered the next morning reaches its target, or its stop, in a bar."""
    days = sessions(count)
    rows, close = [], 1000.0
    for i in range(len(days)):
        if i == 0:
            rows.append((close, close + 5, close - 5, close, 1e6))
            continue
        up = wins_after(days[i - 1].toordinal())
        high, low = (close + 5, close - 0.1) if up else (close + 0.1, close - 5)
        rows.append((close, high, low, close + (4.9 if up else -4.9), 1e6))
        close = rows[-1][3]
    return daily(rows)


def test_points_are_the_grid_or_a_seeded_sample_and_too_many_are_refused() -> None:
    breakout = detectors.REGISTRY["breakout_bullish"]
    grid = search.points(breakout, {"lookback": [10, 20], "volume_multiple": [1.2, 1.5, 2.0]})
    assert [(p["lookback"], p["volume_multiple"]) for p in grid] == [
        (10, 1.2), (10, 1.5), (10, 2.0), (20, 1.2), (20, 1.5), (20, 2.0),
    ]  # fmt: skip
    assert set(grid[0]) == set(breakout.defaults), "every point is a full parameter set"
    ranges = {"lookback": list(range(5, 65, 5)), "volume_multiple": [1.0, 1.25, 1.5, 1.75, 2.0]}
    first = search.points(breakout, ranges, sample=10, seed=3)
    assert len(first) == 10 and first == search.points(breakout, ranges, sample=10, seed=3)
    assert first != search.points(breakout, ranges, sample=10, seed=4)
    with pytest.raises(ValueError, match="60 points is more than 50; narrow the ranges or sample"):
        search.points(breakout, ranges, max_points=50)
    with pytest.raises(ValueError, match="has no parameter lookbak"):
        search.points(breakout, {"lookbak": [1]})


def test_segments_cut_the_window_in_order_without_overlap() -> None:
    days = sessions(23)
    parts = search.segments(days, 3)
    assert len(parts) == 4 and parts[0].first == days[0] and parts[-1].last == days[-1]
    for earlier, later in itertools.pairwise(parts):
        assert earlier.last < later.first and days.index(later.first) == days.index(earlier.last) + 1
    with pytest.raises(ValueError, match="too few for 3 folds"):
        search.segments(days[:7], 3)


def test_no_test_bar_reaches_a_training_result() -> None:
    """Rewriting every bar after a segment leaves that segment's (and earlier ones') results alone."""
    rows = random_walk(160, seed=9)
    bars = daily(rows)
    days = [dt.date.fromordinal(int(o)) for o in bars.session]
    parts = search.segments(days[20:], 3)
    mean_reversion = detectors.REGISTRY["mean_reversion_long"]
    params = mean_reversion.parameters({"lookback": 10, "z_entry": 1.0})

    def warmup(first: dt.date) -> dt.date:
        return days[days.index(first) - 15]

    before = search.evaluate(mean_reversion, params, SETTINGS, bars, parts, warmup)
    assert sum(t.trades for t in before) > 5
    cut = days.index(parts[1].last) + 1
    rewritten = daily([*rows[:cut], *[(o * 3, h * 3, lo * 3, c * 3, v) for o, h, lo, c, v in rows[cut:]]])
    after = search.evaluate(mean_reversion, params, SETTINGS, rewritten, parts, warmup)
    assert after[:2] == before[:2] and after[2:] != before[2:]


def _search(bars: Bars, periods: list[int], folds: int = 3) -> search.Verdict:
    days = [dt.date.fromordinal(int(o)) for o in bars.session]
    parts = search.segments(days[10:], folds)
    grid = search.points(EVERY_NTH, {"period": periods})
    tallies = [
        search.evaluate(EVERY_NTH, p, SETTINGS, bars, parts, lambda first: days[days.index(first) - 5])
        for p in grid
    ]
    return search.judge(grid, tallies, parts)


def test_the_search_finds_the_value_that_wins_out_of_sample() -> None:
    verdict = _search(planted(250, lambda ordinal: ordinal % 9 == 0), [4, 6, 9, 10, 11])
    assert verdict.ranking[0]["parameters"]["period"] == 9
    assert verdict.ranking[0]["out_of_sample"]["win_rate"] == 1.0
    assert [f["chosen"]["period"] for f in verdict.folds] == [9, 9, 9]
    assert verdict.walk_forward.expectancy_r == pytest.approx(0.5)  # the target, half the risk, every time
    assert verdict.warnings == []


def test_in_sample_winners_that_fail_out_of_sample_are_called_overfitting() -> None:
    """The winning period changes every segment: training always picks last segment's winner."""
    days = sessions(250)
    boundaries = [d.toordinal() for d in days[10:][::60]]

    def wins_after(ordinal: int) -> bool:
        period = (4, 6, 9, 11, 13)[sum(1 for b in boundaries if ordinal >= b) - 1]
        return ordinal % period == 0

    verdict = _search(planted(250, wins_after), [4, 6, 9, 11, 13])
    assert verdict.chosen_in_sample.expectancy_r == pytest.approx(0.5), "every fold picked its winner"
    assert verdict.walk_forward.expectancy_r is not None and verdict.walk_forward.expectancy_r < 0
    assert verdict.warnings and verdict.warnings[0].startswith("overfitting: the points chosen in training")
