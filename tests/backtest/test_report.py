"""The report's pure parts: a long equity curve cut to what a figure shows, its extremes kept."""

from __future__ import annotations

import numpy as np

from marketbars.backtest.report import envelope


def test_a_long_curve_keeps_every_peak_and_trough_in_time_order() -> None:
    rng = np.random.default_rng(7)
    values = np.cumsum(rng.standard_normal(200_000))
    times = np.arange(len(values)) * 60_000_000
    cut_times, cut_values = envelope(times, values, buckets=500)
    assert len(cut_values) <= 4 * 500 and np.all(np.diff(cut_times) > 0)
    assert (cut_values.max(), cut_values.min()) == (values.max(), values.min())
    assert (cut_times[0], cut_times[-1], cut_values[-1]) == (times[0], times[-1], values[-1])
    # each kept point is the curve's own point at that time
    assert np.array_equal(values[cut_times // 60_000_000], cut_values)
    # the extremes of every run of the curve survive, not only the global ones
    edges = np.linspace(0, len(values), 501).astype(int)
    for lo, hi in zip(edges[:-1:50], edges[1::50], strict=True):
        kept = cut_values[(cut_times >= times[lo]) & (cut_times <= times[hi - 1])]
        assert (kept.max(), kept.min()) == (values[lo:hi].max(), values[lo:hi].min())


def test_a_short_curve_comes_back_whole() -> None:
    times, values = np.arange(10), np.linspace(0, 1, 10)
    assert envelope(times, values, buckets=5) == (times, values)
