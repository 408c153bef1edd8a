"""SQL of the completeness check and the gap ledger (``market.backfill_gaps``).

Functions take an autocommit psycopg 3 connection; each change commits as one statement or one
transaction.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from marketbars import gaps, trading_calendar
from marketbars.trading_calendar import SessionHours, day_window

Key = tuple[str, str, dt.date]  # (symbol, timeframe, session)


@dataclass(frozen=True)
class Counts:
    regular: int  # bars inside the regular session (1m) / the daily bar (1d)
    total: int  # every bar of the session's New York day


# One statement, one index-only range scan of the primary key (symbol, timeframe, ts) per cell: no
# bar is converted to a local date, and no cell costs a round trip.
COUNT_CELLS = """
    SELECT sym, t.tf, s.day, c.regular, c.total
    FROM unnest(%s::text[]) AS sym
    CROSS JOIN (VALUES ('1m'), ('1d')) AS t(tf)
    CROSS JOIN unnest(%s::date[], %s::timestamptz[], %s::timestamptz[], %s::timestamptz[], %s::timestamptz[])
         AS s(day, open_ts, close_ts, day_start, day_end)
    CROSS JOIN LATERAL (
        SELECT count(*) FILTER (WHERE t.tf = '1d' OR (b.ts >= s.open_ts AND b.ts < s.close_ts)) AS regular,
               count(*) AS total
        FROM market.historical_bars b
        WHERE b.symbol = sym AND b.timeframe = t.tf AND b.ts >= s.day_start AND b.ts < s.day_end
    ) AS c
    WHERE c.total > 0"""


def count_cells(conn: Any, symbols: Sequence[str], sessions: Sequence[SessionHours]) -> dict[Key, Counts]:
    """Bars per (symbol, timeframe, session): regular-session bars (the daily bar for 1d) and all of
    the session's New York day. Cells without bars are absent."""
    if not symbols or not sessions:
        return {}
    rows = conn.execute(COUNT_CELLS, count_cells_args(symbols, sessions)).fetchall()
    return {(symbol, tf, day): Counts(regular, total) for symbol, tf, day, regular, total in rows}


def count_cells_args(symbols: Sequence[str], sessions: Sequence[SessionHours]) -> tuple[Any, ...]:
    windows = [day_window(s.session) for s in sessions]
    return (
        list(symbols),
        [s.session for s in sessions],
        [s.open for s in sessions],
        [s.close for s in sessions],
        [w[0] for w in windows],
        [w[1] for w in windows],
    )


def vendor_empty_cells(conn: Any, symbols: Sequence[str], days: Sequence[dt.date]) -> set[Key]:
    """Cells the vendor confirms empty: a flat file loaded for a selection with the symbol has no row
    for it at all (``ingest_ledger.empty_symbols``; rows it quarantined do not count as empty)."""
    if not symbols or not days:
        return set()
    rows = conn.execute(
        """SELECT DISTINCT s, l.timeframe, l.session_date
           FROM market.ingest_ledger l CROSS JOIN LATERAL unnest(l.empty_symbols) AS s
           WHERE l.session_date = ANY(%s) AND s = ANY(%s)""",
        (list(days), list(symbols)),
    ).fetchall()
    return {(symbol, tf, day) for symbol, tf, day in rows}


def loaded_versions(
    conn: Any, days: Sequence[dt.date]
) -> list[tuple[str, str, dt.date, str, str, list[str] | None]]:
    """(dataset, timeframe, session, s3_key, etag, symbols or None for every ticker) of loaded files."""
    return conn.execute(
        """SELECT dataset, timeframe, session_date, s3_key, etag, symbols FROM market.ingest_ledger
           WHERE session_date = ANY(%s)""",
        (list(days),),
    ).fetchall()


@dataclass(frozen=True)
class Gap:
    symbol: str
    timeframe: str
    session: dt.date
    status: str
    kind: str
    expected: int
    found: int
    attempts: int
    last_error: str | None
    first_seen: dt.datetime
    next_retry_at: dt.datetime

    @property
    def key(self) -> Key:
        return (self.symbol, self.timeframe, self.session)


_GAP_COLUMNS = (
    "symbol, timeframe, session_date, status, kind, expected, found, attempts, last_error, first_seen,"
    " next_retry_at"
)


def list_gaps(conn: Any, *, status: str | None = None, symbols: Sequence[str] | None = None) -> list[Gap]:
    rows = conn.execute(
        f"""SELECT {_GAP_COLUMNS} FROM market.backfill_gaps
            WHERE (%s::text IS NULL OR status = %s) AND (%s::text[] IS NULL OR symbol = ANY(%s))
            ORDER BY session_date, symbol, timeframe""",
        (status, status, symbols, symbols),
    ).fetchall()
    return [Gap(*row) for row in rows]


def open_gap(conn: Any, key: Key, *, kind: str, expected: int, found: int) -> bool:
    """Open a gap, reopen a filled one, or refresh an open one; True when it is newly open.

    An unfillable gap stays explained (no retry storm), unless its flat file was replaced since.
    """
    with conn.transaction():
        row = conn.execute(
            """SELECT status FROM market.backfill_gaps
               WHERE symbol = %s AND timeframe = %s AND session_date = %s FOR UPDATE""",
            key,
        ).fetchone()
        if row is None:
            conn.execute(
                """INSERT INTO market.backfill_gaps
                       (symbol, timeframe, session_date, status, kind, expected, found)
                   VALUES (%s, %s, %s, 'open', %s, %s, %s)""",
                (*key, kind, expected, found),
            )
            return True
        if row[0] == "open":
            conn.execute(
                """UPDATE market.backfill_gaps SET kind = %s, expected = %s, found = %s, updated_at = now()
                   WHERE symbol = %s AND timeframe = %s AND session_date = %s""",
                (kind, expected, found, *key),
            )
            return False
        if row[0] == "unfillable" and kind != "replaced_file":
            return False
        conn.execute(
            """UPDATE market.backfill_gaps SET status = 'open', kind = %s, expected = %s, found = %s,
                   attempts = 0, last_error = NULL, first_seen = now(), next_retry_at = now(),
                   updated_at = now()
               WHERE symbol = %s AND timeframe = %s AND session_date = %s""",
            (kind, expected, found, *key),
        )
        return True


def close_gap(conn: Any, key: Key, *, status: str, found: int, error: str | None = None) -> bool:
    """Mark an open gap filled or unfillable (with why); True when a gap changed."""
    row = conn.execute(
        """UPDATE market.backfill_gaps SET status = %s, found = %s, last_error = coalesce(%s, last_error),
               updated_at = now()
           WHERE symbol = %s AND timeframe = %s AND session_date = %s AND status = 'open'
           RETURNING 1""",
        (status, found, error, *key),
    ).fetchone()
    return row is not None


def record_failed_attempt(
    conn: Any, key: Key, *, found: int, error: str, retry_in: dt.timedelta, max_attempts: int
) -> str:
    """One more failed retry: back off, or give up as unfillable after max_attempts. Returns the status."""
    (status,) = conn.execute(
        """UPDATE market.backfill_gaps SET attempts = attempts + 1, found = %s, last_error = %s,
               next_retry_at = now() + %s, updated_at = now(),
               status = CASE WHEN attempts + 1 >= %s THEN 'unfillable' ELSE 'open' END
           WHERE symbol = %s AND timeframe = %s AND session_date = %s AND status = 'open'
           RETURNING status""",
        (found, error, retry_in, max_attempts, *key),
    ).fetchone() or ("",)
    return str(status)


def due_gaps(conn: Any, symbols: Sequence[str]) -> list[Gap]:
    """Open gaps of these symbols whose next retry is due, by the database's clock."""
    rows = conn.execute(
        f"""SELECT {_GAP_COLUMNS} FROM market.backfill_gaps
            WHERE status = 'open' AND next_retry_at <= clock_timestamp() AND symbol = ANY(%s)
            ORDER BY session_date, symbol, timeframe""",
        (list(symbols),),
    ).fetchall()
    return [Gap(*row) for row in rows]


def quarantined_rows(conn: Any, dataset: str, key: Key) -> dict[str, int]:
    """Quarantined source rows of a cell (flat file or REST), by reason: why a retry may not fill it."""
    symbol, timeframe, session = key
    rows = conn.execute(
        """SELECT reason, count(*) FROM market.quarantine
           WHERE dataset = %s AND timeframe = %s AND session_date = %s AND symbol = %s GROUP BY reason""",
        (dataset, timeframe, session, symbol),
    ).fetchall()
    return dict(rows)


def evaluate(
    conn: Any, asset_classes: Mapping[str, str], days: Sequence[dt.date], settings: gaps.Settings
) -> list[gaps.Cell]:
    """Every (symbol, timeframe, session) cell of the symbols and sessions, classified."""
    sessions = [trading_calendar.session_hours(d) for d in sorted(set(days))]
    counts = count_cells(conn, sorted(asset_classes), sessions)
    vendor_empty = vendor_empty_cells(conn, sorted(asset_classes), [s.session for s in sessions])
    empty = Counts(0, 0)
    coverages: dict[str, list[float]] = {}
    for symbol, asset_class in asset_classes.items():
        for hours in sessions:
            expected = gaps.expected_bars(asset_class, "1m", hours)
            coverages.setdefault(symbol, []).append(
                gaps.coverage(counts.get((symbol, "1m", hours.session), empty).regular, expected)
            )
    liquid = gaps.liquid_symbols(coverages, asset_classes, settings)
    cells = []
    for symbol, asset_class in sorted(asset_classes.items()):
        for timeframe in ("1m", "1d"):
            for hours in sessions:
                key = (symbol, timeframe, hours.session)
                got = counts.get(key, empty)
                expected = gaps.expected_bars(asset_class, timeframe, hours)
                state = gaps.classify(
                    asset_class=asset_class,
                    timeframe=timeframe,
                    expected=expected,
                    found=got.regular,
                    total=got.total,
                    liquid=symbol in liquid,
                    vendor_has_none=key in vendor_empty,
                    settings=settings,
                )
                cells.append(
                    gaps.Cell(
                        symbol, asset_class, timeframe, hours.session, expected, got.regular, got.total, state
                    )
                )
    return cells
