"""A session's derived bars (5m, 15m, 1h, 4h; ``source = 'rollup'``) rebuilt from its 1m bars, and the
ledgers' record that they are current, in one transaction. The convention is ``marketbars.market.rollups``.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import pyarrow as pa
from psycopg import sql

from marketbars.market import rollups
from marketbars.market.calendar import is_session, session_hours
from marketbars.market.symbols import ALL_SYMBOLS, asset_class_of
from marketbars.market.timeframes import DERIVED_MINUTES
from marketbars.warehouse.bars import (
    COPY_SCHEMA,
    TABLE,
    any_rows,
    copy_rows,
    lock_session,
    read_bars,
    scope,
    selection_key,
)
from marketbars.warehouse.connection import Connection, Cursor
from marketbars.warehouse.copy import copy_in


@dataclass(frozen=True)
class RollupCounts:
    minute_bars: int  # 1m bars in the regular session that went in
    derived_bars: dict[str, int]  # timeframe -> bars written
    replaced: int  # derived bars of the selection's session that changed or went (a rebuild)
    seconds: float


def rebuild_rollups(conn: Connection, dataset: str, session: dt.date, symbols: Sequence[str]) -> RollupCounts:
    """Rebuild the selection's derived bars of one session from the 1m bars the warehouse holds now,
    in one transaction.

    Every writer of 1m bars calls this after its write, so derived bars follow whichever source
    last wrote the minutes. It takes the session's writer lock, so the 1m bars it reads cannot
    change underneath it; the ledger rows of the selection record that its rollups are current.
    A non-session has no regular session and no derived bars.
    """
    started = time.perf_counter()
    if not is_session(session):
        return RollupCounts(0, dict.fromkeys(DERIVED_MINUTES, 0), 0, 0.0)
    hours = session_hours(session)
    where, params = scope(dataset, symbols)
    in_window = sql.SQL("timeframe = ANY(%s) AND ts >= %s AND ts < %s AND {}").format(where)
    window = (list(DERIVED_MINUTES), hours.open, hours.close, *params)
    with conn.transaction(), conn.cursor() as cur:
        lock_session(cur, dataset, "1m", session)
        cur.execute("SET LOCAL extra_float_digits = 1")  # floats printed exactly (the default since PG 12)
        pa.default_memory_pool().release_unused()  # a load just before may have left its buffers cached
        minutes = read_bars(
            cur,
            sql.SQL("timeframe = '1m' AND ts >= %s AND ts < %s AND {}").format(where),
            (hours.open, hours.close, *params),
        )
        derived = dict.fromkeys(DERIVED_MINUTES, 0)

        def batches() -> Iterator[pa.RecordBatch]:  # streamed: the whole result is never in memory
            for tf, bars in rollups.iter_roll_up(minutes, hours):
                derived[tf] += bars.num_rows
                yield from copy_rows(bars, tf, "rollup")

        replaced = 0
        if not any_rows(cur, in_window, window):  # the first build: straight in
            copy_in(cur, TABLE, COPY_SCHEMA, batches())
        else:  # a rebuild rewrites only the bars that changed: no bloat when the minutes did not
            replaced = _merge(cur, batches(), in_window, window)
        _mark_current(cur, dataset, session, symbols)
    return RollupCounts(
        minute_bars=minutes.num_rows,
        derived_bars=derived,
        replaced=replaced,
        seconds=time.perf_counter() - started,
    )


def _merge(
    cur: Cursor, batches: Iterator[pa.RecordBatch], where: sql.Composable, params: tuple[object, ...]
) -> int:
    """Derived bars that are gone or differ go, new or changed ones come in; bars equal to the incoming
    ones stay untouched (so do their index entries). Returns the bars that went."""
    cur.execute("CREATE TEMPORARY TABLE rollup_incoming (LIKE market.historical_bars) ON COMMIT DROP")
    copy_in(cur, sql.Identifier("rollup_incoming"), COPY_SCHEMA, batches)
    cur.execute("ANALYZE rollup_incoming")
    cur.execute(sql.SQL(_DELETE_CHANGED).format(w=where), params)
    replaced = cur.rowcount
    cur.execute(_INSERT_NEW)
    return replaced


_DELETE_CHANGED = """
    DELETE FROM market.historical_bars b WHERE {w} AND NOT EXISTS (
        SELECT 1 FROM rollup_incoming i
        WHERE i.symbol = b.symbol AND i.timeframe = b.timeframe AND i.ts = b.ts
          AND (i.open, i.high, i.low, i.close, i.volume, i.vwap, i.trades, i.source)
              IS NOT DISTINCT FROM (b.open, b.high, b.low, b.close, b.volume, b.vwap, b.trades, b.source))"""
_INSERT_NEW = """
    INSERT INTO market.historical_bars SELECT * FROM rollup_incoming
    ON CONFLICT (symbol, timeframe, ts) DO NOTHING"""


def _mark_current(cur: Cursor, dataset: str, session: dt.date, symbols: Sequence[str]) -> None:
    """The selection's 1m ledger rows (flat file and REST) record that its derived bars are current."""
    where, params = scope(dataset, symbols)
    cur.execute(
        """UPDATE market.ingest_ledger SET rollups_at = now()
           WHERE dataset = %s AND timeframe = '1m' AND session_date = %s AND selection_key = %s""",
        (dataset, session, selection_key(symbols)),
    )
    cur.execute(
        sql.SQL(
            "UPDATE market.rest_ledger SET rollups_at = now()"
            " WHERE timeframe = '1m' AND session_date = %s AND {}"
        ).format(where),
        (session, *params),
    )


def pending_rollups(conn: Connection, first: dt.date) -> list[tuple[str, dt.date, list[str]]]:
    """(dataset, session, selection) whose 1m bars were written since ``first`` but whose derived bars
    were not rebuilt after (the writing task died between its two transactions and was not retried)."""
    flat = conn.execute(
        """SELECT dataset, session_date, CASE WHEN selection_key = %s THEN ARRAY[%s::text] ELSE symbols END
           FROM market.ingest_ledger
           WHERE timeframe = '1m' AND rollups_at IS NULL AND session_date >= %s""",
        (ALL_SYMBOLS, ALL_SYMBOLS, first),
    ).fetchall()
    rest = conn.execute(
        """SELECT symbol, session_date FROM market.rest_ledger
           WHERE timeframe = '1m' AND rollups_at IS NULL AND status <> 'flatfile' AND session_date >= %s""",
        (first,),
    ).fetchall()
    pending = [(str(dataset), day, list(symbols)) for dataset, day, symbols in flat]
    pending += [(asset_class_of(symbol), day, [symbol]) for symbol, day in rest]
    return sorted(pending)
