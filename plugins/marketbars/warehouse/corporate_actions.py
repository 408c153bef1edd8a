"""Corporate actions in the warehouse: validated records replaced per fetch, rejected ones kept with
their reason, a ledger of every fetch, and what ``market.bars_adjusted`` makes of them.

A fetch covers some symbols over a window of dates (open-ended on either side). Its write replaces,
in one transaction, every stored record and quarantined record of those symbols in that window, and
any stored record carrying one of its records' vendor ids (a record the vendor moved to another
date): a re-run of the same fetch leaves the same rows, and a record the vendor withdrew is gone.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from marketbars.market.corporate_actions import Checked, Dividend, Rejected, Split, TickerChange
from marketbars.warehouse.connection import Connection, Cursor

FACTOR_TOLERANCE = 1e-6  # relative: the vendor's factors are rounded to about ten digits


@dataclass(frozen=True)
class Fetch:
    """What one reference query asked and took: its symbols, window (None: open) and requests."""

    kind: str
    symbols: Sequence[str]
    first: dt.date | None
    last: dt.date | None
    requests: int
    request_ids: Sequence[str]
    run_id: str | None


@dataclass(frozen=True)
class FactorDifference:
    kind: str
    symbol: str
    day: dt.date
    source_id: str | None
    factor: float
    vendor_factor: float

    def describe(self) -> str:
        return (
            f"{self.kind} {self.symbol} {self.day} ({self.source_id}): cumulative factor {self.factor:.10g},"
            f" the vendor's {self.vendor_factor:.10g}"
        )


_WINDOW = "{day} >= coalesce(%(first)s::date, '-infinity') AND {day} <= coalesce(%(last)s::date, 'infinity')"
_SPLIT_INSERT = """INSERT INTO market.splits (symbol, execution_date, split_from, split_to, adjustment_type,
                       historical_adjustment_factor, source_id)
                   VALUES (%s, %s, %s, %s, %s, %s, %s)"""
_DIVIDEND_INSERT = """INSERT INTO market.dividends (symbol, ex_dividend_date, distribution_type, cash_amount,
                          currency, declaration_date, record_date, pay_date, frequency,
                          historical_adjustment_factor, source_id)
                      VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"""


def replace_splits(conn: Connection, fetch: Fetch, checked: Checked[Split]) -> None:
    """The fetch's splits and rejections in place of what it covered, in one transaction."""
    with conn.transaction(), conn.cursor() as cur:
        _lock(cur, fetch)
        cur.execute(
            "DELETE FROM market.splits WHERE (symbol = ANY(%(symbols)s) AND "
            + _WINDOW.format(day="execution_date")
            + ") OR source_id = ANY(%(ids)s)",
            _window(fetch) | {"ids": [s.source_id for s in checked.accepted]},
        )
        cur.executemany(
            _SPLIT_INSERT,
            [
                (
                    s.symbol,
                    s.execution_date,
                    s.split_from,
                    s.split_to,
                    s.adjustment_type,
                    s.vendor_factor,
                    s.source_id,
                )
                for s in checked.accepted
            ],
        )
        _replace_rejections(cur, fetch, checked)


def replace_dividends(conn: Connection, fetch: Fetch, checked: Checked[Dividend]) -> None:
    """The fetch's dividends and rejections in place of what it covered, in one transaction."""
    with conn.transaction(), conn.cursor() as cur:
        _lock(cur, fetch)
        cur.execute(
            "DELETE FROM market.dividends WHERE (symbol = ANY(%(symbols)s) AND "
            + _WINDOW.format(day="ex_dividend_date")
            + ") OR source_id = ANY(%(ids)s)",
            _window(fetch) | {"ids": [d.source_id for d in checked.accepted]},
        )
        cur.executemany(
            _DIVIDEND_INSERT,
            [
                (
                    d.symbol,
                    d.ex_dividend_date,
                    d.distribution_type,
                    d.cash_amount,
                    d.currency,
                    d.declaration_date,
                    d.record_date,
                    d.pay_date,
                    d.frequency,
                    d.vendor_factor,
                    d.source_id,
                )
                for d in checked.accepted
            ],
        )
        _replace_rejections(cur, fetch, checked)


def replace_ticker_history(
    conn: Connection, fetch: Fetch, composite_figi: str | None, checked: Checked[TickerChange]
) -> None:
    """One ticker's company history (the whole of it: the endpoint has no window) in place of the
    company's stored one, with the fetch's rejections, in one transaction. No company (the vendor
    does not know the ticker): nothing stored, the fetch recorded."""
    with conn.transaction(), conn.cursor() as cur:
        _lock(cur, fetch)
        if composite_figi is not None:
            cur.execute("DELETE FROM market.ticker_history WHERE composite_figi = %s", (composite_figi,))
            cur.executemany(
                "INSERT INTO market.ticker_history (composite_figi, valid_from, ticker, name)"
                " VALUES (%s, %s, %s, %s)",
                [(c.composite_figi, c.valid_from, c.ticker, c.name) for c in checked.accepted],
            )
        _replace_rejections(cur, fetch, checked)


def _lock(cur: Cursor, fetch: Fetch) -> None:
    """Writers of one kind take turns: overlapping runs never interleave a replace."""
    cur.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (f"reference:{fetch.kind}",))


def _window(fetch: Fetch) -> dict[str, Any]:
    return {"symbols": list(fetch.symbols), "first": fetch.first, "last": fetch.last}


def _replace_rejections(cur: Cursor, fetch: Fetch, checked: Checked[Any]) -> None:
    """The fetch's rejected records in place of the earlier ones it covered (undated ones only on a
    whole-history fetch, which is the only kind that would find them again), and its ledger rows."""
    cur.execute(
        "DELETE FROM market.reference_quarantine WHERE kind = %(kind)s AND requested = ANY(%(symbols)s)"
        " AND ((" + _WINDOW.format(day="day") + ") OR (day IS NULL AND %(first)s::date IS NULL))",
        _window(fetch) | {"kind": fetch.kind},
    )
    requested = set(fetch.symbols)
    cur.executemany(
        """INSERT INTO market.reference_quarantine (kind, requested, symbol, day, reason, source_id, raw)
           VALUES (%s, %s, %s, %s, %s, %s, %s)""",
        [
            (r.kind, _requested(r, requested), r.symbol, r.day, r.reason, r.source_id, json.dumps(r.raw))
            for r in checked.rejected
        ],
    )
    by_symbol = {s: [0, 0, 0] for s in fetch.symbols}
    for record in checked.accepted:
        by_symbol.setdefault(_requested(record, requested), [0, 0, 0])[0] += 1
    for rejected in checked.rejected:
        by_symbol.setdefault(_requested(rejected, requested), [0, 0, 0])[1] += 1
    for repeat in checked.collapsed:
        by_symbol.setdefault(_requested(repeat, requested), [0, 0, 0])[2] += 1
    cur.executemany(
        """INSERT INTO market.reference_ledger (kind, symbol, window_from, window_to, accepted, rejected,
               duplicates, requests, request_ids, run_id)
           VALUES (%s, %s, coalesce(%s::date, '-infinity'), coalesce(%s::date, 'infinity'),
                   %s, %s, %s, %s, %s, %s)
           ON CONFLICT (kind, symbol, window_from, window_to) DO UPDATE SET
               accepted = EXCLUDED.accepted, rejected = EXCLUDED.rejected, duplicates = EXCLUDED.duplicates,
               requests = EXCLUDED.requests, request_ids = EXCLUDED.request_ids, run_id = EXCLUDED.run_id,
               fetched_at = now()""",
        [
            (
                fetch.kind,
                symbol,
                fetch.first,
                fetch.last,
                accepted,
                rejected,
                duplicates,
                fetch.requests,
                list(fetch.request_ids),
                fetch.run_id,
            )
            for symbol, (accepted, rejected, duplicates) in sorted(by_symbol.items())
            if symbol in requested
        ],
    )


def _requested(record: Split | Dividend | TickerChange | Rejected, requested: set[str]) -> str:
    """The symbol a record is filed under: its own, or the one fetched (a ticker's history)."""
    if record.symbol in requested or len(requested) != 1:
        return record.symbol
    return next(iter(requested))


def without_full_history(conn: Connection, kind: str, symbols: Sequence[str]) -> list[str]:
    """The symbols whose whole history of ``kind`` was never fetched (new to the warehouse)."""
    rows = conn.execute(
        """SELECT s FROM unnest(%s::text[]) AS s WHERE NOT EXISTS (
               SELECT 1 FROM market.reference_ledger l
               WHERE l.kind = %s AND l.symbol = s AND l.window_from = '-infinity')
           ORDER BY s""",
        (list(symbols), kind),
    )
    return [str(s) for (s,) in rows]


def events_due(conn: Connection, symbols: Sequence[str], max_age_days: int) -> list[str]:
    """The symbols whose ticker history was never fetched or not within ``max_age_days``."""
    rows = conn.execute(
        """SELECT s FROM unnest(%s::text[]) AS s WHERE NOT EXISTS (
               SELECT 1 FROM market.reference_ledger l
               WHERE l.kind = 'ticker_change' AND l.symbol = s
                 AND l.fetched_at > now() - make_interval(days => %s))
           ORDER BY s""",
        (list(symbols), max_age_days),
    )
    return [str(s) for (s,) in rows]


def factor_differences(
    conn: Connection, symbols: Sequence[str], tolerance: float = FACTOR_TOLERANCE
) -> list[FactorDifference]:
    """Stored actions whose cumulative factor (``market.adjustment_factor_check``) differs from the
    vendor's ``historical_adjustment_factor`` by more than ``tolerance`` (relative). Executed actions
    that adjust something only: a dividend before the warehouse's first bar has no close to work
    from (the backtest report lists such dividends as not applied)."""
    rows = conn.execute(
        """SELECT kind, symbol, day, source_id, factor, vendor_factor
           FROM market.adjustment_factor_check(%s)
           WHERE vendor_factor IS NOT NULL AND day <= (now() AT TIME ZONE 'America/New_York')::date
             AND abs(factor / vendor_factor - 1) > %s
           ORDER BY symbol, day, kind""",
        (list(symbols), tolerance),
    ).fetchall()
    return [FactorDifference(*row) for row in rows]


@dataclass(frozen=True)
class AppliedAction:
    requested: str
    ticker: str
    kind: str
    day: dt.date
    source_id: str | None
    price_factor: float | None  # None: a dividend without a usable previous close (not applied)
    detail: str

    def to_json(self) -> dict[str, Any]:
        return {
            "symbol": self.requested,
            "ticker": self.ticker,
            "kind": self.kind,
            "day": self.day.isoformat(),
            "source_id": self.source_id,
            "price_factor": self.price_factor,
            "detail": self.detail,
        }


def applied_actions(
    conn: Connection, symbols: Sequence[str], adjust: str, follow_renames: bool, after: dt.date
) -> list[AppliedAction]:
    """The actions a read of the symbols' bars from ``after`` on applies (``market.applied_actions``),
    each described; dividends that adjust nothing are listed with no factor."""
    rows = conn.execute(
        """SELECT a.requested, a.ticker, a.kind, a.day, a.source_id, a.price_factor::double precision,
                  CASE a.kind
                      WHEN 'split' THEN s.split_to::text || '-for-' || s.split_from::text || ' '
                                        || coalesce(s.adjustment_type, 'split')
                      ELSE d.cash_amount::text || ' ' || d.currency || ' ' || d.distribution_type
                           || coalesce(', previous close ' || a.previous_close::text, ', no close before it')
                  END
           FROM market.applied_actions(%s, %s, %s) a
           LEFT JOIN market.splits s ON a.kind = 'split' AND s.symbol = a.ticker AND s.execution_date = a.day
           LEFT JOIN market.dividends d ON a.kind = 'dividend' AND d.source_id = a.source_id
           WHERE a.day > %s
           ORDER BY a.requested, a.day, a.kind""",
        (list(symbols), adjust, follow_renames, after),
    ).fetchall()
    return [AppliedAction(*row) for row in rows]


def quarantined(conn: Connection, symbols: Sequence[str], after: dt.date) -> list[dict[str, Any]]:
    """Rejected records of the symbols dated after ``after`` (or undated): what a read ignored."""
    rows = conn.execute(
        """SELECT kind, requested, symbol, day, reason, source_id FROM market.reference_quarantine
           WHERE (requested = ANY(%s) OR symbol = ANY(%s)) AND (day IS NULL OR day > %s)
           ORDER BY requested, day NULLS FIRST, kind, id""",
        (list(symbols), list(symbols), after),
    ).fetchall()
    return [
        {
            "kind": kind,
            "symbol": requested,
            "ticker": symbol,
            "day": day.isoformat() if day else None,
            "reason": reason,
            "source_id": source_id,
        }
        for kind, requested, symbol, day, reason, source_id in rows
    ]


def company_tickers(conn: Connection, symbols: Sequence[str]) -> list[tuple[str, str, dt.date]]:
    """(requested, ticker, from) of each earlier ticker a requested symbol's company had: what a
    read with follow_renames stitches in."""
    rows = conn.execute(
        """SELECT requested, ticker, span_to FROM market.ticker_spans(%s, true)
           WHERE ticker <> requested AND span_to <> 'infinity' ORDER BY requested, span_to""",
        (list(symbols),),
    ).fetchall()
    return [(str(r), str(t), day) for r, t, day in rows]


def renamed_on(conn: Connection, symbols: Sequence[str]) -> dict[str, dt.date]:
    """The day each symbol became its company's ticker, for those that had an earlier ticker."""
    rows = conn.execute(
        """SELECT DISTINCT ON (h.ticker) h.ticker, h.valid_from
           FROM market.ticker_history h
           WHERE h.ticker = ANY(%s) AND EXISTS (
               SELECT 1 FROM market.ticker_history e
               WHERE e.composite_figi = h.composite_figi AND e.valid_from < h.valid_from)
           ORDER BY h.ticker, h.valid_from DESC""",
        (list(symbols),),
    ).fetchall()
    return {str(ticker): day for ticker, day in rows}
