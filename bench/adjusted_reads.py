"""Benchmark: reading bars through ``market.bars_adjusted`` against reading the table, side by side.

    python -m bench.adjusted_reads [--runs 5] [--symbols 50] [--sessions 252]

Loads (once, then reuses) ``--symbols`` stocks x ``--sessions`` XNYS sessions of regular-session 1m
bars (``bench.synthetic.generate_bars``; 50 x 252 = 4.9 million bars by default) into the embedded
PostgreSQL (or MARKETBARS_PG_URL), with corporate actions on them: one split on every other stock,
a second (a reverse split) on every fifth, and a quarterly cash dividend on each.

Then every run reads all the symbols' 1m bars of the window the way a backtest does
(``marketbars.warehouse.bars.read_bars``: COPY to Arrow, ordered by symbol and time, the columns
the engine uses), four ways, in a rotating order so no way always runs first:

* raw: ``market.historical_bars`` itself (symbol, timeframe and time range in the WHERE clause);
* none / splits / total_return: ``market.bars_adjusted(symbols, '1m', start, end, adjust)``.

Times are medians of --runs. The target: ``splits`` at most 1.3x raw. Before timing, the read is
checked: as many rows as raw, and a split-adjusted close equal to the raw one times its factor.
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import sys
import time
from collections.abc import Sequence
from typing import Any

from bench import synthetic

END = dt.date(2024, 12, 31)
DATA_VERSION = 2  # part of the database name: a change to the data loads afresh
TARGET_RATIO = 1.3
WAYS = ("raw", "none", "splits", "total_return")
COLUMNS = ("symbol", "ts", "open", "high", "low", "close", "volume")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--symbols", type=int, default=50)
    parser.add_argument("--sessions", type=int, default=252)
    return parser


def _actions(symbols: Sequence[str], days: Sequence[dt.date]) -> tuple[list[tuple], list[tuple]]:
    """Splits and dividends spread over the window: (symbol, day, split_from, split_to, type) and
    (symbol, ex-date, amount, id)."""
    splits, dividends = [], []
    for i, symbol in enumerate(symbols):
        if i % 2 == 0:
            splits.append((symbol, days[(37 * i) % len(days) or 1], 1, 2 + i % 3, "forward_split"))
        if i % 5 == 0:
            splits.append((symbol, days[(53 * i + 101) % len(days) or 1], 5, 1, "reverse_split"))
        for quarter in range(0, len(days) - 1, 63):
            dividends.append((symbol, days[quarter + 1 + i % 60], f"0.{10 + i:02d}", f"{symbol}-{quarter}"))
    return splits, dividends


def _loaded_database(args: argparse.Namespace, symbols: list[str], days: list[dt.date]) -> Any:
    """The bench's database: every symbol's 1m bars and the splits and dividends, loaded once."""
    bars = len(symbols) * synthetic.bars_per_symbol(days)[0]
    splits, dividends = _actions(symbols, days)
    return synthetic.database_loaded_once(
        f"bench_adjusted_{args.symbols}x{args.sessions}_{END:%Y%m%d}_v{DATA_VERSION}",
        f"{len(symbols)} symbols x {len(days)} sessions of 1m bars ({bars:,}) and their actions",
        _held,
        (bars, len(splits), len(dividends)),
        lambda conn: _load(conn, symbols, days),
    )


def _held(conn: Any) -> tuple[int, int, int]:
    """Bars, splits and dividends: the bars and the actions are loaded in transactions of their own."""
    row = conn.execute(
        """SELECT (SELECT count(*) FROM market.historical_bars), (SELECT count(*) FROM market.splits),
                  (SELECT count(*) FROM market.dividends)"""
    ).fetchone()
    return (int(row[0]), int(row[1]), int(row[2])) if row else (0, 0, 0)


def _load(conn: Any, symbols: list[str], days: list[dt.date]) -> None:
    splits, dividends = _actions(symbols, days)
    synthetic.load_minute_bars(conn, symbols, days)
    with conn.transaction(), conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO market.splits (symbol, execution_date, split_from, split_to, adjustment_type)"
            " VALUES (%s, %s, %s, %s, %s)",
            splits,
        )
        cur.executemany(
            "INSERT INTO market.dividends (symbol, ex_dividend_date, distribution_type, cash_amount,"
            " currency, source_id) VALUES (%s, %s, 'recurring', %s, 'USD', %s)",
            dividends,
        )


def _read(conn: Any, way: str, symbols: list[str], window: tuple[dt.datetime, dt.datetime]) -> Any:
    from psycopg import sql

    from marketbars.warehouse.bars import ADJUSTED, read_bars

    with conn.cursor() as cur:
        if way == "raw":
            where = sql.SQL("symbol = ANY(%s) AND timeframe = '1m' AND ts >= %s AND ts < %s")
            return read_bars(cur, where, (symbols, *window), columns=COLUMNS, ordered=True)
        params = (symbols, "1m", *window, way, False)
        return read_bars(cur, sql.SQL("true"), params, columns=COLUMNS, ordered=True, source=ADJUSTED)


def _check(conn: Any, symbols: list[str], window: tuple[dt.datetime, dt.datetime]) -> str:
    """The adjusted read agrees with the raw one: rows, and one split's factor on one bar."""
    raw, adjusted = _read(conn, "raw", symbols, window), _read(conn, "splits", symbols, window)
    if raw.num_rows != adjusted.num_rows or raw["ts"] != adjusted["ts"]:
        sys.exit(f"the adjusted read has {adjusted.num_rows:,} rows, the raw one {raw.num_rows:,}")
    symbol, day, split_from, split_to = conn.execute(
        "SELECT symbol, execution_date, split_from, split_to FROM market.splits"
        " WHERE symbol = ANY(%s) ORDER BY symbol, execution_date LIMIT 1",
        (symbols,),
    ).fetchone()
    later = conn.execute(
        "SELECT coalesce(exp(sum(ln(split_from / split_to))), 1) FROM market.splits"
        " WHERE symbol = %s AND execution_date >= %s",
        (symbol, day),
    ).fetchone()[0]
    index = raw["symbol"].to_pylist().index(symbol)  # the symbol's first bar: before its splits
    expected = raw["close"][index].as_py() * float(later)
    got = adjusted["close"][index].as_py()
    if abs(got / expected - 1) > 1e-12:
        sys.exit(f"{symbol}: adjusted close {got}, expected {expected} (raw x {later})")
    return f"{symbol} {split_to}-for-{split_from} on {day}: first close {raw['close'][index]} -> {got:.6g}"


def main() -> None:
    args = _parser().parse_args()
    from marketbars.market import calendar

    days = calendar.sessions_between(END - dt.timedelta(days=2 * args.sessions), END)[-args.sessions :]
    symbols = [f"AR{i:02d}" for i in range(args.symbols)]
    db = _loaded_database(args, symbols, days)
    window = (calendar.day_window(days[0])[0], calendar.day_window(days[-1])[1])
    times: dict[str, list[float]] = {way: [] for way in WAYS}
    with db.connect() as conn:
        conn.execute("SET extra_float_digits = 1")
        checked = _check(conn, symbols, window)
        rows = 0
        for run in range(args.runs):
            order = WAYS[run % len(WAYS) :] + WAYS[: run % len(WAYS)]
            for way in order:
                started = time.perf_counter()
                table = _read(conn, way, symbols, window)
                times[way].append(time.perf_counter() - started)
                rows = table.num_rows
            print(
                f"run {run + 1}/{args.runs}: " + ", ".join(f"{w} {times[w][-1]:.2f} s" for w in WAYS),
                flush=True,
            )
    raw = statistics.median(times["raw"])
    print(f"\n{len(symbols)} symbols x {len(days)} sessions ({days[0]}..{days[-1]}), {rows:,} 1m bars a read")
    print(f"checked: {checked}")
    print(f"{'read':<40} {'median s':>9} {'bars/s':>12} {'x raw':>7}")
    for way in WAYS:
        median = statistics.median(times[way])
        name = "market.historical_bars" if way == "raw" else f"bars_adjusted(adjust => '{way}')"
        print(f"{name:<40} {median:>9.2f} {rows / median:>12,.0f} {median / raw:>7.2f}")
    ratio = statistics.median(times["splits"]) / raw
    verdict = "met" if ratio <= TARGET_RATIO else "NOT met"
    print(f"target: adjust => 'splits' at most {TARGET_RATIO}x the raw read: {ratio:.2f}x, {verdict}")
    if ratio > TARGET_RATIO:
        sys.exit(1)


if __name__ == "__main__":
    main()
