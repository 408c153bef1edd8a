"""The warehouse connection's type, and the one-row reads every storage module needs.

Storage functions take an autocommit psycopg 3 connection and open their own transactions, one per
unit of work; ``marketbars.warehouse.hook`` hands one out inside Airflow, the tests and benchmarks
connect directly, so both run exactly the same SQL.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import TupleRow

Connection = psycopg.Connection[TupleRow]
Cursor = psycopg.Cursor[TupleRow]
Query = str | sql.Composable
Params = Sequence[Any]


def one(executor: Connection | Cursor, query: Query, params: Params = ()) -> TupleRow:
    """The single row a query must return (an aggregate, a RETURNING of an existing row)."""
    row = executor.execute(query, params).fetchone()  # type: ignore[arg-type]  # trusted, composed SQL
    if row is None:
        raise LookupError(f"expected one row from {query!r}")
    return row
