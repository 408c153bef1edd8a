import datetime as dt
from types import SimpleNamespace

import pytest

from marketbars.pipelines.backfill.rules import BackfillRequest, parse_request, plan_batches, summarize
from marketbars.pipelines.common.mapping import MAX_MAPPED_INSTANCES

TODAY = dt.date(2026, 11, 21)


def test_a_valid_request_with_defaults() -> None:
    request = parse_request(
        {"start_date": "2024-11-25", "end_date": "2024-12-02", "symbols": []}, today=TODAY
    )
    assert request == BackfillRequest(dt.date(2024, 11, 25), dt.date(2024, 12, 2), "stocks", "1m", ())
    assert plan_batches(request) == [
        ["2024-11-25"],
        ["2024-11-26"],
        ["2024-11-27"],
        ["2024-11-29"],
        ["2024-12-02"],
    ]


def test_every_problem_is_reported_at_once() -> None:
    params = {
        "start_date": "2024-12-02",
        "end_date": "2024-11-25",
        "dataset": "stocks",
        "symbols": ["aapl", "I:SPX"],
    }
    with pytest.raises(ValueError) as error:
        parse_request(params, today=TODAY)
    message = str(error.value)
    assert "end_date 2024-11-25 is before start_date 2024-12-02" in message
    assert "'aapl' is not in the vendor's stocks ticker form" in message
    assert "'I:SPX' is not in the vendor's stocks ticker form" in message


@pytest.mark.parametrize(
    ("params", "fragment"),
    [
        ({"end_date": "2024-01-02"}, "start_date is required"),
        ({"start_date": "2024-13-01", "end_date": "2024-01-02"}, "start_date='2024-13-01' is not a date"),
        ({"start_date": "2026-11-20", "end_date": "2026-11-21"}, "end_date 2026-11-21 is not in the past"),
        ({"start_date": "2010-01-04", "end_date": "2024-01-02"}, "one run covers at most 3660"),
        (
            {"start_date": "2024-01-02", "end_date": "2024-01-02", "dataset": "crypto"},
            "unknown dataset 'crypto'",
        ),
        ({"start_date": "2024-01-02", "end_date": "2024-01-02", "timeframe": "5m"}, "unknown timeframe '5m'"),
        ({"start_date": "2024-01-02", "end_date": "2024-01-02", "symbols": "AAPL"}, "symbols must be a list"),
        (
            {"start_date": "2024-01-02", "end_date": "2024-01-02", "symbols": ["*", "A"]},
            '"*" selects every ticker',
        ),
        (
            {"start_date": "1999-01-04", "end_date": "2000-01-04"},
            "before 2000-01-03, where the calendar starts",
        ),
    ],
)
def test_invalid_requests_fail_with_a_clear_message(params: dict, fragment: str) -> None:
    with pytest.raises(ValueError, match="invalid historical_bulk_backfill params") as error:
        parse_request(params, today=TODAY)
    assert fragment in str(error.value)


def test_indices_and_options_selections_use_their_own_ticker_forms() -> None:
    request = parse_request(
        {"start_date": "2024-01-02", "end_date": "2024-01-05", "dataset": "options", "timeframe": "1d",
         "symbols": ["O:SPY251219C00650000"]},
        today=TODAY,
    )  # fmt: skip
    assert request.symbols == ("O:SPY251219C00650000",)


def test_a_range_without_sessions_plans_nothing() -> None:
    request = parse_request(
        {"start_date": "2024-11-28", "end_date": "2024-12-01"}, today=TODAY
    )  # Thu holiday..Sun
    assert plan_batches(request) == [["2024-11-29"]]
    weekend = parse_request({"start_date": "2024-11-30", "end_date": "2024-12-01"}, today=TODAY)
    assert plan_batches(weekend) == []


def test_batches_never_exceed_the_mapping_limit_and_keep_every_session_in_order() -> None:
    request = parse_request({"start_date": "2015-01-02", "end_date": "2024-12-31"}, today=TODAY)
    batches = plan_batches(request)
    flat = [day for batch in batches for day in batch]
    assert len(batches) <= MAX_MAPPED_INSTANCES
    # XNYS sessions per year 2015-2024: 252 252 251 251 252 253 252 251 250 252 (2018: Bush mourning day)
    assert len(flat) == 2516
    assert flat == sorted(flat) and len(set(flat)) == len(flat)
    # The grid names each mapped instance by its dates.
    assert label(batches[0]) == f"{batches[0][0]}..{batches[0][-1]}"
    assert label(["2024-03-05"]) == "2024-03-05"


def label(sessions: list[str]) -> str:
    """The map index an ``ingest`` instance of these sessions gets, rendered as Airflow renders it."""
    import jinja2

    from marketbars.pipelines.common.flatfile_tasks import SESSIONS_LABEL

    return jinja2.Template(SESSIONS_LABEL).render(task=SimpleNamespace(sessions=sessions))


def test_summary_totals_and_missing_sessions() -> None:
    def entry(session: str, action: str, loaded: int, quarantined: int, read: int) -> dict:
        counts = {"rows_loaded": loaded, "rows_quarantined": quarantined, "rows_read": read}
        return {"session": session, "action": action, **counts}

    results = [
        [entry("2024-03-04", "loaded", 10, 1, 20)],
        [entry("2024-03-05", "current", 5, 0, 9), {"session": "2024-03-06", "action": "skipped"}],
    ]
    summary = summarize(results, [["2024-03-04"], ["2024-03-05", "2024-03-06"], ["2024-03-07"]])
    assert (summary.sessions_done, summary.rows_loaded, summary.rows_quarantined) == (3, 15, 1)
    assert summary.missing_sessions == ["2024-03-07"]
    assert summary.lines[-1].startswith("1 planned session(s) without a result (their load task failed")
    assert summary.lines[-1].endswith(": 2024-03-07")
