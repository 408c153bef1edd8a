"""Benchmark: the completeness check over 50 symbols x 1 year of minute bars, against a naive baseline.

    python -m bench.gap_detection [--runs 3]

Loads (once, then reuses) 50 synthetic symbols x the 252 XNYS sessions of 2024: 40 liquid (bars in
most extended-hours minutes) and 10 thin, plus their daily bars, about 10M rows. Then, side by side:

* project: ``marketbars.pipelines.gaps.tasks.evaluate`` (the one-pass count over the primary key,
  the vendor-empty lookup and the classification of all 25,200 cells), and its EXPLAIN ANALYZE;
* baseline: one ``count(*)`` query per cell (symbol x timeframe x session), as a naive check would.

Target: the detection under 5 s, planned on the primary key.
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
from psycopg import sql

ROOT = Path(__file__).resolve().parents[1]
YEAR = (dt.date(2024, 1, 2), dt.date(2024, 12, 31))
SYMBOLS = [f"LQ{i:02d}" for i in range(40)] + [f"TH{i:02d}" for i in range(10)]


def _load(conn, sessions) -> int:
    from marketbars.market.bars import BAR_SCHEMA
    from marketbars.market.calendar import NEW_YORK
    from marketbars.warehouse import partitions
    from marketbars.warehouse.bars import COPY_SCHEMA, copy_rows
    from marketbars.warehouse.copy import copy_in

    rng = np.random.default_rng(7)
    partitions.ensure_partitions(conn, sessions[0], sessions[-1])
    liquidity = np.array([0.97] * 40 + [0.04] * 10)
    with conn.transaction(), conn.cursor() as cur:
        for day in sessions:
            first = dt.datetime.combine(day, dt.time(4), NEW_YORK)
            grid = int(first.timestamp()) * 1_000_000 + np.arange(960, dtype=np.int64) * 60_000_000
            present = rng.random((len(SYMBOLS), 960)) < liquidity[:, None]
            which, minute = np.nonzero(present)
            n = len(which)
            price = 50 + rng.random(n)
            minutes = pa.table(
                {
                    "symbol": pa.array(SYMBOLS).take(pa.array(which)),
                    "ts": pa.array(grid[minute]).cast(pa.timestamp("us", tz="UTC")),
                    "open": price,
                    "high": price + 0.05,
                    "low": price - 0.05,
                    "close": price,
                    "volume": rng.integers(1, 1000, n).astype(float),
                    "vwap": pa.nulls(n, pa.float64()),
                    "trades": rng.integers(1, 50, n),
                }
            )
            daily = pa.table(
                {
                    "symbol": SYMBOLS,
                    "ts": pa.array([int(first.timestamp() - 4 * 3600) * 1_000_000] * len(SYMBOLS)).cast(
                        pa.timestamp("us", tz="UTC")
                    ),
                    "open": [50.0] * len(SYMBOLS),
                    "high": [51.0] * len(SYMBOLS),
                    "low": [49.0] * len(SYMBOLS),
                    "close": [50.0] * len(SYMBOLS),
                    "volume": [1e5] * len(SYMBOLS),
                    "vwap": pa.nulls(len(SYMBOLS), pa.float64()),
                    "trades": [100] * len(SYMBOLS),
                }
            )
            for table, tf in ((minutes, "1m"), (daily, "1d")):
                copy_in(
                    cur,
                    sql.SQL("market.historical_bars"),
                    COPY_SCHEMA,
                    copy_rows(table.cast(BAR_SCHEMA), tf, "flatfile"),
                )
    conn.execute("VACUUM (ANALYZE) market.historical_bars")
    (rows,) = conn.execute("SELECT count(*) FROM market.historical_bars").fetchone()
    return int(rows)


def _baseline(conn, sessions) -> float:
    started = time.perf_counter()
    for symbol in SYMBOLS:
        for timeframe in ("1m", "1d"):
            for hours in sessions:
                conn.execute(
                    "SELECT count(*) FROM market.historical_bars WHERE symbol = %s AND timeframe = %s"
                    " AND ts >= %s AND ts < %s",
                    (symbol, timeframe, hours.open, hours.close),
                ).fetchone()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()

    from marketbars.market import calendar
    from marketbars.pipelines.gaps import rules, tasks
    from marketbars.warehouse import migrations
    from marketbars.warehouse.connection import one
    from sandbox.services import start_postgres

    server = start_postgres(ROOT / ".sandbox" / "pg")
    db = server.with_database("bench_gaps")
    with server.connect() as admin:
        exists = admin.execute("SELECT 1 FROM pg_database WHERE datname = 'bench_gaps'").fetchone()
    if not exists:
        server.create_database("bench_gaps")
    days = calendar.sessions_between(*YEAR)
    sessions = [calendar.session_hours(d) for d in days]
    classes = dict.fromkeys(SYMBOLS, "stocks")
    with db.connect() as conn:
        migrations.migrate(conn)
        (rows,) = one(conn, "SELECT count(*) FROM market.historical_bars")
        if rows == 0:
            print("loading 50 symbols x 252 sessions of minute and daily bars (once) ...", flush=True)
            started = time.perf_counter()
            rows = _load(conn, days)
            print(f"  {rows:,} rows in {time.perf_counter() - started:.0f} s", flush=True)
        settings = rules.Settings()
        project = []
        for _ in range(args.runs):
            started = time.perf_counter()
            cells = tasks.evaluate(conn, classes, days, settings)
            project.append(time.perf_counter() - started)
        plan = _explain(conn, sessions)
        baseline = _baseline(conn, sessions)
    states = {s: sum(1 for c in cells if c.state == s) for s in rules.STATES}
    median = statistics.median(project)
    print(
        f"\n{len(SYMBOLS)} symbols x {len(days)} sessions (2024) x 2 timeframes"
        f" = {len(cells):,} cells over {rows:,} bars"
    )
    print(f"{'method':<44} {'seconds':>8}")
    print(
        f"{'project: evaluate() (one pass, classification)':<44} {median:>8.2f}"
        f"   runs {[round(t, 2) for t in project]}"
    )
    print(f"{'baseline: one count query per cell':<44} {baseline:>8.2f}   ({baseline / median:.1f}x slower)")
    print(f"cells by state: {states}")
    print("\nEXPLAIN (ANALYZE) of the count, first lines:")
    print("\n".join("  " + line for line in plan[:12]))
    uses_pk = any("Index Only Scan using historical_bars_2024" in line and "_pkey" in line for line in plan)
    print(f"\n  {'MET ' if median < 5 else 'MISS'}  detection under 5 s")
    print(f"  {'MET ' if uses_pk else 'MISS'}  planned on the primary key (index only scan)")


def _explain(conn, sessions) -> list[str]:
    from marketbars.warehouse import bar_counts

    args = bar_counts.count_cells_args(bar_counts.cells(SYMBOLS, sessions))
    return [r[0] for r in conn.execute("EXPLAIN (ANALYZE, COSTS OFF) " + bar_counts.COUNT_CELLS, args)]


if __name__ == "__main__":
    main()
