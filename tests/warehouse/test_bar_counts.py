"""Bars per cell against a real PostgreSQL: the count's session edges, the stored counts, and the
triggers that forget a count when bars are deleted or moved by hand."""

from __future__ import annotations

import datetime as dt
import threading
import time

import psycopg
import pyarrow as pa
import pytest

from marketbars.market.calendar import NEW_YORK, session_hours
from marketbars.warehouse import bar_counts
from marketbars.warehouse.bar_counts import Counts
from marketbars.warehouse.bars import lock_session
from marketbars.warehouse.partitions import ensure_partitions
from sandbox.services import Postgres
from tests.helpers import counted_bars, stored_counts

pytestmark = pytest.mark.integration
NORMAL, EARLY_CLOSE, DST_START = dt.date(2024, 3, 8), dt.date(2024, 11, 29), dt.date(2024, 3, 11)


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


# Bars at the session edges: pre-market, both edges of [open, close), after hours, an early close
# and a 23-hour day.
EDGES = {
    NORMAL: [_ny(NORMAL, 0), _ny(NORMAL, 9, 29), _ny(NORMAL, 9, 30), _ny(NORMAL, 15, 59), _ny(NORMAL, 16),
             _ny(NORMAL, 23, 59)],
    EARLY_CLOSE: [_ny(EARLY_CLOSE, 12, 59), _ny(EARLY_CLOSE, 13), _ny(EARLY_CLOSE, 15, 59)],  # closes 13:00
    DST_START: [_ny(DST_START, 9, 30), _ny(DST_START, 1)],  # 09:30 EDT is 13:30 UTC
}  # fmt: skip
EDGE_COUNTS = {NORMAL: Counts(2, 6), EARLY_CLOSE: Counts(1, 3), DST_START: Counts(1, 2)}


@pytest.fixture
def edges(warehouse_conn: psycopg.Connection) -> psycopg.Connection:
    ensure_partitions(warehouse_conn, NORMAL, EARLY_CLOSE)
    _insert(warehouse_conn, "AAPL", "1m", *(ts for stamps in EDGES.values() for ts in stamps))
    _insert(warehouse_conn, "AAPL", "1m", _ny(dt.date(2024, 3, 9), 0))  # a Saturday: no session counts it
    _insert(warehouse_conn, "AAPL", "1d", _ny(NORMAL, 0), _ny(EARLY_CLOSE, 0))
    _insert(warehouse_conn, "MSFT", "1m", _ny(NORMAL, 10))  # not asked for
    return warehouse_conn


def _chosen(*symbols: str) -> list[bar_counts.Cell]:
    return bar_counts.cells(symbols, [session_hours(d) for d in (NORMAL, DST_START, EARLY_CLOSE)])


def test_recount_splits_regular_and_extended_hours_at_the_session_edges(edges: psycopg.Connection) -> None:
    assert bar_counts.recount(edges, _chosen("AAPL", "ZVZZT")) == {
        **{("AAPL", "1m", day): n for day, n in EDGE_COUNTS.items()},
        ("AAPL", "1d", NORMAL): Counts(regular=1, total=1),
        ("AAPL", "1d", EARLY_CLOSE): Counts(regular=1, total=1),
    }
    assert bar_counts.recount(edges, []) == {}


def test_count_rows_counts_arrow_bars_as_the_recount_does() -> None:
    for day, stamps in EDGES.items():
        bars = pa.table({"symbol": ["AAPL"] * len(stamps) + ["MSFT"], "ts": [*stamps, _ny(day, 10)]})
        hours = session_hours(day)
        chunks = [
            bar_counts.count_rows(bars.slice(0, 2), "1m", hours),
            bar_counts.count_rows(bars.slice(2), "1m", hours),
        ]
        counted = bar_counts.sum_counts(chunks)
        assert counted == {"AAPL": EDGE_COUNTS[day], "MSFT": Counts(1, 1)}
    daily = pa.table({"symbol": ["AAPL", "MSFT"], "ts": [_ny(NORMAL, 0), _ny(NORMAL, 0)]})
    assert bar_counts.sum_counts([bar_counts.count_rows(daily, "1d", session_hours(NORMAL))]) == {
        "AAPL": Counts(1, 1),
        "MSFT": Counts(1, 1),
    }
    assert bar_counts.sum_counts([]) == {}


def test_refresh_stores_every_cell_it_counted_and_kept_reads_them_back(edges: psycopg.Connection) -> None:
    chosen = _chosen("AAPL", "ZVZZT")
    counts = bar_counts.refresh(edges, {"AAPL": "stocks", "ZVZZT": "stocks"}, chosen)
    assert counts == bar_counts.recount(edges, chosen)
    stored = edges.execute(
        "SELECT count(*), count(*) FILTER (WHERE total = 0) FROM market.bar_counts"
    ).fetchone()
    assert stored == (len(chosen), len(chosen) - len(counts))  # ZVZZT's and AAPL's empty 1d cell: zeros
    assert stored_counts(edges) == {k: v for k, v in counted_bars(edges).items() if k[0] == "AAPL"}

    # kept() takes what is stored without counting it again: a stored count it could not have counted
    edges.execute("UPDATE market.bar_counts SET total = 99 WHERE symbol = 'AAPL' AND session_date = %s"
                  " AND timeframe = '1m'", (NORMAL,))  # fmt: skip
    assert bar_counts.kept(edges, chosen)[("AAPL", "1m", NORMAL)] == Counts(2, 99)
    # ... and counts the cells nobody stored (MSFT), leaving stored zeros out
    with_msft = bar_counts.kept(edges, _chosen("AAPL", "MSFT", "ZVZZT"))
    assert with_msft[("MSFT", "1m", NORMAL)] == Counts(1, 1)
    assert not any(symbol == "ZVZZT" for symbol, _, _ in with_msft)
    assert edges.execute("SELECT count(*) FROM market.bar_counts WHERE symbol = 'MSFT'").fetchone() == (0,)


def test_deleting_or_moving_bars_by_hand_forgets_exactly_their_cells(edges: psycopg.Connection) -> None:
    chosen = _chosen("AAPL")
    bar_counts.refresh(edges, {"AAPL": "stocks"}, chosen)
    before = set(stored_counts(edges))

    edges.execute("DELETE FROM market.historical_bars WHERE symbol = 'AAPL' AND timeframe = '1m' AND ts = %s",
                  (_ny(NORMAL, 9, 30),))  # fmt: skip
    assert set(stored_counts(edges)) == before - {("AAPL", "1m", NORMAL)}
    assert bar_counts.kept(edges, chosen)[("AAPL", "1m", NORMAL)] == Counts(1, 5)  # counted again

    edges.execute("UPDATE market.historical_bars SET ts = %s WHERE symbol = 'AAPL' AND timeframe = '1m'"
                  " AND ts = %s", (_ny(EARLY_CLOSE, 10), _ny(DST_START, 1)))  # fmt: skip
    assert set(stored_counts(edges)) == before - {("AAPL", "1m", d) for d in (NORMAL, DST_START, EARLY_CLOSE)}
    kept = bar_counts.kept(edges, chosen)
    assert (kept[("AAPL", "1m", DST_START)], kept[("AAPL", "1m", EARLY_CLOSE)]) == (
        Counts(1, 1),
        Counts(2, 4),
    )

    edges.execute("TRUNCATE market.historical_bars")
    assert edges.execute("SELECT count(*) FROM market.bar_counts").fetchone() == (0,)
    assert bar_counts.kept(edges, chosen) == {}


def test_refresh_waits_for_a_writer_of_the_session_and_counts_what_it_committed(
    edges: psycopg.Connection, db: Postgres
) -> None:
    chosen = _chosen("AAPL")
    with db.connect() as writer, writer.transaction(), writer.cursor() as cur:
        lock_session(cur, "stocks", "1m", EARLY_CLOSE)
        cur.execute(
            "DELETE FROM market.historical_bars WHERE symbol = 'AAPL' AND ts = %s", (_ny(EARLY_CLOSE, 13),)
        )
        refreshed: dict[str, object] = {}
        counting = threading.Thread(
            target=lambda: refreshed.update(counts=bar_counts.refresh(edges, {"AAPL": "stocks"}, chosen))
        )
        counting.start()
        time.sleep(0.5)
        assert counting.is_alive()  # waiting for the writer's lock
    counting.join(10)
    assert refreshed["counts"][("AAPL", "1m", EARLY_CLOSE)] == Counts(1, 2)  # type: ignore[index]
    assert stored_counts(edges)[("AAPL", "1m", EARLY_CLOSE)] == (1, 2)


def test_forget_before_drops_the_counts_of_earlier_sessions(edges: psycopg.Connection) -> None:
    bar_counts.refresh(edges, {"AAPL": "stocks"}, _chosen("AAPL"))
    assert bar_counts.forget_before(edges, DST_START) == 2  # NORMAL's 1m and 1d
    assert {day for _, _, day in stored_counts(edges)} == {DST_START, EARLY_CLOSE}
