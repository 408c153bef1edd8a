"""Derived bars (5m, 15m, 1h, 4h) from 1m bars: the convention, computed in bulk with numpy.

Convention: derived bars cover the **regular session** only (09:30 to 16:00 America/New_York, or
the early close) and are aligned to the session open, so ``1h`` bars start 09:30, 10:30, ... and
the last bar of a session is cut at the close (15:30-16:00, or 12:30-13:00 on an early close).
A bar's ``ts`` is its bucket's start, not its first minute's. For each bucket that has 1m bars:

* open = the first 1m open, close = the last 1m close, high / low = the extremes;
* volume and trades = the sums of the values present (NULL when no 1m bar has one: indices);
* vwap = sum(vwap x volume) / sum(volume) over the 1m bars that have a vwap (REST bars do, flat-file
  bars do not), NULL when none has one or their volume is 0.

Sums are accumulated in time order, left to right, so any implementation that adds the same
values in that order gets the same bits. ``1d`` is not derived: the vendor's daily bar counts
extended-hours trades and is canonical.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from marketbars.market.bars import BAR_SCHEMA
from marketbars.market.calendar import SessionHours
from marketbars.market.timeframes import DERIVED_MINUTES

_MINUTE_US = 60_000_000
SLICE_ROWS = 100_000  # 1m bars rolled up at a time (whole symbols): ~25 MB of numpy work arrays


def roll_up(minutes: pa.Table, hours: SessionHours) -> dict[str, pa.Table]:
    """Derived bars of one session, per timeframe, from its 1m bars (schema ``BAR_SCHEMA``).

    Bars outside the regular session are ignored; the input may hold any number of symbols in any
    order, but no two bars of a symbol at the same minute (the primary key guarantees it).
    """
    parts: dict[str, list[pa.Table]] = {tf: [BAR_SCHEMA.empty_table()] for tf in DERIVED_MINUTES}
    for timeframe, bars in iter_roll_up(minutes, hours):
        parts[timeframe].append(bars)
    return {tf: pa.concat_tables(tables) for tf, tables in parts.items()}


def iter_roll_up(minutes: pa.Table, hours: SessionHours) -> Iterator[tuple[str, pa.Table]]:
    """``roll_up`` as (timeframe, bars) pieces, a few whole symbols at a time, so a writer can send
    them on as they come: the working memory stays bounded however many bars the session has."""
    minutes = minutes.select(BAR_SCHEMA.names).cast(BAR_SCHEMA)
    ts = minutes["ts"].cast(pa.int64()).to_numpy(zero_copy_only=False)
    open_us, close_us = _epoch_us(hours.open), _epoch_us(hours.close)
    in_session = (ts >= open_us) & (ts < close_us)
    if not in_session.all():
        minutes = minutes.filter(pa.array(in_session))
        ts = ts[in_session]
    if minutes.num_rows == 0:
        return

    encoded = pc.dictionary_encode(minutes["symbol"]).combine_chunks()
    codes = encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    if not _grouped_in_time_order(codes, ts):
        order = np.lexsort((ts, codes))
        minutes, codes, ts = minutes.take(pa.array(order)), codes[order], ts[order]
    minute = (ts - open_us) // _MINUTE_US
    del ts
    for start, stop in _symbol_slices(codes, SLICE_ROWS):
        columns = _Columns(minutes.slice(start, stop - start))
        for tf, width in DERIVED_MINUTES.items():
            bucket = minute[start:stop] // width
            yield tf, _aggregate(columns, codes[start:stop], bucket, encoded.dictionary, open_us, width)


def _symbol_slices(codes: np.ndarray, size: int) -> list[tuple[int, int]]:
    """[start, stop) row ranges of about ``size`` rows that never split a symbol's bars."""
    boundaries = np.flatnonzero(np.diff(codes)) + 1  # where a new symbol starts
    slices, start = [], 0
    while start < len(codes):
        stop = start + size
        if stop >= len(codes):
            stop = len(codes)
        else:
            at = np.searchsorted(boundaries, stop)
            stop = int(boundaries[at]) if at < len(boundaries) else len(codes)
        slices.append((start, stop))
        start = stop
    return slices


def _epoch_us(moment: object) -> int:
    return int(pa.scalar(moment, pa.timestamp("us", tz="UTC")).cast(pa.int64()).as_py())


def _grouped_in_time_order(codes: np.ndarray, ts: np.ndarray) -> bool:
    """True when each symbol's bars are contiguous and ascending in time (a flat file's order).

    Dictionary codes number symbols by first appearance, so contiguous symbols have
    non-decreasing codes."""
    step = np.diff(codes)
    return bool(np.all((step > 0) | ((step == 0) & (np.diff(ts) > 0))))


class _Columns:
    """The numeric columns as numpy arrays, nulls as masks."""

    def __init__(self, minutes: pa.Table) -> None:
        def values(name: str, fill: float | int) -> tuple[np.ndarray, np.ndarray]:
            column = minutes[name].combine_chunks()
            present = column.is_valid().to_numpy(zero_copy_only=False)
            return column.fill_null(fill).to_numpy(zero_copy_only=False), present

        self.open = values("open", 0.0)[0]
        self.high = values("high", 0.0)[0]
        self.low = values("low", 0.0)[0]
        self.close = values("close", 0.0)[0]
        self.volume, self.has_volume = values("volume", 0.0)
        self.vwap, self.has_vwap = values("vwap", 0.0)
        self.trades, self.has_trades = values("trades", 0)
        weighted = self.has_vwap & self.has_volume
        self.vwap_weight = np.where(weighted, self.volume, 0.0)
        self.vwap_notional = np.where(weighted, self.vwap * self.volume, 0.0)
        self.has_weight = weighted


def _aggregate(
    columns: _Columns, codes: np.ndarray, bucket: np.ndarray, symbols: pa.Array, open_us: int, width: int
) -> pa.Table:
    n = len(codes)
    starts_mask = np.ones(n, dtype=bool)
    starts_mask[1:] = (codes[1:] != codes[:-1]) | (bucket[1:] != bucket[:-1])
    starts = np.flatnonzero(starts_mask)
    ends = np.append(starts[1:], n) - 1
    group = np.cumsum(starts_mask) - 1  # each 1m bar's output bar
    rank = np.arange(n) - starts[group]  # its position within that bar, in time order

    volume, weight, notional = _sequential_sums(
        (columns.volume, columns.vwap_weight, columns.vwap_notional), group, rank, len(starts)
    )
    any_volume = np.add.reduceat(columns.has_volume.astype(np.int64), starts) > 0
    any_trades = np.add.reduceat(columns.has_trades.astype(np.int64), starts) > 0
    any_weight = (np.add.reduceat(columns.has_weight.astype(np.int64), starts) > 0) & (weight != 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        vwap = notional / weight
    return pa.table(
        {
            "symbol": symbols.take(pa.array(codes[starts])),
            "ts": pa.array(open_us + bucket[starts] * width * _MINUTE_US).cast(BAR_SCHEMA.field("ts").type),
            "open": columns.open[starts],
            "high": np.maximum.reduceat(columns.high, starts),
            "low": np.minimum.reduceat(columns.low, starts),
            "close": columns.close[ends],
            "volume": pa.array(volume, mask=~any_volume),
            "vwap": pa.array(vwap, mask=~any_weight),
            "trades": pa.array(np.add.reduceat(columns.trades, starts), mask=~any_trades),
        },
        schema=BAR_SCHEMA,
    )


def _sequential_sums(
    columns: tuple[np.ndarray, ...], group: np.ndarray, rank: np.ndarray, groups: int
) -> list[np.ndarray]:
    """Per-group sums of each column, added strictly left to right (numpy's own reductions add
    pairwise, in an order that depends on the group's length).

    Vectorised across groups: the k-th value of every group is added in step k, so a timeframe
    of width w takes w numpy steps, whatever the number of bars."""
    totals = [np.zeros(groups, dtype=np.float64) for _ in columns]
    by_rank = np.argsort(rank, kind="stable")
    bounds = np.searchsorted(rank[by_rank], np.arange(rank.max() + 2))
    for k in range(len(bounds) - 1):
        step = by_rank[bounds[k] : bounds[k + 1]]  # one bar of each group that has a k-th
        targets = group[step]
        for total, values in zip(totals, columns, strict=True):
            total[targets] += values[step]
    return totals
