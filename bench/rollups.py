"""Benchmark: derived bars (5m, 15m, 1h, 4h) for one full-universe minute day, against a naive baseline.

    python -m bench.rollups [--runs 3] [--rows 1800000]

Loads (once, then reuses) one synthetic full-universe stock minute day in the vendor's format
(~1.8M bars, ~8,000 tickers) into the embedded PostgreSQL (or MARKETBARS_PG_URL), then, side by side:

* project: ``marketbars.warehouse.rollup_rebuilds.rebuild_rollups`` for every ticker of the session,
  what the load operator runs after a minute file: the regular-session 1m bars streamed out as CSV
  into Arrow, rolled up with numpy and COPYed, one transaction. Twice: the first build (no derived
  bars yet: the derived bars are deleted and VACUUMed before each run, outside the clock), and a
  rebuild over unchanged minutes (the merge finds nothing to rewrite);
* baseline: a naive per-symbol SQL loop: for each ticker one ``INSERT ... SELECT date_bin(...)``
  with ordered aggregates for the four timeframes, ``ON CONFLICT DO UPDATE``;
* baseline, set-based: the same statement once for every ticker (what a careful SQL-only
  implementation would do).

Both results are compared bar for bar (timestamps, OHLC, volume, trades). Target: all four
timeframes for the day's bars in under 5 s.
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SESSION_TEXT = "2024-03-05"
TARGET_S = 5.0

# One ticker's derived bars the naive way: date_bin from the open, ordered aggregates, an upsert.
BASELINE_SQL = """
INSERT INTO market.historical_bars AS b
SELECT m.symbol, f.timeframe, date_bin(f.step, m.ts, %(open)s) AS bucket,
       (array_agg(m.open ORDER BY m.ts))[1], max(m.high), min(m.low),
       (array_agg(m.close ORDER BY m.ts DESC))[1], sum(m.volume ORDER BY m.ts),
       sum(m.vwap * m.volume ORDER BY m.ts) FILTER (WHERE m.vwap IS NOT NULL)
           / NULLIF(sum(m.volume ORDER BY m.ts) FILTER (WHERE m.vwap IS NOT NULL), 0),
       sum(m.trades)::bigint, 'rollup'
FROM market.historical_bars m
CROSS JOIN (VALUES ('5m', interval '5 minutes'), ('15m', interval '15 minutes'),
                   ('1h', interval '1 hour'), ('4h', interval '4 hours')) AS f(timeframe, step)
WHERE (%(symbol)s::text IS NULL OR m.symbol = %(symbol)s)
  AND m.timeframe = '1m' AND m.ts >= %(open)s AND m.ts < %(close)s
GROUP BY m.symbol, f.timeframe, bucket
ON CONFLICT (symbol, timeframe, ts) DO UPDATE SET
    open = EXCLUDED.open, high = EXCLUDED.high, low = EXCLUDED.low, close = EXCLUDED.close,
    volume = EXCLUDED.volume, vwap = EXCLUDED.vwap, trades = EXCLUDED.trades, source = EXCLUDED.source
"""
SNAPSHOT_SQL = """
SELECT symbol, timeframe, ts, open, high, low, close, volume, trades FROM market.historical_bars
WHERE timeframe IN ('5m', '15m', '1h', '4h')"""


def _load_day(conn, server_dir: Path, rows: int) -> int:
    import datetime as dt

    from marketbars.market.provenance import FileVersion
    from marketbars.massive.csv_reader import FlatFileReader
    from marketbars.warehouse import file_loads, partitions
    from sandbox import market

    session = dt.date.fromisoformat(SESSION_TEXT)
    body, _ = market.full_universe_minute_file(session, target_rows=rows)
    path = server_dir / f"rollup-bench-{session}-{rows}.csv.gz"
    path.write_bytes(body)
    version = FileVersion(
        "stocks", "1m", session, f"us_stocks_sip/minute_aggs_v1/2024/03/{session}.csv.gz",
        hashlib.md5(body).hexdigest(), len(body),
    )  # fmt: skip
    partitions.ensure_partitions(conn, session, session)
    reader = FlatFileReader(path, dataset="stocks", timeframe="1m", session=session, symbols=["*"])
    counts = file_loads.replace_session(conn, version, ["*"], reader)
    path.unlink()
    conn.execute("VACUUM (ANALYZE) market.historical_bars")
    return counts.rows_loaded


def _baseline(conn, hours) -> tuple[float, int]:
    symbols = [
        s
        for (s,) in conn.execute(
            "SELECT DISTINCT symbol FROM market.historical_bars"
            " WHERE timeframe = '1m' AND ts >= %s AND ts < %s",
            (hours.open, hours.close),
        )
    ]
    conn.execute("DELETE FROM market.historical_bars WHERE source = 'rollup'")
    started = time.perf_counter()
    with conn.transaction(), conn.cursor() as cur:
        for symbol in symbols:
            cur.execute(BASELINE_SQL, {"symbol": symbol, "open": hours.open, "close": hours.close})
    return time.perf_counter() - started, len(symbols)


def _baseline_set_based(conn, hours) -> float:
    conn.execute("DELETE FROM market.historical_bars WHERE source = 'rollup'")
    conn.execute("VACUUM (ANALYZE) market.historical_bars")
    started = time.perf_counter()
    conn.execute(BASELINE_SQL, {"symbol": None, "open": hours.open, "close": hours.close})
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--rows", type=int, default=1_800_000, help="target rows in the synthetic day")
    args = parser.parse_args()

    import datetime as dt

    from marketbars.market import calendar
    from marketbars.warehouse import migrations, rollup_rebuilds
    from marketbars.warehouse.connection import one
    from sandbox.services import start_postgres

    session = dt.date.fromisoformat(SESSION_TEXT)
    hours = calendar.session_hours(session)
    work = ROOT / ".sandbox"
    work.mkdir(exist_ok=True)
    server = start_postgres(work / "pg")
    name = f"bench_rollups_{args.rows}"
    with server.connect() as admin:
        exists = admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
    if not exists:
        server.create_database(name)
    with server.with_database(name).connect() as conn:
        migrations.migrate(conn)
        (minutes,) = one(conn, "SELECT count(*) FROM market.historical_bars WHERE timeframe = '1m'")
        if minutes == 0:
            print(f"loading a synthetic full-universe minute day ({args.rows:,} rows, once) ...", flush=True)
            minutes = _load_day(conn, work, args.rows)
        project, rebuild = [], []
        for _ in range(args.runs):
            conn.execute("DELETE FROM market.historical_bars WHERE source = 'rollup'")
            conn.execute("VACUUM (ANALYZE) market.historical_bars")
            started = time.perf_counter()
            counts = rollup_rebuilds.rebuild_rollups(conn, "stocks", session, ["*"])
            project.append(time.perf_counter() - started)
            started = time.perf_counter()
            again = rollup_rebuilds.rebuild_rollups(conn, "stocks", session, ["*"])
            rebuild.append(time.perf_counter() - started)
            assert again.replaced == 0 and again.derived_bars == counts.derived_bars
        ours = set(conn.execute(SNAPSHOT_SQL))
        conn.execute("DELETE FROM market.historical_bars WHERE source = 'rollup'")
        conn.execute("VACUUM (ANALYZE) market.historical_bars")
        baseline, symbols = _baseline(conn, hours)
        theirs = set(conn.execute(SNAPSHOT_SQL))
        set_based = _baseline_set_based(conn, hours)
        same_set = set(conn.execute(SNAPSHOT_SQL)) == ours
        rollup_rebuilds.rebuild_rollups(conn, "stocks", session, ["*"])  # leave the project's bars in place

    median, rebuilt = statistics.median(project), statistics.median(rebuild)
    derived = sum(counts.derived_bars.values())
    print(
        f"\n{session}: {minutes:,} 1m bars of {symbols:,} tickers, of which {counts.minute_bars:,} in the"
        f" regular session -> {derived:,} derived bars ({counts.derived_bars})"
    )
    print(f"{'method':<58} {'seconds':>8} {'1m bars/s':>11}")
    print(
        f"{'project: rebuild_rollups, first build (read, roll up, COPY)':<58} {median:>8.2f}"
        f" {counts.minute_bars / median:>11,.0f}   runs {[round(t, 2) for t in project]}"
    )
    print(
        f"{'project: rebuild_rollups again, minutes unchanged (merge)':<58} {rebuilt:>8.2f}"
        f" {counts.minute_bars / rebuilt:>11,.0f}   runs {[round(t, 2) for t in rebuild]}"
    )
    print(
        f"{'baseline: per-symbol INSERT ... SELECT date_bin, upsert':<58} {baseline:>8.2f}"
        f" {counts.minute_bars / baseline:>11,.0f}   ({baseline / median:.1f}x slower)"
    )
    print(
        f"{'baseline: the same statement once, set-based':<58} {set_based:>8.2f}"
        f" {counts.minute_bars / set_based:>11,.0f}   ({set_based / median:.1f}x slower)"
    )
    same = ours == theirs and same_set
    print(f"\nresults identical bar for bar (ts, OHLC, volume, trades): {same} ({len(ours):,} bars)")
    print(f"  {'MET ' if median < TARGET_S else 'MISS'}  all four timeframes under {TARGET_S:.0f} s")
    if not same:
        raise SystemExit(f"the two methods disagree on {len(ours ^ theirs):,} bars")


if __name__ == "__main__":
    main()
