"""The warehouse SQL against a real PostgreSQL: schema, partitions, transactional replace, ledger."""

from __future__ import annotations

import datetime as dt
import threading

import psycopg
import pytest

from marketbars.warehouse.partitions import ensure_partitions
from sandbox.services import Postgres

pytestmark = pytest.mark.integration


def _insert_rest_bar(conn: psycopg.Connection, symbol: str, ts: dt.datetime) -> None:
    conn.execute(
        "INSERT INTO market.historical_bars VALUES (%s, '1m', %s, 1, 1, 1, 1, 10, 1, 5, 'rest')", (symbol, ts)
    )


def test_partitions_are_new_york_months_created_on_demand(warehouse_conn: psycopg.Connection) -> None:
    assert ensure_partitions(warehouse_conn, dt.date(2024, 1, 31), dt.date(2024, 3, 1)) == 3
    assert ensure_partitions(warehouse_conn, dt.date(2024, 2, 5), dt.date(2024, 2, 6)) == 0
    warehouse_conn.execute("SET TIME ZONE 'UTC'")
    bounds = dict(
        warehouse_conn.execute(
            """SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i
               JOIN pg_class c ON c.oid = i.inhrelid
               WHERE i.inhparent = 'market.historical_bars'::regclass ORDER BY 1"""
        ).fetchall()
    )
    assert sorted(bounds) == ["historical_bars_2024_01", "historical_bars_2024_02", "historical_bars_2024_03"]
    # Midnight New York: 05:00 UTC in winter; March ends at 04:00 UTC because DST began on 10 March.
    assert (
        bounds["historical_bars_2024_02"]
        == "FOR VALUES FROM ('2024-02-01 05:00:00+00') TO ('2024-03-01 05:00:00+00')"
    )
    assert (
        bounds["historical_bars_2024_03"]
        == "FOR VALUES FROM ('2024-03-01 05:00:00+00') TO ('2024-04-01 04:00:00+00')"
    )
    # The daily bar of 1 February (00:00 New York = 05:00 UTC) lands in February's partition.
    _insert_rest_bar(warehouse_conn, "AAPL", dt.datetime(2024, 2, 1, 5, 0, tzinfo=dt.UTC))
    where = warehouse_conn.execute("SELECT tableoid::regclass::text FROM market.historical_bars").fetchone()
    assert where == ("market.historical_bars_2024_02",)


def test_workers_creating_the_same_partition_at_once_all_succeed(
    db: Postgres, warehouse_conn: psycopg.Connection
) -> None:
    start = threading.Barrier(6)
    errors: list[BaseException] = []

    def create() -> None:
        try:
            with db.connect() as own:
                start.wait()
                ensure_partitions(own, dt.date(2025, 6, 2), dt.date(2025, 8, 29))
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=create) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    names = warehouse_conn.execute(
        "SELECT relname FROM pg_class WHERE relkind = 'r' AND relname LIKE 'historical_bars_2025%' ORDER BY 1"
    ).fetchall()
    assert names == [("historical_bars_2025_06",), ("historical_bars_2025_07",), ("historical_bars_2025_08",)]
