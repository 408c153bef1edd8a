"""Bars per cell (symbol, source timeframe, session): counted from ``market.historical_bars`` by one
statement, and kept in ``market.bar_counts`` by the writers, in the transaction that writes the bars.

The completeness check (``marketbars.pipelines.gaps.rules``) classifies these counts. The gap DAG
recounts its window and stores what it found (``refresh``); the Market data view reads the stored
counts and counts only the cells nobody has stored (``kept``), which keeps a year of minute coverage
off the 5 million bars it would otherwise scan.

A cell's count has two parts, one rule in two places: here in SQL (``COUNT_CELLS``) and over Arrow
rows (``count_rows``) for a flat-file load, which counts what it copies rather than reading it back.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from psycopg import sql

from marketbars.market.calendar import SessionHours, day_window
from marketbars.market.timeframes import DAILY, SOURCE_TIMEFRAMES
from marketbars.warehouse.bars import lock_session, scope
from marketbars.warehouse.connection import Connection, Cursor

Key = tuple[str, str, dt.date]  # (symbol, timeframe, session)
Cell = tuple[str, str, SessionHours]  # a Key with the session's hours, as counting needs them


@dataclass(frozen=True)
class Counts:
    regular: int  # bars inside the regular session (1m) / the daily bar (1d)
    total: int  # every bar of the session's New York day


NONE = Counts(0, 0)

# One statement, one index-only range scan of the primary key (symbol, timeframe, ts) per cell: no
# bar is converted to a local date, and no cell costs a round trip. Cells come as parallel arrays.
COUNT_CELLS = """
    SELECT s.sym, s.tf, s.day, c.regular, c.total
    FROM unnest(%s::text[], %s::text[], %s::date[], %s::timestamptz[], %s::timestamptz[],
                %s::timestamptz[], %s::timestamptz[])
         AS s(sym, tf, day, open_ts, close_ts, day_start, day_end)
    CROSS JOIN LATERAL (
        SELECT count(*) FILTER (WHERE s.tf = '1d' OR (b.ts >= s.open_ts AND b.ts < s.close_ts)) AS regular,
               count(*) AS total
        FROM market.historical_bars b
        WHERE b.symbol = s.sym AND b.timeframe = s.tf AND b.ts >= s.day_start AND b.ts < s.day_end
    ) AS c
    WHERE c.total > 0"""


def cells(
    symbols: Iterable[str], sessions: Iterable[SessionHours], timeframes: Sequence[str] = SOURCE_TIMEFRAMES
) -> list[Cell]:
    """Every (symbol, timeframe, session) of the selection."""
    return [(symbol, tf, hours) for symbol in symbols for tf in timeframes for hours in sessions]


def keys(chosen: Iterable[Cell]) -> list[Key]:
    return [(symbol, tf, hours.session) for symbol, tf, hours in chosen]


def count_cells_args(chosen: Sequence[Cell]) -> tuple[Any, ...]:
    windows = [day_window(hours.session) for _, _, hours in chosen]
    return (
        [symbol for symbol, _, _ in chosen],
        [tf for _, tf, _ in chosen],
        [hours.session for _, _, hours in chosen],
        [hours.open for _, _, hours in chosen],
        [hours.close for _, _, hours in chosen],
        [start for start, _ in windows],
        [end for _, end in windows],
    )


def recount(conn: Connection | Cursor, chosen: Sequence[Cell]) -> dict[Key, Counts]:
    """The cells' counts from the bars themselves; cells without bars are absent."""
    if not chosen:
        return {}
    rows = conn.execute(COUNT_CELLS, count_cells_args(chosen)).fetchall()
    return {(symbol, tf, day): Counts(regular, total) for symbol, tf, day, regular, total in rows}


def kept(conn: Connection, chosen: Sequence[Cell]) -> dict[Key, Counts]:
    """The cells' counts as stored, and counted from the bars where none is stored. Writes nothing
    (the view's connection is read-only); cells without bars are absent."""
    if not chosen:
        return {}
    symbols = sorted({symbol for symbol, _, _ in chosen})
    timeframes = sorted({tf for _, tf, _ in chosen})
    days = [hours.session for _, _, hours in chosen]
    rows = conn.execute(
        """SELECT symbol, timeframe, session_date, regular, total FROM market.bar_counts
           WHERE symbol = ANY(%s) AND timeframe = ANY(%s) AND session_date BETWEEN %s AND %s""",
        (symbols, timeframes, min(days), max(days)),
    ).fetchall()
    stored = {(symbol, tf, day): Counts(regular, total) for symbol, tf, day, regular, total in rows}
    unknown = [cell for cell, key in zip(chosen, keys(chosen), strict=True) if key not in stored]
    counts = {key: n for key, n in stored.items() if n.total}
    counts.update(recount(conn, unknown))
    return counts


def refresh(conn: Connection, asset_classes: Mapping[str, str], chosen: Sequence[Cell]) -> dict[Key, Counts]:
    """Recount the cells and store what was found (zero included), in one transaction holding each
    session's writer lock: a load committing meanwhile cannot be overwritten by an older count."""
    with conn.transaction(), conn.cursor() as cur:
        locks = sorted({(hours.session, asset_classes[symbol], tf) for symbol, tf, hours in chosen})
        for session, asset_class, timeframe in locks:  # in date order, as every writer locks
            lock_session(cur, asset_class, timeframe, session)
        return recount_and_store(cur, chosen)


def recount_and_store(cur: Cursor, chosen: Sequence[Cell]) -> dict[Key, Counts]:
    """Recount the cells and store each one's count, a zero for a cell without bars (known empty);
    the caller holds the sessions' writer locks. Returns the counts of the cells with bars."""
    counts = recount(cur, chosen)
    store(cur, {key: counts.get(key, NONE) for key in keys(chosen)})
    return counts


def store(cur: Cursor, counts: Mapping[Key, Counts]) -> None:
    """Write cells' counts, replacing what was stored for them."""
    if not counts:
        return
    written = list(counts)
    cur.execute(
        """INSERT INTO market.bar_counts (symbol, timeframe, session_date, regular, total)
           SELECT * FROM unnest(%s::text[], %s::text[], %s::date[], %s::int[], %s::int[])
           ON CONFLICT (symbol, timeframe, session_date) DO UPDATE SET
               regular = EXCLUDED.regular, total = EXCLUDED.total, counted_at = now()""",
        (
            [symbol for symbol, _, _ in written],
            [tf for _, tf, _ in written],
            [day for _, _, day in written],
            [counts[key].regular for key in written],
            [counts[key].total for key in written],
        ),
    )


def replace_session(
    cur: Cursor,
    asset_class: str,
    timeframe: str,
    session: dt.date,
    symbols: Sequence[str],
    counted: Mapping[str, Counts],
) -> None:
    """A selection's counts of one session in place of what was stored for it: the file's load
    holds exactly ``counted`` (symbol -> counts) for the selection now, and nothing for the rest of it.
    Runs under the session's writer lock, in the load's transaction."""
    where, params = scope(asset_class, symbols)
    cur.execute(
        sql.SQL("DELETE FROM market.bar_counts WHERE timeframe = %s AND session_date = %s AND {}").format(
            where
        ),
        (timeframe, session, *params),
    )
    store(cur, {(symbol, timeframe, session): n for symbol, n in counted.items()})


def count_rows(bars: pa.Table, timeframe: str, hours: SessionHours) -> dict[str, Counts]:
    """Counts per symbol of bars of one session, as ``COUNT_CELLS`` counts them: a daily bar is
    regular, a minute bar when in [open, close). Hash counts, not a group-by: a group-by's execution
    engine costs a load 20 MB more peak memory."""
    total = pc.value_counts(bars["symbol"])
    if timeframe == DAILY:
        regular = total
    else:
        inside = pc.and_(
            pc.greater_equal(bars["ts"], pa.scalar(hours.open)), pc.less(bars["ts"], pa.scalar(hours.close))
        )
        regular = pc.value_counts(pc.filter(bars["symbol"], inside))
    regular_of = dict(
        zip(regular.field("values").to_pylist(), regular.field("counts").to_pylist(), strict=True)
    )
    return {
        symbol: Counts(regular_of.get(symbol, 0), n)
        for symbol, n in zip(
            total.field("values").to_pylist(), total.field("counts").to_pylist(), strict=True
        )
    }


def sum_counts(parts: Iterable[Mapping[str, Counts]]) -> dict[str, Counts]:
    """``count_rows`` of a file's chunks, added up per symbol (a symbol may span chunks)."""
    summed: dict[str, Counts] = {}
    for part in parts:
        for symbol, n in part.items():
            before = summed.get(symbol, NONE)
            summed[symbol] = Counts(before.regular + n.regular, before.total + n.total)
    return summed


def forget_before(conn: Connection, first_kept: dt.date) -> int:
    """Drop the counts of sessions before the first one retention keeps; rows dropped."""
    with conn.transaction():
        return conn.execute("DELETE FROM market.bar_counts WHERE session_date < %s", (first_kept,)).rowcount
