"""Arrow in and out of PostgreSQL in bulk: binary COPY in (encoded by pgpq), CSV COPY out (parsed
by pyarrow). Never a Python tuple per row."""

from __future__ import annotations

import tempfile
from collections.abc import Iterable, Mapping

import pyarrow as pa
import pyarrow.csv as pacsv
from pgpq import ArrowToPostgresBinaryEncoder
from psycopg import sql

from marketbars.warehouse.connection import Cursor, Params

COPY_CHUNK_ROWS = 65_536  # rows per record batch sent


def copy_in(
    cur: Cursor, target: sql.Composable, schema: pa.Schema, batches: Iterable[pa.RecordBatch]
) -> None:
    """COPY Arrow batches into target in PostgreSQL's binary format, encoded in bulk by pgpq.

    Batches are produced while earlier ones are sent: the server ingests one while the next is built.
    """
    statement = sql.SQL("COPY {target} ({columns}) FROM STDIN (FORMAT BINARY)").format(
        target=target, columns=sql.SQL(", ").join(map(sql.Identifier, schema.names))
    )
    encoder = ArrowToPostgresBinaryEncoder(schema)
    with cur.copy(statement) as copy:
        copy.write(encoder.write_header())
        for batch in batches:
            copy.write(encoder.write_batch(batch))
        copy.write(encoder.finish())


def copy_in_table(cur: Cursor, target: sql.Composable, table: pa.Table) -> None:
    """``copy_in`` of a whole table, in batches of ``COPY_CHUNK_ROWS``."""
    copy_in(cur, target, table.schema, table.to_batches(max_chunksize=COPY_CHUNK_ROWS))


def copy_out(
    cur: Cursor, query: sql.Composable, params: Params, column_types: Mapping[str, pa.DataType]
) -> pa.Table | None:
    """The rows of ``query`` as Arrow (None when there are none), streamed out as CSV (PostgreSQL
    prints floats exactly since version 12) and parsed by pyarrow: far cheaper than a tuple per row.
    The CSV is spooled to a temporary file rather than held in memory next to its parsed columns."""
    statement = sql.SQL("COPY ({}) TO STDOUT (FORMAT CSV)").format(query)
    with tempfile.TemporaryFile(prefix="marketbars-copy-") as spool:
        with cur.copy(statement, params) as copy:
            for block in copy:
                spool.write(block)
        if spool.tell() == 0:
            return None
        spool.seek(0)
        return pacsv.read_csv(
            spool,
            read_options=pacsv.ReadOptions(column_names=list(column_types), use_threads=False),
            convert_options=pacsv.ConvertOptions(
                column_types=dict(column_types), null_values=[""], strings_can_be_null=False
            ),
        )
