"""What a backtest_run trigger may ask for, which symbols it covers, and where its report goes."""

from __future__ import annotations

import datetime as dt

import pytest

from marketbars.pipelines.backtest import rules

RUN_DATE = dt.date(2026, 1, 12)
BASE = {"timeframe": "5m", "lookback_days": 90}


def test_an_empty_window_ends_at_the_run_and_looks_back() -> None:
    request = rules.parse_request(BASE, RUN_DATE)
    assert (request.start, request.end) == (dt.date(2025, 10, 15), RUN_DATE)
    assert [d.name for d in request.detectors][:2] == ["breakout_bullish", "breakout_bearish"]
    chosen = rules.parse_request(
        {**BASE, "start_date": "2025-12-15", "end_date": "2026-01-09", "detectors": ["breakout_bullish"],
         "detector_params": {"breakout_bullish": {"lookback": 30}}, "stop_atr": 2},
        RUN_DATE,
    )  # fmt: skip
    assert (chosen.start, chosen.end, chosen.settings.stop_atr) == (
        dt.date(2025, 12, 15),
        dt.date(2026, 1, 9),
        2.0,
    )
    assert chosen.overrides == {"breakout_bullish": {"lookback": 30}}


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"start_date": "2026-01-09", "end_date": "2026-01-02"}, "start_date 2026-01-09 is after end_date"),
        ({"timeframe": "2m"}, "timeframe '2m' is not one of 1m, 5m, 15m, 1h, 4h, 1d"),
        ({"detectors": ["gamma_squeeze"]}, "gamma_squeeze"),
        (
            {"detectors": ["breakout_bullish"], "detector_params": {"mean_reversion_long": {}}},
            "not in this run",
        ),
        ({"detector_params": {"breakout_bullish": {"lookbak": 3}}}, "lookbak"),
    ],
)
def test_bad_params_name_the_problem(params: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        rules.parse_request({**BASE, **params}, RUN_DATE)


def test_symbols_come_from_the_request_or_the_watchlists_stocks_and_indices() -> None:
    watchlist = {"AAPL": "stocks", "I:SPX": "indices", "O:SPY251219C00650000": "options"}
    assert rules.asset_classes([], watchlist) == {"AAPL": "stocks", "I:SPX": "indices"}
    assert rules.asset_classes(["MSFT", "I:VIX"], watchlist) == {"MSFT": "stocks", "I:VIX": "indices"}
    with pytest.raises(ValueError, match="no detector trades option contracts: O:SPY251219C00650000"):
        rules.asset_classes(["O:SPY251219C00650000"], watchlist)
    with pytest.raises(ValueError, match="no symbols"):
        rules.asset_classes([], {"O:SPY251219C00650000": "options"})


def test_the_warm_up_reads_further_back_for_a_longer_history() -> None:
    request = rules.parse_request({**BASE, "start_date": "2025-12-15", "end_date": "2026-01-09"}, RUN_DATE)
    starts = {
        d.name: rules.read_start(request.start, request.timeframe, d, None, request.settings)
        for d in request.detectors
    }
    assert all(first < request.start for first in starts.values())
    assert starts["trend_continuation_long"] < starts["breakout_bullish"]  # 100 bars of history against 21


def test_a_run_id_becomes_a_folder_name() -> None:
    assert rules.folder_name("manual__2026-01-12T20:15:00+00:00") == "manual__2026-01-12T20_15_00_00_00"


def test_action_lines_say_what_a_read_applies_and_ignores_once_per_reason() -> None:
    conflict = "conflicting records for TSLA on 2025-12-31: 3-for-1 (E1); 5-for-1 (E2)"
    actions = {
        "applied": [
            {
                "kind": "split",
                "ticker": "NVDA",
                "day": "2025-12-29",
                "detail": "10-for-1",
                "price_factor": 0.1,
            },
            {
                "kind": "dividend",
                "ticker": "AAPL",
                "day": "2025-12-22",
                "detail": "0.26",
                "price_factor": None,
            },
        ],
        "renames": [{"symbol": "PLTR", "earlier_ticker": "PALT", "until": "2026-01-02"}],
        "quarantined": [
            {"kind": "split", "ticker": "TSLA", "day": "2025-12-31", "reason": conflict},
            {"kind": "split", "ticker": "TSLA", "day": "2025-12-31", "reason": conflict},
        ],
    }
    assert rules.action_lines(actions) == [
        "applies split NVDA 2025-12-29: 10-for-1",
        "applies dividend AAPL 2025-12-22: 0.26 (adjusts nothing)",
        "reads PALT's bars before 2026-01-02 as PLTR",
        f"ignores quarantined split TSLA 2025-12-31: {conflict}",
    ]
    assert rules.action_lines({"applied": [], "renames": [], "quarantined": []}) == [
        "no corporate action applies in the window"
    ]


def test_batches_are_sized_by_bars_and_stay_within_the_mapping_limit() -> None:
    a_year_of_minutes = rules.bars_per_symbol(dt.date(2024, 1, 1), dt.date(2024, 12, 31), "1m")
    assert a_year_of_minutes == 252 * 390
    assert rules.bars_per_symbol(dt.date(2024, 1, 1), dt.date(2024, 12, 31), "1d") == 252
    assert rules.bars_per_symbol(dt.date(2024, 1, 1), dt.date(2024, 12, 31), "4h") == 252 * 1
    symbols = [f"S{i:03d}" for i in range(500)]
    minute_batches = rules.symbol_batches(symbols, a_year_of_minutes)
    assert {len(b) for b in minute_batches[:-1]} == {rules.MAX_BARS_PER_BATCH // a_year_of_minutes}
    assert [s for batch in minute_batches for s in batch] == sorted(symbols)
    assert rules.symbol_batches(symbols, 252) == [sorted(symbols)], "daily bars: one batch"
    assert len(rules.symbol_batches(symbols, 10**9, max_batches=100)) == 100, "over budget: the limit wins"
    assert rules.symbol_batches([], 10) == []
    assert rules.batch_label(["AAPL"]) == "AAPL"
    assert rules.batch_label(["AAPL", "I:SPX", "MSFT"]) == "AAPL..MSFT (3 symbols)"


def test_a_universe_is_shown_by_its_first_symbols() -> None:
    assert rules.shown(["AAPL", "MSFT"]) == "AAPL, MSFT"
    assert rules.shown([f"S{i}" for i in range(25)], limit=3) == "S0, S1, S2 and 22 more"


def test_a_search_is_checked_and_split_into_points_x_batches_under_the_limit() -> None:
    request = rules.parse_request({**BASE, "start_date": "2025-12-01", "end_date": "2025-12-31"}, RUN_DATE)
    spec = {"detector": "breakout_bullish", "parameters": {"lookback": [10, 20]}, "folds": 2}
    searched = rules.parse_search(spec, request)
    assert searched is not None and [p["lookback"] for p in searched.points] == [10, 20]
    assert len(searched.segments) == 3 and searched.segments[0].first == dt.date(2025, 12, 1)
    assert rules.parse_search({}, request) is None
    with pytest.raises(ValueError, match="search has no field fold"):
        rules.parse_search({**spec, "fold": 2}, request)
    with pytest.raises(ValueError, match="'gamma_flip' is not one of this run's detectors"):
        rules.parse_search({**spec, "detector": "gamma_flip"}, request)
    batches = [[f"S{i}"] for i in range(10)]
    work = rules.search_work(100, batches, limit=50)
    first_batch = sorted(p for w in work if w["symbols"] == ["S0"] for p in w["points"])
    assert len(work) <= 50 and first_batch == list(range(100))
    assert rules.search_label(work[0]) == "points 0..19 x S0", "the limit sets the chunk"
    assert [len(w["points"]) for w in rules.search_work(25, batches[:1])] == [10, 10, 5], "ten points a task"
    assert rules.search_work(0, batches) == []
