"""Benchmark: every backtest detector over 10 stocks x 90 sessions of 1m bars, end to end from the
warehouse, against the design it replaced and a naive per-bar Python loop.

    python -m bench.backtest [--runs 3] [--symbols 10] [--sessions 90]

Loads (once, then reuses) synthetic regular-session 1m bars into the embedded PostgreSQL (or
MARKETBARS_PG_URL): ``--symbols`` stocks plus the index I:SPX as one more symbol (11 by default),
over the ``--sessions`` XNYS sessions ending ``--end`` (the backtest window; its first session is
the run's start date) and the few sessions before them that the detectors' warm-up reads. A seeded
random walk: per-minute volatility and volume U-shaped over the session (high at the open and the
close), fat-tailed moves, volume that rises with the size of the move, overnight gaps, a rare bar
that spikes both ways, prices in cents; the index has NULL volume and trades. 390 bars a session,
210 on an early close (the default window holds 2024-07-03). Loaded with binary COPY
(``marketbars.warehouse.copy.copy_in``) after ``marketbars.warehouse.migrations.migrate`` and
``partitions.ensure_partitions``, then the 5m..4h bars built by
``marketbars.warehouse.rollup_rebuilds.rebuild_rollups`` session by session, as the load operators
do. None of that is timed.

Each scenario runs in a fresh process (so its peak RSS, VmHWM, is its own; it includes the
interpreter and the libraries, whose share is shown as the RSS at the start of the clock), and
its time is the median of --runs:

* project, 1m: what the DAG's tasks do, with psycopg connections instead of Airflow's (see
  ``_child_project``): the symbols in batches sized by bars, each batch's bars read once through
  ``market.bars_adjusted`` and every detector run on them in memory, the batch's rows written in
  one transaction; then the all-symbol rows combined from the stored trades and one figure drawn;
* project, 5m: the same on the derived 5m bars;
* replaced design, 1m: the previous shape of the DAG, kept as the baseline (``_child_today``): one
  task per detector, each reading its own bars (20 symbols a read), writing its rows and drawing
  its own PNG. Its all-symbol rows must equal the project's, bit for bit, or the bench fails;
* naive: ONE detector, breakout_bullish, on the same 1m bars the old way: a plain
  ``SELECT ... ORDER BY symbol, ts`` fetched as tuples, then ``naive_breakout_bullish``: Python
  lists, the indicators recomputed at every bar (highest of the previous ``lookback`` highs, mean of
  the previous volumes, mean of the last ``atr_period`` true ranges) and a per-bar state machine
  with the engine's fill rules. Its trades are compared with the ones the project wrote to
  ``market.backtest_trades``: they must be the same trades (count, symbols, entry and exit times,
  exit reasons, shares; prices and P&L within 1e-9 relative), or the bench fails. Its time x the
  number of detectors is the extrapolation the target is measured against (it writes no results
  and draws nothing, so the extrapolation flatters it).

Targets (1m, all detectors): at least 5x faster than the replaced design, and at least 10x the
naive loop x the number of detectors.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from bench import synthetic, task_processes

ROOT = Path(__file__).resolve().parents[1]
END = dt.date(2024, 7, 12)
INDEX = "I:SPX"
NAIVE_DETECTOR = "breakout_bullish"
TARGET_VS_TODAY = 5.0
TARGET_VS_NAIVE = 10.0
DATA_VERSION = 3  # part of the database name: a change to the generator loads afresh
PG_ENV = "BENCH_BACKTEST_PG"  # the children's conninfo (not on their command line)
REL_TOL = 1e-9
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
# Where a project run's time goes: connecting, the run's spec and bars read; signals,
# simulation and metrics; results written; the PNG drawn.
PHASES = {
    "read": "connect, spec, read_bars (once per batch)",
    "engine": "run_batch: every detector",
    "write": "replace_batch_results",
    "combine": "all-symbol rows from the stored trades",
    "png": "equity_figure (one)",
}


# ---------------------------------------------------------------- the naive baseline


def naive_breakout_bullish(
    rows: Sequence[Sequence[Any]], settings: Any, params: Mapping[str, float], start_ordinal: int
) -> list[dict[str, Any]]:
    """breakout_bullish the naive way: one Python iteration per bar, indicators recomputed each time.

    ``rows`` are (symbol, ts, open, high, low, close, volume) tuples ordered by symbol and ts, ``ts``
    a timezone-aware datetime (bar start), ``volume`` None where there is none. Like
    ``bars.build``, only bars inside their XNYS session's regular hours count. ``settings`` is an
    ``engine.Settings``; ``params`` the detector's (``lookback``, ``volume_multiple``); signals count
    from the first bar of the session with ordinal ``start_ordinal`` on, earlier bars only feed the
    indicators. Returns one dict per trade: symbol, entry_ts, exit_ts, entry_price, exit_price (fills,
    slippage included), shares, net_pnl, exit_reason, in symbol and entry order.
    """
    lookback = int(params["lookback"])
    multiple = float(params["volume_multiple"])
    trades: list[dict[str, Any]] = []
    for symbol, bars in _naive_session_bars(rows).items():
        trades += _naive_symbol_trades(symbol, bars, settings, lookback, multiple, start_ordinal)
    return trades


def _naive_session_bars(rows: Sequence[Sequence[Any]]) -> dict[str, list[tuple]]:
    """The rows inside their XNYS session's regular hours, per symbol, as (ts, session ordinal, open,
    high, low, close, volume) with NaN for a missing volume."""
    from marketbars.market.calendar import NEW_YORK, is_session, session_hours

    hours: dict[dt.date, tuple[dt.datetime, dt.datetime] | None] = {}
    by_symbol: dict[str, list[tuple]] = {}
    for symbol, ts, open_, high, low, close, volume in rows:
        day = ts.astimezone(NEW_YORK).date()
        if day not in hours:
            session = session_hours(day) if is_session(day) else None
            hours[day] = (session.open, session.close) if session else None
        span = hours[day]
        if span is None or not span[0] <= ts < span[1]:
            continue  # outside the regular session: the engine never sees it
        volume = math.nan if volume is None else float(volume)
        by_symbol.setdefault(symbol, []).append((ts, day.toordinal(), open_, high, low, close, volume))
    return by_symbol


def _naive_symbol_trades(
    symbol: str,
    bars: Sequence[tuple],
    settings: Any,
    lookback: int,
    multiple: float,
    start_ordinal: int,
) -> list[dict[str, Any]]:
    """One symbol's trades: the per-bar loop, the indicators recomputed at every bar."""
    slip = settings.slippage_bps / 10_000.0
    trades: list[dict[str, Any]] = []
    n = len(bars)
    highs: list[float] = []
    volumes: list[float] = []
    ranges: list[float] = []
    previous_close = None
    position: dict[str, Any] | None = None
    pending: dict[str, Any] | None = None  # a signal waiting for the next bar's open
    for i in range(n):
        ts, ordinal, open_, high, low, close, volume = bars[i]
        if previous_close is None:
            ranges.append(high - low)
        else:
            ranges.append(max(high - low, abs(high - previous_close), abs(low - previous_close)))

        if pending is not None:  # entry at this bar's open, slippage against us
            position = pending | {"entry": i, "entry_ts": ts, "entry_price": open_ * (1 + slip)}
            pending = None

        if position is not None:
            trade = _naive_exit(symbol, position, i, n, bars[i], settings, slip)
            if trade is not None:
                trades.append(trade)
                position = None  # a signal on this very bar may open the next trade

        signal = False
        if i >= lookback:
            prior_high = max(highs[i - lookback : i])
            mean_volume = sum(volumes[i - lookback : i]) / lookback
            signal = close > prior_high and volume > multiple * mean_volume
        if signal and position is None and ordinal >= start_ordinal and i < n - 1:
            pending = _naive_order(close, ranges, i, settings)
        highs.append(high)
        volumes.append(volume)
        previous_close = close
    return trades


def _naive_exit(
    symbol: str, position: dict[str, Any], i: int, n: int, bar: tuple, settings: Any, slip: float
) -> dict[str, Any] | None:
    """The trade an open position closes with on bar ``i`` (the engine's fill rules), or None."""
    ts, _, open_, high, low, close, _ = bar
    exit_raw: float = 0.0
    reason: str | None = None
    if i - position["entry"] == settings.max_hold_bars:
        exit_raw, reason = open_, "max_hold"
    elif low <= position["stop"]:  # the stop first when a bar reaches both
        exit_raw, reason = min(open_, position["stop"]), "stop"
    elif high >= position["target"]:
        exit_raw, reason = max(open_, position["target"]), "target"
    elif i == n - 1:
        exit_raw, reason = close, "end_of_data"
    if reason is None:
        return None
    exit_price = exit_raw * (1 - slip)
    gross = (exit_price - position["entry_price"]) * position["shares"]
    return {
        "symbol": symbol,
        "entry_ts": position["entry_ts"],
        "exit_ts": ts,
        "entry_price": position["entry_price"],
        "exit_price": exit_price,
        "shares": position["shares"],
        "net_pnl": gross - settings.commission,
        "exit_reason": reason,
    }


def _naive_order(close: float, ranges: Sequence[float], i: int, settings: Any) -> dict[str, Any] | None:
    """A signal on bar ``i`` sized by the mean of the last ``atr_period`` true ranges: the pending
    entry (shares, stop, target), or None when it cannot be sized."""
    period = settings.atr_period
    atr = sum(ranges[i - period + 1 : i + 1]) / period if i >= period - 1 else math.nan
    risk = settings.stop_atr * atr
    if not risk > 0:
        return None
    shares = math.floor(min(settings.capital * settings.risk_fraction / risk, settings.capital / close))
    if shares < 1:
        return None
    return {"shares": shares, "stop": close - risk, "target": close + settings.target_r * risk}


# ---------------------------------------------------------------- synthetic bars (outside the clock)


def _stock_symbols(count: int) -> list[str]:
    return [f"BT{i:02d}" for i in range(count)]


def _load(conn: Any, stocks: Sequence[str], days: Sequence[dt.date]) -> None:
    from marketbars.warehouse import rollup_rebuilds

    synthetic.load_minute_bars(conn, [*stocks, INDEX], days)
    for day in days:
        rollup_rebuilds.rebuild_rollups(conn, "stocks", day, list(stocks))
        rollup_rebuilds.rebuild_rollups(conn, "indices", day, [INDEX])
    conn.execute("VACUUM (ANALYZE) market.historical_bars")


def _bar_counts(conn) -> dict[str, int]:
    rows = conn.execute(
        "SELECT timeframe, count(*) FROM market.historical_bars WHERE timeframe IN ('1m', '5m') GROUP BY 1"
    ).fetchall()
    return {tf: int(n) for tf, n in rows}


# ---------------------------------------------------------------- child processes (one scenario each)


def _child_project(job: dict[str, Any]) -> dict[str, Any]:
    """What the DAG's tasks do, with psycopg connections instead of Airflow's: ``start_run`` (the
    plan task), then per batch of symbols (``rules.symbol_batches``) a fresh connection, the spec
    read back, the batch's bars read once, ``runner.run_batch`` and ``replace_batch_results``;
    then the report task's combination (``detector_trades``, ``overall_columns``,
    ``replace_overall``) and its one ``equity_figure``."""
    # Library imports are process start-up, outside the clock (the figure imports matplotlib).
    import matplotlib.figure  # noqa: F401
    import numpy  # noqa: F401
    import pandas  # noqa: F401
    import psycopg

    from marketbars.backtest import detectors, report, runner
    from marketbars.backtest.engine import Settings
    from marketbars.pipelines.backtest import rules
    from marketbars.warehouse import backtests

    conninfo = os.environ[PG_ENV]
    spec, folder = _fresh_run(job, conninfo, job["run_id"])
    rss_at_start = task_processes.memory_mb("VmRSS")
    phases = dict.fromkeys(PHASES, 0.0)
    started = time.perf_counter()
    settings = Settings(**spec.settings)
    jobs = []
    for detector in detectors.REGISTRY.values():
        params = detector.parameters()
        first = runner.warmup_start(
            spec.start_date, spec.timeframe, runner.history_bars(detector, params, settings)
        )
        jobs.append(runner.Job(detector, params, first))
    earliest = min(j.read_start for j in jobs)
    with psycopg.connect(conninfo, autocommit=True) as conn:  # the plan task
        backtests.start_run(conn, spec, {}, str(folder), earliest)
    batches = rules.symbol_batches(
        list(spec.symbols), rules.bars_per_symbol(earliest, spec.end_date, spec.timeframe)
    )
    bars_read = trades = 0
    for symbols in batches:  # one mapped run_batch task each
        reading = time.perf_counter()
        with psycopg.connect(conninfo, autocommit=True) as conn:
            stored = backtests.run_spec(conn, spec.run_id)
            bars = backtests.read_bars(
                conn, symbols, stored.timeframe, earliest, stored.end_date,
                adjustment=stored.adjustment, follow_renames=stored.follow_renames,
            )  # fmt: skip
            computing = time.perf_counter()
            results = runner.run_batch(
                jobs, settings, bars, symbols, stored.symbols, stored.timeframe, stored.start_date
            )
            writing = time.perf_counter()
            backtests.replace_batch_results(conn, spec.run_id, symbols, results)
        phases["read"] += computing - reading
        phases["engine"] += writing - computing
        phases["write"] += time.perf_counter() - writing
        bars_read += sum(len(b) for b in bars.values())
        trades += sum(len(r.trades) for r in results)
    combining = time.perf_counter()
    with psycopg.connect(conninfo, autocommit=True) as conn:  # the report task's combination
        counts = backtests.trade_counts(conn, spec.run_id)
        rows, curves = {}, {}
        for name in spec.detectors:
            part, tally = (
                backtests.detector_trades(conn, spec.run_id, name),
                counts.get(name, runner.NO_COUNTS),
            )
            rows[name] = runner.overall_columns(
                part.net_pnl, part.return_pct, part.r_multiple, tally, settings
            )
            capital = settings.capital * max(tally["symbols"], 1)
            curves[name] = report.EquityCurve.of(part.exit_ts, part.net_pnl, capital)
        backtests.replace_overall(conn, spec.run_id, rows, curves)
    drawing = time.perf_counter()
    phases["combine"] += drawing - combining
    report.equity_figure(folder / "equity.png", curves, f"{spec.timeframe} bench")
    phases["png"] += time.perf_counter() - drawing
    seconds = time.perf_counter() - started
    _remove(folder)
    return {
        "seconds": seconds,
        "bars": bars_read,
        "trades": trades,
        "batches": len(batches),
        "phases": phases,
        "rss_start_mb": rss_at_start,
        "peak_rss_mb": task_processes.memory_mb("VmHWM"),
    }


def _child_today(job: dict[str, Any]) -> dict[str, Any]:
    """The design this replaced, kept as the baseline: one mapped task per detector, each reading
    its eligible symbols' bars itself (20 symbols a read) from its own warm-up, running
    ``runner.run_detector``, writing its rows and drawing its own equity PNG (two panels, as it
    did). Each detector writes under a run id of its own, so no write waits on another's."""
    import matplotlib.figure  # noqa: F401
    import numpy  # noqa: F401
    import pandas  # noqa: F401
    import psycopg

    from marketbars.backtest import detectors, runner
    from marketbars.backtest.engine import Settings
    from marketbars.warehouse import backtests

    conninfo = os.environ[PG_ENV]
    runs = {name: _fresh_run(job, conninfo, f"{job['run_id']}-{name}") for name in detectors.REGISTRY}
    rss_at_start = task_processes.memory_mb("VmRSS")
    started = time.perf_counter()
    with psycopg.connect(conninfo, autocommit=True) as conn:  # the plan task
        for spec, folder in runs.values():
            backtests.start_run(conn, spec, {}, str(folder), spec.start_date)
    bars_read = trades = 0
    for detector in detectors.REGISTRY.values():  # one mapped task each
        spec, folder = runs[detector.name]
        with psycopg.connect(conninfo, autocommit=True) as conn:
            stored = backtests.run_spec(conn, spec.run_id)
            settings = Settings(**stored.settings)
            params = detector.parameters()
            first = runner.warmup_start(
                stored.start_date, stored.timeframe, runner.history_bars(detector, params, settings)
            )
            symbols = runner.eligible(detector, stored.symbols, stored.timeframe)
            read = [0]

            def batches(conn=conn, symbols=symbols, first=first, stored=stored, read=read) -> Iterator[Any]:
                for i in range(0, len(symbols), 20):  # 20 symbols in memory at once, as it did
                    chunk = backtests.read_bars(
                        conn,
                        symbols[i : i + 20],
                        stored.timeframe,
                        first,
                        stored.end_date,
                        adjustment=stored.adjustment,
                        follow_renames=stored.follow_renames,
                    )
                    read[0] += sum(len(b) for b in chunk.values())
                    yield chunk

            result = runner.run_detector(
                detector, params, settings, batches(), stored.symbols, stored.timeframe, stored.start_date
            )
            backtests.replace_batch_results(conn, spec.run_id, [*stored.symbols, "*"], [result])
        bars_read += read[0]
        trades += len(result.trades)
        _old_equity_png(
            folder / f"equity_{detector.name}.png", detector.name, result.trades, settings.capital
        )
    seconds = time.perf_counter() - started
    for _, folder in runs.values():
        _remove(folder)
    return {
        "seconds": seconds,
        "bars": bars_read,
        "trades": trades,
        "rss_start_mb": rss_at_start,
        "peak_rss_mb": task_processes.memory_mb("VmHWM"),
    }


def _old_equity_png(path: Path, detector: str, trades: Any, capital: float) -> None:
    """The replaced design's per-detector figure: realised equity over time, its drawdown below."""
    import numpy as np
    from matplotlib.figure import Figure

    from marketbars.backtest.metrics import equity_curve

    ordered = trades.in_trade_order()
    times = [EPOCH + dt.timedelta(microseconds=t) for t in ordered.exit_ts.tolist()]
    equity = equity_curve(ordered.net_pnl, capital)[1:]
    figure = Figure(figsize=(9, 5), layout="constrained")
    top, bottom = figure.subplots(2, 1, sharex=True, height_ratios=(3, 1))
    if times:
        top.step(times, equity, where="post", color="#1565c0", linewidth=1.2)
        peaks = np.maximum.accumulate(np.concatenate(([capital], equity)))[1:]
        bottom.fill_between(times, equity - peaks, 0, step="post", color="#c62828", alpha=0.5)
    top.set_title(f"{detector}: realised equity ({len(ordered)} trades)", fontsize=10)
    figure.autofmt_xdate()
    figure.savefig(path, dpi=100)


def _fresh_run(job: dict[str, Any], conninfo: str, run_id: str) -> tuple[Any, Path]:
    """A run's spec and an empty report folder; an earlier run of that id is deleted first."""
    import tempfile

    import psycopg

    from marketbars.backtest import detectors
    from marketbars.backtest.engine import Settings
    from marketbars.warehouse import backtests

    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute("DELETE FROM market.backtest_runs WHERE run_id = %s", (run_id,))
    spec = backtests.RunSpec(
        run_id=run_id,
        start_date=dt.date.fromisoformat(job["start"]),
        end_date=dt.date.fromisoformat(job["end"]),
        timeframe=job["timeframe"],
        symbols=job["symbols"],
        detectors=list(detectors.REGISTRY),
        settings=Settings().to_json(),
        detector_params={},
    )
    return spec, Path(tempfile.mkdtemp(prefix="bench-backtest-"))


def _remove(folder: Path) -> None:
    for path in folder.iterdir():
        path.unlink()
    folder.rmdir()


def _child_baseline(job: dict[str, Any]) -> dict[str, Any]:
    import psycopg

    from marketbars.backtest import detectors, runner
    from marketbars.backtest.engine import Settings
    from marketbars.market.calendar import day_window

    detector = detectors.REGISTRY[NAIVE_DETECTOR]
    settings, params = Settings(), detector.parameters()
    start, end = dt.date.fromisoformat(job["start"]), dt.date.fromisoformat(job["end"])
    # The same bars the engine reads: the same warm-up start (the first bar's true range and the
    # ATR depend on it), the symbols the detector applies to.
    first = runner.warmup_start(start, "1m", runner.history_bars(detector, params, settings))
    symbols = runner.eligible(detector, job["symbols"], "1m")
    window_start, window_end = day_window(first)[0], day_window(end)[1]
    rss_at_start = task_processes.memory_mb("VmRSS")
    started = time.perf_counter()
    with psycopg.connect(os.environ[PG_ENV], autocommit=True) as conn:
        rows = conn.execute(
            "SELECT symbol, ts, open, high, low, close, volume FROM market.historical_bars"
            " WHERE symbol = ANY(%s) AND timeframe = '1m' AND ts >= %s AND ts < %s ORDER BY symbol, ts",
            (symbols, window_start, window_end),
        ).fetchall()
    fetched = time.perf_counter()
    trades = naive_breakout_bullish(rows, settings, params, start.toordinal())
    finished = time.perf_counter()
    return {
        "seconds": finished - started,
        "fetch_s": fetched - started,
        "bars": len(rows),
        "trades": len(trades),
        "trade_list": [
            t | {k: (t[k] - EPOCH) // dt.timedelta(microseconds=1) for k in ("entry_ts", "exit_ts")}
            for t in trades
        ],
        "rss_start_mb": rss_at_start,
        "peak_rss_mb": task_processes.memory_mb("VmHWM"),
    }


def _run_child(job: dict[str, Any], conninfo: str) -> dict[str, Any]:
    command = [sys.executable, "-m", "bench.backtest", "--child", json.dumps(job)]
    out = subprocess.run(
        command, cwd=ROOT, env={**os.environ, PG_ENV: conninfo}, capture_output=True, text=True, check=False
    )
    line = next((x for x in out.stdout.splitlines() if x.startswith("RESULT ")), None)
    if out.returncode != 0 or line is None:
        sys.stderr.write(out.stderr)
        sys.exit(f"scenario {job['kind']} {job.get('timeframe', '')} failed (exit {out.returncode})")
    return json.loads(line.removeprefix("RESULT "))


# ---------------------------------------------------------------- parent: data, scenarios, report


def _engine_trades(conninfo: str, run_id: str) -> list[dict[str, Any]]:
    import psycopg

    with psycopg.connect(conninfo, autocommit=True) as conn:
        rows = conn.execute(
            """SELECT symbol, entry_ts, exit_ts, entry_price, exit_price, shares, net_pnl, exit_reason
               FROM market.backtest_trades WHERE run_id = %s AND detector = %s ORDER BY symbol, entry_ts""",
            (run_id, NAIVE_DETECTOR),
        ).fetchall()
    names = ("symbol", "entry_ts", "exit_ts", "entry_price", "exit_price", "shares", "net_pnl", "exit_reason")
    trades = [dict(zip(names, row, strict=True)) for row in rows]
    for t in trades:
        for key in ("entry_ts", "exit_ts"):
            t[key] = (t[key] - EPOCH) // dt.timedelta(microseconds=1)
    return trades


def _compare(engine: list[dict[str, Any]], naive: list[dict[str, Any]]) -> tuple[list[str], float]:
    """Differences between the two trade lists (empty when they are the same trades), and the
    largest relative difference of a price or P&L."""
    problems, worst = [], 0.0
    if len(engine) != len(naive):
        problems.append(f"engine {len(engine)} trades, naive loop {len(naive)}")
    exact = ("symbol", "entry_ts", "exit_ts", "shares", "exit_reason")
    for e, n in zip(engine, naive, strict=False):
        where = f"{e['symbol']} entry {_when(e['entry_ts'])}"
        for key in exact:
            if e[key] != n[key]:
                shown = (_when(e[key]), _when(n[key])) if key.endswith("_ts") else (e[key], n[key])
                problems.append(f"{where}: {key} engine {shown[0]}, naive loop {shown[1]}")
        for key in ("entry_price", "exit_price", "net_pnl"):
            scale = max(abs(e[key]), abs(n[key]))
            if scale:
                worst = max(worst, abs(e[key] - n[key]) / scale)
            if not math.isclose(e[key], n[key], rel_tol=REL_TOL):
                problems.append(f"{where}: {key} engine {e[key]!r}, naive loop {n[key]!r}")
        if len(problems) > 20:
            break
    return problems, worst


def _when(epoch_us: Any) -> str:
    if not isinstance(epoch_us, int):
        return str(epoch_us)
    from marketbars.market.calendar import NEW_YORK

    moment = EPOCH + dt.timedelta(microseconds=epoch_us)
    return moment.astimezone(NEW_YORK).strftime("%Y-%m-%d %H:%M %Z")


def _median(results: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "seconds": statistics.median(r["seconds"] for r in results),
        "bars": results[0]["bars"],
        "trades": results[0]["trades"],
        "peak_rss_mb": max(r["peak_rss_mb"] for r in results),
        "rss_start_mb": max(r["rss_start_mb"] for r in results),
        "runs": [round(r["seconds"], 2) for r in results],
    }


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--symbols", type=int, default=10, help="stocks (I:SPX comes on top)")
    parser.add_argument("--sessions", type=int, default=90, help="sessions in the backtest window")
    parser.add_argument("--end", type=dt.date.fromisoformat, default=END, help="the window's last session")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    return parser


def _sessions(
    parser: argparse.ArgumentParser, args: argparse.Namespace
) -> tuple[list[dt.date], list[dt.date]]:
    """The backtest window's sessions, and every session loaded: the window and the warm-up the
    detectors read before it (on 1m and on 5m)."""
    from marketbars.backtest import detectors, runner
    from marketbars.backtest.engine import Settings
    from marketbars.market import calendar

    window = calendar.sessions_between(args.end - dt.timedelta(days=2 * args.sessions + 30), args.end)
    window = window[-args.sessions :]
    if len(window) < args.sessions or window[-1] != args.end:
        parser.error(f"--end {args.end} must be an XNYS session with {args.sessions} sessions up to it")
    settings = Settings()
    first = min(
        runner.warmup_start(window[0], tf, runner.history_bars(d, d.parameters(), settings))
        for d in detectors.REGISTRY.values()
        for tf in ("1m", "5m")
    )
    return window, calendar.sessions_between(first, args.end)


def _loaded_database(
    args: argparse.Namespace, stocks: Sequence[str], classes: Mapping[str, str], days: Sequence[dt.date]
) -> tuple[Any, dict[str, int]]:
    """The bench's database, loaded once (1m bars, then their rollups) and reused while it holds
    every expected bar; and the 1m and 5m bars it holds."""
    per_symbol_1m, per_symbol_5m = synthetic.bars_per_symbol(days)
    expected = {"1m": per_symbol_1m * len(classes), "5m": per_symbol_5m * len(classes)}
    db = synthetic.database_loaded_once(
        f"bench_backtest_{args.symbols}x{args.sessions}_{args.end:%Y%m%d}_v{DATA_VERSION}",
        f"{len(classes)} symbols x {len(days)} sessions of 1m bars ({expected['1m']:,}), then their rollups",
        _bar_counts,
        expected,
        lambda conn: _load(conn, stocks, days),
    )
    return db, expected


def _run_scenarios(base: dict[str, Any], runs: int, conninfo: str) -> dict[str, list[dict[str, Any]]]:
    """Every scenario --runs times, each in its own process: the project on 1m and 5m, the replaced
    design on 1m, the naive loop."""
    results: dict[str, list[dict[str, Any]]] = {"1m": [], "5m": [], "today": [], "baseline": []}
    for i in range(runs):
        print(f"run {i + 1}/{runs} ...", flush=True)
        for tf in ("1m", "5m"):
            job = base | {"kind": "project", "timeframe": tf, "run_id": f"bench-backtest-{tf}"}
            results[tf].append(_run_child(job, conninfo))
        today = base | {"kind": "today", "timeframe": "1m", "run_id": "bench-today-1m"}
        results["today"].append(_run_child(today, conninfo))
        results["baseline"].append(_run_child(base | {"kind": "baseline"}, conninfo))
    return results


def _same_overall_rows(conninfo: str) -> list[str]:
    """Detectors whose all-symbol row differs between the project's batched run and the replaced
    design's one-task-per-detector runs (empty: every figure equal, bit for bit)."""
    import psycopg

    from marketbars.backtest import detectors
    from marketbars.warehouse.backtests import METRIC_COLUMNS

    columns = ", ".join(c for c in METRIC_COLUMNS if c not in ("detector", "symbol"))
    differ = []
    with psycopg.connect(conninfo, autocommit=True) as conn:
        for name in detectors.REGISTRY:
            rows = [
                conn.execute(
                    f"SELECT {columns} FROM market.backtest_metrics"  # fixed names
                    " WHERE run_id = %s AND detector = %s AND symbol = '*'",
                    (run_id, name),
                ).fetchone()
                for run_id in ("bench-backtest-1m", f"bench-today-1m-{name}")
            ]
            if rows[0] is None or rows[0] != rows[1]:
                differ.append(name)
    return differ


def _print_table(
    args: argparse.Namespace,
    stocks: Sequence[str],
    window: Sequence[dt.date],
    days: Sequence[dt.date],
    counts: Mapping[str, int],
    results: Mapping[str, list[dict[str, Any]]],
) -> tuple[float, float]:
    """The data, then one line per scenario and the comparisons; (x faster than the replaced
    design, x faster than the naive loop extrapolated), both on 1m."""
    from marketbars.backtest import detectors
    from marketbars.market import calendar
    from sandbox.services import PG_URL_ENV

    one, five = _median(results["1m"]), _median(results["5m"])
    today, naive = _median(results["today"]), _median(results["baseline"])
    n_detectors = len(detectors.REGISTRY)
    fetch = statistics.median(r["fetch_s"] for r in results["baseline"])
    extrapolated = naive["seconds"] * n_detectors
    server_name = PG_URL_ENV if os.environ.get(PG_URL_ENV) else "embedded pgserver 16"
    early = sum(1 for d in days if calendar.session_hours(d).early_close)

    print(
        f"\n{len(stocks)} stocks + {INDEX}, window {window[0]}..{args.end} ({len(window)} sessions; bars from"
        f" {days[0]}, {len(days)} sessions, {early} early close): {counts['1m']:,} 1m bars, {counts['5m']:,}"
        f" 5m bars in the warehouse"
    )
    print(f"PostgreSQL: {server_name}; median of {args.runs} run(s); each scenario in its own process\n")
    print(f"{'method':<62} {'seconds':>8} {'bars read':>10} {'trades':>7} {'peak RSS':>9} {'(at start)':>10}")
    rows = (
        (f"project, 1m: {n_detectors} detectors, bars read once per batch", one),
        (f"project, 5m: {n_detectors} detectors, bars read once per batch", five),
        ("replaced design, 1m: a task per detector, each reading its bars", today),
        (f"baseline: naive per-bar loop, {NAIVE_DETECTOR} only, 1m", naive),
    )
    for label, r in rows:
        print(
            f"{label:<62} {r['seconds']:>8.2f} {r['bars']:>10,} {r['trades']:>7,} {r['peak_rss_mb']:>6.0f} MB"
            f" {r['rss_start_mb']:>7.0f} MB   runs {r['runs']}"
        )
    print(f"{'  of which SELECT ... ORDER BY symbol, ts as tuples':<62} {fetch:>8.2f}")
    versus_today = today["seconds"] / one["seconds"]
    versus_naive = extrapolated / one["seconds"]
    print(
        f"\n1m, all {n_detectors} detectors: {versus_today:.1f}x faster than the replaced design in the"
        f" same run; the naive loop x {n_detectors} (extrapolated, not measured) = {extrapolated:.1f} s:"
        f" {versus_naive:.1f}x"
    )
    return versus_today, versus_naive


def _print_phases(results: Mapping[str, list[dict[str, Any]]]) -> None:
    """Where the project's time goes."""
    batches = results["1m"][0]["batches"], results["5m"][0]["batches"]
    print(f"\nwhere the project's time goes (median s; {batches[0]} batch(es) on 1m, {batches[1]} on 5m):")
    print(f"  {'':<52} {'1m':>7} {'5m':>7}")
    for phase, what in PHASES.items():
        spent = [statistics.median(r["phases"][phase] for r in results[tf]) for tf in ("1m", "5m")]
        print(f"  {phase + ': ' + what:<52} {spent[0]:>7.2f} {spent[1]:>7.2f}")


def main() -> None:
    parser = _parser()
    args = parser.parse_args()
    if args.child:
        job = json.loads(args.child)
        child = {"project": _child_project, "today": _child_today, "baseline": _child_baseline}[job["kind"]]
        result = child(job)
        print("RESULT " + json.dumps(result))
        return
    if args.runs < 1 or args.symbols < 1 or args.sessions < 1:
        parser.error("--runs, --symbols and --sessions must be at least 1")

    window, days = _sessions(parser, args)
    stocks = _stock_symbols(args.symbols)
    classes = dict.fromkeys(stocks, "stocks") | {INDEX: "indices"}
    db, counts = _loaded_database(args, stocks, classes, days)

    base = {"start": window[0].isoformat(), "end": args.end.isoformat(), "symbols": classes}
    results = _run_scenarios(base, args.runs, db.conninfo)

    engine_trades = _engine_trades(db.conninfo, "bench-backtest-1m")
    naive_trades = results["baseline"][-1]["trade_list"]
    problems, worst = _compare(engine_trades, naive_trades)

    versus_today, versus_naive = _print_table(args, stocks, window, days, counts, results)
    _print_phases(results)
    differ = _same_overall_rows(db.conninfo)

    if problems:
        print(f"\nNOT identical: the engine and the naive loop disagree on {NAIVE_DETECTOR}, 1m:")
        for line in problems[:20]:
            print("  " + line)
        sys.exit(1)
    if differ:
        sys.exit(
            f"\nNOT identical: the batched run's all-symbol rows differ from the replaced design's: {differ}"
        )
    print(
        f"\nidentical: {len(engine_trades)} trades ({NAIVE_DETECTOR}, 1m: the engine's stored trades and the"
        f" naive loop's; largest relative difference of a price or P&L {worst:.1e}); every detector's"
        " all-symbol row equal, bit for bit, to the replaced design's"
    )
    met = versus_today >= TARGET_VS_TODAY and versus_naive >= TARGET_VS_NAIVE
    verdict = "met" if met else "NOT met"
    print(
        f"targets: at least {TARGET_VS_TODAY:.0f}x the replaced design ({versus_today:.1f}x) and"
        f" {TARGET_VS_NAIVE:.0f}x the naive loop x detectors ({versus_naive:.1f}x): {verdict}"
    )
    if not met:
        sys.exit(1)


if __name__ == "__main__":
    main()
