"""Backtests in the warehouse: adjusted bars in (``market.bars_adjusted``), runs, metrics and trades out.

Each detector's results are replaced in one transaction, so a retried or re-run task leaves
exactly one copy of them.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from operator import attrgetter
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
from psycopg import sql

from marketbars.backtest import bars as bars_module
from marketbars.backtest.bars import Bars
from marketbars.backtest.engine import Trade
from marketbars.backtest.metrics import FIELDS
from marketbars.backtest.runner import DetectorResult
from marketbars.backtest.search import Tally
from marketbars.market.calendar import day_window
from marketbars.market.symbols import ALL_SYMBOLS
from marketbars.warehouse.connection import Connection, Cursor
from marketbars.warehouse.copy import copy_in_table

_UTC_TEXT = """to_char({c} AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"') AS {c}"""
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
RESULT_TABLES = (sql.Identifier("market", "backtest_metrics"), sql.Identifier("market", "backtest_trades"))
METRIC_COLUMNS = ("detector", "symbol", *FIELDS, "bars", "bars_in_position", "skipped_signals")
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


# A symbol's bars as one row: each column its values' binary forms, concatenated in time order
# (big-endian, as int8send and float8send write them). numpy reads them as they are: no text is
# printed or parsed and no Python object is made per bar, which a COPY (a message per row) cannot
# avoid. NULL volume (indices) comes as NaN, as the engine wants it.
_PACKED = sql.SQL(
    """SELECT symbol,
              string_agg(int8send((date_part('epoch', ts) * 1000000)::bigint), '' ORDER BY ts),
              string_agg(float8send(open), '' ORDER BY ts), string_agg(float8send(high), '' ORDER BY ts),
              string_agg(float8send(low), '' ORDER BY ts), string_agg(float8send(close), '' ORDER BY ts),
              string_agg(float8send(coalesce(volume, 'NaN')), '' ORDER BY ts)
       FROM market.bars_adjusted(%s, %s, %s, %s, %s, %s)
       GROUP BY symbol ORDER BY symbol"""
)


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
    rows = conn.execute(
        _PACKED, (list(symbols), timeframe, start, end, adjustment, follow_renames)
    ).fetchall()
    out: dict[str, Bars] = {}
    for symbol, ts, *prices in rows:
        columns = [
            np.frombuffer(ts, ">i8").astype(np.int64),
            *(np.frombuffer(p, ">f8").astype(np.float64) for p in prices),
        ]
        out[str(symbol)] = bars_module.build(str(symbol), timeframe, *columns)
    return out


def start_run(
    conn: Connection,
    spec: RunSpec,
    actions: Mapping[str, Any],
    report_dir: str,
    data_from: dt.date,
    search: Mapping[str, Any] | None = None,
) -> str:
    """Record the run, or reset a re-run of the same id: its earlier results are deleted.
    ``actions``: what the adjustment applies and ignores (``applied``, ``quarantined``, ``renames``).
    ``data_from``: the first session the run reads. Returns the version of the data it is about to
    read (``market.bars_data_version``), recorded with it."""
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
        conn.execute("DELETE FROM market.backtest_search WHERE run_id = %s", (spec.run_id,))
        row = conn.execute(
            """UPDATE market.backtest_runs SET search = %s, data_from = %s,
                   data_version = market.bars_data_version(
                       symbols, %s, timeframe, %s, end_date, adjustment, follow_renames)
               WHERE run_id = %s RETURNING data_version""",
            (
                json.dumps(search) if search else None,
                data_from,
                sorted(set(spec.symbols.values())),
                data_from,
                spec.run_id,
            ),
        ).fetchone()
    return str(row[0]) if row else ""


@dataclass(frozen=True)
class Freshness:
    """A run's data version when it read, and its window's now (``market.backtest_freshness``)."""

    read_version: str
    current_version: str
    stale: bool


def freshness(conn: Connection, run_id: str) -> Freshness | None:
    """Whether a later load has changed what the run read (None: a run recorded before 0010)."""
    row = conn.execute(
        "SELECT read_version, current_version, stale FROM market.backtest_freshness WHERE run_id = %s",
        (run_id,),
    ).fetchone()
    return Freshness(str(row[0]), str(row[1]), bool(row[2])) if row else None


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


def replace_batch_results(
    conn: Connection, run_id: str, symbols: Sequence[str], results: Iterable[DetectorResult]
) -> None:
    """One batch's per-symbol metrics and trades, every detector's, in place of whatever an earlier
    attempt left for these symbols, atomically (a retry or a cleared task leaves one copy)."""
    done = list(results)
    with conn.transaction(), conn.cursor() as cur:
        for table in RESULT_TABLES:
            cur.execute(
                sql.SQL("DELETE FROM {} WHERE run_id = %s AND symbol = ANY(%s)").format(table),
                (run_id, list(symbols)),
            )
        _write_metrics(cur, run_id, {r.detector: r.metrics for r in done})
        trades = [(r.detector, r.trades) for r in done if r.trades]
        if trades:
            copy_in_table(cur, sql.Identifier("market", "backtest_trades"), _trade_table(run_id, trades))


def replace_overall(conn: Connection, run_id: str, rows: Mapping[str, Mapping[str, Any]]) -> None:
    """Each detector's all-symbol row (``*``) in place of an earlier one, atomically."""
    with conn.transaction(), conn.cursor() as cur:
        cur.execute(
            "DELETE FROM market.backtest_metrics WHERE run_id = %s AND symbol = %s", (run_id, ALL_SYMBOLS)
        )
        _write_metrics(cur, run_id, {detector: {ALL_SYMBOLS: values} for detector, values in rows.items()})


def _write_metrics(
    cur: Cursor, run_id: str, by_detector: Mapping[str, Mapping[str, Mapping[str, Any]]]
) -> None:
    with cur.copy(_copy_in("backtest_metrics", METRIC_COLUMNS)) as copy:
        for detector, metrics in by_detector.items():
            for symbol, values in metrics.items():
                copy.write_row((run_id, detector, symbol, *(values[name] for name in METRIC_COLUMNS[2:])))


_TRADE_FIELDS = TRADE_COLUMNS[1:]  # a Trade's own attributes, in the table's order
_TRADE_TYPES: dict[str, pa.DataType] = {
    "symbol": pa.string(),
    **dict.fromkeys(("entry_ts", "signal_ts", "exit_ts"), pa.timestamp("us", tz="UTC")),
    "side": pa.int16(),
    "shares": pa.int64(),
    "bars_held": pa.int32(),
    "exit_reason": pa.string(),
}


def _trade_table(run_id: str, by_detector: Sequence[tuple[str, Sequence[Trade]]]) -> pa.Table:
    """Several detectors' trades as the table's columns, COPYed in binary in one go."""
    read = attrgetter(*_TRADE_FIELDS)
    values = [read(t) for _, trades in by_detector for t in trades]
    columns = dict(zip(_TRADE_FIELDS, zip(*values, strict=True), strict=True))
    count = len(values)
    arrays: dict[str, pa.Array] = {
        "run_id": pa.array([run_id] * count, pa.string()),
        "detector": pa.array([d for d, trades in by_detector for _ in trades], pa.string()),
    }
    for name in _TRADE_FIELDS:
        kind = _TRADE_TYPES.get(name, pa.float64())
        if pa.types.is_timestamp(kind):
            arrays[name] = pa.array(columns[name], pa.int64()).cast(kind)
        else:
            arrays[name] = pa.array(columns[name], kind)
    return pa.table(arrays)


@dataclass(frozen=True)
class DetectorTrades:
    """A detector's trades over the whole run as columns, in ``metrics.trade_order``, with the exact
    counts of the symbols it traded: everything its all-symbol row is made of."""

    exit_ts: np.ndarray  # epoch microseconds
    net_pnl: np.ndarray
    return_pct: np.ndarray
    r_multiple: np.ndarray
    counts: dict[str, int]

    @classmethod
    def none(cls) -> DetectorTrades:
        """A detector that traded on no symbol."""
        zero = {"symbols": 0, "bars": 0, "bars_in_position": 0, "skipped_signals": 0}
        return cls(np.empty(0, np.int64), np.empty(0), np.empty(0), np.empty(0), counts=zero)


_TRADE_ORDER = 'exit_ts, symbol COLLATE "C", entry_ts'  # metrics.trade_order, bytewise like Python
_PACKED_TRADES = sql.SQL(
    f"""SELECT detector,
               string_agg(int8send((date_part('epoch', exit_ts) * 1000000)::bigint), ''
                          ORDER BY {_TRADE_ORDER}),
               string_agg(float8send(net_pnl), '' ORDER BY {_TRADE_ORDER}),
               string_agg(float8send(return_pct), '' ORDER BY {_TRADE_ORDER}),
               string_agg(float8send(r_multiple), '' ORDER BY {_TRADE_ORDER})
        FROM market.backtest_trades WHERE run_id = %s GROUP BY detector"""
)


def detector_trades(conn: Connection, run_id: str) -> dict[str, DetectorTrades]:
    """Every detector's trades and counts, read back from the tables in bulk: one row per detector of
    packed binary columns (as ``read_bars`` reads bars), in ``metrics.trade_order``."""
    packed = {
        str(detector): (
            np.frombuffer(exit_ts, ">i8").astype(np.int64),
            *(np.frombuffer(column, ">f8").astype(np.float64) for column in floats),
        )
        for detector, exit_ts, *floats in conn.execute(_PACKED_TRADES, (run_id,)).fetchall()
    }
    counts = conn.execute(
        """SELECT detector, count(*), coalesce(sum(bars), 0), coalesce(sum(bars_in_position), 0),
                  coalesce(sum(skipped_signals), 0)
           FROM market.backtest_metrics WHERE run_id = %s AND symbol <> %s GROUP BY detector""",
        (run_id, ALL_SYMBOLS),
    ).fetchall()
    out: dict[str, DetectorTrades] = {}
    for detector, symbols, bars, held, skipped in counts:
        tally = {
            "symbols": int(symbols),
            "bars": int(bars),
            "bars_in_position": int(held),
            "skipped_signals": int(skipped),
        }
        if str(detector) in packed:
            exit_ts, net_pnl, return_pct, r_multiple = packed[str(detector)]
            out[str(detector)] = DetectorTrades(exit_ts, net_pnl, return_pct, r_multiple, counts=tally)
        else:
            out[str(detector)] = dataclasses.replace(DetectorTrades.none(), counts=tally)
    return out


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


def search_of(conn: Connection, run_id: str) -> dict[str, Any] | None:
    """The run's search (``detector``, ``points``, ``segments``), None when it searched nothing."""
    row = conn.execute("SELECT search FROM market.backtest_runs WHERE run_id = %s", (run_id,)).fetchone()
    return dict(row[0]) if row and row[0] else None


def replace_search_tallies(
    conn: Connection, run_id: str, batch: str, tallies: Mapping[tuple[int, int], Tally]
) -> None:
    """One batch's tallies of some points, per segment, in place of an earlier attempt's, atomically."""
    points = sorted({point for point, _ in tallies})
    with conn.transaction(), conn.cursor() as cur:
        cur.execute(
            "DELETE FROM market.backtest_search WHERE run_id = %s AND batch = %s AND point = ANY(%s)",
            (run_id, batch, points),
        )
        columns = "run_id, point, segment, batch, trades, wins, sum_r, sum_pnl"
        with cur.copy(f"COPY market.backtest_search ({columns}) FROM STDIN") as copy:
            for (point, segment), t in sorted(tallies.items()):
                copy.write_row((run_id, point, segment, batch, t.trades, t.wins, t.sum_r, t.sum_pnl))


def search_tallies(conn: Connection, run_id: str) -> dict[tuple[int, int], Tally]:
    """Every point's tally per segment, over every batch of symbols."""
    rows = conn.execute(
        """SELECT point, segment, sum(trades), sum(wins), sum(sum_r), sum(sum_pnl)
           FROM market.backtest_search WHERE run_id = %s GROUP BY point, segment""",
        (run_id,),
    ).fetchall()
    return {(int(p), int(g)): Tally(int(n), int(w), float(r), float(pnl)) for p, g, n, w, r, pnl in rows}
