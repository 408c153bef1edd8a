"""Backtests in the warehouse: adjusted bars in (``market.bars_adjusted``), runs, metrics and trades out.

Each detector's results are replaced in one transaction, so a retried or re-run task leaves
exactly one copy of them.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
from psycopg import sql

from marketbars.backtest import bars as bars_module
from marketbars.backtest.bars import Bars
from marketbars.backtest.metrics import FIELDS
from marketbars.backtest.report import EquityCurve
from marketbars.backtest.runner import DetectorResult
from marketbars.backtest.search import Tally
from marketbars.backtest.trades import EXIT_REASONS, KINDS, Trade, Trades, repeated, to_arrow
from marketbars.market.calendar import day_window
from marketbars.market.symbols import ALL_SYMBOLS
from marketbars.warehouse.connection import Connection, Cursor
from marketbars.warehouse.copy import copy_in_table

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
        # The run's row stays until this commits (as a foreign key would hold it, once per batch
        # rather than once per trade: see migration 0012).
        if (
            cur.execute(
                "SELECT 1 FROM market.backtest_runs WHERE run_id = %s FOR KEY SHARE", (run_id,)
            ).fetchone()
            is None
        ):
            raise LookupError(
                f"backtest run {run_id!r} is not in market.backtest_runs: nothing to attach results to"
            )
        for table in RESULT_TABLES:
            cur.execute(
                sql.SQL("DELETE FROM {} WHERE run_id = %s AND symbol = ANY(%s)").format(table),
                (run_id, list(symbols)),
            )
        _write_metrics(cur, run_id, {r.detector: r.metrics for r in done})
        trades = [(r.detector, r.trades) for r in done if r.trades]
        if trades:
            copy_in_table(cur, sql.Identifier("market", "backtest_trades"), _trade_table(run_id, trades))


def replace_overall(
    conn: Connection,
    run_id: str,
    rows: Mapping[str, Mapping[str, Any]],
    curves: Mapping[str, EquityCurve] | None = None,
) -> None:
    """Each detector's all-symbol row (``*``) and equity curve in place of earlier ones, atomically."""
    with conn.transaction(), conn.cursor() as cur:
        cur.execute(
            "DELETE FROM market.backtest_metrics WHERE run_id = %s AND symbol = %s", (run_id, ALL_SYMBOLS)
        )
        _write_metrics(cur, run_id, {detector: {ALL_SYMBOLS: values} for detector, values in rows.items()})
        cur.execute("DELETE FROM market.backtest_equity WHERE run_id = %s", (run_id,))
        for detector, curve in (curves or {}).items():
            cur.execute(  # times as epoch microseconds: integers pass far cheaper than datetimes
                """INSERT INTO market.backtest_equity (run_id, detector, trades, capital, times, returns)
                   VALUES (%s, %s, %s, %s,
                           ARRAY(SELECT 'epoch'::timestamptz + us * interval '1 microsecond'
                                 FROM unnest(%s::bigint[]) WITH ORDINALITY AS t(us, i) ORDER BY i),
                           %s)""",
                (run_id, detector, curve.trades, curve.capital, curve.times.tolist(), curve.returns.tolist()),
            )


def _write_metrics(
    cur: Cursor, run_id: str, by_detector: Mapping[str, Mapping[str, Mapping[str, Any]]]
) -> None:
    with cur.copy(_copy_in("backtest_metrics", METRIC_COLUMNS)) as copy:
        for detector, metrics in by_detector.items():
            for symbol, values in metrics.items():
                copy.write_row((run_id, detector, symbol, *(values[name] for name in METRIC_COLUMNS[2:])))


def _trade_table(run_id: str, by_detector: Sequence[tuple[str, Trades]]) -> pa.Table:
    """Several detectors' trades as the table's columns, COPYed in binary in one go."""
    trades = Trades.concat([t for _, t in by_detector])
    return pa.table(
        {
            "run_id": repeated(run_id, len(trades)),
            "detector": pa.concat_arrays([repeated(d, len(t)) for d, t in by_detector]),
            **to_arrow(trades),
        }
    )


_TEXT = ("symbol", "exit_reason")  # newline-separated; every other column packed in binary
_PACKED_TRADES = sql.SQL(
    "SELECT {} FROM market.backtest_trades WHERE run_id = %s AND detector = %s"
).format(
    sql.SQL(", ").join(
        sql.SQL("string_agg({}, {})").format(
            sql.SQL(
                "{c}" if name in _TEXT
                else "int8send((date_part('epoch', {c}) * 1000000)::bigint)" if name.endswith("_ts")
                else "int8send({c}::bigint)" if KINDS.get(name) is np.int64
                else "float8send({c})"
            ).format(c=sql.Identifier(name)),
            sql.Literal("\n" if name in _TEXT else b""),
        )
        for name in Trade._fields
    )
)  # fmt: skip


def detector_trades(conn: Connection, run_id: str, detector: str) -> Trades:
    """One detector's stored trades over the whole run, in ``Trades.in_trade_order``, read in bulk: one
    row of packed binary columns (as ``read_bars`` reads bars), the text ones newline-separated. The
    columns are packed in one pass, so in one (any) row order; the order is made here, in numpy,
    cheaper than a sort on the server."""
    row = conn.execute(_PACKED_TRADES, (run_id, detector)).fetchone()
    if row is None or row[0] is None:
        return Trades.empty()
    columns: dict[str, np.ndarray] = {}
    for name, packed in zip(Trade._fields, row, strict=True):
        if name == "symbol":
            columns[name] = np.asarray(packed.split("\n"), str)
        elif name == "exit_reason":
            codes = {reason: code for code, reason in enumerate(EXIT_REASONS)}
            columns[name] = np.asarray([codes[r] for r in packed.split("\n")], np.int8)
        else:
            kind = KINDS.get(name, np.float64)
            columns[name] = np.frombuffer(packed, ">i8" if kind is np.int64 else ">f8").astype(kind)
    return Trades(**columns).in_trade_order()


def trade_counts(conn: Connection, run_id: str) -> dict[str, dict[str, int]]:
    """Per detector, the exact counts its all-symbol row is made of: the symbols it traded (its
    per-symbol rows), their bars, bars in a position and skipped signals, summed over every batch."""
    rows = conn.execute(
        """SELECT detector, count(*), coalesce(sum(bars), 0), coalesce(sum(bars_in_position), 0),
                  coalesce(sum(skipped_signals), 0)
           FROM market.backtest_metrics WHERE run_id = %s AND symbol <> %s GROUP BY detector""",
        (run_id, ALL_SYMBOLS),
    ).fetchall()
    return {
        str(detector): {
            "symbols": int(symbols),
            "bars": int(bars),
            "bars_in_position": int(held),
            "skipped_signals": int(skipped),
        }
        for detector, symbols, bars, held, skipped in rows
    }


def finish_run(conn: Connection, run_id: str, status: str) -> None:
    conn.execute(
        "UPDATE market.backtest_runs SET status = %s, finished_at = now() WHERE run_id = %s", (status, run_id)
    )


def metrics_of(conn: Connection, run_id: str, symbol: str | None = None) -> list[dict[str, Any]]:
    """A run's metrics rows (only ``symbol``'s when given: ``*`` for the all-symbol rows)."""
    cur = conn.execute(
        sql.SQL(
            "SELECT {} FROM market.backtest_metrics WHERE run_id = %s AND (%s::text IS NULL OR symbol = %s)"
            " ORDER BY detector, symbol = '*' DESC, symbol"
        ).format(sql.SQL(", ").join(map(sql.Identifier, METRIC_COLUMNS))),
        (run_id, symbol, symbol),
    )
    return [dict(zip(METRIC_COLUMNS, row, strict=True)) for row in cur.fetchall()]


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
