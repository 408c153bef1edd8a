"""Housekeeping of the warehouse's tables: pruning old ledger rows, VACUUM, ANALYZE, sizes.

Functions take an autocommit connection (VACUUM cannot run in a transaction) and open their own
transactions, one per unit of work, so a cleanup cut short keeps what it finished.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping

from psycopg import sql

from marketbars.warehouse.connection import Connection, one

# What "older than a date" means for each prunable table (fixed SQL; the date is bound). Open gaps
# are never pruned: they are still being worked.
PRUNABLE: dict[str, str] = {
    "quarantine": "session_date < %s",
    "ingest_ledger": "session_date < %s",
    "rest_ledger": "session_date < %s",
    "backfill_gaps": "session_date < %s AND status <> 'open'",
    # A ticker's whole-history fetch stays: it is how a run knows the ticker is not new.
    "reference_ledger": "fetched_at < %s AND window_from <> '-infinity'",
    "backtest_runs": "started_at < %s",  # their metrics and trades go with them (ON DELETE CASCADE)
}


def prune(conn: Connection, cutoffs: Mapping[str, dt.date], *, dry_run: bool) -> dict[str, int]:
    """Rows of each table (``PRUNABLE``) older than its cutoff: deleted, or counted; one transaction each."""
    rows = {}
    for table, before in cutoffs.items():
        verb = "SELECT count(*) FROM" if dry_run else "DELETE FROM"
        statement = sql.SQL(f"{verb} market.{{}} WHERE {PRUNABLE[table]}").format(sql.Identifier(table))
        with conn.transaction():
            cur = conn.execute(statement, (before,))
            counted = cur.fetchone() if dry_run else None
            rows[table] = int(counted[0]) if counted else cur.rowcount
    return rows


def vacuum_analyze(conn: Connection, tables: Iterable[str]) -> list[str]:
    """VACUUM (ANALYZE) the named market tables that still exist; the names done."""
    done = []
    for table in sorted(set(tables)):
        if one(conn, "SELECT to_regclass(%s)", (f"market.{table}",))[0] is None:
            continue
        conn.execute(sql.SQL("VACUUM (ANALYZE) market.{}").format(sql.Identifier(table)))
        done.append(table)
    return done


def analyze(conn: Connection, table: str) -> None:
    """ANALYZE a partitioned parent: autovacuum never does, and dropped partitions skew its stats."""
    conn.execute(sql.SQL("ANALYZE market.{}").format(sql.Identifier(table)))


def market_bytes(conn: Connection) -> int:
    """Bytes on disk of every table of schema market, with its indexes and TOAST."""
    (size,) = one(
        conn,
        """SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_class c
           JOIN pg_namespace n ON n.oid = c.relnamespace
           WHERE n.nspname = 'market' AND c.relkind IN ('r', 'm')""",
    )
    return int(size)
