"""The warehouse SQL against a real PostgreSQL: schema, partitions, transactional replace, ledger."""

from __future__ import annotations

import shutil
from pathlib import Path

import psycopg
import pytest

from marketbars.warehouse.migrations import MIGRATIONS_DIR, MigrationError, migrate

pytestmark = pytest.mark.integration
MIGRATIONS = [
    "0001_market_schema.sql", "0002_seed_watchlist.sql", "0003_rest.sql", "0004_gaps.sql",
    "0005_rollups.sql", "0006_backtests.sql", "0007_watchlist_ticker_forms.sql",
    "0008_corporate_actions.sql", "0009_backtest_batches.sql", "0010_backtest_data_versions.sql",
    "0011_backtest_search.sql", "0012_backtest_trades_without_row_checks.sql", "0013_backtest_equity.sql",
    "0014_bar_counts.sql",
]  # fmt: skip


def test_migrations_create_the_contract_tables_once(conn: psycopg.Connection) -> None:
    assert migrate(conn) == MIGRATIONS
    assert migrate(conn) == []
    columns = conn.execute(
        """SELECT column_name, data_type FROM information_schema.columns
           WHERE table_schema = 'market' AND table_name = 'historical_bars' ORDER BY ordinal_position"""
    ).fetchall()
    assert columns == [
        ("symbol", "text"), ("timeframe", "text"), ("ts", "timestamp with time zone"),
        ("open", "double precision"), ("high", "double precision"), ("low", "double precision"),
        ("close", "double precision"), ("volume", "double precision"), ("vwap", "double precision"),
        ("trades", "bigint"), ("source", "text"),
    ]  # fmt: skip
    key = conn.execute(
        """SELECT array_agg(a.attname ORDER BY k.ord) FROM pg_index i
           CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord)
           JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
           WHERE i.indrelid = 'market.historical_bars'::regclass AND i.indisprimary"""
    ).fetchone()[0]
    assert key == ["symbol", "timeframe", "ts"]
    assert conn.execute("SELECT partstrat FROM pg_partitioned_table").fetchone() == ("r",)
    watchlist = conn.execute(
        "SELECT asset_class, count(*), bool_and(active) FROM market.watchlist GROUP BY 1 ORDER BY 1"
    )
    assert watchlist.fetchall() == [("indices", 5, True), ("stocks", 12, True)]


def test_an_edited_migration_is_refused(conn: psycopg.Connection, tmp_path: Path) -> None:
    migrations = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS_DIR, migrations)
    migrate(conn, migrations)
    seed = migrations / "0002_seed_watchlist.sql"
    seed.write_text(seed.read_text().replace("('AAPL', 'stocks'), ", ""))
    with pytest.raises(MigrationError, match=r"0002_seed_watchlist\.sql changed after it was applied"):
        migrate(conn, migrations)


def test_a_warehouse_holding_a_bad_watchlist_symbol_still_migrates_and_is_guarded_from_then_on(
    conn: psycopg.Connection, tmp_path: Path
) -> None:
    before = tmp_path / "before"
    before.mkdir()
    for path in sorted(MIGRATIONS_DIR.glob("000[1-6]_*.sql")):
        shutil.copy(path, before / path.name)
    migrate(conn, before)
    conn.execute("INSERT INTO market.watchlist (symbol, asset_class) VALUES ('AAPL' || chr(10), 'stocks')")
    # the row stays, to be fixed by hand
    assert migrate(conn) == MIGRATIONS[6:]  # from 0007 on
    with pytest.raises(psycopg.errors.CheckViolation):
        conn.execute("INSERT INTO market.watchlist (symbol, asset_class) VALUES ('MSFT ', 'stocks')")
