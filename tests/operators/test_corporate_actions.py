"""CorporateActionsOperator end to end: the loopback reference endpoints -> checks -> PostgreSQL
(splits, dividends, ticker history, quarantine, ledger), re-runs, pagination, faults, renames."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from airflow.sdk.exceptions import AirflowFailException

from marketbars.warehouse.migrations import migrate
from sandbox import reference
from sandbox.rest_server import RestServer

pytestmark = pytest.mark.integration
SAMPLE_TICKERS = ["AAPL", "AMZN", "GOOGL", "JPM", "MSFT", "NVDA", "SIRI", "SPY", "TSLA"]


def fetch(symbols: list[str], first: str | None = None, events: list[str] = (), follow: bool = False) -> Any:
    from marketbars.operators.corporate_actions import CorporateActionsOperator

    op = CorporateActionsOperator(
        task_id="corporate_actions",
        symbols=symbols,
        first=first,
        ticker_events=list(events),
        follow_watchlist_renames=follow,
        requests_per_minute=6000,
    )
    return op.execute({"run_id": "test"})


def stored(conn: psycopg.Connection) -> dict[str, list[tuple]]:
    return {
        "splits": conn.execute(
            """SELECT symbol, execution_date::text, split_from::text, split_to::text, adjustment_type,
                      historical_adjustment_factor::text, source_id FROM market.splits ORDER BY 1, 2"""
        ).fetchall(),
        "dividends": conn.execute(
            """SELECT symbol, ex_dividend_date::text, cash_amount::text, currency, distribution_type,
                      source_id FROM market.dividends ORDER BY 1, 2"""
        ).fetchall(),
        "quarantine": conn.execute(
            """SELECT kind, requested, symbol, day::text, reason, source_id, raw
               FROM market.reference_quarantine ORDER BY 1, 2, 4, 6"""
        ).fetchall(),
        "history": conn.execute("SELECT * FROM market.ticker_history ORDER BY 1, 2").fetchall(),
    }


@pytest.fixture
def warehouse(db_conn: psycopg.Connection, rest_api: RestServer) -> psycopg.Connection:
    migrate(db_conn)
    return db_conn


def test_valid_records_are_stored_and_every_bad_one_quarantined_with_its_reason(
    warehouse: psycopg.Connection, rest_api: RestServer
) -> None:
    result = fetch(SAMPLE_TICKERS)
    tables = stored(warehouse)
    assert [row[:5] for row in tables["splits"]] == [
        ("NVDA", "2025-12-29", "1", "10", "forward_split"),
        ("SIRI", "2026-01-05", "10", "1", "reverse_split"),
    ]
    assert tables["splits"][0][6] == "E4d1a9c01"  # the duplicate E4d1a9c02 collapsed into the first id
    assert [row[:5] for row in tables["dividends"]] == [
        ("AAPL", "2025-12-22", "0.26", "USD", "recurring"),
        ("JPM", "2026-01-06", "1.5", "USD", "recurring"),
    ]
    quarantined = sorted(
        (kind, symbol, day, reason) for kind, _, symbol, day, reason, _, _ in tables["quarantine"]
    )
    expected = reference.expected_quarantine()
    assert [q[:3] for q in quarantined] == [e[:3] for e in expected]
    for (_, _, _, reason), (_, _, _, start) in zip(quarantined, expected, strict=True):
        assert reason.startswith(start), (reason, start)
    conflict = [q for q in tables["quarantine"] if q[2] == "TSLA"]
    assert {q[5] for q in conflict} == {"E0c55e801", "E0c55e802"}  # both sides of the conflict, raw kept
    assert all(q[6]["ticker"] == "TSLA" for q in conflict)
    assert result["split"] == {"accepted": 2, "quarantined": 4, "duplicates": 1, "requests": 1}
    assert result["dividend"] == {"accepted": 2, "quarantined": 2, "duplicates": 0, "requests": 1}
    assert result["factor_differences"] == 0, "the stand-in's factors are computed like ours"
    ledger = warehouse.execute(
        """SELECT kind, symbol, window_from::text, window_to::text, accepted, rejected, duplicates
           FROM market.reference_ledger WHERE symbol IN ('NVDA', 'TSLA') ORDER BY 1, 2"""
    ).fetchall()
    assert ledger == [
        ("dividend", "NVDA", "-infinity", "infinity", 0, 0, 0),
        ("dividend", "TSLA", "-infinity", "infinity", 0, 0, 0),
        ("split", "NVDA", "-infinity", "infinity", 1, 0, 1),
        ("split", "TSLA", "-infinity", "infinity", 0, 2, 0),
    ]
    query = next(r.query for r in rest_api.log if r.ticker == "splits")
    assert query == {"ticker.any_of": ",".join(SAMPLE_TICKERS), "sort": "execution_date.asc", "limit": "5000"}


def test_a_rerun_changes_nothing_and_a_withdrawn_record_is_gone(
    warehouse: psycopg.Connection, rest_api: RestServer
) -> None:
    withdrawn = {
        "id": "Ewithdrawn1", "ticker": "AAPL", "execution_date": "2025-12-30",
        "adjustment_type": "forward_split", "split_from": 1, "split_to": 2,
        "historical_adjustment_factor": 0.5,
    }  # fmt: skip
    rest_api.faults.extra_reference["splits"] = [withdrawn]
    fetch(SAMPLE_TICKERS)
    first = stored(warehouse)
    assert ("AAPL", "2025-12-30") in {row[:2] for row in first["splits"]}
    fetch(SAMPLE_TICKERS)
    assert stored(warehouse) == first
    rest_api.faults.extra_reference.clear()  # the vendor corrected its data
    fetch(SAMPLE_TICKERS)
    after = stored(warehouse)
    assert after["splits"] == [row for row in first["splits"] if row[0] != "AAPL"]
    assert after["quarantine"] == first["quarantine"]


def test_a_window_replaces_only_what_it_covers(warehouse: psycopg.Connection, rest_api: RestServer) -> None:
    fetch(SAMPLE_TICKERS)
    whole = stored(warehouse)
    result = fetch(SAMPLE_TICKERS, first="2026-01-01")
    assert stored(warehouse) == whole
    assert result["split"]["accepted"] == 1  # SIRI only: NVDA's split is before the window
    query = [r.query for r in rest_api.log if r.ticker == "splits"][-1]
    assert query["execution_date.gte"] == "2026-01-01"


def test_every_page_is_followed(warehouse: psycopg.Connection, rest_api: RestServer) -> None:
    many = [
        {"id": f"Epage{i:03d}", "ticker": "KO", "execution_date": f"2020-01-{i + 1:02d}",
         "adjustment_type": "forward_split", "split_from": 1, "split_to": 2}
        for i in range(7)
    ]  # fmt: skip
    rest_api.faults.extra_reference["splits"] = many
    rest_api.faults.reference_page = 2
    result = fetch(["KO"])
    assert result["split"]["requests"] == 4  # 7 records, 2 a page
    assert warehouse.execute("SELECT count(*) FROM market.splits WHERE symbol = 'KO'").fetchone() == (7,)
    pages = [r.query for r in rest_api.log if r.ticker == "splits"]
    assert "cursor" not in pages[0] and all(set(p) == {"cursor"} for p in pages[1:])


def test_unreadable_records_are_quarantined_and_faults_are_retried(
    warehouse: psycopg.Connection, rest_api: RestServer
) -> None:
    rest_api.faults.extra_reference["dividends"] = [
        {
            "id": "Ebad1",
            "ticker": "KO",
            "cash_amount": "n/a",
            "currency": "USD",
            "ex_dividend_date": "2025-12-01",
        },
        {"ticker": "KO", "cash_amount": 0.5, "currency": "USD", "ex_dividend_date": "2025-12-02"},
        {
            "id": "Ebad3",
            "ticker": "KO",
            "cash_amount": 0.5,
            "currency": "USD",
            "ex_dividend_date": "12/03/2025",
        },
    ]
    rest_api.faults.too_many = {"dividends": 1}
    rest_api.faults.server_errors = {"splits": 1}
    result = fetch(["KO"])
    assert result["dividend"] == {"accepted": 0, "quarantined": 3, "duplicates": 0, "requests": 2}
    reasons = warehouse.execute(
        "SELECT day::text, reason FROM market.reference_quarantine ORDER BY day NULLS LAST"
    ).fetchall()
    assert reasons == [
        ("2025-12-01", "unreadable record: cash_amount 'n/a' is not a number"),
        ("2025-12-02", "unreadable record: no id (a re-fetch could not replace the record)"),
        (None, "unreadable record: ex_dividend_date '12/03/2025' is not a date"),
    ]
    assert [r.status for r in rest_api.requests_for("splits")] == [500, 200]


def test_a_refused_key_fails_at_once(warehouse: psycopg.Connection, rest_api: RestServer) -> None:
    rest_api.faults.not_authorized = {"splits"}
    with pytest.raises(AirflowFailException, match=r"splits of AAPL start\.\.open: the API refused"):
        fetch(["AAPL"])
    assert len(rest_api.log) == 1


def test_a_renamed_watchlist_ticker_is_followed_once_and_logged(
    warehouse: psycopg.Connection, rest_api: RestServer, capfd: pytest.CaptureFixture
) -> None:
    warehouse.execute("INSERT INTO market.watchlist (symbol, asset_class) VALUES ('PALT', 'stocks')")
    result = fetch(["PALT"], events=["PALT", "ZZZZZ"], follow=True)
    assert result["renames"] == [{"from": "PALT", "to": "PLTR", "on": "2026-01-02", "followed": True}]
    logged = capfd.readouterr().out
    assert (
        "PALT was renamed: the vendor reports the company (BBG000SMPL01) trading as PLTR since 2026-01-02"
        in logged
    )
    assert "The watchlist now refreshes PLTR; PALT stays listed, inactive" in logged
    watch = warehouse.execute(
        "SELECT symbol, active FROM market.watchlist WHERE symbol IN ('PALT', 'PLTR') ORDER BY 1"
    ).fetchall()
    assert watch == [("PALT", False), ("PLTR", True)]
    history = warehouse.execute("SELECT composite_figi, valid_from::text, ticker FROM market.ticker_history")
    assert history.fetchall() == [
        ("BBG000SMPL01", "2020-09-30", "PALT"),
        ("BBG000SMPL01", "2026-01-02", "PLTR"),
    ]
    fetched = {r.ticker for r in rest_api.log}
    assert fetched == {"events:PALT", "events:ZZZZZ", "splits", "dividends"}
    whole = warehouse.execute(
        "SELECT kind, symbol FROM market.reference_ledger WHERE window_from = '-infinity' ORDER BY 1, 2"
    ).fetchall()
    assert ("split", "PLTR") in whole, "the new ticker's whole history is fetched at once"
    assert ("ticker_change", "ZZZZZ") in whole, "a ticker the vendor does not know is recorded as asked"
    assert fetch(["PALT"], events=["PALT"], follow=True)["renames"][0]["followed"] is False


def test_factors_that_differ_from_the_vendors_are_reported(
    warehouse: psycopg.Connection, rest_api: RestServer, capfd: pytest.CaptureFixture
) -> None:
    rest_api.faults.extra_reference["splits"] = [
        {"id": "Ek1", "ticker": "KO", "execution_date": "2025-06-02", "adjustment_type": "forward_split",
         "split_from": 1, "split_to": 2, "historical_adjustment_factor": 0.25},
        {"id": "Ek2", "ticker": "KO", "execution_date": "2025-09-02", "adjustment_type": "forward_split",
         "split_from": 1, "split_to": 2, "historical_adjustment_factor": 0.5},
    ]  # fmt: skip
    assert fetch(["KO"])["factor_differences"] == 0
    assert "factor differs" not in capfd.readouterr().out
    rest_api.faults.extra_reference["splits"][0]["historical_adjustment_factor"] = 0.2
    assert fetch(["KO"])["factor_differences"] == 1
    logged = capfd.readouterr().out
    assert (
        "factor differs from the vendor's: split KO 2025-06-02 (Ek1):"
        " cumulative factor 0.25, the vendor's 0.2" in logged
    )
