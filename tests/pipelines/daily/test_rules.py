import datetime as dt

import pytest

from marketbars.pipelines.common.mapping import MAX_MAPPED_INSTANCES
from marketbars.pipelines.daily import rules as daily

D = dt.date
WATCHLIST = {"AAPL": "stocks", "MSFT": "stocks", "I:SPX": "indices"}


def test_sessions_ending_counts_trading_sessions_only() -> None:
    assert daily.sessions_ending(D(2024, 12, 2), 3) == [D(2024, 11, 27), D(2024, 11, 29), D(2024, 12, 2)]
    assert daily.sessions_ending(D(2024, 11, 28), 2) == []  # Thanksgiving: nothing to do
    assert len(daily.sessions_ending(D(2024, 12, 31), 90)) == 90


def test_routing_is_by_published_object_and_newcomers_get_history() -> None:
    published = {
        ("stocks", "1m", D(2024, 11, 26)),
        ("stocks", "1d", D(2024, 11, 26)),
        ("indices", "1m", D(2024, 11, 26)),
        ("stocks", "1m", D(2024, 11, 25)),
    }
    plan = daily.plan_daily(
        run_date=D(2024, 11, 27),
        days=2,
        history_sessions=3,
        watchlist=WATCHLIST,
        new_symbols=["MSFT", "ZZZ"],
        object_exists=lambda dataset, timeframe, day: (dataset, timeframe, day) in published,
    )
    assert plan.refresh == [D(2024, 11, 26), D(2024, 11, 27)]
    assert plan.history == [D(2024, 11, 25), D(2024, 11, 26), D(2024, 11, 27)]
    assert plan.new_symbols == ["MSFT"]  # ZZZ is not on the active watchlist
    assert sorted(plan.flatfile, key=lambda w: (w["dataset"], w["timeframe"], w["sessions"])) == [
        {"dataset": "indices", "timeframe": "1m", "sessions": ["2024-11-26"], "symbols": ["I:SPX"]},
        {"dataset": "stocks", "timeframe": "1d", "sessions": ["2024-11-26"], "symbols": ["AAPL", "MSFT"]},
        {"dataset": "stocks", "timeframe": "1m", "sessions": ["2024-11-25"], "symbols": ["MSFT"]},
        {"dataset": "stocks", "timeframe": "1m", "sessions": ["2024-11-26"], "symbols": ["AAPL", "MSFT"]},
    ]
    assert {w["symbol"]: w["sessions"] for w in plan.rest} == {
        "AAPL": {"1m": ["2024-11-27"], "1d": ["2024-11-27"]},
        "I:SPX": {"1m": ["2024-11-27"], "1d": ["2024-11-26", "2024-11-27"]},
        "MSFT": {"1m": ["2024-11-27"], "1d": ["2024-11-25", "2024-11-27"]},
    }
    assert plan.notes == []


def test_without_a_flat_file_connection_everything_goes_through_rest_and_says_so() -> None:
    plan = daily.plan_daily(
        run_date=D(2024, 11, 27),
        days=2,
        history_sessions=90,
        watchlist=WATCHLIST,
        new_symbols=[],
        object_exists=None,
    )
    assert plan.flatfile == [] and len(plan.rest) == 3
    assert plan.rest[0]["sessions"] == {
        "1m": ["2024-11-26", "2024-11-27"],
        "1d": ["2024-11-26", "2024-11-27"],
    }
    assert plan.notes == [
        "no massive_s3 connection is configured: every session goes through the REST API "
        "(configure massive_s3 to load history from the flat files)"
    ]


def test_rest_is_not_asked_for_a_renamed_newcomer_before_it_had_its_ticker() -> None:
    """META's history before the rename is FB's: REST knows no META bars then (a read stitches FB's)."""
    plan = daily.plan_daily(
        run_date=D(2024, 11, 27),
        days=1,
        history_sessions=4,
        watchlist={"META": "stocks", "AAPL": "stocks"},
        new_symbols=["META", "AAPL"],
        object_exists=None,
        renamed_on={"META": D(2024, 11, 25)},
    )
    sessions = {w["symbol"]: w["sessions"]["1m"] for w in plan.rest}
    assert sessions["META"] == ["2024-11-25", "2024-11-26", "2024-11-27"]
    assert sessions["AAPL"] == ["2024-11-22", "2024-11-25", "2024-11-26", "2024-11-27"]


def test_a_holiday_run_does_nothing_and_days_are_bounded() -> None:
    plan = daily.plan_daily(
        run_date=D(2024, 11, 28),
        days=2,
        history_sessions=90,
        watchlist=WATCHLIST,
        new_symbols=["MSFT"],
        object_exists=None,
    )
    assert (plan.flatfile, plan.rest, plan.refresh) == ([], [], [])
    assert plan.notes == ["2024-11-28 is not an XNYS trading session: nothing to do"]
    with pytest.raises(ValueError, match="days=31 must be between 1 and 30"):
        daily.plan_daily(
            run_date=D(2024, 11, 27),
            days=31,
            history_sessions=90,
            watchlist=WATCHLIST,
            new_symbols=[],
            object_exists=None,
        )


def test_a_long_history_stays_within_the_mapping_limit() -> None:
    plan = daily.plan_daily(
        run_date=D(2024, 12, 31),
        days=30,
        history_sessions=2000,
        watchlist=WATCHLIST,
        new_symbols=["MSFT", "I:SPX"],
        object_exists=lambda *_: True,
    )
    assert len(plan.history) == 2000
    assert len(plan.flatfile) <= MAX_MAPPED_INSTANCES
    covered = {(w["dataset"], w["timeframe"], s) for w in plan.flatfile for s in w["sessions"]}
    assert len(covered) == 2 * 2 * 2000  # every history session, both datasets and timeframes


def test_check_results_finds_missing_work_and_gaps() -> None:
    routed = {
        "flatfile": [
            {"dataset": "stocks", "timeframe": "1m", "sessions": ["2024-11-25", "2024-11-26"], "symbols": []}
        ],
        "rest": [{"symbol": "AAPL"}, {"symbol": "MSFT"}],
    }
    loads = [[{"dataset": "stocks", "timeframe": "1m", "session": "2024-11-25", "action": "loaded"}]]
    fills = [{"symbol": "AAPL", "1m": {"gaps": ["2024-11-27"]}, "1d": {"gaps": []}}]
    routed["flatfile"][0]["symbols"] = ["IBM"]
    gaps, missing, failed = daily.check_results(routed, loads, fills)
    assert gaps == {"AAPL": ["1m 2024-11-27"]}
    assert missing == ["REST MSFT", "flat file stocks 1m 2024-11-26"]
    assert failed == {"IBM", "MSFT"}


def test_recent_rest_sessions_are_loaded_from_their_flat_file_once_it_is_out() -> None:
    published = {("stocks", "1m", D(2024, 11, 22)), ("stocks", "1m", D(2024, 11, 26))}
    plan = daily.plan_daily(
        run_date=D(2024, 11, 27),
        days=1,
        history_sessions=90,
        watchlist=WATCHLIST,
        new_symbols=[],
        object_exists=lambda dataset, timeframe, day: (dataset, timeframe, day) in published,
        rest_filled={
            ("AAPL", "1m"): [
                D(2024, 11, 22),
                D(2024, 11, 25),
                D(2024, 11, 26),
            ],  # 11-25's file is not out yet
            ("MSFT", "1m"): [D(2024, 11, 26)],
        },
    )
    assert sorted((w["sessions"], w["symbols"]) for w in plan.flatfile) == [
        (["2024-11-22"], ["AAPL"]),
        (["2024-11-26"], ["AAPL", "MSFT"]),
    ]
    assert all(
        w["sessions"] == {"1m": ["2024-11-27"], "1d": ["2024-11-27"]} for w in plan.rest
    )  # no REST again


def test_a_newcomer_is_established_once_its_work_happened_and_every_rest_gap_is_explained() -> None:
    gaps = {"MSFT": ["1m 2024-11-25", "1d 2024-11-25"], "NVDA": ["1m 2024-11-26"]}
    explained = {"MSFT 1m 2024-11-25", "MSFT 1d 2024-11-25"}
    assert daily.established(["AMD", "MSFT", "NVDA", "IBM"], {"IBM"}, gaps, explained) == ["AMD", "MSFT"]
    assert daily.established(["MSFT"], set(), gaps, {"MSFT 1m 2024-11-25"}) == []  # 1d still open
