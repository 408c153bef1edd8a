"""``market.backfill_gaps``, the gap ledger: every cell the completeness check found short, and what
became of it. The counts it judges come from ``marketbars.warehouse.bar_counts``."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from marketbars.warehouse.bar_counts import Key
from marketbars.warehouse.connection import Connection


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


def list_gaps(
    conn: Connection, *, status: str | None = None, symbols: Sequence[str] | None = None
) -> list[Gap]:
    rows = conn.execute(
        f"""SELECT {_GAP_COLUMNS} FROM market.backfill_gaps
            WHERE (%s::text IS NULL OR status = %s) AND (%s::text[] IS NULL OR symbol = ANY(%s))
            ORDER BY session_date, symbol, timeframe""",  # a fixed column list
        (status, status, symbols, symbols),
    ).fetchall()
    return [Gap(*row) for row in rows]


def open_gap(
    conn: Connection, key: Key, *, kind: str, expected: int, found: int, reopen_unfillable: bool = False
) -> bool:
    """Open a gap, reopen a filled one, or refresh an open one; True when it is newly open.

    An unfillable gap stays as it is unless ``reopen_unfillable`` (the rules decide when).
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
        if row[0] == "unfillable" and not reopen_unfillable:
            return False
        conn.execute(
            """UPDATE market.backfill_gaps SET status = 'open', kind = %s, expected = %s, found = %s,
                   attempts = 0, last_error = NULL, first_seen = now(), next_retry_at = now(),
                   updated_at = now()
               WHERE symbol = %s AND timeframe = %s AND session_date = %s""",
            (kind, expected, found, *key),
        )
        return True


def close_gap(conn: Connection, key: Key, *, status: str, found: int, error: str | None = None) -> bool:
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
    conn: Connection, gap: Gap, *, found: int, error: str, retry_in: dt.timedelta, status: str
) -> bool:
    """One more failed retry of an open gap: its attempts, its error, the next retry's time and the
    status the rules gave it (open, or unfillable). False when the gap is no longer as read."""
    row = conn.execute(
        """UPDATE market.backfill_gaps SET attempts = %s, found = %s, last_error = %s,
               next_retry_at = now() + %s, updated_at = now(), status = %s
           WHERE symbol = %s AND timeframe = %s AND session_date = %s AND status = 'open' AND attempts = %s
           RETURNING 1""",
        (gap.attempts + 1, found, error, retry_in, status, *gap.key, gap.attempts),
    ).fetchone()
    return row is not None


def due_gaps(conn: Connection, symbols: Sequence[str]) -> list[Gap]:
    """Open gaps of these symbols whose next retry is due, by the database's clock."""
    rows = conn.execute(
        f"""SELECT {_GAP_COLUMNS} FROM market.backfill_gaps
            WHERE status = 'open' AND next_retry_at <= clock_timestamp() AND symbol = ANY(%s)
            ORDER BY session_date, symbol, timeframe""",  # a fixed column list
        (list(symbols),),
    ).fetchall()
    return [Gap(*row) for row in rows]


def quarantined_rows(conn: Connection, dataset: str, key: Key) -> dict[str, int]:
    """Quarantined source rows of a cell (flat file or REST), by reason: why a retry may not fill it."""
    symbol, timeframe, session = key
    rows = conn.execute(
        """SELECT reason, count(*) FROM market.quarantine
           WHERE dataset = %s AND timeframe = %s AND session_date = %s AND symbol = %s GROUP BY reason""",
        (dataset, timeframe, session, symbol),
    ).fetchall()
    return {str(reason): int(count) for reason, count in rows}
