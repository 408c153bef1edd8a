"""The market warehouse (PostgreSQL) over the Airflow connection ``market_db``."""

from __future__ import annotations

from typing import Any

from airflow.providers.postgres.hooks.postgres import PostgresHook


class WarehouseHook(PostgresHook):
    """A ``postgres`` connection to the warehouse, handed out in autocommit mode.

    The SQL lives in ``marketbars.warehouse``; its functions open one explicit transaction per
    unit of work, which needs autocommit so that psycopg does not wrap them in an outer one.
    """

    conn_name_attr = "postgres_conn_id"
    default_conn_name = "market_db"
    hook_name = "Market warehouse"

    def __init__(self, postgres_conn_id: str = default_conn_name, **kwargs: Any) -> None:
        super().__init__(postgres_conn_id=postgres_conn_id, **kwargs)

    def connect(self) -> Any:
        """A new autocommit psycopg 3 connection; close it (``with hook.connect() as conn``)."""
        conn = self.get_conn()
        if not hasattr(conn, "pgconn"):
            raise RuntimeError(
                "the warehouse needs psycopg 3 (COPY in binary from Arrow); psycopg2 was selected. "
                "Install psycopg[binary] and SQLAlchemy 2."
            )
        conn.autocommit = True
        return conn
