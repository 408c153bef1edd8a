"""The sample market's corporate actions: what happened (which the flat files' raw prices and tickers
follow), and the vendor's reference records about it, faults included, in the endpoints' shapes.

``include/sample_market/reference.json`` holds the records. A split marked ``real`` changes the
raw prices and volumes of the bars before its execution date; a company's tickers decide which
ticker its bars carry on each day. Records marked otherwise are the vendor's known faults (a
duplicate, a conflicting pair, an absurd ratio, a ratio against its type, a dividend in euros, a
zero dividend), each with the quarantine reason it must get (``expect``).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

REFERENCE_JSON = Path(__file__).resolve().parents[1] / "include" / "sample_market" / "reference.json"
LISTED_SINCE = dt.date(2003, 9, 10)  # when a company without a recorded history listed its ticker


@dataclass(frozen=True)
class Company:
    composite_figi: str
    name: str
    cik: str
    tickers: tuple[tuple[str, dt.date], ...]  # (ticker, from), oldest first


@cache
def records() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(REFERENCE_JSON.read_text())
    return data


def vendor_record(record: dict[str, Any]) -> dict[str, Any]:
    """A record as the vendor serves it: without the sample's own annotations."""
    return {k: v for k, v in record.items() if k not in ("sample", "expect")}


@cache
def companies() -> tuple[Company, ...]:
    return tuple(
        Company(
            c["composite_figi"],
            c["name"],
            c["cik"],
            tuple((t["ticker"], dt.date.fromisoformat(t["from"])) for t in c["tickers"]),
        )
        for c in records()["companies"]
    )


def company_of(ticker: str) -> Company | None:
    """The company that has (or had) the ticker, when the sample records a history for it."""
    for company in companies():
        if any(t == ticker for t, _ in company.tickers):
            return company
    return None


def tickers_of(ticker: str) -> list[str]:
    """Every ticker of the company now called ``ticker`` (itself when none is recorded)."""
    company = company_of(ticker)
    return [t for t, _ in company.tickers] if company else [ticker]


def current_ticker(ticker: str) -> str:
    """The ticker a company trades under now (the universe lists companies by it)."""
    company = company_of(ticker)
    return company.tickers[-1][0] if company else ticker


def listed_ticker(ticker: str, day: dt.date) -> str:
    """The ticker the company now called ``ticker`` traded under on ``day``."""
    company = company_of(ticker)
    if company is None:
        return ticker
    listed = company.tickers[0][0]
    for name, since in company.tickers:
        if since <= day:
            listed = name
    return listed


def raw_factor(ticker: str, day: dt.date) -> float:
    """What today's share basis is multiplied by to give the raw price on ``day``: the product of
    split_to / split_from over the real splits executed after it."""
    factor = 1.0
    for split in records()["splits"]:
        real = split["sample"] == "real" and split["ticker"] == ticker
        if real and day < dt.date.fromisoformat(split["execution_date"]):
            factor *= split["split_to"] / split["split_from"]
    return factor


def split_records(tickers: Iterable[str]) -> list[dict[str, Any]]:
    wanted = set(tickers)
    return [vendor_record(r) for r in records()["splits"] if r["ticker"] in wanted]


def dividend_records(
    tickers: Iterable[str], previous_close: Callable[[str, dt.date], float | None]
) -> list[dict[str, Any]]:
    """The tickers' dividend records, each with the vendor's factor computed from the sample's own
    close before the ex-date (as the vendor computes it from its own)."""
    wanted = set(tickers)
    out = []
    for record in records()["dividends"]:
        if record["ticker"] not in wanted:
            continue
        served = vendor_record(record)
        close = previous_close(record["ticker"], dt.date.fromisoformat(record["ex_dividend_date"]))
        if close and record["cash_amount"] > 0:
            served["historical_adjustment_factor"] = round(1 - record["cash_amount"] / close, 10)
        out.append(served)
    return out


def events(ticker: str, known: Callable[[str], bool]) -> dict[str, Any] | None:
    """The events endpoint's ``results`` for a ticker (newest first), or None when the vendor does not
    know it. A company without a recorded history has one listing event."""
    company = company_of(ticker)
    if company is None:
        if not known(ticker):
            return None
        digest = hashlib.sha256(ticker.encode()).hexdigest()[:8].upper()
        company = Company(f"BBG00{digest}", f"{ticker} Sample Inc.", "", ((ticker, LISTED_SINCE),))
    return {
        "name": company.name,
        "composite_figi": company.composite_figi,
        "cik": company.cik,
        "events": [
            {"type": "ticker_change", "date": since.isoformat(), "ticker_change": {"ticker": name}}
            for name, since in reversed(company.tickers)
        ],
    }


def expected_quarantine() -> list[tuple[str, str, str, str]]:
    """(kind, ticker, day, reason start) of every record the checks must refuse."""
    out = []
    for kind, day_field in (("split", "execution_date"), ("dividend", "ex_dividend_date")):
        for record in records()[kind + "s"]:
            if "expect" in record:
                out.append((kind, record["ticker"], record[day_field], record["expect"]))
    return sorted(out)
