"""Row validation for bars from any source: the one place that decides what gets quarantined and why.

Every rule is vectorised over a whole batch's columns; a row gets the reason of the first rule it
breaks, in the order of ``REASONS``. Rows are never dropped silently: each bad row gets a reason.
A source adapter extracts ``BarColumns`` from its own records (``marketbars.massive.columns``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

NANOS_PER_MINUTE = 60_000_000_000
BoolArray = npt.NDArray[np.bool_]
FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
Codes = npt.NDArray[np.int8]

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
# Loose on purpose: which asset class a ticker belongs to, and characters no vendor ticker has. The
# exact ticker forms are checked on user input (marketbars.market.symbols), never used to reject data.
TICKER_FORMS = {
    "stocks": r"^[A-Za-z0-9][A-Za-z0-9.\-_/^]{0,31}$",
    "options": r"^O:[A-Za-z0-9.\-_]{1,40}$",
    "indices": r"^I:[A-Za-z0-9.\-_^]{1,40}$",
}


@dataclass(frozen=True)
class BarColumns:
    """A batch's columns as the rules read them, as numpy arrays (nulls already masked out)."""

    symbol: pa.ChunkedArray
    start_ns: IntArray  # the bar's start, epoch nanoseconds
    prices: dict[str, FloatArray]  # open/high/low/close, NaN where null
    counts: dict[str, FloatArray]  # volume/trades (absent for indices), NaN where null
    null_any: BoolArray  # a required field is empty
    non_numeric_any: BoolArray  # a numeric field held text (tolerant parse), NaN or infinity


def reason_codes(
    columns: BarColumns, *, asset_class: str, timeframe: str, window_start_ns: int, window_end_ns: int
) -> Codes:
    """One int8 per row: 0 for a valid row, else the code of the first rule it breaks."""
    codes = np.zeros(len(columns.start_ns), dtype=np.int8)
    rules = _row_rules(columns, asset_class, timeframe, window_start_ns, window_end_ns)
    assert [name for name, _ in rules] == [name for name, _ in REASONS[1:10]], "rules out of REASONS order"
    for name, broken in reversed(rules):  # reversed, so the earliest rule's code is written last
        codes[broken] = CODES[name]
    _mark_duplicates(columns, codes)
    return codes


def _row_rules(
    columns: BarColumns, asset_class: str, timeframe: str, window_start_ns: int, window_end_ns: int
) -> list[tuple[str, BoolArray]]:
    """(reason, rows that break it) for every rule a row is judged by on its own."""
    ws = columns.start_ns
    o, h, lo, c = (columns.prices[k] for k in ("open", "high", "low", "close"))
    # Daily bars are stamped 00:00 New York of the session; minute bars start on a whole minute.
    misaligned = ws != window_start_ns if timeframe == "1d" else ws % NANOS_PER_MINUTE != 0
    ticker_form = pc.match_substring_regex(columns.symbol, TICKER_FORMS[asset_class])
    with np.errstate(invalid="ignore"):
        negative = (
            np.logical_or.reduce([v < 0 for v in columns.counts.values()])
            if columns.counts
            else np.zeros(len(ws), dtype=bool)
        )
        return [
            ("non_numeric", columns.non_numeric_any),
            ("empty_field", columns.null_any),
            ("invalid_ticker", ~ticker_form.fill_null(True).to_numpy(zero_copy_only=False)),
            ("timestamp_outside_session", (ws < window_start_ns) | (ws >= window_end_ns)),
            ("misaligned_timestamp", misaligned),
            ("non_positive_price", (o <= 0) | (h <= 0) | (lo <= 0) | (c <= 0)),
            ("high_below_low", h < lo),
            ("price_outside_range", (o < lo) | (o > h) | (c < lo) | (c > h)),
            ("negative_volume", negative),
        ]


def _mark_duplicates(columns: BarColumns, codes: Codes) -> None:
    """Among otherwise valid rows, mark repeated (symbol, start) keys in place.

    Exact copies keep the first row and quarantine the rest; copies that disagree are all
    quarantined, because nothing in the source says which one is right.
    """
    candidates = np.flatnonzero(codes == 0)
    if len(candidates) < 2:
        return
    symbols = columns.symbol.take(pa.array(candidates))
    ws = columns.start_ns[candidates]
    if _strictly_increasing(symbols, ws):  # the vendor's sort order: nothing can repeat
        return
    order = pc.sort_indices(
        pa.table({"t": symbols, "w": ws}), sort_keys=[("t", "ascending"), ("w", "ascending")]
    ).to_numpy()
    sorted_ws = ws[order]
    same_key = np.zeros(len(order), dtype=bool)
    same_key[1:] = _equal_to_previous(symbols.take(pa.array(order))) & (sorted_ws[1:] == sorted_ws[:-1])
    if not same_key.any():
        return
    group = np.cumsum(~same_key) - 1
    group_first = np.flatnonzero(~same_key)[group]
    differs = np.zeros(len(order), dtype=bool)
    for values in (*columns.prices.values(), *columns.counts.values()):
        v = values[candidates][order]
        differs |= v != v[group_first]
    in_repeated_group = np.bincount(group)[group] > 1
    conflicting = in_repeated_group & (np.bincount(group, weights=differs) > 0)[group]
    repeated_copy = same_key & ~conflicting
    rows = candidates[order]
    codes[rows[conflicting]] = CODES["conflicting_duplicate"]
    codes[rows[repeated_copy]] = CODES["duplicate_row"]


def _combined(values: pa.Array | pa.ChunkedArray) -> pa.Array:
    return values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values


def _equal_to_previous(values: pa.Array | pa.ChunkedArray) -> BoolArray:
    values = _combined(values)
    equal: BoolArray = pc.equal(values[1:], values[:-1]).to_numpy(zero_copy_only=False)
    return equal


def _in_order(symbols: pa.Array | pa.ChunkedArray, ws: IntArray, *, strictly: bool) -> bool:
    """True when (symbol, start) never decreases along the rows (never repeats, when ``strictly``)."""
    symbols = _combined(symbols)
    greater = pc.greater(symbols[1:], symbols[:-1]).to_numpy(zero_copy_only=False)
    equal = pc.equal(symbols[1:], symbols[:-1]).to_numpy(zero_copy_only=False)
    later = ws[1:] > ws[:-1] if strictly else ws[1:] >= ws[:-1]
    return bool(np.all(greater | (equal & later)))


def _strictly_increasing(symbols: pa.Array | pa.ChunkedArray, ws: IntArray) -> bool:
    return _in_order(symbols, ws, strictly=True)


def _keyed_rows(codes: Codes) -> IntArray:
    """Rows that passed the row rules (duplicates included): the ones whose keys must be ordered."""
    return np.flatnonzero(
        (codes == 0) | (codes == CODES["duplicate_row"]) | (codes == CODES["conflicting_duplicate"])
    )


def in_vendor_order(columns: BarColumns, codes: Codes) -> bool:
    """True when the keyed rows are in non-decreasing (symbol, start) order, as the vendor sorts."""
    rows = _keyed_rows(codes)
    if len(rows) < 2:
        return True
    return _in_order(columns.symbol.take(pa.array(rows)), columns.start_ns[rows], strictly=False)


def key_range(columns: BarColumns, codes: Codes) -> tuple[tuple[str, int], tuple[str, int]] | None:
    """(first, last) (symbol, start) of the keyed rows in source order; None when there are none."""
    rows = _keyed_rows(codes)
    if not len(rows):
        return None
    first, last = int(rows[0]), int(rows[-1])
    symbol = columns.symbol
    return (symbol[first].as_py(), int(columns.start_ns[first])), (
        symbol[last].as_py(),
        int(columns.start_ns[last]),
    )
