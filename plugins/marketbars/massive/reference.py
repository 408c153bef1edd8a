"""The vendor's reference data: request paths and filters, and records -> the project's corporate actions.

Endpoints (Massive, February 2026 on):

* ``GET /stocks/v1/splits``: ``ticker``, ``execution_date``, ``adjustment_type``, ``split_from``,
  ``split_to``, ``historical_adjustment_factor``, ``id``;
* ``GET /stocks/v1/dividends``: ``ticker``, ``ex_dividend_date``, ``cash_amount`` (not
  split-adjusted), ``currency``, ``distribution_type``, ``frequency``, the declaration, record and pay
  dates, ``historical_adjustment_factor``, ``id``;
* ``GET /vX/reference/tickers/{ticker}/events?types=ticker_change``: ``results`` with ``name``,
  ``composite_figi`` and ``events`` (``{"type": "ticker_change", "date", "ticker_change": {"ticker"}}``).

A record that cannot be read (a missing field, a date or number that is not one) becomes a
``Rejected`` with its reason; what can be read is checked by ``marketbars.market.corporate_actions``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import quote

from marketbars.market.corporate_actions import Dividend, Rejected, Split, TickerChange

SPLITS_PATH = "/stocks/v1/splits"
DIVIDENDS_PATH = "/stocks/v1/dividends"
PAGE_LIMIT = 5000  # the reference endpoints' maximum
TICKERS_PER_REQUEST = 50  # ticker.any_of: one request covers this many tickers


class UnreadableRecord(ValueError):
    """A field of a vendor record that is missing or is not what it should be."""


def window_filter(date_field: str, first: dt.date | None, last: dt.date | None) -> dict[str, str]:
    """Query filters of a date window (inclusive; None: open)."""
    out = {}
    if first is not None:
        out[f"{date_field}.gte"] = first.isoformat()
    if last is not None:
        out[f"{date_field}.lte"] = last.isoformat()
    return out


def splits_query(tickers: Sequence[str], first: dt.date | None, last: dt.date | None) -> dict[str, Any]:
    return {
        "ticker.any_of": ",".join(tickers),
        **window_filter("execution_date", first, last),
        "sort": "execution_date.asc",
        "limit": PAGE_LIMIT,
    }


def dividends_query(tickers: Sequence[str], first: dt.date | None, last: dt.date | None) -> dict[str, Any]:
    return {
        "ticker.any_of": ",".join(tickers),
        **window_filter("ex_dividend_date", first, last),
        "sort": "ex_dividend_date.asc",
        "limit": PAGE_LIMIT,
    }


def events_path(ticker: str) -> str:
    return f"/vX/reference/tickers/{quote(ticker, safe='')}/events"


EVENTS_QUERY = {"types": "ticker_change"}


def parse_splits(records: Iterable[Mapping[str, Any]]) -> tuple[list[Split], list[Rejected]]:
    out: list[Split] = []
    bad: list[Rejected] = []
    for raw in records:
        try:
            out.append(
                Split(
                    symbol=_text(raw, "ticker"),
                    execution_date=_date(raw, "execution_date"),
                    split_from=_number(raw, "split_from"),
                    split_to=_number(raw, "split_to"),
                    adjustment_type=_text(raw, "adjustment_type"),
                    source_id=_required_id(raw),
                    vendor_factor=_optional_number(raw, "historical_adjustment_factor"),
                    raw=dict(raw),
                )
            )
        except UnreadableRecord as exc:
            bad.append(_unreadable("split", raw, "execution_date", exc))
    return out, bad


def parse_dividends(records: Iterable[Mapping[str, Any]]) -> tuple[list[Dividend], list[Rejected]]:
    out: list[Dividend] = []
    bad: list[Rejected] = []
    for raw in records:
        try:
            frequency = raw.get("frequency")
            out.append(
                Dividend(
                    symbol=_text(raw, "ticker"),
                    ex_dividend_date=_date(raw, "ex_dividend_date"),
                    cash_amount=_number(raw, "cash_amount"),
                    currency=str(raw.get("currency") or ""),
                    distribution_type=str(raw.get("distribution_type") or "unknown"),
                    source_id=_required_id(raw),
                    declaration_date=_optional_date(raw, "declaration_date"),
                    record_date=_optional_date(raw, "record_date"),
                    pay_date=_optional_date(raw, "pay_date"),
                    frequency=int(frequency) if isinstance(frequency, int | float) else None,
                    vendor_factor=_optional_number(raw, "historical_adjustment_factor"),
                    raw=dict(raw),
                )
            )
        except UnreadableRecord as exc:
            bad.append(_unreadable("dividend", raw, "ex_dividend_date", exc))
    return out, bad


def parse_ticker_events(
    body: Mapping[str, Any], requested: str
) -> tuple[str | None, list[TickerChange], list[Rejected]]:
    """(composite FIGI, ticker changes, unreadable events) of one events answer. Without a FIGI the
    company cannot be keyed: every event is rejected."""
    results = body.get("results") or {}
    events = results.get("events") or [] if isinstance(results, Mapping) else []
    figi = results.get("composite_figi") if isinstance(results, Mapping) else None
    name = results.get("name") if isinstance(results, Mapping) else None
    changes: list[TickerChange] = []
    bad: list[Rejected] = []
    for raw in events:
        if not isinstance(raw, Mapping) or raw.get("type") != "ticker_change":
            continue  # other event types are not asked for
        try:
            if not figi:
                raise UnreadableRecord("no composite_figi for the company")
            change = raw.get("ticker_change")
            ticker = change.get("ticker") if isinstance(change, Mapping) else None
            if not ticker:
                raise UnreadableRecord("no ticker_change.ticker")
            changes.append(TickerChange(str(figi), str(ticker), _date(raw, "date"), name, raw=dict(raw)))
        except UnreadableRecord as exc:
            bad.append(_unreadable("ticker_change", {"requested": requested, **raw}, "date", exc))
    return (str(figi) if figi else None), changes, bad


def _unreadable(kind: str, raw: Mapping[str, Any], date_field: str, exc: UnreadableRecord) -> Rejected:
    try:
        day: dt.date | None = _date(raw, date_field)
    except UnreadableRecord:
        day = None
    symbol = str(raw.get("ticker") or raw.get("requested") or "?")
    return Rejected(kind, symbol, day, f"unreadable record: {exc}", dict(raw), _source_id(raw) or None)


def _text(raw: Mapping[str, Any], name: str) -> str:
    value = raw.get(name)
    if not isinstance(value, str) or not value:
        raise UnreadableRecord(f"{name} missing or not text ({value!r})")
    return value


def _date(raw: Mapping[str, Any], name: str) -> dt.date:
    value = raw.get(name)
    try:
        return dt.date.fromisoformat(str(value))
    except ValueError:
        raise UnreadableRecord(f"{name} {value!r} is not a date") from None


def _optional_date(raw: Mapping[str, Any], name: str) -> dt.date | None:
    return _date(raw, name) if raw.get(name) else None


def _number(raw: Mapping[str, Any], name: str) -> Decimal:
    value = raw.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise UnreadableRecord(f"{name} missing or not a number ({value!r})")
    try:
        number = Decimal(str(value))  # the JSON text's digits: 0.95968 stays 0.95968
    except InvalidOperation:
        raise UnreadableRecord(f"{name} {value!r} is not a number") from None
    if not number.is_finite():
        raise UnreadableRecord(f"{name} {value!r} is not a finite number")
    return number


def _optional_number(raw: Mapping[str, Any], name: str) -> Decimal | None:
    return _number(raw, name) if raw.get(name) is not None else None


def _required_id(raw: Mapping[str, Any]) -> str:
    """The vendor's record id: without it a re-fetch could not replace the record."""
    source_id = _source_id(raw)
    if not source_id:
        raise UnreadableRecord("no id (a re-fetch could not replace the record)")
    return source_id


def _source_id(raw: Mapping[str, Any]) -> str:
    return str(raw.get("id") or "")
