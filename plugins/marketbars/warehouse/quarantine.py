"""``market.quarantine``: the rows a source got wrong, each with its reason, replaced per source unit.

A file's rejected rows replace the earlier ones of its session and selection; an API answer's replace
the earlier ones of its symbol and sessions. Rows are written by one COPY either way.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

import pyarrow as pa
from psycopg import sql

from marketbars.warehouse.connection import Cursor
from marketbars.warehouse.copy import copy_in_table

TABLE = sql.Identifier("market", "quarantine")


def write(cur: Cursor, rows: pa.Table, **constants: Any) -> None:
    """Insert rejected rows (``QUARANTINE_SCHEMA``, or ``SESSION_QUARANTINE_SCHEMA`` with each row's
    session) with the columns every row shares (``dataset``, ``timeframe``, ``session_date`` of a
    file, ``s3_key``, ``etag``, ``source``, ``request_id``)."""
    n = rows.num_rows
    if not n:
        return
    columns = {name: pa.repeat(pa.scalar(value), n) for name, value in constants.items()}
    columns |= {name: rows[name] for name in rows.column_names}
    copy_in_table(cur, TABLE, pa.table(columns))


def clear_file_rows(
    cur: Cursor, dataset: str, timeframe: str, session: dt.date, scope: sql.Composable, params: Sequence[Any]
) -> None:
    """Delete a session's quarantined rows of a selection (``scope``), before its file writes its own."""
    cur.execute(
        sql.SQL("DELETE FROM {} WHERE dataset = %s AND timeframe = %s AND session_date = %s AND {}").format(
            TABLE, scope
        ),
        (dataset, timeframe, session, *params),
    )


def clear_api_rows(cur: Cursor, symbol: str, timeframe: str, sessions: Sequence[dt.date]) -> None:
    """Delete a symbol's quarantined REST rows of these sessions, before an answer writes its own."""
    cur.execute(
        """DELETE FROM market.quarantine WHERE source = 'rest' AND symbol = %s AND timeframe = %s
           AND session_date = ANY(%s)""",
        (symbol, timeframe, sorted(sessions)),
    )
