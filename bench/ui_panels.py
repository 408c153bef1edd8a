"""Benchmark: each panel of the Market data view, answered through Airflow's own API server app.

    python -m bench.ui_panels [--runs 5]

Uses the universe benchmark's data (``bench.backtest_universe``: synthetic stocks x the 252
sessions of 2024 of 1m bars, loaded once, with its 2.4-million-trade backtest run when that bench
has run) with the watchlist set to its first 50 stocks, a gap on a few of their cells and a file
loads ledger. The synthetic bars are COPYed in directly, so their counts are stored as the gap DAG
stores them (``bar_counts.refresh``, what a writer keeps for its own bars). Every panel is requested
as the browser does (a signed-in user's token, JSON out), ``--runs`` times; the median and the worst
are printed against the target: 500 ms a panel for 50 symbols x 1 year. The year of 1m coverage is
also timed with no counts stored (right after upgrading, before a gap run has stored any): for
reference, outside the target.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any

from bench import backtest_universe as universe
from sandbox.services import airflow_env

TARGET_MS = 500.0
SYMBOLS = 50


def _seed(db: Any, symbols: list[str], window: list[dt.date]) -> None:
    """The watchlist: the first 50 stocks only; two gaps (one open, one given up); the cells' counts."""
    from marketbars.market.calendar import session_hours
    from marketbars.market.timeframes import SOURCE_TIMEFRAMES
    from marketbars.warehouse import bar_counts

    with db.connect() as conn:
        conn.execute("TRUNCATE market.bar_counts")
        chosen = bar_counts.cells(symbols, [session_hours(d) for d in window], SOURCE_TIMEFRAMES)
        bar_counts.refresh(conn, dict.fromkeys(symbols, "stocks"), chosen)
        conn.execute("UPDATE market.watchlist SET active = false WHERE symbol <> ALL(%s)", (symbols,))
        conn.execute(
            """INSERT INTO market.watchlist (symbol, asset_class) SELECT s, 'stocks' FROM unnest(%s::text[]) s
               ON CONFLICT (symbol) DO UPDATE SET active = true""",
            (symbols,),
        )
        conn.execute("DELETE FROM market.backfill_gaps")
        conn.execute(
            """INSERT INTO market.backfill_gaps (symbol, timeframe, session_date, status, kind, expected,
                   found, attempts, last_error) VALUES
               (%s, '1m', %s, 'open', 'partial', 390, 300, 1, 'HTTP 502'),
               (%s, '1m', %s, 'unfillable', 'missing', 390, 0, 5, 'no bars in the answer')""",
            (symbols[0], window[10], symbols[1], window[20]),
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    scale = argparse.Namespace(symbols=200, sessions=252, workers=2)
    window, days = universe._window(scale)
    everyone = [f"U{i:03d}" for i in range(scale.symbols)]
    db = universe._database(scale, everyone, days)
    symbols = everyone[:SYMBOLS]
    _seed(db, symbols, window)
    os.environ["AIRFLOW_CONN_MARKET_DB"] = json.dumps(db.airflow_connection())
    # The API server's own metadata database (its token checks read it), kept between runs.
    os.environ.update(airflow_env(universe.ROOT / ".sandbox" / "bench-ui-airflow", universe.ROOT))
    subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], check=True, capture_output=True)

    from airflow.api_fastapi.app import create_app, get_auth_manager
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser
    from fastapi.testclient import TestClient

    with TestClient(create_app()) as client:
        token = get_auth_manager().generate_jwt(SimpleAuthManagerUser(username="admin", role="admin"))
        headers = {"Authorization": f"Bearer {token}"}
        runs = client.get("/market-data/api/backtests", headers=headers).json()["runs"]
        largest = next((r["run_id"] for r in runs if r["run_id"] == "bench-universe"), None)
        year = {"dataset": "stocks", "first": window[0].isoformat(), "last": window[-1].isoformat()}
        panels = {
            f"coverage, 1m, {SYMBOLS} x {len(window)} sessions": (
                "/market-data/api/coverage",
                year | {"timeframe": "1m"},
            ),
            f"coverage, 1d, {SYMBOLS} x {len(window)} sessions": (
                "/market-data/api/coverage",
                year | {"timeframe": "1d"},
            ),
            f"coverage, 1m, {SYMBOLS} x 63 sessions (the default)": (
                "/market-data/api/coverage",
                year | {"timeframe": "1m", "first": window[-63].isoformat()},
            ),
            "freshness (every dataset and timeframe)": ("/market-data/api/freshness", {}),
            "ledgers (gaps, loads, quarantine, actions)": ("/market-data/api/ledgers", {}),
            "backtests (the latest runs, staleness)": ("/market-data/api/backtests", {}),
        }
        if largest:
            panels["backtest: 2.4M-trade run's ranking, curves"] = (
                f"/market-data/api/backtests/{largest}",
                {},
            )
        results = {
            name: _timed(client, name, path, params, headers, args.runs)
            for name, (path, params) in panels.items()
        }
        with db.connect() as conn:
            conn.execute("TRUNCATE market.bar_counts")
        unstored = _timed(
            client, "unstored", "/market-data/api/coverage", year | {"timeframe": "1m"}, headers, args.runs
        )
    print(
        f"\nMarket data view, {SYMBOLS} stocks x {len(window)} sessions of 1m bars"
        f" ({window[0]}..{window[-1]}), {args.runs} requests a panel through the API server app"
    )
    print(f"{'panel':<48} {'median ms':>10} {'worst ms':>9}")
    for name, times in results.items():
        print(f"{name:<48} {statistics.median(times):>10.0f} {max(times):>9.0f}")
    reference = "(coverage, 1m, a year, no counts stored yet)"
    print(f"{reference:<48} {statistics.median(unstored):>10.0f} {max(unstored):>9.0f}")
    worst = max(statistics.median(t) for t in results.values())
    met = worst <= TARGET_MS
    print(f"target: every panel within {TARGET_MS:.0f} ms (median): {'met' if met else 'NOT met'}")
    if not met:
        sys.exit(1)


def _timed(
    client: Any, name: str, path: str, params: dict[str, str], headers: dict[str, str], runs: int
) -> list[float]:
    """Milliseconds of ``runs`` requests, after one that warms the connection and the caches."""
    times = []
    for _ in range(runs + 1):
        started = time.perf_counter()
        response = client.get(path, params=params, headers=headers)
        times.append((time.perf_counter() - started) * 1000)
        if response.status_code != 200:
            sys.exit(f"{name}: {response.status_code} {response.text[:300]}")
    return times[1:]


if __name__ == "__main__":
    main()
