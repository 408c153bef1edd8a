"""Row validation for flat-file bars: the one place that decides what gets quarantined and why.

Every rule is vectorised over a whole file's columns; a row gets the reason of the first rule it
breaks, in the order of ``REASONS``. Rows are never dropped silently: each bad row gets a reason.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

NANOS_PER_MINUTE = 60_000_000_000

# (reason, what it means), in priority order: a row that breaks several rules gets the first.
REASONS: tuple[tuple[str, str], ...] = (
    ("malformed_row", "the line does not have the header's number of fields"),
    ("non_numeric", "a numeric field holds text, NaN, infinity or an integer too large to store"),
    ("empty_field", "a required field is empty"),
    (
        "invalid_ticker",
        "the ticker is not of the dataset's form (I: indices, O: options) or has stray characters",
    ),
    ("timestamp_outside_session", "window_start is not within the file's session date (America/New_York)"),
    ("misaligned_timestamp", "window_start is not on a bar boundary of the file's timeframe"),
    ("non_positive_price", "open, high, low or close is zero or negative"),
    ("high_below_low", "high is below low"),
    ("price_outside_range", "open or close is outside [low, high]"),
    ("negative_volume", "volume or transactions is negative"),
    ("duplicate_row", "an exact copy of an earlier row for the same ticker and window_start"),
    ("conflicting_duplicate", "the same ticker and window_start appear with different values"),
)
CODES: dict[str, int] = {name: code for code, (name, _) in enumerate(REASONS, start=1)}  # 0 = valid
REASON_NAMES: dict[int, str] = {code: name for name, code in CODES.items()}
# Loose on purpose: which dataset a ticker belongs to, and characters no vendor ticker has. The
# exact ticker forms are checked on user input (marketbars.flatfiles), never used to reject data.
TICKER_FORMS = {
    "stocks": r"^[A-Za-z0-9][A-Za-z0-9.\-_/^]{0,31}$",
    "options": r"^O:[A-Za-z0-9.\-_]{1,40}$",
    "indices": r"^I:[A-Za-z0-9.\-_^]{1,40}$",
}


@dataclass(frozen=True)
class BarColumns:
    """The parsed columns of one file, as numpy arrays (nulls already masked out)."""

    ticker: pa.ChunkedArray
    window_start: np.ndarray  # int64 ns
    prices: dict[str, np.ndarray]  # open/high/low/close as float64, NaN where null
    counts: dict[str, np.ndarray]  # volume/transactions (absent for indices), NaN where null
    null_any: np.ndarray  # bool: a required field is empty
    non_numeric_any: np.ndarray  # bool: a numeric field held text (tolerant parse) or NaN/inf


def _float(column: pa.ChunkedArray) -> np.ndarray:
    # safe=False: an int64 beyond 2**53 only loses precision, which sign and range checks don't need.
    return pc.cast(column, pa.float64(), safe=False).to_numpy()


def bar_columns(table: pa.Table, non_numeric: np.ndarray | None = None) -> BarColumns:
    """Extract the validation view of a parsed table (columns named as in the vendor header)."""
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


def reason_codes(
    columns: BarColumns, *, dataset: str, timeframe: str, window_start_ns: int, window_end_ns: int
) -> np.ndarray:
    """One int8 per row: 0 for a valid row, else the code of the first rule it breaks."""
    ws = columns.window_start
    o, h, lo, c = (columns.prices[k] for k in ("open", "high", "low", "close"))
    # Daily bars are stamped 00:00 New York of the session; minute bars start on a whole minute.
    misaligned = ws != window_start_ns if timeframe == "1d" else ws % NANOS_PER_MINUTE != 0
    with np.errstate(invalid="ignore"):
        rules: list[tuple[str, np.ndarray]] = [
            ("non_numeric", columns.non_numeric_any),
            ("empty_field", columns.null_any),
            (
                "invalid_ticker",
                ~pc.match_substring_regex(columns.ticker, TICKER_FORMS[dataset])
                .fill_null(True)
                .to_numpy(zero_copy_only=False),
            ),
            ("timestamp_outside_session", (ws < window_start_ns) | (ws >= window_end_ns)),
            ("misaligned_timestamp", misaligned),
            ("non_positive_price", (o <= 0) | (h <= 0) | (lo <= 0) | (c <= 0)),
            ("high_below_low", h < lo),
            ("price_outside_range", (o < lo) | (o > h) | (c < lo) | (c > h)),
            (
                "negative_volume",
                np.logical_or.reduce([v < 0 for v in columns.counts.values()])
                if columns.counts
                else np.zeros(len(ws), dtype=bool),
            ),
        ]
    codes = np.zeros(len(ws), dtype=np.int8)
    assert [name for name, _ in rules] == [name for name, _ in REASONS[1:10]], "rules out of REASONS order"
    for name, broken in reversed(rules):  # reversed, so the earliest rule's code is written last
        codes[broken] = CODES[name]
    _mark_duplicates(columns, codes)
    return codes


def _mark_duplicates(columns: BarColumns, codes: np.ndarray) -> None:
    """Among otherwise valid rows, mark repeated (ticker, window_start) keys in place.

    Exact copies keep the first row and quarantine the rest; copies that disagree are all
    quarantined, because nothing in the file says which one is right.
    """
    candidates = np.flatnonzero(codes == 0)
    if len(candidates) < 2:
        return
    tickers = columns.ticker.take(pa.array(candidates))
    ws = columns.window_start[candidates]
    if _strictly_increasing(tickers, ws):  # the vendor's sort order: nothing can repeat
        return
    order = pc.sort_indices(
        pa.table({"t": tickers, "w": ws}), sort_keys=[("t", "ascending"), ("w", "ascending")]
    ).to_numpy()
    sorted_tickers = tickers.take(pa.array(order))
    sorted_ws = ws[order]
    same_key = np.zeros(len(order), dtype=bool)
    same_key[1:] = _equal_to_previous(sorted_tickers) & (sorted_ws[1:] == sorted_ws[:-1])
    if not same_key.any():
        return
    group = np.cumsum(~same_key) - 1
    group_first = np.flatnonzero(~same_key)[group]
    differs = np.zeros(len(order), dtype=bool)
    for values in (*columns.prices.values(), *columns.counts.values()):
        v = values[candidates][order]
        differs |= v != v[group_first]
    group_size = np.bincount(group)
    group_conflicts = np.bincount(group, weights=differs) > 0
    in_repeated_group = group_size[group] > 1
    conflicting = in_repeated_group & group_conflicts[group]
    repeated_copy = same_key & ~conflicting
    rows = candidates[order]
    codes[rows[conflicting]] = CODES["conflicting_duplicate"]
    codes[rows[repeated_copy]] = CODES["duplicate_row"]


def _equal_to_previous(values: pa.Array | pa.ChunkedArray) -> np.ndarray:
    values = values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
    return pc.equal(values[1:], values[:-1]).to_numpy(zero_copy_only=False)


def _strictly_increasing(tickers: pa.Array | pa.ChunkedArray, ws: np.ndarray) -> bool:
    tickers = tickers.combine_chunks() if isinstance(tickers, pa.ChunkedArray) else tickers
    greater = pc.greater(tickers[1:], tickers[:-1]).to_numpy(zero_copy_only=False)
    equal = pc.equal(tickers[1:], tickers[:-1]).to_numpy(zero_copy_only=False)
    return bool(np.all(greater | (equal & (ws[1:] > ws[:-1]))))


def _keyed_rows(codes: np.ndarray) -> np.ndarray:
    """Rows that passed the row rules (duplicates included): the ones whose keys must be ordered."""
    return np.flatnonzero(
        (codes == 0) | (codes == CODES["duplicate_row"]) | (codes == CODES["conflicting_duplicate"])
    )


def in_vendor_order(columns: BarColumns, codes: np.ndarray) -> bool:
    """True when the keyed rows are in non-decreasing (ticker, window_start) order, as the vendor sorts."""
    rows = _keyed_rows(codes)
    if len(rows) < 2:
        return True
    tickers = columns.ticker.take(pa.array(rows)).combine_chunks()
    ws = columns.window_start[rows]
    greater = pc.greater(tickers[1:], tickers[:-1]).to_numpy(zero_copy_only=False)
    equal = pc.equal(tickers[1:], tickers[:-1]).to_numpy(zero_copy_only=False)
    return bool(np.all(greater | (equal & (ws[1:] >= ws[:-1]))))


def key_range(columns: BarColumns, codes: np.ndarray) -> tuple[tuple[str, int], tuple[str, int]] | None:
    """(first, last) (ticker, window_start) of the keyed rows in file order; None when there are none."""
    rows = _keyed_rows(codes)
    if not len(rows):
        return None
    first, last = int(rows[0]), int(rows[-1])
    ticker = columns.ticker
    return (ticker[first].as_py(), int(columns.window_start[first])), (
        ticker[last].as_py(),
        int(columns.window_start[last]),
    )
