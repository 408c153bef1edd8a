"""The corporate-action checks: what may be applied, what is refused and why, what collapses."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from marketbars.market.corporate_actions import (
    Dividend,
    Split,
    TickerChange,
    asked_for,
    check_dividends,
    check_splits,
    check_ticker_changes,
    renamed_to,
)

DAY = dt.date(2024, 6, 10)


def split(split_from: str, split_to: str, kind: str = "forward_split", source_id: str = "a", **kw) -> Split:
    return Split(
        kw.get("symbol", "NVDA"), kw.get("day", DAY), Decimal(split_from), Decimal(split_to), kind, source_id
    )


@pytest.mark.parametrize(
    ("record", "reason"),
    [
        (split("0", "10"), "non-positive ratio 0:10"),
        (split("1", "-2"), "non-positive ratio 1:-2"),
        (split("2000000", "1", "reverse_split"), "ratio 2000000:1 is outside 1:1000..1000:1"),
        (split("1", "1001"), "ratio 1:1001 is outside 1:1000..1000:1"),
        (split("20", "1"), "ratio 20:1 contradicts adjustment_type forward_split (more shares after it)"),
        (
            split("1", "4", "reverse_split"),
            "ratio 1:4 contradicts adjustment_type reverse_split (fewer shares after it)",
        ),
        (split("1", "1"), "ratio 1:1 contradicts adjustment_type forward_split (more shares after it)"),
        (split("1", "2", "spinoff"), "unknown adjustment_type 'spinoff'"),
    ],
)
def test_a_split_that_cannot_be_applied_is_refused_with_its_reason(record: Split, reason: str) -> None:
    checked = check_splits([record])
    assert checked.accepted == [] and [r.reason for r in checked.rejected] == [reason]
    assert checked.rejected[0].source_id == "a" and checked.rejected[0].day == DAY


def test_valid_splits_pass_including_ratios_at_the_bounds_and_fractional_ones() -> None:
    records = [
        split("1", "1000", day=dt.date(2024, 1, 2)),
        split("1000", "1", "reverse_split", day=dt.date(2024, 1, 3)),
        split("0.95968", "1", "stock_dividend", day=dt.date(2024, 1, 4)),
        split("2", "3", day=dt.date(2024, 1, 5)),
    ]
    assert check_splits(records).accepted == records


def test_exact_repeats_collapse_into_the_first_id_and_disagreements_are_all_refused() -> None:
    checked = check_splits(
        [
            split("1", "10", source_id="b"),
            split("1", "10", source_id="a"),
            split("1", "3", symbol="TSLA", source_id="x"),
            split("1", "5", symbol="TSLA", source_id="y"),
            split("2", "6", symbol="TSLA", source_id="z"),  # the same 3-for-1 as x, written differently
        ]
    )
    assert [(s.symbol, s.source_id) for s in checked.accepted] == [("NVDA", "a")]
    assert [s.source_id for s in checked.collapsed] == ["b", "z"]
    assert sorted(r.source_id or "" for r in checked.rejected) == ["x", "y"]
    assert {r.reason for r in checked.rejected} == {
        "conflicting records for TSLA on 2024-06-10: 3-for-1 forward_split (x); 5-for-1 forward_split (y)"
    }


def test_an_invalid_record_does_not_block_a_valid_one_of_the_same_day() -> None:
    checked = check_splits(
        [split("1", "10", source_id="a"), split("2000000", "1", "reverse_split", source_id="b")]
    )
    assert [s.source_id for s in checked.accepted] == ["a"]
    assert [r.source_id for r in checked.rejected] == ["b"]


def dividend(amount: str, currency: str = "USD", kind: str = "recurring", source_id: str = "d") -> Dividend:
    return Dividend("AAPL", DAY, Decimal(amount), currency, kind, source_id)


def test_dividends_need_a_positive_usd_amount_and_one_amount_per_type_and_day() -> None:
    checked = check_dividends(
        [
            dividend("0", source_id="zero"),
            dividend("-0.1", source_id="negative"),
            dividend("0.83", "EUR", source_id="euro"),
            dividend("0.25", source_id="r1"),
            dividend("1.00", kind="special", source_id="s1"),
            dividend("0.25", source_id="r2"),
        ]
    )
    assert [d.source_id for d in checked.accepted] == ["r1", "s1"]
    assert [d.source_id for d in checked.collapsed] == ["r2"]
    assert {r.source_id: r.reason for r in checked.rejected} == {
        "zero": "non-positive cash amount 0",
        "negative": "non-positive cash amount -0.1",
        "euro": "paid in EUR, not USD",
    }


def change(ticker: str, day: dt.date, figi: str = "F") -> TickerChange:
    return TickerChange(figi, ticker, day)


def test_a_company_has_one_ticker_per_day_and_tickers_in_the_stock_form() -> None:
    checked = check_ticker_changes(
        [
            change("FB", dt.date(2012, 5, 18)),
            change("META", DAY),
            change("MVRS", DAY),
            change("meta!", dt.date(2023, 1, 3)),
        ]
    )
    assert [c.ticker for c in checked.accepted] == ["FB"]
    assert sorted(r.reason for r in checked.rejected) == [
        "conflicting records for META on 2024-06-10: ticker META (no id); ticker MVRS (no id)",
        "conflicting records for MVRS on 2024-06-10: ticker META (no id); ticker MVRS (no id)",
        "ticker 'meta!' is not a stock ticker",
    ]


def test_a_rename_is_the_companys_latest_ticker_when_it_is_not_the_requested_one() -> None:
    history = [change("FB", dt.date(2012, 5, 18)), change("META", dt.date(2022, 6, 9))]
    assert renamed_to(history, "FB") == history[1]
    assert renamed_to(history, "META") is None
    assert renamed_to(history, "GOOG") is None, "a history the requested ticker is not in says nothing"
    assert renamed_to([], "FB") is None


def test_records_a_query_did_not_ask_for_are_set_apart() -> None:
    inside, other_ticker, too_early = (
        split("1", "2"),
        split("1", "2", symbol="AMD"),
        split("1", "2", day=dt.date(2020, 1, 2)),
    )
    kept, strays = asked_for([inside, other_ticker, too_early], ["NVDA"], dt.date(2024, 1, 1), None)
    assert kept == [inside] and strays == [other_ticker, too_early]
