"""Benchmark: a walk-forward parameter search through the DAG's own task bodies.

    python -m bench.backtest_search [--symbols 50] [--workers 2]

Reuses the universe benchmark's data (``bench.backtest_universe``: synthetic stocks x the sessions
of 2024 of 1m bars, loaded once) and builds the first ``--symbols`` stocks' 5m bars from them once
(``rebuild_rollups``, as the load operators do). Then one ``backtest_run`` of ``breakout_bullish``
on 5m bars with a search of 100 grid points (``lookback`` 10 values x ``volume_multiple`` 10
values) over 3 walk-forward folds, the way Airflow runs it: ``plan``, ``run_batch`` and
``plan_search`` in this process, every ``search_batch`` instance in a process of its own
(``bench.task_processes``), ``--workers`` at a time, then ``report_and_rank``. It prints the
search's time and points per second, and the verdict's head.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from bench import backtest_universe as universe
from bench import task_processes

LOOKBACKS = [5, 10, 15, 20, 25, 30, 40, 50, 60, 80]
VOLUME_MULTIPLES = [1.0, 1.1, 1.2, 1.3, 1.5, 1.7, 2.0, 2.5, 3.0, 4.0]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--symbols", type=int, default=50)
    parser.add_argument("--workers", type=int, default=2)
    return parser


def _with_rollups(db: Any, symbols: list[str], days: list[dt.date]) -> None:
    """The symbols' 5m bars, built once from their 1m bars."""
    from marketbars.warehouse.rollup_rebuilds import rebuild_rollups

    with db.connect() as conn:
        (have,) = conn.execute(
            "SELECT count(DISTINCT symbol) FROM market.historical_bars"
            " WHERE timeframe = '5m' AND symbol = ANY(%s)",
            (symbols,),
        ).fetchone() or (0,)
        if have == len(symbols):
            return
        print(f"building the 5m bars of {len(symbols)} symbols once ...", flush=True)
        started = time.perf_counter()
        for day in days:
            rebuild_rollups(conn, "stocks", day, symbols)
        conn.execute("VACUUM (ANALYZE) market.historical_bars")
        print(f"  done in {time.perf_counter() - started:.0f} s", flush=True)


def main() -> None:
    args = _parser().parse_args()
    scale = argparse.Namespace(symbols=max(args.symbols, 200), sessions=252, workers=args.workers)
    window, days = universe._window(scale)
    everyone = [f"U{i:03d}" for i in range(scale.symbols)]
    db = universe._database(scale, everyone, days)
    symbols = everyone[: args.symbols]
    _with_rollups(db, symbols, days)
    os.environ["AIRFLOW_CONN_MARKET_DB"] = json.dumps(db.airflow_connection())
    with tempfile.TemporaryDirectory(prefix="bench-search-") as reports:
        os.environ["AIRFLOW_VAR_MARKET_BACKTEST_REPORTS_DIR"] = reports
        _measure(args, window, symbols)


def _measure(args: argparse.Namespace, window: list[dt.date], symbols: list[str]) -> None:
    params = universe._params(symbols, window) | {
        "timeframe": "5m",
        "detectors": ["breakout_bullish"],
        "search": {
            "detector": "breakout_bullish",
            "parameters": {"lookback": LOOKBACKS, "volume_multiple": VOLUME_MULTIPLES},
            "folds": 3,
        },
    }

    from marketbars.pipelines.backtest import tasks

    run = SimpleNamespace(run_id="bench-search", logical_date=None, run_after=dt.datetime.now(dt.UTC))
    planned = tasks.plan(params, run)
    results = [tasks.run_batch(b["symbols"], run.run_id) for b in planned]
    started = time.perf_counter()
    work = tasks.plan_search(planned, run.run_id)
    searched = task_processes.run(
        tasks.search_batch, [w | {"run_id": run.run_id} for w in work], args.workers
    )
    searching = time.perf_counter()
    report = tasks.report_and_rank(params, run.run_id, planned, results, work, searched)
    finished = time.perf_counter()

    points = len(LOOKBACKS) * len(VOLUME_MULTIPLES)
    seconds = searching - started
    verdict = json.loads((Path(report["report_dir"]) / "search.json").read_text())
    print(
        f"\n{points} points of breakout_bullish x 3 walk-forward folds, {len(symbols)} stocks x {len(window)}"
        f" sessions of 5m bars ({window[0]}..{window[-1]}), {len(work)} search_batch task(s),"
        f" {args.workers} at a time"
    )
    print(
        f"search (plan_search, every search_batch; wall clock): {seconds:.2f} s ="
        f" {points / seconds:.2f} points/s"
    )
    print(f"  inside the tasks, summed: {sum(r['seconds'] for r in searched):.2f} s;"
          f" peak RSS per task at most {max(r['rss'] for r in searched):.0f} MB")  # fmt: skip
    print(f"report_and_rank with the verdict: {finished - searching:.2f} s")
    best = verdict["ranking"][0]
    print(
        f"best out of sample: lookback {best['parameters']['lookback']:g}, volume_multiple"
        f" {best['parameters']['volume_multiple']:g}: {best['out_of_sample']['expectancy_r']} R a trade"
        f" ({best['out_of_sample']['trades']} trades); walk-forward {verdict['walk_forward']};"
        f" warnings {verdict['warnings']}"
    )


if __name__ == "__main__":
    main()
