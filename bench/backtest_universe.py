"""Benchmark: backtest_run at universe scale, all detectors, through the DAG's own task bodies.

    python -m bench.backtest_universe [--symbols 200] [--sessions 252] [--workers 2]

Loads (once, then reuses) ``--symbols`` synthetic stocks x ``--sessions`` XNYS sessions of
regular-session 1m bars (``bench.synthetic.generate_bars``; 200 x 252 = 19.7 million bars by
default, plus the warm-up sessions before the window) into the embedded PostgreSQL (or
MARKETBARS_PG_URL). Then it runs one backtest of every detector on 1m bars the way Airflow would:

* ``marketbars.pipelines.backtest.tasks.plan`` (validate, record the run, the data version, the
  batches sized by bars);
* ``tasks.run_batch`` for each batch, each in a process of its own forked from one with Airflow
  loaded (``bench.task_processes``, as a worker runs a task), ``--workers`` at a time (the DAG's
  ``max_active_tis_per_dagrun``); each reports its own peak RSS (VmHWM);
* ``tasks.report_and_rank`` (the all-symbol rows combined from every stored trade, the figure,
  summary.json, metrics.csv and trades.parquet).

The connection is ``AIRFLOW_CONN_MARKET_DB`` and the report folder an ``AIRFLOW_VAR_``, as a
deployment sets them. Targets: under 60 s end to end, and at most 1 GB peak RSS per task.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from bench import synthetic, task_processes

ROOT = Path(__file__).resolve().parents[1]
END = dt.date(2024, 12, 31)
DATA_VERSION = 1  # part of the database name: a change to the data loads afresh
TARGET_S = 60.0
TARGET_RSS_MB = 1024.0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--symbols", type=int, default=200)
    parser.add_argument("--sessions", type=int, default=252)
    parser.add_argument("--workers", type=int, default=2)
    return parser


def _window(args: argparse.Namespace) -> tuple[list[dt.date], list[dt.date]]:
    """The window's sessions, and every session loaded (the longest warm-up before it)."""
    from marketbars.backtest import detectors, runner
    from marketbars.backtest.engine import Settings
    from marketbars.market import calendar

    window = calendar.sessions_between(END - dt.timedelta(days=2 * args.sessions + 30), END)[-args.sessions :]
    settings = Settings()
    first = min(
        runner.warmup_start(window[0], "1m", runner.history_bars(d, d.parameters(), settings))
        for d in detectors.REGISTRY.values()
    )
    return window, calendar.sessions_between(first, END)


def _database(args: argparse.Namespace, symbols: list[str], days: list[dt.date]) -> Any:
    """The bench's database, loaded once with every symbol's 1m bars and reused while complete."""
    expected = len(symbols) * synthetic.bars_per_symbol(days)[0]
    return synthetic.database_loaded_once(
        f"bench_universe_{args.symbols}x{args.sessions}_{END:%Y%m%d}_v{DATA_VERSION}",
        f"{len(symbols)} symbols x {len(days)} sessions of 1m bars ({expected:,})",
        _minute_bars,
        expected,
        lambda conn: synthetic.load_minute_bars(conn, symbols, days),
    )


def _minute_bars(conn: Any) -> int:
    """1m only: bench.backtest_search adds 5m bars to some symbols."""
    (count,) = conn.execute(
        "SELECT count(*) FROM market.historical_bars WHERE timeframe = '1m'"
    ).fetchone() or (0,)
    return int(count)


def _fresh_results(db: Any, run_id: str) -> None:
    """The previous run's 2.4M trades deleted and vacuumed before the clock starts: every run then
    writes into the same clean tables (and no autovacuum of the last run's rows runs alongside)."""
    with db.connect() as conn:  # autocommit
        conn.execute("DELETE FROM market.backtest_runs WHERE run_id = %s", (run_id,))
        conn.execute("VACUUM (ANALYZE) market.backtest_trades, market.backtest_metrics, market.backtest_runs")


def _params(symbols: list[str], window: list[dt.date]) -> dict[str, Any]:
    """backtest_run's params as the trigger form gives them: the DAG's defaults and this window."""
    from airflow.dag_processing.dagbag import DagBag

    dag = DagBag(dag_folder=str(ROOT / "dags")).dags["backtest_run"]
    defaults = {name: param.value for name, param in dag.params.items()}
    return defaults | {
        "start_date": window[0].isoformat(),
        "end_date": window[-1].isoformat(),
        "symbols": symbols,
        "timeframe": "1m",
    }


def main() -> None:
    args = _parser().parse_args()
    window, days = _window(args)
    symbols = [f"U{i:03d}" for i in range(args.symbols)]
    db = _database(args, symbols, days)
    os.environ["AIRFLOW_CONN_MARKET_DB"] = json.dumps(db.airflow_connection())
    with tempfile.TemporaryDirectory(prefix="bench-universe-") as reports:  # 190 MB of trades a run
        os.environ["AIRFLOW_VAR_MARKET_BACKTEST_REPORTS_DIR"] = reports
        _measure(args, db, symbols, window)


def _measure(args: argparse.Namespace, db: Any, symbols: list[str], window: list[dt.date]) -> None:
    params = _params(symbols, window)

    from marketbars.pipelines.backtest import tasks

    run = SimpleNamespace(run_id="bench-universe", logical_date=None, run_after=dt.datetime.now(dt.UTC))
    _fresh_results(db, run.run_id)
    started = time.perf_counter()
    planned = tasks.plan(params, run)
    planning = time.perf_counter()
    results = task_processes.run(tasks.run_batch, [b | {"run_id": run.run_id} for b in planned], args.workers)
    batches_done = time.perf_counter()
    report = tasks.report_and_rank(params, run.run_id, planned, results)
    finished = time.perf_counter()

    bars = sum(r["bars"] for r in results)
    worst = max(r["rss"] for r in results)
    seconds = finished - started
    print(
        f"\n{len(symbols)} stocks x {len(window)} sessions ({window[0]}..{window[-1]}) of 1m bars, every"
        f" detector: {bars:,} bars read in {len(planned)} batch(es), {report['trades']:,} trades,"
        f" {args.workers} task(s) at a time"
    )
    print(f"{'step':<44} {'seconds':>8}")
    print(f"{'plan (validate, record, data version, batches)':<44} {planning - started:>8.2f}")
    print(f"{'run_batch tasks (wall clock)':<44} {batches_done - planning:>8.2f}")
    print(f"{'  of which inside the tasks, summed':<44} {sum(r['seconds'] for r in results):>8.2f}")
    print(f"{'report_and_rank (combine, figure, files)':<44} {finished - batches_done:>8.2f}")
    print(f"{'end to end':<44} {seconds:>8.2f}")
    print(f"peak RSS per run_batch task: at most {worst:.0f} MB (of {len(results)} tasks); report task "
          f"{task_processes.memory_mb('VmHWM'):.0f} MB (this process, data loading included)")  # fmt: skip
    met = seconds < TARGET_S and worst <= TARGET_RSS_MB
    verdict = "met" if met else "NOT met"
    print(f"targets: under {TARGET_S:.0f} s end to end, at most {TARGET_RSS_MB:.0f} MB a task: {verdict}")
    if not met:
        sys.exit(1)


if __name__ == "__main__":
    main()
