"""The vendor's reference records -> the project's corporate actions; unreadable ones say why."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from marketbars.massive.reference import (
    dividends_query,
    events_path,
    parse_dividends,
    parse_splits,
    parse_ticker_events,
    splits_query,
)

SPLIT = {
    "id": "E1", "ticker": "NVDA", "execution_date": "2024-06-10", "adjustment_type": "forward_split",
    "split_from": 1, "split_to": 10, "historical_adjustment_factor": 0.1,
}  # fmt: skip


def test_a_split_keeps_the_json_digits_and_its_identity() -> None:
    parsed, bad = parse_splits([SPLIT, {**SPLIT, "id": "E2", "split_from": 0.95968, "split_to": 1}])
    assert bad == []
    assert parsed[0].split_to == Decimal(10) and parsed[0].vendor_factor == Decimal("0.1")
    assert parsed[1].split_from == Decimal("0.95968")
    assert (parsed[0].source_id, parsed[0].execution_date, parsed[0].raw) == (
        "E1",
        dt.date(2024, 6, 10),
        SPLIT,
    )


def test_unreadable_records_are_rejected_with_the_field_named() -> None:
    _, bad = parse_splits(
        [
            {**SPLIT, "split_to": None},
            {**SPLIT, "execution_date": "June 10"},
            {**SPLIT, "split_from": True},
            {**SPLIT, "ticker": ""},
            {k: v for k, v in SPLIT.items() if k != "id"},
            {**SPLIT, "split_to": "Infinity"},
        ]
    )
    assert [b.reason for b in bad] == [
        "unreadable record: split_to missing or not a number (None)",
        "unreadable record: execution_date 'June 10' is not a date",
        "unreadable record: split_from missing or not a number (True)",
        "unreadable record: ticker missing or not text ('')",
        "unreadable record: no id (a re-fetch could not replace the record)",
        "unreadable record: split_to 'Infinity' is not a finite number",
    ]
    assert bad[0].day == dt.date(2024, 6, 10) and bad[1].day is None and bad[0].source_id == "E1"


def test_a_dividend_defaults_its_type_and_reads_its_dates() -> None:
    parsed, bad = parse_dividends(
        [{"id": "D1", "ticker": "AAPL", "cash_amount": 0.26, "currency": "USD",
          "ex_dividend_date": "2025-12-22", "pay_date": "2026-01-08", "frequency": 4}]
    )  # fmt: skip
    assert bad == []
    (d,) = parsed
    assert (d.cash_amount, d.distribution_type, d.pay_date, d.frequency) == (
        Decimal("0.26"), "unknown", dt.date(2026, 1, 8), 4
    )  # fmt: skip


def test_ticker_events_give_the_companys_history_keyed_by_figi() -> None:
    body = {
        "results": {
            "name": "Meta Platforms, Inc.", "composite_figi": "BBG000MM2P62",
            "events": [
                {"type": "ticker_change", "date": "2022-06-09", "ticker_change": {"ticker": "META"}},
                {"type": "ticker_change", "date": "2012-05-18", "ticker_change": {"ticker": "FB"}},
                {"type": "delisted", "date": "2030-01-01"},
                {"type": "ticker_change", "date": "2020-01-01", "ticker_change": {}},
            ],
        }
    }  # fmt: skip
    figi, changes, bad = parse_ticker_events(body, "META")
    assert figi == "BBG000MM2P62"
    assert [(c.ticker, c.valid_from) for c in changes] == [
        ("META", dt.date(2022, 6, 9)),
        ("FB", dt.date(2012, 5, 18)),
    ]
    assert [(b.symbol, b.reason) for b in bad] == [("META", "unreadable record: no ticker_change.ticker")]
    figi, changes, bad = parse_ticker_events({"results": {"events": body["results"]["events"][:1]}}, "META")
    assert figi is None and changes == []
    assert [b.reason for b in bad] == ["unreadable record: no composite_figi for the company"]


def test_queries_ask_for_a_window_oldest_first_at_the_maximum_page() -> None:
    assert splits_query(["A", "B"], dt.date(2024, 1, 1), None) == {
        "ticker.any_of": "A,B", "execution_date.gte": "2024-01-01", "sort": "execution_date.asc",
        "limit": 5000,
    }  # fmt: skip
    assert dividends_query(["A"], None, dt.date(2024, 2, 1))["ex_dividend_date.lte"] == "2024-02-01"
    assert events_path("BRK.B") == "/vX/reference/tickers/BRK.B/events"
    assert events_path("A/B") == "/vX/reference/tickers/A%2FB/events"
