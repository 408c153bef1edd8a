"""SQL against the market warehouse: migrations, partitions, transactional loads and the ledger.

Functions take an autocommit psycopg 3 connection and open their own transactions, one per unit
of work. The Airflow hook (``marketbars.hooks.warehouse``) only supplies the connection, so the
benchmarks and tests exercise exactly this code.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import tempfile
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
from pgpq import ArrowToPostgresBinaryEncoder
from psycopg import sql

from marketbars import rollups
from marketbars.flatfiles import ALL_TICKERS
from marketbars.parsing import BAR_SCHEMA, QUARANTINE_SCHEMA, Chunk, FlatFileReader, NotStreamableError
from marketbars.rest import RestBars
from marketbars.trading_calendar import day_window, is_session, session_hours

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parents[2] / "include" / "migrations"
_MIGRATION_LOCK = 0x6D6B7462  # pg_advisory_xact_lock key: one migrator at a time
COPY_CHUNK_ROWS = 65_536

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
# The COPY stream's Arrow schema: the parsed columns plus the constant timeframe and source.
COPY_SCHEMA = pa.schema(
    [
        BAR_SCHEMA.field(name) if name in BAR_SCHEMA.names else pa.field(name, pa.string())
        for name in BAR_COLUMNS
    ]
)
# Which bars belong to a dataset when a file is loaded for every ticker ("*"). Fixed SQL, no input;
# '%%' because these fragments always run with bound parameters.
DATASET_SCOPE = {
    "stocks": sql.SQL("symbol NOT LIKE 'I:%%' AND symbol NOT LIKE 'O:%%'"),
    "indices": sql.SQL("symbol LIKE 'I:%%'"),
    "options": sql.SQL("symbol LIKE 'O:%%'"),
}


class MigrationError(RuntimeError):
    """The database's schema history disagrees with the migration files."""


@dataclass(frozen=True)
class FlatFileVersion:
    """One published version of one day's file: what the ledger ties loaded rows to."""

    dataset: str
    timeframe: str
    session: dt.date
    key: str
    etag: str
    size: int
    last_modified: dt.datetime | None = None


@dataclass(frozen=True)
class LoadCounts:
    rows_read: int
    rows_loaded: int
    rows_quarantined: int
    seconds: float
    reasons: dict[str, int] = field(default_factory=dict)  # quarantine reason -> rows
    rollups_current: bool = False  # the derived bars were rebuilt after this load (1m files only)


@dataclass(frozen=True)
class RollupCounts:
    minute_bars: int  # 1m bars in the regular session that went in
    derived_bars: dict[str, int]  # timeframe -> bars written
    replaced: int  # derived bars of the selection's session that changed or went (a rebuild)
    seconds: float


def migrate(conn: psycopg.Connection, migrations_dir: Path = MIGRATIONS_DIR) -> list[str]:
    """Apply pending migrations in one transaction; return the names applied (empty when current)."""
    files = sorted(migrations_dir.glob("[0-9][0-9][0-9][0-9]_*.sql"))
    if not files:
        raise MigrationError(f"no migrations found in {migrations_dir}")
    applied_now = []
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
        conn.execute("CREATE SCHEMA IF NOT EXISTS market")
        conn.execute(
            """CREATE TABLE IF NOT EXISTS market.schema_migrations (
                   version    integer PRIMARY KEY,
                   name       text        NOT NULL,
                   checksum   text        NOT NULL,
                   applied_at timestamptz NOT NULL DEFAULT now())"""
        )
        applied = dict(conn.execute("SELECT version, checksum FROM market.schema_migrations").fetchall())
        for path in files:
            version, text = int(path.name[:4]), path.read_text()
            checksum = hashlib.sha256(text.encode()).hexdigest()
            if version in applied:
                if applied[version] != checksum:
                    raise MigrationError(
                        f"migration {path.name} changed after it was applied; add a new migration instead"
                    )
                continue
            conn.execute(text)  # type: ignore[arg-type]  # trusted file from the repository
            conn.execute(
                "INSERT INTO market.schema_migrations (version, name, checksum) VALUES (%s, %s, %s)",
                (version, path.name, checksum),
            )
            applied_now.append(path.name)
    if applied_now:
        log.info("Applied migrations: %s", ", ".join(applied_now))
    return applied_now


def ensure_partitions(conn: psycopg.Connection, first: dt.date, last: dt.date) -> int:
    """Create the monthly bar partitions covering sessions first..last; return how many were new.

    Runs in its own short transaction: creating a partition locks the parent table, which must
    never happen inside a long load.
    """
    start, _ = day_window(first)
    _, end = day_window(last)
    with conn.transaction():
        (created,) = conn.execute("SELECT market.ensure_bar_partitions(%s, %s)", (start, end)).fetchone()
    return int(created)


def active_watchlist(conn: psycopg.Connection, asset_class: str) -> list[str]:
    rows = conn.execute(
        "SELECT symbol FROM market.watchlist WHERE active AND asset_class = %s ORDER BY symbol",
        (asset_class,),
    ).fetchall()
    return [symbol for (symbol,) in rows]


def active_watchlist_by_symbol(conn: psycopg.Connection) -> dict[str, str]:
    """Every active watchlist symbol -> its asset class (the flat-file dataset)."""
    return dict(conn.execute("SELECT symbol, asset_class FROM market.watchlist WHERE active ORDER BY symbol"))


def symbols_needing_history(conn: psycopg.Connection, symbols: Sequence[str]) -> list[str]:
    """The symbols whose initial history is still to load: planned but not completed, or new (no
    history record and no bar at all; a symbol with bars but no record was loaded otherwise)."""
    rows = conn.execute(
        """SELECT s FROM unnest(%s::text[]) AS s
           LEFT JOIN market.watchlist_history h ON h.symbol = s
           WHERE (h.symbol IS NOT NULL AND h.completed_at IS NULL)
              OR (h.symbol IS NULL AND NOT EXISTS (
                      SELECT 1 FROM market.historical_bars b WHERE b.symbol = s AND b.timeframe = '1m'))""",
        (list(symbols),),
    )
    return sorted(symbol for (symbol,) in rows)


def plan_history(conn: psycopg.Connection, symbols: Sequence[str], first: dt.date, last: dt.date) -> None:
    """Record that these symbols' history (first..last) is planned and not complete yet."""
    conn.execute(
        """INSERT INTO market.watchlist_history (symbol, first_session, last_session)
           SELECT s, %s, %s FROM unnest(%s::text[]) AS s
           ON CONFLICT (symbol) DO UPDATE SET first_session = EXCLUDED.first_session,
               last_session = EXCLUDED.last_session, planned_at = now(), completed_at = NULL""",
        (first, last, list(symbols)),
    )


def complete_history(conn: psycopg.Connection, symbols: Sequence[str]) -> None:
    """Every piece of these symbols' planned history has loaded: they are established."""
    conn.execute(
        "UPDATE market.watchlist_history SET completed_at = now()"
        " WHERE symbol = ANY(%s) AND completed_at IS NULL",
        (list(symbols),),
    )


def rest_sessions_since(conn: psycopg.Connection, first: dt.date) -> dict[tuple[str, str], list[dt.date]]:
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


def bars_by_symbol(
    conn: psycopg.Connection, symbols: Sequence[str], first: dt.date, last: dt.date
) -> list[tuple[str, str, str, int, int]]:
    """(symbol, timeframe, source, sessions, bars) for the symbols' 1m and 1d bars in first..last."""
    start, _ = day_window(first)
    _, end = day_window(last)
    return conn.execute(
        """SELECT symbol, timeframe, source,
                  count(DISTINCT (ts AT TIME ZONE 'America/New_York')::date), count(*)
           FROM market.historical_bars
           WHERE symbol = ANY(%s) AND timeframe IN ('1m', '1d') AND ts >= %s AND ts < %s
           GROUP BY 1, 2, 3 ORDER BY 1, 2, 3""",
        (list(symbols), start, end),
    ).fetchall()


def selection_key(symbols: Sequence[str]) -> str:
    """A short stable name for a symbol selection: '*' or a digest of the sorted symbols."""
    if list(symbols) == [ALL_TICKERS]:
        return ALL_TICKERS
    return "md5:" + hashlib.md5(",".join(sorted(set(symbols))).encode()).hexdigest()


def _scope(dataset: str, symbols: Sequence[str]) -> tuple[sql.Composable, tuple]:
    if list(symbols) == [ALL_TICKERS]:
        return DATASET_SCOPE[dataset], ()
    return sql.SQL("symbol = ANY(%s)"), (sorted(set(symbols)),)


def _session_rows(version: FlatFileVersion, symbols: Sequence[str]) -> tuple[sql.Composable, tuple]:
    """A WHERE clause (and its parameters) for the selection's bars in the file's session window."""
    scope, scope_params = _scope(version.dataset, symbols)
    start, end = day_window(version.session)
    clause = sql.SQL("timeframe = %s AND ts >= %s AND ts < %s AND {scope}").format(scope=scope)
    return clause, (version.timeframe, start, end, *scope_params)


def current_load(
    conn: psycopg.Connection, version: FlatFileVersion, symbols: Sequence[str]
) -> LoadCounts | None:
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
    in_window, window = _session_rows(version, symbols)
    (present,) = conn.execute(
        sql.SQL("SELECT count(*) FROM market.historical_bars WHERE {w} AND source = 'flatfile'").format(
            w=in_window
        ),
        window,
    ).fetchone()
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
    conn: psycopg.Connection,
    version: FlatFileVersion,
    symbols: Sequence[str],
    reader: FlatFileReader,
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
    scope, scope_params = _scope(version.dataset, symbols)
    in_window, window = _session_rows(version, symbols)
    with conn.transaction(), conn.cursor() as cur:
        # Two writers of the same session (overlapping runs, a cleared task, a REST fill) take turns
        # instead of colliding on the primary key.
        _lock_session(cur, version.dataset, version.timeframe, version.session)
        (occupied,) = cur.execute(
            sql.SQL("SELECT EXISTS (SELECT 1 FROM market.historical_bars WHERE {w})").format(w=in_window),
            window,
        ).fetchone()
        if not occupied:
            loaded, quarantined, present = _copy_file(cur, sql.SQL("market.historical_bars"), reader, version)
        else:
            cur.execute(
                "CREATE TEMPORARY TABLE flatfile_incoming (LIKE market.historical_bars) ON COMMIT DROP"
            )
            loaded, quarantined, present = _copy_file(cur, sql.SQL("flatfile_incoming"), reader, version)
            cur.execute("ANALYZE flatfile_incoming")
            cur.execute(sql.SQL(_MERGE_CHANGES).format(w=in_window), window)
            cur.execute(_MERGE_DELETE, window[:3])
            deleted = cur.rowcount
            cur.execute(_MERGE_INSERT)
            log.info(
                "%s: merged into existing rows: %d replaced or removed, %d added",
                version.key,
                deleted,
                cur.rowcount,
            )
        cur.execute(
            sql.SQL(
                "DELETE FROM market.quarantine WHERE dataset = %s AND timeframe = %s AND session_date = %s"
                " AND {scope}"
            ).format(scope=sql.SQL("true") if list(symbols) == [ALL_TICKERS] else scope),
            (version.dataset, version.timeframe, version.session, *scope_params),
        )
        rejected = pa.concat_tables(quarantined) if quarantined else QUARANTINE_SCHEMA.empty_table()
        _copy_quarantine(cur, version, rejected)
        cur.execute(  # the flat file is canonical now: REST bars and gaps of the session are superseded
            sql.SQL(
                "UPDATE market.rest_ledger SET status = 'flatfile', rows_loaded = 0, rows_quarantined = 0"
                " WHERE timeframe = %s AND session_date = %s AND status <> 'flatfile' AND {scope}"
            ).format(scope=scope),
            (version.timeframe, version.session, *scope_params),
        )
        counts = LoadCounts(
            rows_read=reader.rows_read,
            rows_loaded=loaded,
            rows_quarantined=rejected.num_rows,
            seconds=time.perf_counter() - started,
            reasons=dict(Counter(rejected["reason"].to_pylist())),
        )
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
                None if list(symbols) == [ALL_TICKERS] else sorted(set(symbols)),
                version.key,
                version.etag,
                version.size,
                version.last_modified,
                counts.rows_read,
                counts.rows_loaded,
                counts.rows_quarantined,
                None if list(symbols) == [ALL_TICKERS] else sorted(set(symbols) - present),
                counts.seconds,
                run_id,
            ),
        )
    return counts


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


def _copy_file(
    cur: psycopg.Cursor, target: sql.Composable, reader: FlatFileReader, version: FlatFileVersion
) -> tuple[int, list[pa.Table], set[str]]:
    """COPY the file's valid rows into target as they are parsed; return (rows, quarantine tables,
    symbols the file has rows for, valid or quarantined).

    A file that cannot be streamed is discovered part-way: the savepoint drops what was copied
    and the file is read again whole.
    """
    try:
        with cur.connection.transaction():
            return _copy_chunks(cur, target, reader.chunks(streaming=True), version.timeframe)
    except NotStreamableError as exc:
        log.info("%s; reading the file whole instead of streaming it", exc)
        return _copy_chunks(cur, target, reader.chunks(streaming=False), version.timeframe)


def _copy_chunks(
    cur: psycopg.Cursor, target: sql.Composable, chunks: Iterator[Chunk], timeframe: str
) -> tuple[int, list[pa.Table], set[str]]:
    loaded, quarantined = 0, []

    def batches() -> Iterator[pa.RecordBatch]:
        nonlocal loaded
        for chunk in chunks:
            loaded += chunk.bars.num_rows
            symbols.update(pc.unique(chunk.bars["symbol"]).to_pylist())
            if chunk.quarantined.num_rows:
                quarantined.append(chunk.quarantined)
                symbols.update(pc.unique(chunk.quarantined["symbol"]).drop_null().to_pylist())
            yield from _with_constants(chunk.bars, timeframe, "flatfile")

    symbols: set[str] = set()
    _copy_batches(cur, target, COPY_SCHEMA, batches())
    return loaded, quarantined, symbols


def _with_constants(bars: pa.Table, timeframe: str, source: str) -> Iterator[pa.RecordBatch]:
    """Record batches in COPY_SCHEMA; the constant columns are built one batch at a time."""
    if bars.schema != BAR_SCHEMA:
        raise TypeError(f"bars must have schema {BAR_SCHEMA}, got {bars.schema}")
    for batch in bars.to_batches(max_chunksize=COPY_CHUNK_ROWS):
        n = batch.num_rows
        columns = dict(zip(batch.schema.names, batch.columns, strict=True))
        columns["timeframe"] = pa.repeat(pa.scalar(timeframe), n)
        columns["source"] = pa.repeat(pa.scalar(source), n)
        yield pa.RecordBatch.from_arrays([columns[name] for name in BAR_COLUMNS], schema=COPY_SCHEMA)


def _copy_quarantine(cur: psycopg.Cursor, version: FlatFileVersion, rows: pa.Table) -> None:
    if not rows.num_rows:
        return
    n = rows.num_rows
    table = pa.table(
        {
            "dataset": pa.repeat(pa.scalar(version.dataset), n),
            "timeframe": pa.repeat(pa.scalar(version.timeframe), n),
            "session_date": pa.repeat(pa.scalar(version.session, pa.date32()), n),
            "s3_key": pa.repeat(pa.scalar(version.key), n),
            "etag": pa.repeat(pa.scalar(version.etag), n),
            "line_number": rows["line_number"],
            "symbol": rows["symbol"],
            "reason": rows["reason"],
            "raw": rows["raw"],
        }
    )
    _copy_batches(
        cur, sql.SQL("market.quarantine"), table.schema, table.to_batches(max_chunksize=COPY_CHUNK_ROWS)
    )


def _copy_batches(
    cur: psycopg.Cursor, target: sql.Composable, schema: pa.Schema, batches: Iterable[pa.RecordBatch]
) -> None:
    """COPY Arrow batches into target in PostgreSQL's binary format, encoded in bulk by pgpq.

    Batches are produced while earlier ones are sent: the server ingests one while the next is built.
    """
    statement = sql.SQL("COPY {target} ({columns}) FROM STDIN (FORMAT BINARY)").format(
        target=target, columns=sql.SQL(", ").join(map(sql.Identifier, schema.names))
    )
    encoder = ArrowToPostgresBinaryEncoder(schema)
    with cur.copy(statement) as copy:
        copy.write(encoder.write_header())
        for batch in batches:
            copy.write(encoder.write_batch(batch))
        copy.write(encoder.finish())


def rebuild_rollups(
    conn: psycopg.Connection, dataset: str, session: dt.date, symbols: Sequence[str]
) -> RollupCounts:
    """Rebuild the selection's derived bars (5m, 15m, 1h, 4h; ``source = 'rollup'``) of one session
    from the 1m bars the warehouse holds now, in one transaction (see ``marketbars.rollups``).

    Every writer of 1m bars calls this after its write, so derived bars follow whichever source
    last wrote the minutes. It takes the session's writer lock, so the 1m bars it reads cannot
    change underneath it; the flat-file ledger row of the selection records that its rollups are
    current. A non-session has no regular session and no derived bars.
    """
    started = time.perf_counter()
    if not is_session(session):
        return RollupCounts(0, dict.fromkeys(rollups.TIMEFRAMES, 0), 0, 0.0)
    hours = session_hours(session)
    scope, scope_params = _scope(dataset, symbols)
    in_window = sql.SQL("timeframe = ANY(%s) AND ts >= %s AND ts < %s AND {scope}").format(scope=scope)
    with conn.transaction(), conn.cursor() as cur:
        _lock_session(cur, dataset, "1m", session)
        cur.execute("SET LOCAL extra_float_digits = 1")  # floats printed exactly (the default since PG 12)
        pa.default_memory_pool().release_unused()  # a load just before may have left its buffers cached
        minutes = _read_minutes(cur, scope, scope_params, hours.open, hours.close)
        derived = dict.fromkeys(rollups.TIMEFRAMES, 0)

        def batches() -> Iterator[pa.RecordBatch]:  # streamed: the whole result is never in memory
            for tf, bars in rollups.iter_roll_up(minutes, hours):
                derived[tf] += bars.num_rows
                yield from _with_constants(bars, tf, "rollup")

        window = (list(rollups.TIMEFRAMES), hours.open, hours.close, *scope_params)
        (occupied,) = cur.execute(
            sql.SQL("SELECT EXISTS (SELECT 1 FROM market.historical_bars WHERE {w})").format(w=in_window),
            window,
        ).fetchone()
        replaced = 0
        if not occupied:  # the first build: straight in
            _copy_batches(cur, sql.SQL("market.historical_bars"), COPY_SCHEMA, batches())
        else:  # a rebuild rewrites only the bars that changed: no bloat when the minutes did not
            cur.execute("CREATE TEMPORARY TABLE rollup_incoming (LIKE market.historical_bars) ON COMMIT DROP")
            _copy_batches(cur, sql.SQL("rollup_incoming"), COPY_SCHEMA, batches())
            cur.execute("ANALYZE rollup_incoming")
            cur.execute(sql.SQL(_ROLLUP_DELETE_CHANGED).format(w=in_window), window)
            replaced = cur.rowcount
            cur.execute(_ROLLUP_INSERT_NEW)
        cur.execute(
            """UPDATE market.ingest_ledger SET rollups_at = now()
               WHERE dataset = %s AND timeframe = '1m' AND session_date = %s AND selection_key = %s""",
            (dataset, session, selection_key(symbols)),
        )
        cur.execute(
            sql.SQL(
                "UPDATE market.rest_ledger SET rollups_at = now()"
                " WHERE timeframe = '1m' AND session_date = %s AND {scope}"
            ).format(scope=scope),
            (session, *scope_params),
        )
    return RollupCounts(
        minute_bars=minutes.num_rows,
        derived_bars=derived,
        replaced=replaced,
        seconds=time.perf_counter() - started,
    )


# A rebuild's merge: derived bars that are gone or differ go, new or changed ones come in; bars
# equal to the incoming ones stay untouched (so do their index entries).
_ROLLUP_DELETE_CHANGED = """
    DELETE FROM market.historical_bars b WHERE {w} AND NOT EXISTS (
        SELECT 1 FROM rollup_incoming i
        WHERE i.symbol = b.symbol AND i.timeframe = b.timeframe AND i.ts = b.ts
          AND (i.open, i.high, i.low, i.close, i.volume, i.vwap, i.trades, i.source)
              IS NOT DISTINCT FROM (b.open, b.high, b.low, b.close, b.volume, b.vwap, b.trades, b.source))"""
_ROLLUP_INSERT_NEW = """
    INSERT INTO market.historical_bars SELECT * FROM rollup_incoming
    ON CONFLICT (symbol, timeframe, ts) DO NOTHING"""


def pending_rollups(conn: psycopg.Connection, first: dt.date) -> list[tuple[str, dt.date, list[str]]]:
    """(dataset, session, selection) whose 1m bars were written since ``first`` but whose derived bars
    were not rebuilt after (the writing task died between its two transactions and was not retried)."""
    from marketbars.flatfiles import dataset_of

    flat = conn.execute(
        """SELECT dataset, session_date, CASE WHEN selection_key = '*' THEN ARRAY['*'] ELSE symbols END
           FROM market.ingest_ledger
           WHERE timeframe = '1m' AND rollups_at IS NULL AND session_date >= %s""",
        (first,),
    ).fetchall()
    rest = conn.execute(
        """SELECT symbol, session_date FROM market.rest_ledger
           WHERE timeframe = '1m' AND rollups_at IS NULL AND status <> 'flatfile' AND session_date >= %s""",
        (first,),
    ).fetchall()
    pending = [(dataset, day, list(symbols)) for dataset, day, symbols in flat]
    pending += [(dataset_of(symbol), day, [symbol]) for symbol, day in rest]
    return sorted(pending)


_MINUTES_CSV_TYPES = {
    "symbol": pa.string(),
    "ts": pa.int64(),
    **{name: pa.float64() for name in ("open", "high", "low", "close", "volume", "vwap")},
    "trades": pa.int64(),
}


def copy_out_table(
    cur: psycopg.Cursor, query: sql.Composable, params: Sequence[Any], column_types: Mapping[str, pa.DataType]
) -> pa.Table | None:
    """The rows of ``query`` as Arrow (None when there are none), streamed out as CSV (PostgreSQL
    prints floats exactly since version 12) and parsed by pyarrow: far cheaper than a tuple per row.
    The CSV is spooled to a temporary file rather than held in memory next to its parsed columns."""
    statement = sql.SQL("COPY ({}) TO STDOUT (FORMAT CSV)").format(query)
    with tempfile.TemporaryFile(prefix="marketbars-copy-") as spool:
        with cur.copy(statement, params) as copy:
            for block in copy:
                spool.write(block)
        if spool.tell() == 0:
            return None
        spool.seek(0)
        return pacsv.read_csv(
            spool,
            read_options=pacsv.ReadOptions(column_names=list(column_types), use_threads=False),
            convert_options=pacsv.ConvertOptions(
                column_types=dict(column_types), null_values=[""], strings_can_be_null=False
            ),
        )


def _read_minutes(
    cur: psycopg.Cursor, scope: sql.Composable, scope_params: tuple, start: dt.datetime, end: dt.datetime
) -> pa.Table:
    """The selection's 1m bars in [start, end) as Arrow."""
    query = sql.SQL(
        "SELECT symbol, (date_part('epoch', ts) * 1000000)::bigint, open, high, low, close, volume,"
        " vwap, trades FROM market.historical_bars WHERE timeframe = '1m' AND ts >= %s AND ts < %s"
        " AND {scope}"
    ).format(scope=scope)
    table = copy_out_table(cur, query, (start, end, *scope_params), _MINUTES_CSV_TYPES)
    if table is None:
        return BAR_SCHEMA.empty_table()
    return table.set_column(1, "ts", table["ts"].cast(pa.timestamp("us", tz="UTC"))).cast(BAR_SCHEMA)


def _lock_session(cur: psycopg.Cursor, dataset: str, timeframe: str, session: dt.date) -> None:
    """Serialise every writer of one (dataset, timeframe, session): flat-file loads and REST fills."""
    cur.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (f"bars:{dataset}:{timeframe}:{session}",)
    )


@dataclass(frozen=True)
class RestFill:
    """One symbol's REST answer for some sessions of one timeframe."""

    symbol: str
    dataset: str
    timeframe: str
    sessions: tuple[dt.date, ...]
    requests: int
    request_ids: tuple[str, ...]


def replace_rest_sessions(
    conn: psycopg.Connection,
    fill: RestFill,
    parsed: RestBars,
    run_id: str | None = None,
    *,
    patch_flatfile_sessions: bool = False,
) -> dict[dt.date, tuple[str, int]]:
    """Write a symbol's REST bars for its sessions in one transaction; return each session's status
    and the bars written.

    Flat files are the canonical history: a session a flat file already holds for the symbol is left
    alone ('flatfile'), or, with ``patch_flatfile_sessions`` (gap repair), gets the REST bars only at
    the timestamps it lacks ('patched'; a flat-file bar is never overwritten, and a re-loaded file
    replaces the patch). Otherwise the session's earlier non-flat-file bars are replaced by the REST
    bars ('loaded'), or it is recorded as a gap when the API had none ('empty').
    """
    sessions = sorted(fill.sessions)
    statuses: dict[dt.date, tuple[str, int]] = {}
    with conn.transaction(), conn.cursor() as cur:
        for session in sessions:  # in date order, as every writer does: no lock-order deadlock
            _lock_session(cur, fill.dataset, fill.timeframe, session)
        first, _ = day_window(sessions[0])
        _, last = day_window(sessions[-1])
        covered = {
            day
            for (day,) in cur.execute(
                """SELECT DISTINCT (ts AT TIME ZONE 'America/New_York')::date FROM market.historical_bars
                   WHERE symbol = %s AND timeframe = %s AND ts >= %s AND ts < %s AND source = 'flatfile'""",
                (fill.symbol, fill.timeframe, first, last),
            ).fetchall()
        }
        writable = [s for s in sessions if s not in covered]
        for session in writable:
            start, end = day_window(session)
            cur.execute(
                """DELETE FROM market.historical_bars
                   WHERE symbol = %s AND timeframe = %s AND ts >= %s AND ts < %s AND source <> 'flatfile'""",
                (fill.symbol, fill.timeframe, start, end),
            )
        bars = _in_sessions(parsed.bars, "ts", writable)
        _copy_batches(
            cur, sql.SQL("market.historical_bars"), COPY_SCHEMA, _with_constants(bars, fill.timeframe, "rest")
        )
        patched = _patch_sessions(cur, fill, parsed, sorted(covered)) if patch_flatfile_sessions else {}
        # Rejected rows are kept, dated on a non-trading day too; an unpatched flat-file session's are moot.
        moot = [] if patch_flatfile_sessions else sorted(covered)
        rejected = parsed.quarantined.filter(
            pc.invert(pc.is_in(parsed.quarantined["session_date"], pa.array(moot, pa.date32())))
        )
        replaced = set(writable) | set(patched) | set(rejected["session_date"].to_pylist())
        cur.execute(
            """DELETE FROM market.quarantine WHERE source = 'rest' AND symbol = %s AND timeframe = %s
               AND session_date = ANY(%s)""",
            (fill.symbol, fill.timeframe, sorted(replaced)),
        )
        _copy_rest_quarantine(cur, fill, rejected)
        for session in sessions:
            if session in covered:
                status, loaded = ("patched", patched[session]) if patch_flatfile_sessions else ("flatfile", 0)
                quarantined = parsed.quarantined_by_session.get(session, 0) if patch_flatfile_sessions else 0
            else:
                loaded = parsed.loaded_by_session.get(session, 0)
                status = "loaded" if loaded else "empty"
                quarantined = parsed.quarantined_by_session.get(session, 0)
            statuses[session] = (status, loaded)
            cur.execute(
                """INSERT INTO market.rest_ledger (symbol, timeframe, session_date, status, rows_loaded,
                       rows_quarantined, requests, request_ids, run_id, fetched_at)
                   VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, now())
                   ON CONFLICT (symbol, timeframe, session_date) DO UPDATE SET
                       status = EXCLUDED.status, rows_loaded = EXCLUDED.rows_loaded,
                       rows_quarantined = EXCLUDED.rows_quarantined, requests = EXCLUDED.requests,
                       request_ids = EXCLUDED.request_ids, run_id = EXCLUDED.run_id, fetched_at = now(),
                       rollups_at = NULL""",
                (
                    fill.symbol,
                    fill.timeframe,
                    session,
                    status,
                    loaded,
                    quarantined,
                    fill.requests,
                    list(fill.request_ids),
                    run_id,
                ),
            )
    return statuses


def _patch_sessions(
    cur: psycopg.Cursor, fill: RestFill, parsed: RestBars, sessions: Sequence[dt.date]
) -> dict[dt.date, int]:
    """Insert the REST bars of flat-file sessions at the timestamps they have no bar; rows per session."""
    if not sessions:
        return {}
    cur.execute("CREATE TEMPORARY TABLE rest_patch (LIKE market.historical_bars) ON COMMIT DROP")
    bars = _in_sessions(parsed.bars, "ts", sessions)
    _copy_batches(cur, sql.SQL("rest_patch"), COPY_SCHEMA, _with_constants(bars, fill.timeframe, "rest"))
    inserted = cur.execute(
        """INSERT INTO market.historical_bars SELECT * FROM rest_patch
           ON CONFLICT (symbol, timeframe, ts) DO NOTHING
           RETURNING (ts AT TIME ZONE 'America/New_York')::date"""
    ).fetchall()
    patched = dict.fromkeys(sessions, 0)
    for (day,) in inserted:
        patched[day] += 1
    return patched


def _in_sessions(table: pa.Table, column: str, sessions: Sequence[dt.date]) -> pa.Table:
    """The rows whose timestamp falls in one of the sessions' New York days."""
    keep = pa.array([False] * table.num_rows, pa.bool_())
    for session in sessions:
        start, end = day_window(session)
        inside = pc.and_(
            pc.greater_equal(table[column], pa.scalar(start)), pc.less(table[column], pa.scalar(end))
        )
        keep = pc.or_(keep, inside)
    return table.filter(keep)


def _copy_rest_quarantine(cur: psycopg.Cursor, fill: RestFill, rows: pa.Table) -> None:
    if not rows.num_rows:
        return
    n = rows.num_rows
    table = pa.table(
        {
            "dataset": pa.repeat(pa.scalar(fill.dataset), n),
            "timeframe": pa.repeat(pa.scalar(fill.timeframe), n),
            "session_date": rows["session_date"],
            "symbol": rows["symbol"],
            "reason": rows["reason"],
            "raw": rows["raw"],
            "source": pa.repeat(pa.scalar("rest"), n),
            "request_id": pa.repeat(pa.scalar(",".join(fill.request_ids)), n),
        }
    )
    _copy_batches(
        cur, sql.SQL("market.quarantine"), table.schema, table.to_batches(max_chunksize=COPY_CHUNK_ROWS)
    )
