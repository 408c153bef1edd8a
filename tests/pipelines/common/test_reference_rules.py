"""Which tickers' corporate actions a run fetches, in which batches and windows, and its summary."""

from __future__ import annotations

import datetime as dt

from marketbars.pipelines.common.reference_rules import label, missing, plan_work, summary_lines

RECENT = dt.date(2025, 12, 1)


def test_new_tickers_get_their_whole_history_and_the_rest_a_recent_window() -> None:
    work = plan_work(["MSFT", "AAPL", "NEW"], whole_history={"NEW"}, events_due={"NEW", "MSFT"}, first=RECENT)
    assert work == [
        {"symbols": ["NEW"], "first": None, "last": None, "ticker_events": ["NEW"]},
        {"symbols": ["AAPL", "MSFT"], "first": "2025-12-01", "last": None, "ticker_events": ["MSFT"]},
    ]
    assert [label(w) for w in work] == ["NEW all", "AAPL..MSFT 2025-12-01"]


def test_batches_hold_at_most_fifty_tickers() -> None:
    symbols = [f"T{i:03d}" for i in range(120)]
    work = plan_work(symbols, whole_history=set(), events_due=set(), first=RECENT)
    assert [len(w["symbols"]) for w in work] == [50, 50, 20]
    assert sorted(s for w in work for s in w["symbols"]) == symbols
    assert plan_work([], whole_history=set(), events_due=set(), first=RECENT) == []


def test_the_summary_adds_up_the_batches_and_names_the_ones_without_a_result() -> None:
    work = plan_work(["A", "B"], whole_history={"A"}, events_due=set(), first=RECENT)
    results = [
        {
            "symbols": ["A"],
            "split": {"accepted": 2, "quarantined": 1, "duplicates": 1},
            "dividend": {"accepted": 4, "quarantined": 0, "duplicates": 0},
            "renames": [{"from": "A", "to": "AA", "on": "2025-12-03", "followed": True}],
            "factor_differences": 1,
        }
    ]
    assert summary_lines(work, results) == [
        "corporate actions of 2 ticker(s) in 2 batch(es):"
        " splits 2 stored, 1 quarantined, 1 repeats collapsed;"
        " dividends 4 stored, 0 quarantined, 0 repeats collapsed; 1 factor(s) differ from the vendor's"
        " (each one is in its corporate_actions task's log)",
        "renamed: A -> AA on 2025-12-03",
    ]
    assert missing(work, results) == ["B 2025-12-01"]
    assert summary_lines([], []) == [], "nothing planned: the planning task already said why"
