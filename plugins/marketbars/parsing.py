"""Read one vendor flat file (.csv.gz) into warehouse-ready bars and quarantined rows.

The file is streamed through pyarrow's CSV reader in blocks and filtered to the selected
symbols block by block, so a watchlist extraction never holds the whole universe in memory.
Validation rules live in ``marketbars.validation``.
"""

from __future__ import annotations

import datetime as dt
import gzip
import zlib
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv

from marketbars import validation
from marketbars.flatfiles import ALL_TICKERS, HEADERS
from marketbars.trading_calendar import day_window

BLOCK_SIZE = 4 << 20  # bytes of decompressed CSV per block: bounds memory for '*' selections

# The variable columns of market.historical_bars, in COPY order (timeframe and source are constants).
BAR_SCHEMA = pa.schema(
    [
        ("symbol", pa.string()),
        ("ts", pa.timestamp("us", tz="UTC")),
        ("open", pa.float64()),
        ("high", pa.float64()),
        ("low", pa.float64()),
        ("close", pa.float64()),
        ("volume", pa.float64()),
        ("vwap", pa.float64()),
        ("trades", pa.int64()),
    ]
)
QUARANTINE_SCHEMA = pa.schema(
    [
        ("line_number", pa.int64()),
        ("symbol", pa.string()),
        ("reason", pa.string()),
        ("raw", pa.string()),
    ]
)
_INTEGER_TEXT = r"^[+-]?\d+$"
_DECIMAL_TEXT = r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$"


class FlatFileError(Exception):
    """A flat file that cannot be read as the vendor's format. The message names the file."""


class HeaderDriftError(FlatFileError):
    """The header is not the exact one the dataset's format promises."""


class CorruptFlatFileError(FlatFileError):
    """Empty, truncated or otherwise unreadable gzip data."""


@dataclass(frozen=True)
class ParsedFile:
    bars: pa.Table  # valid rows of the selected symbols, in BAR_SCHEMA
    quarantined: pa.Table  # rejected rows of the selected symbols, in QUARANTINE_SCHEMA
    rows_read: int  # data lines in the file, every ticker, malformed lines included
    rows_selected: int  # lines of the selected symbols: loaded + quarantined

    @property
    def reason_counts(self) -> dict[str, int]:
        counts = pc.value_counts(self.quarantined["reason"]).to_pylist()
        return {item["values"]: item["counts"] for item in sorted(counts, key=lambda i: i["values"])}


def _column_types(header: tuple[str, ...], tolerant: bool) -> dict[str, pa.DataType]:
    if tolerant:
        return dict.fromkeys(header, pa.string())
    types: dict[str, pa.DataType] = {"ticker": pa.string(), "window_start": pa.int64()}
    types |= {name: pa.float64() for name in ("open", "close", "high", "low", "volume")}
    types["transactions"] = pa.int64()
    return {name: types[name] for name in header}


def read_header(path: Path, source: str) -> tuple[str, ...]:
    """The first line of a gzip CSV, split on commas; a clear error for empty or non-gzip data."""
    if path.stat().st_size == 0:
        raise CorruptFlatFileError(f"{source}: the file is empty (0 bytes)")
    try:
        with gzip.open(path, "rt", encoding="utf-8", newline="") as handle:
            line = handle.readline()
    except (OSError, EOFError, zlib.error, UnicodeDecodeError) as exc:
        raise CorruptFlatFileError(f"{source}: not a readable gzip CSV ({exc})") from exc
    if not line:
        raise CorruptFlatFileError(f"{source}: the gzip stream holds no header line")
    return tuple(line.rstrip("\r\n").split(","))


def check_header(path: Path, dataset: str, source: str) -> tuple[str, ...]:
    """Raise HeaderDriftError unless the header is exactly the dataset's documented one."""
    expected, found = HEADERS[dataset], read_header(path, source)
    if found != expected:
        missing = [c for c in expected if c not in found]
        unexpected = [c for c in found if c not in expected]
        detail = "; ".join(
            part
            for part in (
                f"missing {missing}" if missing else "",
                f"unexpected {unexpected}" if unexpected else "",
                "same columns in a different order" if not missing and not unexpected else "",
            )
            if part
        )
        raise HeaderDriftError(
            f"{source}: header drift in the {dataset} flat-file format: expected "
            f"{','.join(expected)!r}, found {','.join(found)!r} ({detail}). "
            "Nothing was loaded; the parser must be updated for the new format."
        )
    return expected


def _read_selected(
    path: Path,
    header: tuple[str, ...],
    selection: pa.Array | None,
    tolerant: bool,
    on_malformed: Callable[[pcsv.InvalidRow], str],
) -> tuple[pa.Table, int]:
    """Stream the file, keep the selected tickers' rows plus their ordinal among parsed rows."""
    reader = pcsv.open_csv(
        pa.input_stream(str(path), compression="gzip"),
        # use_threads=False: pyarrow reports physical line numbers for malformed rows only then.
        read_options=pcsv.ReadOptions(
            skip_rows=1, column_names=list(header), block_size=BLOCK_SIZE, use_threads=False
        ),
        parse_options=pcsv.ParseOptions(invalid_row_handler=on_malformed),
        # Only an empty field is null. pyarrow's default null markers ("NA", "n/a", "NaN", "null", ...)
        # would turn the ticker NA into a null and hide text in numeric fields.
        convert_options=pcsv.ConvertOptions(
            column_types=_column_types(header, tolerant), null_values=[""], strings_can_be_null=True
        ),
    )
    kept: list[pa.RecordBatch] = []
    parsed = 0
    for batch in reader:
        ordinal = np.arange(parsed, parsed + batch.num_rows, dtype=np.int64)
        parsed += batch.num_rows
        batch = batch.append_column("ordinal", pa.array(ordinal))
        if selection is not None:
            batch = batch.filter(pc.is_in(batch["ticker"], value_set=selection))
        if batch.num_rows:
            kept.append(batch)
    schema = reader.schema.append(pa.field("ordinal", pa.int64()))
    return pa.Table.from_batches(kept, schema=schema), parsed


def _coerce_numbers(table: pa.Table) -> tuple[pa.Table, np.ndarray]:
    """Tolerant mode: numeric text columns -> numbers; text that is not a number becomes null + flagged."""
    non_numeric = np.zeros(table.num_rows, dtype=bool)
    columns = {}
    for name in table.column_names:
        column = table[name]
        if name in ("ticker", "ordinal"):
            columns[name] = column
            continue
        integer = name in ("window_start", "transactions")
        stripped = pc.utf8_trim_whitespace(column)
        is_number = pc.match_substring_regex(stripped, _INTEGER_TEXT if integer else _DECIMAL_TEXT)
        non_numeric |= pc.invert(is_number).fill_null(False).to_numpy(zero_copy_only=False)
        columns[name] = pc.cast(
            pc.if_else(is_number, stripped, None), pa.int64() if integer else pa.float64()
        )
    return pa.table(columns), non_numeric


def _line_numbers(ordinals: np.ndarray, malformed_lines: list[int]) -> np.ndarray:
    """Physical line numbers (header = line 1) of parsed rows, skipping the malformed lines."""
    if not malformed_lines:
        return ordinals + 2
    skipped = np.sort(np.asarray(malformed_lines, dtype=np.int64))
    # A parsed row sits after malformed line m iff its ordinal >= m - 2 - (malformed lines before m).
    thresholds = skipped - 2 - np.arange(len(skipped))
    return ordinals + 2 + np.searchsorted(thresholds, ordinals, side="right")


def _raw_text(table: pa.Table) -> pa.Array:
    texts = [pc.cast(table[name], pa.string()) for name in table.column_names if name != "ordinal"]
    return pc.binary_join_element_wise(*texts, ",", null_handling="replace", null_replacement="")


def parse_flat_file(
    path: Path,
    *,
    dataset: str,
    timeframe: str,
    session: dt.date,
    symbols: Collection[str],
    source: str | None = None,
) -> ParsedFile:
    """Parse and validate one day's file for the selected symbols (``["*"]`` keeps every ticker).

    Raises HeaderDriftError or CorruptFlatFileError, naming ``source`` (e.g. the S3 URL; the
    file name by default), when the file as a whole cannot be trusted; individual bad rows are
    returned in ``quarantined`` with their reason.
    """
    source = source or path.name
    header = check_header(path, dataset, source)
    selected = None if list(symbols) == [ALL_TICKERS] else set(symbols)
    selection = None if selected is None else pa.array(sorted(selected), pa.string())
    malformed: list[tuple[int, str]] = []

    def on_malformed(row: pcsv.InvalidRow) -> str:
        malformed.append((row.number or 0, row.text))
        return "skip"

    non_numeric = None
    text: pa.Table | None = None  # the tolerant read's original text, kept for the quarantine
    try:
        try:
            table, parsed = _read_selected(path, header, selection, False, on_malformed)
        except pa.ArrowInvalid as exc:
            if "conversion error" not in str(exc):
                raise
            malformed.clear()  # numeric fields hold text somewhere: re-read tolerantly
            text, parsed = _read_selected(path, header, selection, True, on_malformed)
            table, non_numeric = _coerce_numbers(text)
    except (OSError, EOFError, zlib.error, pa.ArrowInvalid) as exc:
        raise CorruptFlatFileError(f"{source}: truncated or corrupt gzip CSV ({exc})") from exc

    window_start, window_end = (int(t.timestamp()) * 1_000_000_000 for t in day_window(session))
    columns = validation.bar_columns(table, non_numeric)
    codes = validation.reason_codes(
        columns, timeframe=timeframe, window_start_ns=window_start, window_end_ns=window_end
    )
    valid = codes == 0
    bars = _bars(table.filter(pa.array(valid)), dataset)

    bad_rows = np.flatnonzero(~valid)
    bad = table.take(pa.array(bad_rows))
    malformed_lines = [line for line, _ in malformed]
    quarantined = pa.table(
        {
            "line_number": pa.array(_line_numbers(bad["ordinal"].to_numpy(), malformed_lines)),
            "symbol": bad["ticker"],
            "reason": pa.array([validation.REASON_NAMES[c] for c in codes[bad_rows]], pa.string()),
            "raw": _raw_text(bad if text is None else text.take(pa.array(bad_rows))),
        },
        schema=QUARANTINE_SCHEMA,
    )
    malformed_selected = [
        (line, text.split(",", 1)[0], text)
        for line, text in malformed
        if selected is None or text.split(",", 1)[0] in selected
    ]
    if malformed_selected:
        lines, tickers, texts = zip(*malformed_selected, strict=True)
        quarantined = pa.concat_tables(
            [
                quarantined,
                pa.table(
                    {
                        "line_number": pa.array(lines, pa.int64()),
                        "symbol": pa.array([t or None for t in tickers], pa.string()),
                        "reason": pa.array(["malformed_row"] * len(lines), pa.string()),
                        "raw": pa.array(texts, pa.string()),
                    },
                    schema=QUARANTINE_SCHEMA,
                ),
            ]
        ).sort_by("line_number")
    return ParsedFile(
        bars=bars,
        quarantined=quarantined,
        rows_read=parsed + len(malformed),
        rows_selected=table.num_rows + len(malformed_selected),
    )


def _bars(valid: pa.Table, dataset: str) -> pa.Table:
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
            "vwap": no_floats,  # flat files carry no vwap
            "trades": valid["transactions"] if traded else pa.nulls(n, pa.int64()),
        },
        schema=BAR_SCHEMA,
    )
