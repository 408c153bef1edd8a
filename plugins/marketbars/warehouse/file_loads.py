"""A source file's load: the session's bars, its quarantined rows and its ``market.ingest_ledger``
row, replaced together in one transaction.

The file arrives as a ``BarStream`` of validated bars (``marketbars.market.bars``); what the file is
and how it is read is the source adapter's business.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc
from psycopg import sql

from marketbars.market.bars import QUARANTINE_SCHEMA, BarStream, NotStreamableError, ValidatedBars
from marketbars.market.calendar import SessionHours, session_hours
from marketbars.market.provenance import FileVersion
from marketbars.market.symbols import selects_all
from marketbars.warehouse import bar_counts, quarantine
from marketbars.warehouse.bars import (
    COPY_SCHEMA,
    TABLE,
    any_rows,
    copy_rows,
    lock_session,
    scope,
    selection_key,
    session_rows,
)
from marketbars.warehouse.connection import Connection, Cursor, Params, one
from marketbars.warehouse.copy import copy_in

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadCounts:
    rows_read: int
    rows_loaded: int
    rows_quarantined: int
    seconds: float
    reasons: dict[str, int] = field(default_factory=dict)  # quarantine reason -> rows
    rollups_current: bool = False  # the derived bars were rebuilt after this load (1m files only)


@dataclass
class _Copied:
    """What a COPY of a file's chunks sent: valid rows, rejected rows, and whose rows the file has."""

    loaded: int = 0
    quarantined: list[pa.Table] = field(default_factory=list)
    present: set[str] = field(default_factory=set)
    counted: list[dict[str, bar_counts.Counts]] = field(default_factory=list)  # count_rows of each chunk


def current_load(conn: Connection, version: FileVersion, symbols: Sequence[str]) -> LoadCounts | None:
    """The ledger's counts when this exact file version is already loaded for this selection.

    "Loaded" is verified, not assumed: the warehouse must still hold the number of flat-file rows
    the ledger recorded, so bars deleted since (by hand, by retention) make the file load again.
    """
    row = conn.execute(
        """SELECT rows_read, rows_loaded, rows_quarantined, rollups_at IS NOT NULL FROM market.ingest_ledger
           WHERE dataset = %s AND timeframe = %s AND session_date = %s AND selection_key = %s
             AND etag = %s AND size_bytes = %s""",
        (
            version.dataset,
            version.timeframe,
            version.session,
            selection_key(symbols),
            version.etag,
            version.size,
        ),
    ).fetchone()
    if row is None:
        return None
    where, params = session_rows(version.dataset, version.timeframe, version.session, symbols)
    (present,) = one(
        conn, sql.SQL("SELECT count(*) FROM {} WHERE {} AND source = 'flatfile'").format(TABLE, where), params
    )
    if present != row[1]:
        log.info(
            "%s: ledger says %d rows were loaded but %d are present; loading again",
            version.key,
            row[1],
            present,
        )
        return None
    return LoadCounts(
        rows_read=row[0], rows_loaded=row[1], rows_quarantined=row[2], seconds=0.0, rollups_current=row[3]
    )


def replace_session(
    conn: Connection,
    version: FileVersion,
    symbols: Sequence[str],
    stream: BarStream,
    run_id: str | None = None,
) -> LoadCounts:
    """Make the warehouse hold exactly this file's rows for the selection, in one transaction.

    Bars of the selection in the file's session window that the file does not hold exactly (an
    older version of the file, REST rows) are replaced, the file's rejected rows replace earlier
    quarantine rows, and the ledger row is written. A crash anywhere leaves the previous state.

    First loads COPY straight into the table while the file is parsed. When the window already
    has rows, the file goes to a temporary table and a set-based merge deletes and inserts only
    what differs: re-loading an unchanged file rewrites nothing (no bloat, no dead index entries).
    """
    started = time.perf_counter()
    where, params = session_rows(version.dataset, version.timeframe, version.session, symbols)
    with conn.transaction(), conn.cursor() as cur:
        lock_session(cur, version.dataset, version.timeframe, version.session)
        if any_rows(cur, where, params):
            copied = _merge(cur, stream, version, where, params)
        else:
            copied = _copy_file(cur, TABLE, stream, version)
        rejected = (
            pa.concat_tables(copied.quarantined) if copied.quarantined else QUARANTINE_SCHEMA.empty_table()
        )
        _replace_quarantine(cur, version, symbols, rejected)
        _supersede_rest(cur, version, symbols)
        bar_counts.replace_session(
            cur, version.dataset, version.timeframe, version.session, symbols, _counted(copied, symbols)
        )
        counts = LoadCounts(
            rows_read=stream.rows_read,
            rows_loaded=copied.loaded,
            rows_quarantined=rejected.num_rows,
            seconds=time.perf_counter() - started,
            reasons=dict(Counter(rejected["reason"].to_pylist())),
        )
        _record_load(cur, version, symbols, counts, copied.present, run_id)
    return counts


def _merge(
    cur: Cursor, stream: BarStream, version: FileVersion, where: sql.Composable, params: Params
) -> _Copied:
    """Load the file into a temporary table, then delete and insert only the rows that differ."""
    cur.execute("CREATE TEMPORARY TABLE flatfile_incoming (LIKE market.historical_bars) ON COMMIT DROP")
    copied = _copy_file(cur, sql.Identifier("flatfile_incoming"), stream, version)
    cur.execute("ANALYZE flatfile_incoming")
    cur.execute(sql.SQL(_MERGE_CHANGES).format(w=where), params)
    cur.execute(_MERGE_DELETE, params[:3])
    deleted = cur.rowcount
    cur.execute(_MERGE_INSERT)
    log.info(
        "%s: merged into existing rows: %d replaced or removed, %d added", version.key, deleted, cur.rowcount
    )
    return copied


# The merge of a re-loaded file, in one pass over the window: a FULL JOIN of the file's rows with
# the window's lists the keys to delete (gone, changed, or not from a flat file) and the keys to
# insert (new or changed). A FULL JOIN can only be planned as a hash or merge join, so this stays
# linear on a full-universe day; unchanged rows are not touched.
_MERGE_CHANGES = """
    CREATE TEMPORARY TABLE flatfile_changes ON COMMIT DROP AS
    SELECT i.symbol AS new_symbol, i.ts AS new_ts, b.symbol AS old_symbol, b.ts AS old_ts
    FROM flatfile_incoming i
    FULL JOIN (SELECT * FROM market.historical_bars WHERE {w}) b ON b.symbol = i.symbol AND b.ts = i.ts
    WHERE i.symbol IS NULL OR b.symbol IS NULL OR b.source <> 'flatfile' OR b.vwap IS NOT NULL
       OR (i.open, i.high, i.low, i.close, i.volume, i.trades)
          IS DISTINCT FROM (b.open, b.high, b.low, b.close, b.volume, b.trades)"""
_MERGE_DELETE = """
    DELETE FROM market.historical_bars b USING flatfile_changes c
    WHERE b.symbol = c.old_symbol AND b.timeframe = %s AND b.ts = c.old_ts
      AND b.ts >= %s AND b.ts < %s"""  # the window again, so only the session's partition is read
_MERGE_INSERT = """
    INSERT INTO market.historical_bars
    SELECT i.* FROM flatfile_incoming i
    JOIN flatfile_changes c ON c.new_symbol = i.symbol AND c.new_ts = i.ts"""


def _copy_file(cur: Cursor, target: sql.Composable, stream: BarStream, version: FileVersion) -> _Copied:
    """COPY the file's valid rows into target as they are parsed.

    A file that cannot be streamed is discovered part-way: the savepoint drops what was copied
    and the file is read again whole.
    """
    hours = session_hours(version.session)
    try:
        with cur.connection.transaction():
            return _copy_chunks(cur, target, stream.chunks(streaming=True), version.timeframe, hours)
    except NotStreamableError as exc:
        log.info("%s; reading the file whole instead of streaming it", exc)
        return _copy_chunks(cur, target, stream.chunks(streaming=False), version.timeframe, hours)


def _copy_chunks(
    cur: Cursor, target: sql.Composable, chunks: Iterator[ValidatedBars], timeframe: str, hours: SessionHours
) -> _Copied:
    copied = _Copied()

    def batches() -> Iterator[pa.RecordBatch]:
        for chunk in chunks:
            copied.loaded += chunk.bars.num_rows
            counted = bar_counts.count_rows(chunk.bars, timeframe, hours)
            copied.counted.append(counted)
            copied.present.update(counted)  # the chunk's symbols with valid rows
            if chunk.quarantined.num_rows:
                copied.quarantined.append(chunk.quarantined)
                copied.present.update(pc.unique(chunk.quarantined["symbol"]).drop_null().to_pylist())
            yield from copy_rows(chunk.bars, timeframe, "flatfile")

    copy_in(cur, target, COPY_SCHEMA, batches())
    return copied


def _counted(copied: _Copied, symbols: Sequence[str]) -> dict[str, bar_counts.Counts]:
    """The selection's counts once the load commits: the file's valid rows, and none for a named
    symbol the file lacks (a known empty cell, not an unknown one)."""
    counts = bar_counts.sum_counts(copied.counted)
    if selects_all(symbols):
        return counts
    return dict.fromkeys(symbols, bar_counts.NONE) | counts


def _replace_quarantine(
    cur: Cursor, version: FileVersion, symbols: Sequence[str], rejected: pa.Table
) -> None:
    """The file's rejected rows in place of the session's earlier ones for the selection."""
    where, params = (sql.SQL("true"), ()) if selects_all(symbols) else scope(version.dataset, symbols)
    quarantine.clear_file_rows(cur, version.dataset, version.timeframe, version.session, where, params)
    quarantine.write(
        cur,
        rejected,
        dataset=version.dataset,
        timeframe=version.timeframe,
        session_date=version.session,
        s3_key=version.key,
        etag=version.etag,
    )


def _supersede_rest(cur: Cursor, version: FileVersion, symbols: Sequence[str]) -> None:
    """The flat file is canonical now: REST bars and gaps of the session are superseded."""
    where, params = scope(version.dataset, symbols)
    cur.execute(
        sql.SQL(
            "UPDATE market.rest_ledger SET status = 'flatfile', rows_loaded = 0, rows_quarantined = 0"
            " WHERE timeframe = %s AND session_date = %s AND status <> 'flatfile' AND {}"
        ).format(where),
        (version.timeframe, version.session, *params),
    )


def _record_load(
    cur: Cursor,
    version: FileVersion,
    symbols: Sequence[str],
    counts: LoadCounts,
    present: set[str],
    run_id: str | None,
) -> None:
    """The ledger row: which version was loaded for the selection, what it gave, and whose rows it lacked."""
    every = selects_all(symbols)
    cur.execute(
        """INSERT INTO market.ingest_ledger AS l (
               dataset, timeframe, session_date, selection_key, symbols, s3_key, etag, size_bytes,
               last_modified, rows_read, rows_loaded, rows_quarantined, empty_symbols, load_seconds,
               run_id, loaded_at)
           VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, now())
           ON CONFLICT (dataset, timeframe, session_date, selection_key) DO UPDATE SET
               symbols = EXCLUDED.symbols, s3_key = EXCLUDED.s3_key, etag = EXCLUDED.etag,
               size_bytes = EXCLUDED.size_bytes, last_modified = EXCLUDED.last_modified,
               rows_read = EXCLUDED.rows_read, rows_loaded = EXCLUDED.rows_loaded,
               rows_quarantined = EXCLUDED.rows_quarantined, empty_symbols = EXCLUDED.empty_symbols,
               load_seconds = EXCLUDED.load_seconds, rollups_at = NULL,
               run_id = EXCLUDED.run_id, loaded_at = now()""",
        (
            version.dataset,
            version.timeframe,
            version.session,
            selection_key(symbols),
            None if every else sorted(set(symbols)),
            version.key,
            version.etag,
            version.size,
            version.last_modified,
            counts.rows_read,
            counts.rows_loaded,
            counts.rows_quarantined,
            None if every else sorted(set(symbols) - present),
            counts.seconds,
            run_id,
        ),
    )
