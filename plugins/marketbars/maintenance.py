"""SQL of the weekly cleanup: bar partitions, bounded trims, ledger pruning, VACUUM and sizes.

Functions take an autocommit psycopg 3 connection (VACUUM cannot run in a transaction) and open
their own transactions, one per unit of work, so a cleanup cut short keeps what it finished and
the next run does the rest.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable, Mapping

import psycopg
from psycopg import sql

from marketbars.retention import Partition, month_bounds, plan_partitions, trim_days

log = logging.getLogger(__name__)

LOCK_TIMEOUT = "30s"  # how long a detach or a trim waits for a lock, then fails (and the task retries)

# The bounds of each partition of market.historical_bars, read from the catalog (rendered in UTC by
# the caller's SET LOCAL), whatever the partitions are called.
_PARTITIONS = r"""
SELECT c.relname,
       substring(pg_get_expr(c.relpartbound, c.oid) FROM $$FROM \('([^']+)'\)$$)::timestamptz,
       substring(pg_get_expr(c.relpartbound, c.oid) FROM $$TO \('([^']+)'\)$$)::timestamptz,
       pg_total_relation_size(c.oid),
       greatest(c.reltuples, 0)::bigint,
       i.inhdetachpending
FROM pg_inherits i
JOIN pg_class c ON c.oid = i.inhrelid
WHERE i.inhparent = 'market.historical_bars'::regclass
ORDER BY 2"""

# Tables named like bar partitions that are no longer attached: left by a drop cut short between
# its DETACH and its DROP.
_DETACHED = r"""
SELECT c.relname, pg_total_relation_size(c.oid) FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = 'market' AND c.relkind = 'r' AND NOT c.relispartition
  AND c.relname ~ '^historical_bars_[0-9]{4}_[0-9]{2}$'"""

# What each ledger keeps by its own retention setting (fixed SQL; the date is bound). Open gaps
# are never pruned: they are still being worked.
LEDGERS: dict[str, str] = {
    "quarantine": "session_date < %s",
    "ingest_ledger": "session_date < %s",
    "rest_ledger": "session_date < %s",
    "backfill_gaps": "session_date < %s AND status <> 'open'",
    "backtest_runs": "started_at < %s",  # their metrics and trades go with them (ON DELETE CASCADE)
}
LEDGER_SETTING = {
    "quarantine": "quarantine",
    "ingest_ledger": "ledgers",
    "rest_ledger": "ledgers",
    "backfill_gaps": "ledgers",
    "backtest_runs": "backtests",
}


def bar_partitions(conn: psycopg.Connection) -> tuple[list[Partition], dict[str, int]]:
    """The partitions of market.historical_bars with their bounds and sizes (and tables a cut-short
    drop detached but did not drop, by their names); and estimated rows."""
    partitions, rows = [], {}
    with conn.transaction():
        conn.execute("SET LOCAL TimeZone = 'UTC'")
        for name, start, end, size, estimate, detaching in conn.execute(_PARTITIONS):
            if start is None or end is None:  # a DEFAULT partition: nothing to drop by date
                log.warning("market.%s has no date bounds; retention leaves it alone", name)
                continue
            partitions.append(Partition(name, start, end, size, attached=not detaching))
            rows[name] = estimate
        for name, size in conn.execute(_DETACHED):
            bounds = month_bounds(name)
            if bounds is not None:
                partitions.append(Partition(name, *bounds, size, attached=False))
                rows[name] = 0
    return partitions, rows


def drop_partition(conn: psycopg.Connection, name: str, before: dt.datetime) -> int:
    """Drop one bar partition wholly before the cutoff; its size in bytes (0 when already gone).

    ``DETACH PARTITION ... CONCURRENTLY`` first: it never takes an exclusive lock on
    ``market.historical_bars``, so loads and readers of other months go on (a plain DROP of a
    partition would queue them all behind it); then the detached table is dropped. A drop cut
    short in between is finished by the next run (see ``bar_partitions``). The partition is
    checked against the cutoff right before, so a stale plan cannot drop a newer one.
    """
    partition = detach_partition(conn, name, before)
    if partition is None:
        return 0
    drop_detached(conn, partition)
    return partition.bytes


def detach_partition(conn: psycopg.Connection, name: str, before: dt.datetime) -> Partition | None:
    """Take one partition wholly before the cutoff out of market.historical_bars (its rows vanish
    from every query at once); None when it is already gone."""
    partitions, _ = bar_partitions(conn)
    droppable = {p.name: p for p in plan_partitions(partitions, before).drop}
    if name not in droppable:
        if name in {p.name for p in partitions}:
            raise ValueError(f"market.{name} is not entirely before {before.isoformat()}: not dropped")
        return None
    partition = droppable[name]
    statement = None
    if partition.attached:  # CONCURRENTLY cannot run in a transaction: the connection autocommits
        statement = "ALTER TABLE market.historical_bars DETACH PARTITION market.{} CONCURRENTLY"
    elif name in _pending_detach(conn):  # a concurrent detach that was cut short
        statement = "ALTER TABLE market.historical_bars DETACH PARTITION market.{} FINALIZE"
    if statement:
        conn.execute(sql.SQL("SET lock_timeout = {}").format(sql.Literal(LOCK_TIMEOUT)))
        try:
            conn.execute(sql.SQL(statement).format(sql.Identifier(name)))
        finally:
            conn.execute("RESET lock_timeout")
    return partition


def drop_detached(conn: psycopg.Connection, partition: Partition) -> None:
    """Drop a detached bar partition: its files go back to the filesystem."""
    conn.execute(sql.SQL("DROP TABLE IF EXISTS market.{}").format(sql.Identifier(partition.name)))


def _pending_detach(conn: psycopg.Connection) -> set[str]:
    rows = conn.execute(
        """SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
           WHERE i.inhparent = 'market.historical_bars'::regclass AND i.inhdetachpending"""
    )
    return {name for (name,) in rows}


def count_before(conn: psycopg.Connection, name: str, before: dt.datetime) -> int:
    (rows,) = conn.execute(
        sql.SQL("SELECT count(*) FROM market.{} WHERE ts < %s").format(sql.Identifier(name)), (before,)
    ).fetchone()
    return int(rows)


def trim_partition(conn: psycopg.Connection, partition: Partition, before: dt.datetime) -> int:
    """Delete the partition's rows before the cutoff, one New York day per transaction; rows deleted."""
    deleted = 0
    for start, end in trim_days(partition, before):
        with conn.transaction():
            conn.execute(sql.SQL("SET LOCAL lock_timeout = {}").format(sql.Literal(LOCK_TIMEOUT)))
            cur = conn.execute(
                sql.SQL("DELETE FROM market.{} WHERE ts >= %s AND ts < %s").format(
                    sql.Identifier(partition.name)
                ),
                (start, end),
            )
            deleted += cur.rowcount
    return deleted


def prune_ledgers(
    conn: psycopg.Connection, cutoffs: Mapping[str, dt.date | None], *, dry_run: bool
) -> dict[str, int]:
    """Rows of each ledger older than its own cutoff (None: kept forever): deleted, or counted."""
    rows = {}
    for table, condition in LEDGERS.items():
        before = cutoffs.get(LEDGER_SETTING[table])
        if before is None:
            continue
        verb = "SELECT count(*) FROM" if dry_run else "DELETE FROM"
        statement = sql.SQL(f"{verb} market.{{}} WHERE {condition}").format(sql.Identifier(table))
        with conn.transaction():
            cur = conn.execute(statement, (before,))
            rows[table] = int(cur.fetchone()[0]) if dry_run else cur.rowcount
    return rows


def vacuum_analyze(conn: psycopg.Connection, tables: Iterable[str]) -> list[str]:
    """VACUUM (ANALYZE) the named market tables that still exist; the names done."""
    done = []
    for table in sorted(set(tables)):
        if conn.execute("SELECT to_regclass(%s)", (f"market.{table}",)).fetchone()[0] is None:
            continue
        conn.execute(sql.SQL("VACUUM (ANALYZE) market.{}").format(sql.Identifier(table)))
        done.append(table)
    return done


def analyze(conn: psycopg.Connection, table: str) -> None:
    """ANALYZE a partitioned parent: autovacuum never does, and dropped partitions skew its stats."""
    conn.execute(sql.SQL("ANALYZE market.{}").format(sql.Identifier(table)))


def market_bytes(conn: psycopg.Connection) -> int:
    """Bytes on disk of every table of schema market, with its indexes and TOAST."""
    (size,) = conn.execute(
        """SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_class c
           JOIN pg_namespace n ON n.oid = c.relnamespace
           WHERE n.nspname = 'market' AND c.relkind IN ('r', 'm')"""
    ).fetchone()
    return int(size)
