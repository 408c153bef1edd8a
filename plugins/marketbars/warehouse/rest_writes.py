"""An API answer's write: one symbol's bars of some sessions, its quarantined rows and its
``market.rest_ledger`` rows, in one transaction.

Flat files are the canonical history: a session a flat file already holds for the symbol is left
alone, or (gap repair) only gets bars at the timestamps it lacks.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import pyarrow as pa
import pyarrow.compute as pc
from psycopg import sql

from marketbars.market.bars import SessionBars
from marketbars.market.calendar import day_window, is_session, session_hours
from marketbars.market.provenance import ApiFetch
from marketbars.warehouse import bar_counts, quarantine
from marketbars.warehouse.bars import COPY_SCHEMA, TABLE, copy_rows, lock_session
from marketbars.warehouse.connection import Connection, Cursor
from marketbars.warehouse.copy import copy_in

SessionStatus = tuple[str, int]  # (status, bars written)
Outcome = tuple[str, int, int]  # (status, bars written, rows quarantined)


def replace_rest_sessions(
    conn: Connection,
    fetch: ApiFetch,
    parsed: SessionBars,
    run_id: str | None = None,
    *,
    patch_flatfile_sessions: bool = False,
) -> dict[dt.date, SessionStatus]:
    """Write a symbol's REST bars for its sessions in one transaction; return each session's status
    and the bars written.

    A session a flat file already holds for the symbol is left alone ('flatfile'), or, with
    ``patch_flatfile_sessions`` (gap repair), gets the REST bars only at the timestamps it lacks
    ('patched'; a flat-file bar is never overwritten, and a re-loaded file replaces the patch).
    Otherwise the session's earlier non-flat-file bars are replaced by the REST bars ('loaded'), or
    it is recorded as a gap when the API had none ('empty').
    """
    sessions = sorted(fetch.sessions)
    with conn.transaction(), conn.cursor() as cur:
        for session in sessions:  # in date order, as every writer does: no lock-order deadlock
            lock_session(cur, fetch.asset_class, fetch.timeframe, session)
        covered = _flatfile_sessions(cur, fetch, sessions)
        writable = [s for s in sessions if s not in covered]
        _replace_bars(cur, fetch, parsed, writable)
        patched = _patch_sessions(cur, fetch, parsed, sorted(covered)) if patch_flatfile_sessions else {}
        _replace_quarantine(cur, fetch, parsed, writable, patched, [] if patch_flatfile_sessions else covered)
        outcomes = {
            session: _outcome(session, covered, parsed, patched, patch_flatfile_sessions)
            for session in sessions
        }
        for session, outcome in outcomes.items():
            _record(cur, fetch, session, outcome, run_id)
        _recount(cur, fetch, sessions)
    return {session: (status, loaded) for session, (status, loaded, _) in outcomes.items()}


def _recount(cur: Cursor, fetch: ApiFetch, sessions: Sequence[dt.date]) -> None:
    """The symbol's counts of the sessions as they are once this write commits (a few index range
    scans: cheaper and surer than deriving them from what was deleted, kept and patched)."""
    hours = [session_hours(s) for s in sessions if is_session(s)]
    bar_counts.recount_and_store(cur, bar_counts.cells([fetch.symbol], hours, [fetch.timeframe]))


def _flatfile_sessions(cur: Cursor, fetch: ApiFetch, sessions: Sequence[dt.date]) -> set[dt.date]:
    """The sessions whose bars of the symbol came from a flat file."""
    first, _ = day_window(sessions[0])
    _, last = day_window(sessions[-1])
    rows = cur.execute(
        """SELECT DISTINCT (ts AT TIME ZONE 'America/New_York')::date FROM market.historical_bars
           WHERE symbol = %s AND timeframe = %s AND ts >= %s AND ts < %s AND source = 'flatfile'""",
        (fetch.symbol, fetch.timeframe, first, last),
    ).fetchall()
    return {day for (day,) in rows}


def _replace_bars(cur: Cursor, fetch: ApiFetch, parsed: SessionBars, writable: Sequence[dt.date]) -> None:
    """The REST bars in place of the sessions' earlier non-flat-file bars."""
    for session in writable:
        start, end = day_window(session)
        cur.execute(
            """DELETE FROM market.historical_bars
               WHERE symbol = %s AND timeframe = %s AND ts >= %s AND ts < %s AND source <> 'flatfile'""",
            (fetch.symbol, fetch.timeframe, start, end),
        )
    bars = _in_sessions(parsed.bars, "ts", writable)
    copy_in(cur, TABLE, COPY_SCHEMA, copy_rows(bars, fetch.timeframe, "rest"))


def _patch_sessions(
    cur: Cursor, fetch: ApiFetch, parsed: SessionBars, sessions: Sequence[dt.date]
) -> dict[dt.date, int]:
    """Insert the REST bars of flat-file sessions at the timestamps they have no bar; rows per session."""
    if not sessions:
        return {}
    cur.execute("CREATE TEMPORARY TABLE rest_patch (LIKE market.historical_bars) ON COMMIT DROP")
    bars = _in_sessions(parsed.bars, "ts", sessions)
    copy_in(cur, sql.Identifier("rest_patch"), COPY_SCHEMA, copy_rows(bars, fetch.timeframe, "rest"))
    inserted = cur.execute(
        """INSERT INTO market.historical_bars SELECT * FROM rest_patch
           ON CONFLICT (symbol, timeframe, ts) DO NOTHING
           RETURNING (ts AT TIME ZONE 'America/New_York')::date"""
    ).fetchall()
    patched = dict.fromkeys(sessions, 0)
    for (day,) in inserted:
        patched[day] += 1
    return patched


def _replace_quarantine(
    cur: Cursor,
    fetch: ApiFetch,
    parsed: SessionBars,
    writable: Sequence[dt.date],
    patched: dict[dt.date, int],
    moot: Sequence[dt.date] | set[dt.date],
) -> None:
    """The answer's rejected rows in place of earlier ones. They are kept when dated on a non-trading
    day too; those of a flat-file session left alone are moot."""
    rejected = parsed.quarantined.filter(
        pc.invert(pc.is_in(parsed.quarantined["session_date"], pa.array(sorted(moot), pa.date32())))
    )
    replaced = set(writable) | set(patched) | set(rejected["session_date"].to_pylist())
    quarantine.clear_api_rows(cur, fetch.symbol, fetch.timeframe, sorted(replaced))
    quarantine.write(
        cur,
        rejected,
        dataset=fetch.asset_class,
        timeframe=fetch.timeframe,
        source="rest",
        request_id=",".join(fetch.request_ids),
    )


def _outcome(
    session: dt.date, covered: set[dt.date], parsed: SessionBars, patched: dict[dt.date, int], patching: bool
) -> Outcome:
    """(status, bars written, rows quarantined) of one session."""
    rejected = parsed.quarantined_by_session.get(session, 0)
    if session in covered:
        return ("patched", patched[session], rejected) if patching else ("flatfile", 0, 0)
    loaded = parsed.loaded_by_session.get(session, 0)
    return ("loaded" if loaded else "empty"), loaded, rejected


def _record(cur: Cursor, fetch: ApiFetch, session: dt.date, outcome: Outcome, run_id: str | None) -> None:
    """The session's ledger row (its derived bars are due again: ``rollups_at`` is cleared)."""
    status, loaded, quarantined = outcome
    cur.execute(
        """INSERT INTO market.rest_ledger (symbol, timeframe, session_date, status, rows_loaded,
               rows_quarantined, requests, request_ids, run_id, fetched_at)
           VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, now())
           ON CONFLICT (symbol, timeframe, session_date) DO UPDATE SET
               status = EXCLUDED.status, rows_loaded = EXCLUDED.rows_loaded,
               rows_quarantined = EXCLUDED.rows_quarantined, requests = EXCLUDED.requests,
               request_ids = EXCLUDED.request_ids, run_id = EXCLUDED.run_id, fetched_at = now(),
               rollups_at = NULL""",
        (
            fetch.symbol,
            fetch.timeframe,
            session,
            status,
            loaded,
            quarantined,
            fetch.requests,
            list(fetch.request_ids),
            run_id,
        ),
    )


def _in_sessions(table: pa.Table, column: str, sessions: Sequence[dt.date]) -> pa.Table:
    """The rows whose timestamp falls in one of the sessions' New York days."""
    keep = pa.array([False] * table.num_rows, pa.bool_())
    for session in sessions:
        start, end = day_window(session)
        inside = pc.and_(
            pc.greater_equal(table[column], pa.scalar(start)), pc.less(table[column], pa.scalar(end))
        )
        keep = pc.or_(keep, inside)
    return table.filter(keep)
