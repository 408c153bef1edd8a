"""The monthly partitions of ``market.historical_bars``: created ahead of loads, listed with their
bounds and sizes, detached and dropped, trimmed a day at a time.

Each function is one short unit of work: creating or detaching a partition locks the parent, which
must never happen inside a long load. Which partitions go is the cleanup's rule
(``marketbars.pipelines.cleanup.rules``), not decided here.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from dataclasses import dataclass

from psycopg import sql

from marketbars.market.calendar import NEW_YORK, day_window
from marketbars.warehouse.connection import Connection, one

log = logging.getLogger(__name__)

LOCK_TIMEOUT = "30s"  # how long a detach or a trim waits for a lock, then fails (and the task retries)
_PARTITION_NAME = re.compile(r"^historical_bars_(\d{4})_(\d{2})$")

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


@dataclass(frozen=True)
class Partition:
    name: str
    start: dt.datetime  # inclusive, UTC
    end: dt.datetime  # exclusive, UTC
    bytes: int
    attached: bool = True  # False: detached by a drop that was cut short; only the DROP is left


def ensure_partitions(conn: Connection, first: dt.date, last: dt.date) -> int:
    """Create the monthly bar partitions covering sessions first..last; return how many were new."""
    start, _ = day_window(first)
    _, end = day_window(last)
    with conn.transaction():
        (created,) = one(conn, "SELECT market.ensure_bar_partitions(%s, %s)", (start, end))
    return int(created)


def month_bounds(name: str) -> tuple[dt.datetime, dt.datetime] | None:
    """The New York month a partition's name stands for (historical_bars_YYYY_MM), in UTC."""
    match = _PARTITION_NAME.match(name)
    if match is None:
        return None
    year, month = int(match[1]), int(match[2])
    start = dt.datetime(year, month, 1, tzinfo=NEW_YORK)
    end = dt.datetime(year + month // 12, month % 12 + 1, 1, tzinfo=NEW_YORK)
    return start.astimezone(dt.UTC), end.astimezone(dt.UTC)


def bar_partitions(conn: Connection) -> tuple[list[Partition], dict[str, int]]:
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


def detach(conn: Connection, partition: Partition) -> None:
    """Take a partition out of market.historical_bars (its rows vanish from every query at once).

    ``DETACH PARTITION ... CONCURRENTLY`` never takes an exclusive lock on the parent, so loads and
    readers of other months go on; a concurrent detach that was cut short is finalized.
    """
    statement = None
    if partition.attached:  # CONCURRENTLY cannot run in a transaction: the connection autocommits
        statement = "ALTER TABLE market.historical_bars DETACH PARTITION market.{} CONCURRENTLY"
    elif partition.name in _pending_detach(conn):
        statement = "ALTER TABLE market.historical_bars DETACH PARTITION market.{} FINALIZE"
    if statement is None:
        return
    conn.execute(sql.SQL("SET lock_timeout = {}").format(sql.Literal(LOCK_TIMEOUT)))
    try:
        conn.execute(sql.SQL(statement).format(sql.Identifier(partition.name)))
    finally:
        conn.execute("RESET lock_timeout")


def drop_detached(conn: Connection, partition: Partition) -> None:
    """Drop a detached bar partition: its files go back to the filesystem."""
    conn.execute(sql.SQL("DROP TABLE IF EXISTS market.{}").format(sql.Identifier(partition.name)))


def _pending_detach(conn: Connection) -> set[str]:
    rows = conn.execute(
        """SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
           WHERE i.inhparent = 'market.historical_bars'::regclass AND i.inhdetachpending"""
    )
    return {str(name) for (name,) in rows}


def count_before(conn: Connection, name: str, before: dt.datetime) -> int:
    (rows,) = one(
        conn, sql.SQL("SELECT count(*) FROM market.{} WHERE ts < %s").format(sql.Identifier(name)), (before,)
    )
    return int(rows)


def delete_span(conn: Connection, name: str, start: dt.datetime, end: dt.datetime) -> int:
    """Delete one partition's rows in [start, end) in one transaction; rows deleted."""
    with conn.transaction():
        conn.execute(sql.SQL("SET LOCAL lock_timeout = {}").format(sql.Literal(LOCK_TIMEOUT)))
        cur = conn.execute(
            sql.SQL("DELETE FROM market.{} WHERE ts >= %s AND ts < %s").format(sql.Identifier(name)),
            (start, end),
        )
        return cur.rowcount
