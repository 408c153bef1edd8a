"""The market warehouse (PostgreSQL) over the Airflow connection ``market_db``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow.providers.postgres.hooks.postgres import PostgresHook

if TYPE_CHECKING:
    from marketbars.warehouse.connection import Connection

# The databases whose schema this process has brought up to date (by connection string).
_CURRENT: set[str] = set()


class WarehouseHook(PostgresHook):
    """A ``postgres`` connection to the warehouse, handed out in autocommit mode, with its schema
    up to date.

    Every DAG works against an empty database: the first connection of a process to a database
    applies the pending migrations (``marketbars.warehouse.migrations``), so no task has to
    remember to. The storage functions open one explicit transaction per unit of work, which
    needs autocommit so that psycopg does not wrap them in an outer one.
    """

    conn_name_attr = "postgres_conn_id"
    default_conn_name = "market_db"
    hook_name = "Market warehouse"

    def __init__(self, postgres_conn_id: str = default_conn_name, **kwargs: Any) -> None:
        super().__init__(postgres_conn_id=postgres_conn_id, **kwargs)

    def connect(self, *, migrate: bool = True) -> Connection:
        """A new autocommit psycopg 3 connection; close it (``with hook.connect() as conn``).

        ``migrate=False`` leaves the schema as it is (a dry run changes nothing, not even that).
        """
        import psycopg

        from marketbars.warehouse import migrations

        conn = self.get_conn()
        if not isinstance(conn, psycopg.Connection):
            raise RuntimeError(
                "the warehouse needs psycopg 3 (COPY in binary from Arrow); psycopg2 was selected. "
                "Install psycopg[binary] and SQLAlchemy 2."
            )
        conn.autocommit = True
        if migrate and conn.info.dsn not in _CURRENT:
            migrations.migrate(conn)
            _CURRENT.add(conn.info.dsn)
        return conn
