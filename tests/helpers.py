"""Independent readings of the source and the warehouse, for exact comparisons in tests."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import psycopg

from sandbox.market import SampleFile
from sandbox.services import S3Server

EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
Bar = tuple  # (symbol, ts, open, high, low, close, volume, trades, vwap, source)


def publish(s3: S3Server, *files: SampleFile | None) -> None:
    client = s3.client()
    for sample in files:
        assert sample is not None, "the sample market has no file for that day"
        client.put_object(Bucket=s3.bucket, Key=sample.key, Body=sample.body)


def expected_bars(sample: SampleFile, symbols: Iterable[str] | None = None) -> set[Bar]:
    """The bars a correct load must produce, read from the file's text with plain Python."""
    header = sample.header
    bars = set()
    for fields in sample.expected_rows(symbols):
        row = dict(zip(header, fields, strict=True))
        ts = EPOCH + dt.timedelta(microseconds=int(row["window_start"]) // 1000)
        volume = float(row["volume"]) if "volume" in row else None
        trades = int(row["transactions"]) if "transactions" in row else None
        prices = (float(row["open"]), float(row["high"]), float(row["low"]), float(row["close"]))
        bars.add((row["ticker"], ts, *prices, volume, trades, None, "flatfile"))
    return bars


def warehouse_bars(
    conn: psycopg.Connection,
    timeframe: str = "1m",
    day: dt.date | None = None,
    symbols: Iterable[str] | None = None,
) -> set[Bar]:
    query = (
        "SELECT symbol, ts, open, high, low, close, volume, trades, vwap, source FROM market.historical_bars"
        " WHERE timeframe = %s"
        " AND (%s::date IS NULL OR (ts AT TIME ZONE 'America/New_York')::date = %s::date)"
        " AND (%s::text[] IS NULL OR symbol = ANY(%s::text[]))"
    )
    symbol_list = None if symbols is None else sorted(symbols)
    rows = conn.execute(query, (timeframe, day, day, symbol_list, symbol_list)).fetchall()
    return {tuple(row) for row in rows}


def counted_bars(conn: psycopg.Connection) -> dict[tuple[str, str, dt.date], tuple[int, int]]:
    """(regular, total) of every session cell with source-timeframe bars, counted here in Python."""
    from marketbars.market.calendar import NEW_YORK, is_session, session_hours

    counts: dict[tuple[str, str, dt.date], tuple[int, int]] = {}
    rows = conn.execute(
        "SELECT symbol, timeframe, ts FROM market.historical_bars WHERE timeframe IN ('1m', '1d')"
    ).fetchall()
    for symbol, timeframe, ts in rows:
        day = ts.astimezone(NEW_YORK).date()
        if not is_session(day):
            continue
        hours = session_hours(day)
        regular, total = counts.get((symbol, timeframe, day), (0, 0))
        inside = timeframe == "1d" or hours.open <= ts < hours.close
        counts[(symbol, timeframe, day)] = (regular + inside, total + 1)
    return counts


def stored_counts(conn: psycopg.Connection) -> dict[tuple[str, str, dt.date], tuple[int, int]]:
    """The cells ``market.bar_counts`` holds with bars (a stored zero is a known empty cell)."""
    rows = conn.execute(
        "SELECT symbol, timeframe, session_date, regular, total FROM market.bar_counts WHERE total > 0"
    ).fetchall()
    return {(symbol, tf, day): (regular, total) for symbol, tf, day, regular, total in rows}


def quarantined_lines(conn: psycopg.Connection, key: str) -> dict[int, str]:
    rows = conn.execute(
        "SELECT line_number, reason FROM market.quarantine WHERE s3_key = %s", (key,)
    ).fetchall()
    return dict(rows)


def write(path: Path, sample: SampleFile) -> Path:
    path.write_bytes(sample.body)
    return path


def load_file(conn: psycopg.Connection, tmp: Path, sample: SampleFile, symbols: list[str]) -> None:
    """Load a sample file straight into the warehouse, recorded with the ETag S3 gives it (its MD5)."""
    import hashlib

    from marketbars.market.provenance import FileVersion
    from marketbars.massive.csv_reader import FlatFileReader
    from marketbars.warehouse import file_loads, partitions

    path = tmp / f"{sample.dataset}-{sample.timeframe}-{sample.session}-{len(sample.body)}.csv.gz"
    path.write_bytes(sample.body)
    version = FileVersion(
        sample.dataset, sample.timeframe, sample.session, sample.key, hashlib.md5(sample.body).hexdigest(),
        len(sample.body),
    )  # fmt: skip
    partitions.ensure_partitions(conn, sample.session, sample.session)
    reader = FlatFileReader(
        path, dataset=sample.dataset, timeframe=sample.timeframe, session=sample.session, symbols=symbols
    )
    file_loads.replace_session(conn, version, symbols, reader)


ROLLUP_WIDTHS = {"5m": 5, "15m": 15, "1h": 60, "4h": 240}


def reference_rollups(bars: Iterable[Bar], session: dt.date, close: dt.time = dt.time(16)) -> dict[str, set]:
    """Derived bars by the README's convention, computed independently of ``marketbars.market.rollups``:
    a plain loop over (symbol, ts, open, high, low, close, volume, trades, vwap, ...) tuples,
    bucketed by the New York wall clock from 09:30, sums added in time order."""
    from zoneinfo import ZoneInfo

    new_york = ZoneInfo("America/New_York")
    open_local = dt.datetime.combine(session, dt.time(9, 30), new_york)
    close_local = dt.datetime.combine(session, close, new_york)
    ordered = sorted(bars, key=lambda bar: (bar[0], bar[1]))
    derived: dict[str, set] = {}
    for timeframe, width in ROLLUP_WIDTHS.items():
        buckets: dict[tuple[str, dt.datetime], list[Bar]] = {}
        for bar in ordered:
            local = bar[1].astimezone(new_york)
            if not open_local <= local < close_local:
                continue
            minutes = local.hour * 60 + local.minute - (9 * 60 + 30)
            start = open_local + dt.timedelta(minutes=minutes // width * width)
            buckets.setdefault((bar[0], start.astimezone(dt.UTC)), []).append(bar)
        rows = set()
        for (symbol, start), group in buckets.items():
            volume = trades = None
            weight = notional = 0.0
            weighted = False
            for bar in group:
                if bar[6] is not None:
                    volume = (0.0 if volume is None else volume) + bar[6]
                if bar[7] is not None:
                    trades = (0 if trades is None else trades) + bar[7]
                if bar[8] is not None and bar[6] is not None:
                    weight += bar[6]
                    notional += bar[8] * bar[6]
                    weighted = True
            vwap = notional / weight if weighted and weight != 0 else None
            high = max(bar[3] for bar in group)
            low = min(bar[4] for bar in group)
            rows.add((symbol, start, group[0][2], high, low, group[-1][5], volume, trades, vwap))
        derived[timeframe] = rows
    return derived


def download(
    s3: S3Server, download_dir: Path, sessions: list[str], dataset: str = "stocks"
) -> list[dict[str, Any]]:
    """The download operator's result for these sessions' minute files."""
    from marketbars.operators.flatfile_download import FlatFileDownloadOperator

    op = FlatFileDownloadOperator(
        task_id="download", dataset=dataset, timeframe="1m", sessions=sessions, bucket=s3.bucket,
        download_dir=str(download_dir),
    )  # fmt: skip
    return op.execute({})


def load(
    s3: S3Server, download_dir: Path, files: list[dict[str, Any]], symbols: list[str], dataset: str = "stocks"
):
    """The load operator's result for these downloaded files."""
    from marketbars.operators.flatfile_load import FlatFileLoadOperator

    op = FlatFileLoadOperator(
        task_id="load", dataset=dataset, timeframe="1m", files=files, symbols=symbols, bucket=s3.bucket,
        download_dir=str(download_dir),
    )  # fmt: skip
    return op.execute({"run_id": "test-run"})


def fill(
    symbol: str,
    sessions: dict[str, list[dt.date]],
    *,
    per_minute: float = 6000,
    dataset: str = "stocks",
    patch: bool = False,
):
    """The REST fill operator's result for one symbol's sessions, per timeframe."""
    from marketbars.operators.rest_fill import RestFillOperator

    op = RestFillOperator(
        task_id="rest_fill",
        symbol=symbol,
        dataset=dataset,
        sessions={tf: [d.isoformat() for d in days] for tf, days in sessions.items()},
        requests_per_minute=per_minute,
        patch_flatfile_sessions=patch,
    )
    return op.execute({"run_id": "test"})


def expected_rest(symbol: str, timeframe: str, days: list[dt.date]) -> set[tuple]:
    """The bars a REST fill must store, read from the loopback server's answers."""
    from sandbox import market

    rows = set()
    for day in days:
        for r in market.rest_results(symbol, timeframe, day)[0]:
            ts = EPOCH + dt.timedelta(milliseconds=r["t"])
            rows.add(
                (symbol, ts, r["o"], r["h"], r["l"], r["c"], r.get("v"), r.get("n"), r.get("vw"), "rest")
            )
    return rows
