"""What the warehouse holds, read for people: freshness, recent file loads, quarantined rows and
reference records, backtest runs. Read-only queries with bound parameters; nothing here writes."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from marketbars.market.timeframes import TIMEFRAMES
from marketbars.warehouse.connection import Connection


def _rows(conn: Connection, query: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
    cur = conn.execute(query, params)
    names = [c.name for c in cur.description or ()]
    return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def latest_bars(conn: Connection, symbols: Sequence[str]) -> dict[tuple[str, str], dt.datetime]:
    """(symbol, timeframe) -> the start of its latest bar: one index probe per pair (the primary
    key's order), however many bars the warehouse holds."""
    rows = conn.execute(
        """SELECT s.symbol, t.timeframe, latest.ts
           FROM unnest(%s::text[]) AS s(symbol) CROSS JOIN unnest(%s::text[]) AS t(timeframe)
           CROSS JOIN LATERAL (
               SELECT b.ts FROM market.historical_bars b
               WHERE b.symbol = s.symbol AND b.timeframe = t.timeframe
               ORDER BY b.ts DESC LIMIT 1) AS latest""",
        (list(symbols), list(TIMEFRAMES)),
    ).fetchall()
    return {(str(symbol), str(timeframe)): ts for symbol, timeframe, ts in rows}


def recent_file_loads(conn: Connection, limit: int) -> list[dict[str, Any]]:
    """The latest flat-file loads: which object version (ETag) gave how many rows, and when."""
    return _rows(
        conn,
        """SELECT dataset, timeframe, session_date, s3_key, etag, selection_key, rows_read, rows_loaded,
                  rows_quarantined, load_seconds, run_id, loaded_at
           FROM market.ingest_ledger ORDER BY loaded_at DESC, session_date DESC, dataset, timeframe
           LIMIT %s""",
        (limit,),
    )


def quarantine_reasons(conn: Connection, since: dt.datetime) -> list[dict[str, Any]]:
    """Bar rows quarantined since ``since``, per reason: how many, over which sessions, and one sample
    row (the latest) to see what the file held."""
    return _rows(
        conn,
        """SELECT q.reason, q.rows, q.first_session, q.last_session, s.sample
           FROM (SELECT reason, count(*) AS rows, min(session_date) AS first_session,
                        max(session_date) AS last_session, max(id) AS latest
                 FROM market.quarantine WHERE quarantined_at >= %s GROUP BY reason) AS q
           CROSS JOIN LATERAL (
               SELECT jsonb_build_object(
                          'dataset', dataset, 'timeframe', timeframe, 'session', session_date,
                          'symbol', symbol, 's3_key', s3_key, 'line', line_number, 'raw', raw) AS sample
               FROM market.quarantine WHERE id = q.latest) AS s
           ORDER BY q.rows DESC, q.reason""",
        (since,),
    )


def held_back_actions(conn: Connection, limit: int) -> list[dict[str, Any]]:
    """Corporate-action records the checks held back (never applied), latest first, with why."""
    return _rows(
        conn,
        """SELECT kind, requested, symbol, day, reason, source_id, raw, quarantined_at
           FROM market.reference_quarantine ORDER BY quarantined_at DESC, id DESC LIMIT %s""",
        (limit,),
    )


_RUN_COLUMNS = """r.run_id, r.start_date, r.end_date, r.timeframe, r.adjustment, r.status,
    cardinality(r.symbols) AS symbols, r.detectors, r.started_at, r.finished_at,
    r.search IS NOT NULL AS searched, f.stale"""


def backtest_runs(conn: Connection, limit: int) -> list[dict[str, Any]]:
    """The latest backtest runs, with whether a later load changed what they read (the data version
    is computed for these runs only)."""
    return _rows(
        conn,
        f"""SELECT {_RUN_COLUMNS}
            FROM (SELECT * FROM market.backtest_runs ORDER BY started_at DESC, run_id LIMIT %s) r
            LEFT JOIN LATERAL (SELECT stale FROM market.backtest_freshness WHERE run_id = r.run_id) f ON true
            ORDER BY r.started_at DESC, r.run_id""",  # a fixed column list
        (limit,),
    )


def backtest_run(conn: Connection, run_id: str) -> dict[str, Any] | None:
    """One run as ``backtest_runs`` lists it, or None."""
    rows = _rows(
        conn,
        f"""SELECT {_RUN_COLUMNS} FROM market.backtest_runs r
            LEFT JOIN LATERAL (SELECT stale FROM market.backtest_freshness WHERE run_id = r.run_id) f ON true
            WHERE r.run_id = %s""",  # a fixed column list
        (run_id,),
    )
    return rows[0] if rows else None


def equity_curves(conn: Connection, run_id: str) -> list[dict[str, Any]]:
    """A run's stored equity curves (``market.backtest_equity``), one per detector."""
    return _rows(
        conn,
        """SELECT detector, trades, capital, times, returns FROM market.backtest_equity
           WHERE run_id = %s ORDER BY detector""",
        (run_id,),
    )
