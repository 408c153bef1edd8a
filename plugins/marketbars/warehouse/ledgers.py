"""What the ingest and REST ledgers say was loaded: the planners' and the gap check's view of them.
(Each ledger row is written by the transaction that loaded its bars: ``file_loads``, ``rest_writes``.)"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from marketbars.warehouse.connection import Connection

Key = tuple[str, str, dt.date]  # (symbol, timeframe, session)
LoadedFile = tuple[str, str, dt.date, str, str, list[str] | None]


def rest_sessions_since(conn: Connection, first: dt.date) -> dict[tuple[str, str], list[dt.date]]:
    """(symbol, timeframe) -> sessions since first that hold REST bars or a REST gap, not a flat file."""
    rows = conn.execute(
        """SELECT symbol, timeframe, session_date FROM market.rest_ledger
           WHERE session_date >= %s AND status IN ('loaded', 'empty') ORDER BY 1, 2, 3""",
        (first,),
    )
    out: dict[tuple[str, str], list[dt.date]] = {}
    for symbol, timeframe, day in rows:
        out.setdefault((symbol, timeframe), []).append(day)
    return out


def loaded_files(conn: Connection, days: Sequence[dt.date]) -> list[LoadedFile]:
    """(dataset, timeframe, session, s3_key, etag, symbols or None for every ticker) of loaded files."""
    rows = conn.execute(
        """SELECT dataset, timeframe, session_date, s3_key, etag, symbols FROM market.ingest_ledger
           WHERE session_date = ANY(%s)""",
        (list(days),),
    ).fetchall()
    return [(str(ds), str(tf), day, str(key), str(etag), symbols) for ds, tf, day, key, etag, symbols in rows]


def vendor_empty_cells(conn: Connection, symbols: Sequence[str], days: Sequence[dt.date]) -> set[Key]:
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
    return {(str(symbol), str(tf), day) for symbol, tf, day in rows}
