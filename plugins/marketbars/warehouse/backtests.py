"""Backtests in the warehouse: adjusted bars in (``market.bars_adjusted``), runs, metrics and trades out.

Each detector's results are replaced in one transaction, so a retried or re-run task leaves
exactly one copy of them.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
from psycopg import sql

from marketbars.backtest import bars as bars_module
from marketbars.backtest.bars import Bars
from marketbars.backtest.engine import Trade
from marketbars.backtest.metrics import FIELDS
from marketbars.market.calendar import day_window
from marketbars.warehouse.bars import read_bars as read_bar_table
from marketbars.warehouse.connection import Connection

_UTC_TEXT = """to_char({c} AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"') AS {c}"""
_OHLCV = ("ts", "open", "high", "low", "close", "volume")
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
RESULT_TABLES = (sql.Identifier("market", "backtest_metrics"), sql.Identifier("market", "backtest_trades"))
METRIC_COLUMNS = ("detector", "symbol", *FIELDS, "bars", "skipped_signals")
TRADE_COLUMNS = (
    "detector",
    "symbol",
    "entry_ts",
    "side",
    "signal_ts",
    "exit_ts",
    "entry_price",
    "exit_price",
    "shares",
    "stop",
    "target",
    "risk_per_share",
    "gross_pnl",
    "commission",
    "net_pnl",
    "r_multiple",
    "return_pct",
    "bars_held",
    "exit_reason",
)


@dataclass(frozen=True)
class RunSpec:
    """What one backtest run computes: stored in ``market.backtest_runs`` by the plan task, read by
    every mapped task (XCom carries only the run id)."""

    run_id: str
    start_date: dt.date
    end_date: dt.date
    timeframe: str
    symbols: dict[str, str]  # symbol -> asset class
    detectors: list[str]
    settings: dict[str, Any]
    detector_params: dict[str, dict[str, float]]
    adjustment: str = "splits"  # market.bars_adjusted's adjust
    follow_renames: bool = True


ADJUSTED = sql.SQL("market.bars_adjusted(%s, %s, %s, %s, %s, %s)")


def read_bars(
    conn: Connection,
    symbols: Sequence[str],
    timeframe: str,
    first: dt.date,
    last: dt.date,
    *,
    adjustment: str,
    follow_renames: bool,
) -> dict[str, Bars]:
    """The symbols' ``timeframe`` bars of the sessions first..last through ``market.bars_adjusted``
    (the one home of adjustment), placed in their sessions (regular session only)."""
    start, _ = day_window(first)
    _, end = day_window(last)
    with conn.cursor() as cur:
        cur.execute("SET extra_float_digits = 1")  # floats printed exactly (the default since PG 12)
        table = read_bar_table(
            cur,
            sql.SQL("true"),
            (list(symbols), timeframe, start, end, adjustment, follow_renames),
            columns=("symbol", *_OHLCV),
            ordered=True,
            source=ADJUSTED,
        )
    if table.num_rows == 0:
        return {}
    names = table["symbol"].to_numpy(zero_copy_only=False)
    table = table.set_column(1, "ts", table["ts"].cast(pa.int64()))  # epoch microseconds
    columns = {name: np.asarray(table[name].to_numpy(zero_copy_only=False)) for name in _OHLCV}
    columns["volume"] = columns["volume"].astype(np.float64)  # NULL volume (indices) -> NaN
    edges = np.flatnonzero(names[1:] != names[:-1]) + 1
    out: dict[str, Bars] = {}
    for lo, hi in zip(np.concatenate(([0], edges)), np.concatenate((edges, [len(names)])), strict=True):
        symbol = str(names[lo])
        out[symbol] = bars_module.build(symbol, timeframe, *(columns[name][lo:hi] for name in _OHLCV))
    return out


def start_run(conn: Connection, spec: RunSpec, actions: Mapping[str, Any], report_dir: str) -> None:
    """Record the run, or reset a re-run of the same id: its earlier results are deleted.
    ``actions``: what the adjustment applies and ignores (``applied``, ``quarantined``, ``renames``)."""
    with conn.transaction():
        conn.execute(
            """INSERT INTO market.backtest_runs (run_id, start_date, end_date, timeframe, symbols, detectors,
                   settings, detector_params, adjustment, follow_renames, actions, status, report_dir)
               VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, 'running', %s)
               ON CONFLICT (run_id) DO UPDATE SET
                   start_date = EXCLUDED.start_date, end_date = EXCLUDED.end_date,
                   timeframe = EXCLUDED.timeframe, symbols = EXCLUDED.symbols, detectors = EXCLUDED.detectors,
                   settings = EXCLUDED.settings, detector_params = EXCLUDED.detector_params,
                   adjustment = EXCLUDED.adjustment, follow_renames = EXCLUDED.follow_renames,
                   actions = EXCLUDED.actions, status = 'running',
                   report_dir = EXCLUDED.report_dir, started_at = now(), finished_at = NULL""",
            (
                spec.run_id,
                spec.start_date,
                spec.end_date,
                spec.timeframe,
                sorted(spec.symbols),
                spec.detectors,
                json.dumps(spec.settings),
                json.dumps({"asset_classes": spec.symbols, "overrides": spec.detector_params}),
                spec.adjustment,
                spec.follow_renames,
                json.dumps(actions),
                report_dir,
            ),
        )
        for table in RESULT_TABLES:  # a re-run starts from nothing: no earlier attempt's rows survive
            conn.execute(sql.SQL("DELETE FROM {} WHERE run_id = %s").format(table), (spec.run_id,))


def run_spec(conn: Connection, run_id: str) -> RunSpec:
    row = conn.execute(
        """SELECT start_date, end_date, timeframe, detectors, settings, detector_params, adjustment,
                  follow_renames
           FROM market.backtest_runs WHERE run_id = %s""",
        (run_id,),
    ).fetchone()
    if row is None:
        raise LookupError(f"backtest run {run_id!r} is not in market.backtest_runs (did its plan task run?)")
    start, end, timeframe, detectors, settings, params, adjustment, follow_renames = row
    return RunSpec(
        run_id,
        start,
        end,
        timeframe,
        params["asset_classes"],
        list(detectors),
        settings,
        params["overrides"],
        adjustment,
        follow_renames,
    )


def run_row(conn: Connection, run_id: str) -> dict[str, Any]:
    cur = conn.execute("SELECT * FROM market.backtest_runs WHERE run_id = %s", (run_id,))
    names = [c.name for c in cur.description or ()]
    row = cur.fetchone()
    if row is None:
        raise LookupError(f"backtest run {run_id!r} is not in market.backtest_runs")
    return dict(zip(names, row, strict=True))


def replace_results(
    conn: Connection,
    run_id: str,
    detector: str,
    metrics: Mapping[str, Mapping[str, Any]],
    trades: Iterable[Trade],
) -> None:
    """One detector's metrics and trades in place of whatever an earlier attempt left, atomically."""
    with conn.transaction(), conn.cursor() as cur:
        for table in RESULT_TABLES:
            cur.execute(
                sql.SQL("DELETE FROM {} WHERE run_id = %s AND detector = %s").format(table),
                (run_id, detector),
            )
        with cur.copy(_copy_in("backtest_metrics", METRIC_COLUMNS)) as copy:
            for symbol, values in metrics.items():
                copy.write_row((run_id, detector, symbol, *(values[name] for name in METRIC_COLUMNS[2:])))
        with cur.copy(_copy_in("backtest_trades", TRADE_COLUMNS)) as copy:
            for t in trades:
                copy.write_row(
                    (
                        run_id,
                        detector,
                        t.symbol,
                        _utc(t.entry_ts),
                        t.side,
                        _utc(t.signal_ts),
                        _utc(t.exit_ts),
                        t.entry_price,
                        t.exit_price,
                        t.shares,
                        t.stop,
                        t.target,
                        t.risk_per_share,
                        t.gross_pnl,
                        t.commission,
                        t.net_pnl,
                        t.r_multiple,
                        t.return_pct,
                        t.bars_held,
                        t.exit_reason,
                    )
                )


def finish_run(conn: Connection, run_id: str, status: str) -> None:
    conn.execute(
        "UPDATE market.backtest_runs SET status = %s, finished_at = now() WHERE run_id = %s", (status, run_id)
    )


def metrics_of(conn: Connection, run_id: str) -> list[dict[str, Any]]:
    cur = conn.execute(
        sql.SQL(
            "SELECT {} FROM market.backtest_metrics WHERE run_id = %s"
            " ORDER BY detector, symbol = '*' DESC, symbol"
        ).format(sql.SQL(", ").join(map(sql.Identifier, METRIC_COLUMNS))),
        (run_id,),
    )
    return [dict(zip(METRIC_COLUMNS, row, strict=True)) for row in cur.fetchall()]


def write_trades_csv(conn: Connection, run_id: str, path: Path) -> int:
    """Every trade of the run as CSV with a header, timestamps in UTC ISO 8601; returns the rows."""
    columns = sql.SQL(", ").join(
        sql.SQL(_UTC_TEXT).format(c=sql.Identifier(c)) if c.endswith("_ts") else sql.Identifier(c)
        for c in TRADE_COLUMNS
    )
    rows = 0
    with conn.cursor() as cur, path.open("wb") as out:
        cur.execute("SET extra_float_digits = 1")
        statement = sql.SQL(
            "COPY (SELECT {} FROM market.backtest_trades WHERE run_id = %s"
            " ORDER BY detector, symbol, entry_ts) TO STDOUT (FORMAT CSV, HEADER)"
        ).format(columns)
        with cur.copy(statement, (run_id,)) as copy:
            for block in copy:
                out.write(block)
                rows += bytes(block).count(b"\n")
    return max(rows - 1, 0)


def _copy_in(table: str, columns: Sequence[str]) -> sql.Composed:
    return sql.SQL("COPY {} (run_id, {}) FROM STDIN").format(
        sql.Identifier("market", table), sql.SQL(", ").join(map(sql.Identifier, columns))
    )


def _utc(epoch_us: int) -> dt.datetime:
    return EPOCH + dt.timedelta(microseconds=epoch_us)
