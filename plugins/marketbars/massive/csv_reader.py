"""Read one vendor flat file (.csv.gz) into validated bars and quarantined rows.

The file is streamed through pyarrow's CSV reader in blocks and filtered to the selected
symbols block by block, so a watchlist extraction never holds the whole universe in memory.
Validation rules live in ``marketbars.market.validation``.
"""

from __future__ import annotations

import datetime as dt
import gzip
import zlib
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv

from marketbars.market import validation
from marketbars.market.bars import BAR_SCHEMA, QUARANTINE_SCHEMA, NotStreamableError, ValidatedBars
from marketbars.market.calendar import day_window
from marketbars.market.symbols import selects_all
from marketbars.market.validation import BoolArray, Codes, IntArray
from marketbars.massive.columns import bar_columns, to_bars
from marketbars.massive.flatfiles import HEADERS

BLOCK_SIZE = 4 << 20  # bytes of decompressed CSV per block: bounds memory for '*' selections
_INTEGER_TEXT = r"^[+-]?\d{1,19}$"
INT64_MAX_TEXT = "9223372036854775807"  # a 19-digit integer fits a bigint when it sorts at or below this
_DECIMAL_TEXT = r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$"


class FlatFileError(Exception):
    """A flat file that cannot be read as the vendor's format. The message names the file."""


class HeaderDriftError(FlatFileError):
    """The header is not the exact one the dataset's format promises."""


class CorruptFlatFileError(FlatFileError):
    """Empty, truncated or otherwise unreadable gzip data."""


class _NumericText(Exception):
    """The typed CSV read met text in a numeric column (internal: the tolerant read handles it)."""


class NotStreamableFileError(FlatFileError, NotStreamableError):
    """The file cannot be validated block by block (out of order, text in numeric fields): read it whole."""


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


def _split_last_ticker(table: pa.Table) -> tuple[pa.Table, pa.Table]:
    """(rows before the last ticker's trailing run, that run). Duplicates share a ticker, so holding
    the run back until the next block keeps every duplicate group inside one chunk."""
    if table.num_rows == 0:
        return table, table
    tickers = table["ticker"]
    last = tickers[-1]
    same = pc.is_null(tickers) if not last.is_valid else pc.equal(tickers, last).fill_null(False)
    different = np.flatnonzero(~same.to_numpy(zero_copy_only=False))
    start = int(different[-1]) + 1 if len(different) else 0
    return table.slice(0, start), table.slice(start)


def _coerce_numbers(table: pa.Table) -> tuple[pa.Table, BoolArray]:
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
        if integer:  # too large for a bigint: non_numeric, not a failed cast of the whole file
            digits = pc.utf8_ltrim(stripped, characters="+-")
            fits = pc.or_(pc.less(pc.utf8_length(digits), 19), pc.less_equal(digits, INT64_MAX_TEXT))
            is_number = pc.and_(is_number, fits)
        non_numeric |= pc.invert(is_number).fill_null(False).to_numpy(zero_copy_only=False)
        columns[name] = pc.cast(
            pc.if_else(is_number, stripped, None), pa.int64() if integer else pa.float64()
        )
    return pa.table(columns), non_numeric


def _line_numbers(ordinals: IntArray, malformed_lines: list[int]) -> IntArray:
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


class FlatFileReader:
    """One day's file, read for a symbol selection as validated chunks.

    ``chunks(streaming=True)`` holds one block (~4 MB of CSV) at a time, so a load can COPY chunk
    k while chunk k+1 is parsed, in bounded memory. It relies on the vendor's order (ticker, then
    time) to find duplicates across blocks, and on numeric fields being numbers; a file that
    breaks either raises NotStreamableError before its end, and ``chunks(streaming=False)`` reads
    it whole (sorting to find duplicates, parsing text fields tolerantly) as a single chunk.
    ``rows_read`` and ``rows_selected`` are set once a pass has been consumed.
    """

    def __init__(
        self,
        path: Path,
        *,
        dataset: str,
        timeframe: str,
        session: dt.date,
        symbols: Collection[str],
        source: str | None = None,
    ) -> None:
        self.path = path
        self.dataset = dataset
        self.timeframe = timeframe
        self.source = source or path.name
        self.selected = None if selects_all(symbols) else frozenset(symbols)
        self._selection = None if self.selected is None else pa.array(sorted(self.selected), pa.string())
        self._window = tuple(int(t.timestamp()) * 1_000_000_000 for t in day_window(session))
        self.rows_read = 0
        self.rows_selected = 0
        self._malformed: list[tuple[int, str]] = []

    def chunks(self, *, streaming: bool = True) -> Iterator[ValidatedBars]:
        header = check_header(self.path, self.dataset, self.source)
        self.rows_read = self.rows_selected = 0
        self._malformed = []
        if streaming:
            try:
                yield from self._streamed(header)
            except _NumericText as exc:
                raise NotStreamableFileError(f"{self.source}: a numeric field holds text ({exc})") from exc
        else:
            yield self._whole(header)

    def _on_malformed(self, row: pcsv.InvalidRow) -> str:
        self._malformed.append((row.number or 0, row.text))
        return "skip"

    def _reader(self, header: tuple[str, ...], tolerant: bool) -> pcsv.CSVStreamingReader:
        return pcsv.open_csv(
            pa.input_stream(str(self.path), compression="gzip"),
            # use_threads=False: pyarrow reports physical line numbers for malformed rows only then.
            read_options=pcsv.ReadOptions(
                skip_rows=1, column_names=list(header), block_size=BLOCK_SIZE, use_threads=False
            ),
            # The vendor's CSV has no quoting and no blank lines: a stray quote must not swallow the
            # lines after it, and a blank line is a malformed row (which also keeps line numbers right).
            parse_options=pcsv.ParseOptions(
                quote_char=False, ignore_empty_lines=False, invalid_row_handler=self._on_malformed
            ),
            # Only an empty field is null. pyarrow's default null markers ("NA", "n/a", "NaN", "null", ...)
            # would turn the ticker NA into a null and hide text in numeric fields.
            convert_options=pcsv.ConvertOptions(
                column_types=_column_types(header, tolerant), null_values=[""], strings_can_be_null=True
            ),
        )

    def _blocks(self, header: tuple[str, ...], tolerant: bool) -> Iterator[pa.RecordBatch]:
        """The CSV reader's blocks; its errors become CorruptFlatFileError or _NumericText, and only its."""
        try:
            reader = self._reader(header, tolerant)
            while True:
                try:
                    yield next(reader)
                except StopIteration:
                    return
        except pa.ArrowInvalid as exc:
            if "conversion error" in str(exc):
                raise _NumericText(str(exc)) from exc
            raise CorruptFlatFileError(f"{self.source}: truncated or corrupt gzip CSV ({exc})") from exc
        except (OSError, EOFError, zlib.error) as exc:
            raise CorruptFlatFileError(f"{self.source}: truncated or corrupt gzip CSV ({exc})") from exc

    def _selected_batches(self, header: tuple[str, ...], tolerant: bool) -> Iterator[pa.Table]:
        """The selected tickers' rows, block by block, with their ordinal among all parsed rows."""
        parsed = 0
        for batch in self._blocks(header, tolerant):
            ordinal = np.arange(parsed, parsed + batch.num_rows, dtype=np.int64)
            parsed += batch.num_rows
            batch = batch.append_column("ordinal", pa.array(ordinal))
            if self._selection is not None:
                batch = batch.filter(pc.is_in(batch["ticker"], value_set=self._selection))
            yield pa.Table.from_batches([batch])
        self.rows_read = parsed + len(self._malformed)

    def _streamed(self, header: tuple[str, ...]) -> Iterator[ValidatedBars]:
        carry: pa.Table | None = None
        last_key: tuple[str, int] | None = None
        reported = 0
        for table in self._selected_batches(header, tolerant=False):
            if carry is not None and carry.num_rows:
                table = pa.concat_tables([carry, table])
            table, carry = _split_last_ticker(table)
            chunk, last_key = self._validated(table, reported, last_key=last_key, check_order=True)
            reported = len(self._malformed)
            yield chunk
        if carry is None:  # no parsed row at all: the file may still have malformed lines to report
            fields = [*_column_types(header, tolerant=False).items(), ("ordinal", pa.int64())]
            carry = pa.schema(fields).empty_table()
        if carry.num_rows or len(self._malformed) > reported:
            chunk, _ = self._validated(carry, reported, last_key=last_key, check_order=True)
            yield chunk

    def _whole(self, header: tuple[str, ...]) -> ValidatedBars:
        def read_all(tolerant: bool) -> pa.Table:
            batches = list(self._selected_batches(header, tolerant))
            if batches:
                return pa.concat_tables(batches)
            fields = [*_column_types(header, tolerant).items(), ("ordinal", pa.int64())]
            return pa.schema(fields).empty_table()

        try:
            table, non_numeric, text = read_all(False), None, None
        except _NumericText:
            self._malformed = []  # numeric fields hold text somewhere: read it again as text
            text = read_all(True)
            table, non_numeric = _coerce_numbers(text)
        chunk, _ = self._validated(table, 0, non_numeric=non_numeric, text=text)
        return chunk

    def _validated(
        self,
        table: pa.Table,
        reported: int,
        *,
        last_key: tuple[str, int] | None = None,
        check_order: bool = False,
        non_numeric: BoolArray | None = None,
        text: pa.Table | None = None,
    ) -> tuple[ValidatedBars, tuple[str, int] | None]:
        """Validate rows (and the malformed lines found since the last chunk) into ValidatedBars."""
        start, end = self._window
        columns = bar_columns(table, non_numeric)
        codes = validation.reason_codes(
            columns,
            asset_class=self.dataset,
            timeframe=self.timeframe,
            window_start_ns=start,
            window_end_ns=end,
        )
        if check_order:
            last_key = self._check_order(columns, codes, last_key)
        valid = codes == 0
        rejected = [self._rejected_rows(table, codes, text), *self._malformed_rows(reported)]
        self.rows_selected += table.num_rows + sum(part.num_rows for part in rejected[1:])
        bars = to_bars(table.filter(pa.array(valid)), self.dataset)
        return ValidatedBars(bars=bars, quarantined=pa.concat_tables(rejected)), last_key

    def _check_order(
        self, columns: validation.BarColumns, codes: Codes, last_key: tuple[str, int] | None
    ) -> tuple[str, int] | None:
        """The chunk's last key; NotStreamableFileError when its keys do not follow the vendor's order."""
        keys = validation.key_range(columns, codes)
        if not validation.in_vendor_order(columns, codes) or (
            keys and last_key is not None and keys[0] <= last_key
        ):
            raise NotStreamableFileError(f"{self.source}: rows are not in the vendor's ticker, time order")
        return keys[1] if keys else last_key

    def _rejected_rows(self, table: pa.Table, codes: Codes, text: pa.Table | None) -> pa.Table:
        """The rows that broke a rule, with their line numbers and reasons, as the file had them."""
        bad_rows = np.flatnonzero(codes != 0)
        bad = table.take(pa.array(bad_rows))
        lines = _line_numbers(bad["ordinal"].to_numpy(), [line for line, _ in self._malformed])
        return pa.table(
            {
                "line_number": pa.array(lines, pa.int64()),
                "symbol": bad["ticker"],
                "reason": pa.array([validation.REASON_NAMES[c] for c in codes[bad_rows]], pa.string()),
                "raw": _raw_text(bad if text is None else text.take(pa.array(bad_rows))),
            },
            schema=QUARANTINE_SCHEMA,
        )

    def _malformed_rows(self, reported: int) -> list[pa.Table]:
        """The selection's malformed lines found since the last chunk (the first ``reported`` were)."""
        malformed = [
            (line, text.split(",", 1)[0], text)
            for line, text in self._malformed[reported:]
            if self.selected is None or text.split(",", 1)[0] in self.selected
        ]
        if not malformed:
            return []
        numbers, tickers, texts = zip(*malformed, strict=True)
        return [
            pa.table(
                {
                    "line_number": pa.array(numbers, pa.int64()),
                    "symbol": pa.array([t or None for t in tickers], pa.string()),
                    "reason": pa.array(["malformed_row"] * len(numbers), pa.string()),
                    "raw": pa.array(texts, pa.string()),
                },
                schema=QUARANTINE_SCHEMA,
            )
        ]


def parse_flat_file(
    path: Path,
    *,
    dataset: str,
    timeframe: str,
    session: dt.date,
    symbols: Collection[str],
    source: str | None = None,
) -> ParsedFile:
    """Parse and validate one day's file for the selected symbols (``["*"]`` keeps every ticker), in memory.

    Raises HeaderDriftError or CorruptFlatFileError, naming ``source`` (e.g. the S3 URL; the
    file name by default), when the file as a whole cannot be trusted; individual bad rows are
    returned in ``quarantined`` with their reason.
    """
    reader = FlatFileReader(
        path, dataset=dataset, timeframe=timeframe, session=session, symbols=symbols, source=source
    )
    try:
        chunks = list(reader.chunks())
    except NotStreamableFileError:
        chunks = list(reader.chunks(streaming=False))
    bars = pa.concat_tables([c.bars for c in chunks]) if chunks else BAR_SCHEMA.empty_table()
    quarantined = (
        pa.concat_tables([c.quarantined for c in chunks]) if chunks else QUARANTINE_SCHEMA.empty_table()
    )
    return ParsedFile(
        bars=bars,
        quarantined=quarantined.sort_by("line_number"),
        rows_read=reader.rows_read,
        rows_selected=reader.rows_selected,
    )
