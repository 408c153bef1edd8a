"""Round trips, as columns: what the simulator makes, statistics read, and storage and reports write.

A universe run makes millions of trades. As numpy columns they are computed, sorted, summed and
written in bulk, with no Python object per trade; ``Trade`` is one of them as a row, for tests and
hand-made examples.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import pyarrow as pa

EXIT_REASONS = ("stop", "target", "max_hold", "end_of_session", "end_of_data")


class Trade(NamedTuple):
    """One round trip, as a row."""

    symbol: str
    side: int
    signal_ts: int  # epoch microseconds of the bar starts
    entry_ts: int
    exit_ts: int
    entry_price: float  # fills, slippage included
    exit_price: float
    shares: int
    stop: float
    target: float
    risk_per_share: float
    gross_pnl: float
    commission: float
    net_pnl: float
    r_multiple: float
    return_pct: float
    bars_held: int
    exit_reason: str


KINDS: dict[str, type] = {  # the columns' dtypes; float64 unless named here
    "symbol": np.str_,
    **dict.fromkeys(("side", "signal_ts", "entry_ts", "exit_ts", "shares", "bars_held"), np.int64),
    "exit_reason": np.int8,
}


@dataclass(frozen=True, eq=False)
class Trades:
    """Round trips as columns, one numpy array per ``Trade`` field, all the same length
    (``exit_reason`` as an index into ``EXIT_REASONS``)."""

    symbol: np.ndarray  # str
    side: np.ndarray
    signal_ts: np.ndarray
    entry_ts: np.ndarray
    exit_ts: np.ndarray
    entry_price: np.ndarray
    exit_price: np.ndarray
    shares: np.ndarray
    stop: np.ndarray
    target: np.ndarray
    risk_per_share: np.ndarray
    gross_pnl: np.ndarray
    commission: np.ndarray
    net_pnl: np.ndarray
    r_multiple: np.ndarray
    return_pct: np.ndarray
    bars_held: np.ndarray
    exit_reason: np.ndarray  # int8 index into EXIT_REASONS

    @classmethod
    def empty(cls) -> Trades:
        return cls(**{f: np.empty(0, KINDS.get(f, np.float64)) for f in Trade._fields})

    @classmethod
    def of(cls, rows: Sequence[Trade]) -> Trades:
        """Columns from rows (tests and hand-made examples)."""
        if not rows:
            return cls.empty()
        values: dict[str, Sequence[Any]] = dict(zip(Trade._fields, zip(*rows, strict=True), strict=True))
        values["exit_reason"] = [EXIT_REASONS.index(r) for r in values["exit_reason"]]
        return cls(**{f: np.asarray(v, KINDS.get(f, np.float64)) for f, v in values.items()})

    @classmethod
    def concat(cls, parts: Sequence[Trades]) -> Trades:
        if not parts:
            return cls.empty()
        if len(parts) == 1:
            return parts[0]
        return cls(**{f: np.concatenate([getattr(p, f) for p in parts]) for f in Trade._fields})

    def __len__(self) -> int:
        return len(self.entry_ts)

    def take(self, index: np.ndarray) -> Trades:
        return Trades(**{f: getattr(self, f)[index] for f in Trade._fields})

    def in_trade_order(self) -> Trades:
        """Sorted by (exit time, symbol, entry time): the order statistics read trades in, so the
        drawdown follows realised equity and sums add in one reproducible order, wherever the trades
        were computed (``warehouse.backtests`` reads stored trades back in this order too)."""
        return self.take(np.lexsort((self.entry_ts, self.symbol, self.exit_ts)))

    def rows(self) -> list[Trade]:
        columns = [getattr(self, f).tolist() for f in Trade._fields[:-1]]
        reasons = [EXIT_REASONS[code] for code in self.exit_reason.tolist()]
        return [Trade(*values) for values in zip(*columns, reasons, strict=True)]

    def __getitem__(self, i: int) -> Trade:
        return self.take(np.array([i])).rows()[0]

    def __iter__(self) -> Iterator[Trade]:
        return iter(self.rows())

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Trades) and self.rows() == other.rows()

    __hash__ = None  # type: ignore[assignment]


_TIMESTAMP = pa.timestamp("us", tz="UTC")
_ARROW_TYPES: dict[str, pa.DataType] = {"side": pa.int16(), "shares": pa.int64(), "bars_held": pa.int32()}


def to_arrow(trades: Trades) -> dict[str, pa.Array]:
    """The columns as Arrow, typed as ``market.backtest_trades`` stores them (timestamps in UTC, the
    exit reason as its name): what the binary COPY and the report's Parquet file both write."""
    out = {}
    for name in Trade._fields:
        column = getattr(trades, name)
        if name == "symbol":  # from a list: pyarrow converts numpy's fixed-width strings slowly
            out[name] = pa.array(column.tolist(), pa.string())
        elif name == "exit_reason":
            out[name] = pa.DictionaryArray.from_arrays(column, pa.array(EXIT_REASONS)).cast(pa.string())
        elif name.endswith("_ts"):
            out[name] = pa.array(column, _TIMESTAMP)  # epoch microseconds as they are
        else:
            out[name] = pa.array(column).cast(_ARROW_TYPES.get(name, pa.float64()))
    return out


def repeated(value: str, count: int) -> pa.Array:
    """One string ``count`` times (a run id or a detector beside its trades), made in C."""
    return pa.repeat(pa.scalar(value, pa.string()), count)
