"""The warehouse hook: an autocommit psycopg 3 connection, and the schema brought up to date once."""

from __future__ import annotations

import pytest

from marketbars.warehouse import migrations
from marketbars.warehouse.hook import WarehouseHook

pytestmark = pytest.mark.integration


def test_connecting_migrates_once_per_database_and_a_dry_run_can_opt_out(
    airflow_connections: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    with WarehouseHook().connect(migrate=False) as conn:
        assert conn.autocommit
        assert conn.execute("SELECT to_regclass('market.historical_bars')").fetchone() == (None,)

    calls: list[str] = []
    migrate = migrations.migrate
    monkeypatch.setattr(migrations, "migrate", lambda conn: calls.append(conn.info.dbname) or migrate(conn))
    with WarehouseHook().connect() as conn:
        assert conn.execute("SELECT to_regclass('market.historical_bars')").fetchone() == (
            "market.historical_bars",
        )
    with WarehouseHook().connect() as conn:  # the same database again: nothing to check
        assert conn.execute("SELECT count(*) FROM market.schema_migrations").fetchone()[0] >= 6
    assert len(calls) == 1
