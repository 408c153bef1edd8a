"""The vendor's bar columns (``ticker``, ``window_start`` in ns, ``transactions``) to the project's.

Flat files and REST answers both arrive as tables with the flat files' column names; these two
functions are where they become the validation view and ``BAR_SCHEMA`` bars.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from marketbars.market.bars import BAR_SCHEMA
from marketbars.market.validation import BarColumns, BoolArray, FloatArray


def _float(column: pa.ChunkedArray) -> FloatArray:
    # safe=False: an int64 beyond 2**53 only loses precision, which sign and range checks don't need.
    values: FloatArray = pc.cast(column, pa.float64(), safe=False).to_numpy()
    return values


def bar_columns(table: pa.Table, non_numeric: BoolArray | None = None) -> BarColumns:
    """The validation view of a table with the vendor's column names (and an ``ordinal``)."""
    n = table.num_rows
    null_any = np.zeros(n, dtype=bool)
    for name in table.column_names:
        if name != "ordinal":
            null_any |= table[name].is_null().to_numpy(zero_copy_only=False)
    prices = {name: _float(table[name]) for name in ("open", "high", "low", "close")}
    counts = {name: _float(table[name]) for name in ("volume", "transactions") if name in table.column_names}
    non_finite = np.zeros(n, dtype=bool)
    for values in (*prices.values(), *counts.values()):
        non_finite |= np.isinf(values)
        non_finite |= np.isnan(values)
    non_finite &= ~null_any  # NaN from a null is "empty", NaN from the text "nan" is "non_numeric"
    if non_numeric is not None:
        non_finite |= non_numeric
    window_start = pc.fill_null(table["window_start"], 0).to_numpy()
    return BarColumns(table["ticker"], window_start, prices, counts, null_any, non_finite)


def to_bars(valid: pa.Table, dataset: str, vwap: pa.Array | None = None) -> pa.Table:
    """Valid rows as ``BAR_SCHEMA`` bars. Indices carry no volume, vwap or trades; flat files no vwap."""
    n = valid.num_rows
    no_floats = pa.nulls(n, pa.float64())
    traded = dataset != "indices"
    ts = pc.cast(pc.divide(valid["window_start"], 1000), pa.int64()).cast(pa.timestamp("us", tz="UTC"))
    return pa.table(
        {
            "symbol": valid["ticker"],
            "ts": ts,
            "open": valid["open"],
            "high": valid["high"],
            "low": valid["low"],
            "close": valid["close"],
            "volume": valid["volume"] if traded else no_floats,
            "vwap": vwap if traded and vwap is not None else no_floats,
            "trades": valid["transactions"] if traded else pa.nulls(n, pa.int64()),
        },
        schema=BAR_SCHEMA,
    )
