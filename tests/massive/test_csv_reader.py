"""The flat-file parser on hand-written files: exact values, every quarantine reason, whole-file errors."""

import datetime as dt
import gzip
from pathlib import Path

import pytest

from marketbars.massive import csv_reader as parsing
from marketbars.massive.csv_reader import (
    CorruptFlatFileError,
    FlatFileReader,
    HeaderDriftError,
    NotStreamableError,
    parse_flat_file,
)
from sandbox import market

SESSION = dt.date(2024, 3, 5)  # EST: 09:30 New York = 14:30 UTC
STOCKS = "ticker,volume,open,close,high,low,window_start,transactions"
INDICES = "ticker,open,close,high,low,window_start"
T0930 = 1709649000_000000000  # 2024-03-05 14:30:00 UTC
MIN = 60_000_000_000


def gz(tmp_path: Path, text: str, name: str = "2024-03-05.csv.gz") -> Path:
    path = tmp_path / name
    path.write_bytes(gzip.compress(text.encode()))
    return path


def parse(path: Path, symbols=("*",), dataset="stocks", timeframe="1m", session=SESSION):
    return parse_flat_file(path, dataset=dataset, timeframe=timeframe, session=session, symbols=list(symbols))


def rows(parsed) -> list[dict]:
    return parsed.bars.to_pylist()


def quarantine(parsed) -> dict[int, str]:
    q = parsed.quarantined
    return dict(zip(q["line_number"].to_pylist(), q["reason"].to_pylist(), strict=True))


def test_values_timestamps_and_fractional_volume_are_exact(tmp_path: Path) -> None:
    path = gz(tmp_path, f"{STOCKS}\nAAPL,9099.618093,170.5,170.62,170.7,170.41,{T0930},88\n"
                        f"AAPL,120,170.62,170.6,170.63,170.59,{T0930 + MIN},3\n")  # fmt: skip
    parsed = parse(path)
    first, second = (dt.datetime(2024, 3, 5, 14, minute, tzinfo=dt.UTC) for minute in (30, 31))
    assert rows(parsed) == [
        {"symbol": "AAPL", "ts": first, "open": 170.5, "high": 170.7, "low": 170.41, "close": 170.62,
         "volume": 9099.618093, "vwap": None, "trades": 88},
        {"symbol": "AAPL", "ts": second, "open": 170.62, "high": 170.63, "low": 170.59, "close": 170.6,
         "volume": 120.0, "vwap": None, "trades": 3},
    ]  # fmt: skip
    assert (parsed.rows_read, parsed.rows_selected, parsed.quarantined.num_rows) == (2, 2, 0)


def test_selection_keeps_only_the_symbols_asked_for_including_the_ticker_na(tmp_path: Path) -> None:
    lines = [f"{t},10,1.5,1.5,1.5,1.5,{T0930},1" for t in ("AAPL", "MSFT", "NA")]
    parsed = parse(gz(tmp_path, STOCKS + "\n" + "\n".join(lines) + "\n"), symbols=["NA", "MSFT", "ZZZZ"])
    assert sorted(r["symbol"] for r in rows(parsed)) == ["MSFT", "NA"]
    assert (parsed.rows_read, parsed.rows_selected) == (3, 2)


def test_index_files_have_no_volume_or_trades(tmp_path: Path) -> None:
    parsed = parse(gz(tmp_path, f"{INDICES}\nI:SPX,5100.5,5101.25,5102,5099.75,{T0930}\n"), dataset="indices")
    [bar] = rows(parsed)
    assert (bar["symbol"], bar["open"], bar["close"], bar["high"], bar["low"]) == (
        "I:SPX",
        5100.5,
        5101.25,
        5102.0,
        5099.75,
    )
    assert (bar["volume"], bar["trades"], bar["vwap"]) == (None, None, None)


def test_every_row_rule_quarantines_with_its_reason_and_line(tmp_path: Path) -> None:
    t = T0930
    next_day = T0930 + 86_400 * 1_000_000_000
    lines = [
        f"AAA,10,2,2,2,2,{t},1",  # 2 valid
        f"AAB,10,2,2,2,{t},1",  # 3 malformed: 7 fields
        f"AAC,10,2,2,2,2,{t},1",  # 4 valid
        f"AAD,,2,2,2,2,{t},1",  # 5 empty volume
        f"AAE,10,2,2,1,3,{t},1",  # 6 high < low
        f"AAF,10,2,4,3,1,{t},1",  # 7 close above high
        f"AAG,10,2,2,2,0,{t},1",  # 8 low = 0
        f"AAH,10,2,2,2,2,{next_day},1",  # 9 belongs to the next day (the 2019-08-12 case)
        "AAI,10,2,2,2,2,0,1",  # 10 zero window_start
        f"AAJ,10,2,2,2,2,{t + 30_000_000_000},1",  # 11 not on a minute
        f"AAK,-5,2,2,2,2,{t},1",  # 12 negative volume
        f"AAL,10,2,2,2,2,{t},-1",  # 13 negative transactions
        f"AAM,,2,2,1,3,{t},1",  # 14 empty and high < low: the earlier rule wins
        f"AAN,10,2,2,2,2,{t},1",  # 15 valid
    ]
    parsed = parse(gz(tmp_path, STOCKS + "\n" + "\n".join(lines) + "\n"))
    assert quarantine(parsed) == {
        3: "malformed_row", 5: "empty_field", 6: "high_below_low", 7: "price_outside_range",
        8: "non_positive_price", 9: "timestamp_outside_session", 10: "timestamp_outside_session",
        11: "misaligned_timestamp", 12: "negative_volume", 13: "negative_volume", 14: "empty_field",
    }  # fmt: skip
    assert sorted(r["symbol"] for r in rows(parsed)) == ["AAA", "AAC", "AAN"]
    assert (parsed.rows_read, parsed.rows_selected) == (14, 14)
    raw = dict(
        zip(parsed.quarantined["line_number"].to_pylist(), parsed.quarantined["raw"].to_pylist(), strict=True)
    )
    assert raw[3] == f"AAB,10,2,2,2,{t},1"


def test_text_in_numeric_fields_is_quarantined_with_the_original_text(tmp_path: Path) -> None:
    lines = [f"AAA,10,2,2,2,2,{T0930},1", f"AAB,n/a,2,2,2,2,{T0930},1", f"AAC,10,NaN,2,2,2,{T0930},1",
             f"AAD,10,2,2,2,2,{T0930},x1"]  # fmt: skip
    parsed = parse(gz(tmp_path, STOCKS + "\n" + "\n".join(lines) + "\n"))
    assert quarantine(parsed) == {3: "non_numeric", 4: "non_numeric", 5: "non_numeric"}
    assert parsed.quarantined["raw"].to_pylist()[0] == f"AAB,n/a,2,2,2,2,{T0930},1"
    assert [r["symbol"] for r in rows(parsed)] == ["AAA"]


def test_duplicates_keep_one_exact_copy_and_reject_conflicting_ones(tmp_path: Path) -> None:
    a = f"AAA,10,2,2,2,2,{T0930},1"
    lines = [
        a,
        a,
        a,
        f"BBB,10,2,2,2,2,{T0930},1",
        f"BBB,10,2,2.5,2.5,2,{T0930},1",
        f"CCC,10,2,2,2,2,{T0930},1",
    ]
    parsed = parse(gz(tmp_path, STOCKS + "\n" + "\n".join(lines) + "\n"))
    assert quarantine(parsed) == {3: "duplicate_row", 4: "duplicate_row", 5: "conflicting_duplicate",
                                  6: "conflicting_duplicate"}  # fmt: skip
    assert [r["symbol"] for r in rows(parsed)] == ["AAA", "CCC"]


def test_duplicates_are_found_when_the_file_is_not_sorted(tmp_path: Path) -> None:
    a = f"AAA,10,2,2,2,2,{T0930},1"
    lines = [a, f"BBB,10,2,2,2,2,{T0930},1", f"AAA,10,2,2,2,2,{T0930 + MIN},1", a]
    parsed = parse(gz(tmp_path, STOCKS + "\n" + "\n".join(lines) + "\n"))
    assert quarantine(parsed) == {5: "duplicate_row"}
    assert parsed.bars.num_rows == 3


def test_daily_bars_must_be_stamped_at_midnight_new_york(tmp_path: Path) -> None:
    midnight = 1709614800_000000000  # 2024-03-05 00:00 EST
    text = f"{STOCKS}\nAAA,10,2,2,2,2,{midnight},1\nAAB,10,2,2,2,2,{T0930},1\n"
    parsed = parse(gz(tmp_path, text), timeframe="1d")
    assert quarantine(parsed) == {3: "misaligned_timestamp"}
    assert rows(parsed)[0]["ts"] == dt.datetime(2024, 3, 5, 5, 0, tzinfo=dt.UTC)


def test_header_drift_fails_naming_the_file_and_the_difference(tmp_path: Path) -> None:
    path = gz(tmp_path, STOCKS + ",vwap\n")
    with pytest.raises(HeaderDriftError, match=r"2024-03-05.csv.gz: header drift.*unexpected \['vwap'\]"):
        parse(path)
    reordered = gz(tmp_path, "ticker,open,volume,close,high,low,window_start,transactions\n", name="r.csv.gz")
    with pytest.raises(HeaderDriftError, match="same columns in a different order"):
        parse(reordered)
    with pytest.raises(HeaderDriftError, match=r"missing \['volume', 'transactions'\]"):
        parse(gz(tmp_path, INDICES + "\n", name="i.csv.gz"), dataset="stocks")


def test_empty_truncated_and_non_gzip_files_fail_clearly(tmp_path: Path) -> None:
    empty = tmp_path / "empty.csv.gz"
    empty.write_bytes(b"")
    with pytest.raises(CorruptFlatFileError, match=r"empty.csv.gz: the file is empty \(0 bytes\)"):
        parse(empty)
    body = gzip.compress((STOCKS + "\n" + f"AAA,10,2,2,2,2,{T0930},1\n" * 50_000).encode())
    truncated = tmp_path / "truncated.csv.gz"
    truncated.write_bytes(body[: len(body) // 2])
    with pytest.raises(CorruptFlatFileError, match=r"truncated\.csv\.gz: truncated or corrupt gzip"):
        parse(truncated)
    plain = tmp_path / "plain.csv.gz"
    plain.write_text(STOCKS + "\n")
    with pytest.raises(CorruptFlatFileError, match=r"plain\.csv\.gz: not a readable gzip"):
        parse(plain)


def test_an_empty_selection_result_is_not_an_error(tmp_path: Path) -> None:
    parsed = parse(gz(tmp_path, f"{STOCKS}\nAAA,10,2,2,2,2,{T0930},1\n"), symbols=["MSFT"])
    assert (parsed.bars.num_rows, parsed.quarantined.num_rows, parsed.rows_read, parsed.rows_selected) == (
        0,
        0,
        1,
        0,
    )


def _gather(reader: FlatFileReader, streaming: bool) -> tuple[list[dict], dict[int, str], int, int]:
    chunks = list(reader.chunks(streaming=streaming))
    bars = [row for c in chunks for row in c.bars.to_pylist()]
    quarantined = [row for c in chunks for row in c.quarantined.to_pylist()]
    lines = {row["line_number"]: row["reason"] for row in quarantined}
    return bars, lines, reader.rows_read, reader.rows_selected


@pytest.mark.parametrize("day", [dt.date(2024, 3, 5), dt.date(2024, 11, 29), dt.date(2026, 1, 2)])
@pytest.mark.parametrize("symbols", [["*"], ["AAPL", "MSFT", "SPY", "ZVZZT", "WKHS"]])
def test_streaming_in_tiny_blocks_gives_the_whole_file_result(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, day: dt.date, symbols: list[str]
) -> None:
    monkeypatch.setattr(parsing, "BLOCK_SIZE", 4096)  # ~70 rows a block: duplicate groups straddle blocks
    kinds = ["duplicate_row", "conflicting_duplicate"] * 100 + [
        "malformed_row",
        "high_below_low",
        "zero_timestamp",
    ]
    sample = market.build_file("stocks", "1m", day, pathologies=kinds)
    path = gz(tmp_path, "")
    path.write_bytes(sample.body)
    reader = FlatFileReader(path, dataset="stocks", timeframe="1m", session=day, symbols=symbols)
    streamed = _gather(reader, streaming=True)
    whole = _gather(reader, streaming=False)
    assert streamed == whole
    keep = None if symbols == ["*"] else symbols
    assert streamed[1] == sample.expected_quarantine(keep)
    assert len(streamed[0]) == len(sample.expected_rows(keep))


def test_streaming_refuses_files_it_cannot_validate_block_by_block(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(parsing, "BLOCK_SIZE", 64)
    unsorted = gz(
        tmp_path, f"{STOCKS}\nBBB,10,2,2,2,2,{T0930},1\nAAA,10,2,2,2,2,{T0930},1\n", name="u.csv.gz"
    )
    text = gz(tmp_path, f"{STOCKS}\nAAA,10,2,2,2,2,{T0930},1\nBBB,n/a,2,2,2,2,{T0930},1\n", name="t.csv.gz")
    for path, message in (
        (unsorted, "not in the vendor's ticker, time order"),
        (text, "a numeric field holds text"),
    ):
        reader = FlatFileReader(path, dataset="stocks", timeframe="1m", session=SESSION, symbols=["*"])
        with pytest.raises(NotStreamableError, match=message):
            list(reader.chunks())
        [chunk] = reader.chunks(streaming=False)
        assert chunk.bars.num_rows >= 1


def test_duplicates_across_a_block_boundary_are_caught_while_streaming(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(parsing, "BLOCK_SIZE", 256)  # a handful of rows per block
    lines = [f"T{i // 50:03d},10,2,2,2,2,{T0930 + (i % 50) * MIN},1" for i in range(400)]
    doubled = [line for line in lines for _ in (0, 1)]  # every row twice: many pairs straddle blocks
    reader = FlatFileReader(
        gz(tmp_path, STOCKS + "\n" + "\n".join(doubled) + "\n"),
        dataset="stocks", timeframe="1m", session=SESSION, symbols=["*"],
    )  # fmt: skip
    bars, quarantined, _, _ = _gather(reader, streaming=True)
    assert len(bars) == 400
    assert quarantined == {n: "duplicate_row" for n in range(3, 802, 2)}


def test_option_files_use_the_stock_header_and_keep_the_occ_ticker(tmp_path: Path) -> None:
    ticker = "O:SPY240315C00510000"
    parsed = parse(gz(tmp_path, f"{STOCKS}\n{ticker},3,1.25,1.3,1.35,1.2,{T0930},2\n"), dataset="options")
    [bar] = rows(parsed)
    assert (bar["symbol"], bar["close"], bar["volume"], bar["trades"]) == (ticker, 1.3, 3.0, 2)


@pytest.mark.parametrize(
    "day",
    [dt.date(2024, 3, 8), dt.date(2024, 3, 11), dt.date(2024, 11, 1), dt.date(2024, 11, 4)],
    ids=["last-EST-session", "first-EDT-session", "last-EDT-session", "first-EST-session"],
)
def test_sessions_around_dst_changes_load_every_extended_hours_bar(tmp_path: Path, day: dt.date) -> None:
    sample = market.build_file("stocks", "1m", day, pathologies=[])
    path = tmp_path / "f.csv.gz"
    path.write_bytes(sample.body)
    parsed = parse(path, session=day)
    assert parsed.quarantined.num_rows == 0
    assert parsed.bars.num_rows == len(sample.lines)
    first_bar = min(parsed.bars["ts"].to_pylist()).astimezone(market.NEW_YORK)
    assert (first_bar.date(), first_bar.hour) == (day, 4)  # 04:00 New York, in EST or EDT alike


def test_a_stray_quote_does_not_swallow_the_lines_after_it(tmp_path: Path) -> None:
    lines = [f"AAPL,10,2,2,2,2,{T0930},1", f'"MSFT,100,2,2,2,2,{T0930},1'] + [
        f"{t},10,2,2,2,2,{T0930},1" for t in ("NVDA", "SPY", "TSLA", "ZZZ")
    ]
    parsed = parse(gz(tmp_path, STOCKS + "\n" + "\n".join(lines) + "\n"))
    assert quarantine(parsed) == {3: "invalid_ticker"}
    assert sorted(r["symbol"] for r in rows(parsed)) == ["AAPL", "NVDA", "SPY", "TSLA", "ZZZ"]
    assert parsed.rows_read == 6
    selected = parse(
        gz(tmp_path, STOCKS + "\n" + "\n".join(lines) + "\n", "s.csv.gz"), symbols=["NVDA", "SPY"]
    )
    assert sorted(r["symbol"] for r in rows(selected)) == ["NVDA", "SPY"]


def test_a_file_of_only_malformed_lines_quarantines_every_line(tmp_path: Path) -> None:
    lines = [f"AAA,10,2,2,2,2,{T0930},1,extra", f"BBB,10,2,2,2,2,{T0930},1,extra"]
    parsed = parse(gz(tmp_path, STOCKS + "\n" + "\n".join(lines) + "\n"))
    assert quarantine(parsed) == {2: "malformed_row", 3: "malformed_row"}
    assert (parsed.bars.num_rows, parsed.rows_read, parsed.rows_selected) == (0, 2, 2)


def test_blank_lines_are_quarantined_and_keep_line_numbers_right(tmp_path: Path) -> None:
    text = f"{STOCKS}\nAAA,10,2,2,2,2,{T0930},1\n\n\nAAB,10,2,2,1,3,{T0930},1\nAAC,10,2,2,2,2,{T0930},1\n"
    parsed = parse(gz(tmp_path, text))
    assert quarantine(parsed) == {3: "empty_field", 4: "empty_field", 5: "high_below_low"}
    assert [r["symbol"] for r in rows(parsed)] == ["AAA", "AAC"]


def test_an_integer_too_large_for_a_bigint_is_non_numeric_not_a_corrupt_file(tmp_path: Path) -> None:
    lines = [
        f"AAA,10,2,2,2,2,{T0930},1",
        f"AAB,10,2,2,2,2,{T0930},99999999999999999999",
        "AAC,10,2,2,2,2,9223372036854775808,1",
        f"AAD,10,2,2,2,2,{T0930},9223372036854775807",
    ]
    parsed = parse(gz(tmp_path, STOCKS + "\n" + "\n".join(lines) + "\n"))
    assert quarantine(parsed) == {3: "non_numeric", 4: "non_numeric"}
    assert [(r["symbol"], r["trades"]) for r in rows(parsed)] == [("AAA", 1), ("AAD", 9223372036854775807)]


def test_tickers_outside_the_dataset_are_quarantined(tmp_path: Path) -> None:
    text = f"{INDICES}\nI:SPX,2,2,2,2,{T0930}\nSPXW,2,2,2,2,{T0930}\nO:SPY240315C00510000,2,2,2,2,{T0930}\n"
    parsed = parse(gz(tmp_path, text), dataset="indices")
    assert quarantine(parsed) == {3: "invalid_ticker", 4: "invalid_ticker"}
    stocks = f"{STOCKS}\nBRK.B,1,2,2,2,2,{T0930},1\nI:SPX,1,2,2,2,2,{T0930},1\nBF.b,1,2,2,2,2,{T0930},1\n"
    parsed = parse(gz(tmp_path, stocks, "s.csv.gz"))
    assert quarantine(parsed) == {3: "invalid_ticker"}
