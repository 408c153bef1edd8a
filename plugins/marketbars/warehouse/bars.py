"""``market.historical_bars``: its COPY shape, symbol selections, the session writer lock, and reads.

Every writer of bars (file loads, REST writes, rollup rebuilds) uses these, so they agree on which
rows a selection covers and take turns on a session.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Iterator, Sequence
from typing import Any

import pyarrow as pa
from psycopg import sql

from marketbars.market.bars import BAR_SCHEMA
from marketbars.market.calendar import day_window
from marketbars.market.symbols import ALL_SYMBOLS, selects_all
from marketbars.market.timeframes import SOURCE_TIMEFRAMES
from marketbars.warehouse.connection import Connection, Cursor, Params
from marketbars.warehouse.copy import COPY_CHUNK_ROWS, copy_out

TABLE = sql.Identifier("market", "historical_bars")
# read_bars' source for adjusted bars: its six placeholders take bars_adjusted's arguments.
ADJUSTED = sql.SQL("market.bars_adjusted(%s, %s, %s, %s, %s, %s)")
BAR_COLUMNS = (
    "symbol",
    "timeframe",
    "ts",
    "open",
    "high",
    "low",
    "close",
    "volume",
    "vwap",
    "trades",
    "source",
)
# The COPY stream's Arrow schema: the bar columns plus the constant timeframe and source.
COPY_SCHEMA = pa.schema(
    [
        BAR_SCHEMA.field(name) if name in BAR_SCHEMA.names else pa.field(name, pa.string())
        for name in BAR_COLUMNS
    ]
)
# Which bars belong to an asset class when a file is loaded for every ticker ("*"). Fixed SQL, no
# input; '%%' because these fragments always run with bound parameters.
ASSET_CLASS_SCOPE = {
    "stocks": sql.SQL("symbol NOT LIKE 'I:%%' AND symbol NOT LIKE 'O:%%'"),
    "indices": sql.SQL("symbol LIKE 'I:%%'"),
    "options": sql.SQL("symbol LIKE 'O:%%'"),
}
_CSV_TYPES = {
    "symbol": pa.string(),
    "ts": pa.int64(),
    **{name: pa.float64() for name in ("open", "high", "low", "close", "volume", "vwap")},
    "trades": pa.int64(),
}


def copy_rows(bars: pa.Table, timeframe: str, source: str) -> Iterator[pa.RecordBatch]:
    """``BAR_SCHEMA`` bars as COPY batches; the constant columns are built one batch at a time."""
    if bars.schema != BAR_SCHEMA:
        raise TypeError(f"bars must have schema {BAR_SCHEMA}, got {bars.schema}")
    for batch in bars.to_batches(max_chunksize=COPY_CHUNK_ROWS):
        n = batch.num_rows
        columns = dict(zip(batch.schema.names, batch.columns, strict=True))
        columns["timeframe"] = pa.repeat(pa.scalar(timeframe), n)
        columns["source"] = pa.repeat(pa.scalar(source), n)
        yield pa.RecordBatch.from_arrays([columns[name] for name in BAR_COLUMNS], schema=COPY_SCHEMA)


def selection_key(symbols: Sequence[str]) -> str:
    """A short stable name for a symbol selection: '*' or a digest of the sorted symbols."""
    if selects_all(symbols):
        return ALL_SYMBOLS
    return "md5:" + hashlib.md5(",".join(sorted(set(symbols))).encode()).hexdigest()


def scope(asset_class: str, symbols: Sequence[str]) -> tuple[sql.Composable, tuple[Any, ...]]:
    """A WHERE fragment (and its parameters) for a selection: its symbols, or the asset class's."""
    if selects_all(symbols):
        return ASSET_CLASS_SCOPE[asset_class], ()
    return sql.SQL("symbol = ANY(%s)"), (sorted(set(symbols)),)


def session_rows(
    asset_class: str, timeframe: str, session: dt.date, symbols: Sequence[str]
) -> tuple[sql.Composable, tuple[Any, ...]]:
    """A WHERE clause (and its parameters) for the selection's bars in a session's New York day."""
    where, params = scope(asset_class, symbols)
    start, end = day_window(session)
    clause = sql.SQL("timeframe = %s AND ts >= %s AND ts < %s AND {scope}").format(scope=where)
    return clause, (timeframe, start, end, *params)


def lock_session(cur: Cursor, asset_class: str, timeframe: str, session: dt.date) -> None:
    """Serialise every writer of one (asset class, timeframe, session) until the transaction ends:
    overlapping runs, a cleared task and a REST fill take turns instead of colliding."""
    cur.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))",
        (f"bars:{asset_class}:{timeframe}:{session}",),
    )


def any_rows(cur: Cursor, where: sql.Composable, params: Params) -> bool:
    row = cur.execute(
        sql.SQL("SELECT EXISTS (SELECT 1 FROM {} WHERE {})").format(TABLE, where), params
    ).fetchone()
    return bool(row and row[0])


def read_bars(
    cur: Cursor,
    where: sql.Composable,
    params: Params,
    *,
    columns: Sequence[str] = tuple(BAR_SCHEMA.names),
    ordered: bool = False,
    source: sql.Composable = TABLE,
) -> pa.Table:
    """The bars matching ``where`` as Arrow (``BAR_SCHEMA``'s ``columns``), in bulk; ``ordered`` by
    symbol and time. ``source``: the table, or a call of ``market.bars_adjusted`` (its placeholders'
    values first in ``params``). The table comes out of its primary key in order; a function's rows
    are sorted here, in Arrow, which is several times faster than PostgreSQL's sort of millions of
    rows (spilled to disk beyond work_mem)."""
    select = [
        sql.SQL("(date_part('epoch', ts) * 1000000)::bigint") if name == "ts" else sql.Identifier(name)
        for name in columns
    ]
    sort_in_sql = ordered and source == TABLE
    query = sql.SQL("SELECT {} FROM {} WHERE {}{}").format(
        sql.SQL(", ").join(select), source, where, sql.SQL(" ORDER BY symbol, ts" if sort_in_sql else "")
    )
    schema = pa.schema([BAR_SCHEMA.field(name) for name in columns])
    table = copy_out(cur, query, params, {name: _CSV_TYPES[name] for name in columns})
    if table is None:
        return schema.empty_table()
    if "ts" in columns:
        at = list(columns).index("ts")
        table = table.set_column(at, "ts", table["ts"].cast(pa.timestamp("us", tz="UTC")))
    if ordered and not sort_in_sql:
        table = table.sort_by([("symbol", "ascending"), ("ts", "ascending")])
    return table.cast(schema)


def bars_by_symbol(
    conn: Connection, symbols: Sequence[str], first: dt.date, last: dt.date
) -> list[tuple[str, str, str, int, int]]:
    """(symbol, timeframe, source, sessions, bars) of the symbols' source-timeframe bars in first..last."""
    start, _ = day_window(first)
    _, end = day_window(last)
    rows = conn.execute(
        """SELECT symbol, timeframe, source,
                  count(DISTINCT (ts AT TIME ZONE 'America/New_York')::date), count(*)
           FROM market.historical_bars
           WHERE symbol = ANY(%s) AND timeframe = ANY(%s) AND ts >= %s AND ts < %s
           GROUP BY 1, 2, 3 ORDER BY 1, 2, 3""",
        (list(symbols), list(SOURCE_TIMEFRAMES), start, end),
    ).fetchall()
    return [(str(s), str(tf), str(src), int(days), int(n)) for s, tf, src, days, n in rows]
