"""The completeness count against a real PostgreSQL: which bars a session's cells count."""

from __future__ import annotations

import datetime as dt

import psycopg
import pytest

from marketbars.market.calendar import NEW_YORK, session_hours
from marketbars.warehouse import gap_ledger
from marketbars.warehouse.partitions import ensure_partitions

pytestmark = pytest.mark.integration


def _insert(conn: psycopg.Connection, symbol: str, timeframe: str, *stamps: dt.datetime) -> None:
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO market.historical_bars"
            " (symbol, timeframe, ts, open, high, low, close, volume, source)"
            " VALUES (%s, %s, %s, 1, 1, 1, 1, 100, 'flatfile')",
            [(symbol, timeframe, ts) for ts in stamps],
        )


def _ny(day: dt.date, hour: int, minute: int = 0) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(hour, minute), NEW_YORK)


def test_count_cells_splits_regular_and_extended_hours_at_the_session_edges(
    warehouse_conn: psycopg.Connection,
) -> None:
    normal, early_close, dst_start = dt.date(2024, 3, 8), dt.date(2024, 11, 29), dt.date(2024, 3, 11)
    ensure_partitions(warehouse_conn, normal, early_close)
    day_after = dt.date(2024, 3, 9)
    _insert(
        warehouse_conn, "AAPL", "1m",
        _ny(normal, 0), _ny(normal, 9, 29),  # pre-market: total only
        _ny(normal, 9, 30), _ny(normal, 15, 59),  # regular: both edges of [open, close)
        _ny(normal, 16), _ny(normal, 23, 59),  # after hours: total only
        _ny(day_after, 0),  # a Saturday's first minute belongs to no session counted here
        _ny(early_close, 12, 59), _ny(early_close, 13), _ny(early_close, 15, 59),  # closes 13:00
        _ny(dst_start, 9, 30), _ny(dst_start, 1),  # 23-hour day: 09:30 EDT is 13:30 UTC
    )  # fmt: skip
    _insert(warehouse_conn, "AAPL", "1d", _ny(normal, 0), _ny(early_close, 0))
    _insert(warehouse_conn, "MSFT", "1m", _ny(normal, 10))  # not asked for

    sessions = [session_hours(d) for d in (normal, dst_start, early_close)]
    counts = gap_ledger.count_cells(warehouse_conn, ["AAPL", "ZVZZT"], sessions)

    assert counts == {
        ("AAPL", "1m", normal): gap_ledger.Counts(regular=2, total=6),
        ("AAPL", "1m", early_close): gap_ledger.Counts(regular=1, total=3),
        ("AAPL", "1m", dst_start): gap_ledger.Counts(regular=1, total=2),
        ("AAPL", "1d", normal): gap_ledger.Counts(regular=1, total=1),
        ("AAPL", "1d", early_close): gap_ledger.Counts(regular=1, total=1),
    }
    assert gap_ledger.count_cells(warehouse_conn, [], sessions) == {}
