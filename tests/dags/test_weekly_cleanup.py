"""weekly_cleanup through dag.test() on a warehouse spanning more than a year: exact partitions
dropped, boundary rows trimmed, newer rows and other tables intact, a dry run changing nothing."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import psycopg
import pytest

from marketbars.market.calendar import NEW_YORK, sessions_between
from marketbars.warehouse.migrations import migrate
from marketbars.warehouse.partitions import ensure_partitions
from tests.helpers import counted_bars, stored_counts

pytestmark = [pytest.mark.integration, pytest.mark.dagrun]
RUN = dt.datetime(2025, 11, 22, 3, 0, tzinfo=NEW_YORK)  # a Saturday's scheduled run
FIRST_KEPT = dt.date(2024, 11, 22)  # 365 days before the run's date
FIRST_KEPT_AT = dt.datetime.combine(FIRST_KEPT, dt.time(0), NEW_YORK)
SESSIONS = sessions_between(dt.date(2024, 9, 3), dt.date(2025, 11, 21))


def partitions(conn: psycopg.Connection) -> set[str]:
    rows = conn.execute(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
        " WHERE i.inhparent = 'market.historical_bars'::regclass"
    )
    return {name for (name,) in rows}


def sizes(conn: psycopg.Connection, names: list[str]) -> int:
    return sum(
        conn.execute("SELECT pg_total_relation_size(%s::regclass)", (f"market.{n}",)).fetchone()[0]
        for n in names
    )


def snapshot(conn: psycopg.Connection) -> dict[str, object]:
    return {
        "bars": set(conn.execute("SELECT symbol, timeframe, ts FROM market.historical_bars")),
        "partitions": partitions(conn),
        **{
            table: set(conn.execute(f"SELECT * FROM market.{table}"))  # fixed names
            for table in ("watchlist", "quarantine", "ingest_ledger", "rest_ledger", "backfill_gaps")
        },
        "reference_ledger": set(  # dates as text: psycopg reads no infinite date
            conn.execute("SELECT kind, symbol, window_from::text, fetched_at FROM market.reference_ledger")
        ),
        "backtest_runs": set(conn.execute("SELECT run_id, started_at FROM market.backtest_runs")),
        "backtest_metrics": set(conn.execute("SELECT run_id, detector, symbol FROM market.backtest_metrics")),
    }


@pytest.fixture
def spanning(airflow_metadata_db: None, airflow_connections: dict[str, str], conn: psycopg.Connection):
    """Bars of every session from September 2024 to November 2025 (1m, 5m, 1d), and ledger rows
    from 2023 on."""
    migrate(conn)
    ensure_partitions(conn, SESSIONS[0], SESSIONS[-1])
    rows = []
    for day in SESSIONS:
        for local, timeframe in (
            (dt.time(0), "1d"),
            (dt.time(9, 30), "5m"),
            (dt.time(10), "1m"),
            (dt.time(15, 59), "1m"),
        ):
            ts = dt.datetime.combine(day, local, NEW_YORK)
            rows.append(
                (
                    "AAPL",
                    timeframe,
                    ts,
                    1,
                    1,
                    1,
                    1,
                    10,
                    None,
                    1,
                    "flatfile" if timeframe != "5m" else "rollup",
                )
            )
    with conn.cursor() as cur:
        cur.executemany("INSERT INTO market.historical_bars VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)", rows)
    for day in (dt.date(2023, 10, 2), dt.date(2024, 9, 3), dt.date(2025, 6, 2), dt.date(2025, 11, 20)):
        conn.execute(
            "INSERT INTO market.quarantine (dataset, timeframe, session_date, s3_key, etag, reason)"
            " VALUES ('stocks', '1m', %s, 'k', 'e', 'high_below_low')",
            (day,),
        )
        conn.execute(
            "INSERT INTO market.ingest_ledger (dataset, timeframe, session_date, selection_key, s3_key, etag,"
            " size_bytes, rows_read, rows_loaded, rows_quarantined)"
            " VALUES ('stocks', '1m', %s, '*', 'k', 'e', 1, 1, 1, 0)",
            (day,),
        )
        whole_history = ["-infinity"] if day.year == 2023 else []  # once per ticker, kept
        for window_from in [str(day - dt.timedelta(days=30)), *whole_history]:
            conn.execute(
                "INSERT INTO market.reference_ledger (kind, symbol, window_from, window_to, accepted,"
                " rejected, duplicates, requests, request_ids, fetched_at)"
                " VALUES ('split', 'AAPL', %s::date, 'infinity', 0, 0, 0, 1, '{}', %s::date + time '20:00')",
                (window_from, day),
            )
        for status in ("filled", "open"):
            conn.execute(
                "INSERT INTO market.backfill_gaps"
                " (symbol, timeframe, session_date, status, kind, expected, found)"
                " VALUES (%s, '1m', %s, %s, 'missing', 390, 0)",
                ("AAPL" if status == "open" else "MSFT", day, status),
            )
    for run_id, started in (("old", "2024-01-05"), ("recent", "2025-11-01")):
        conn.execute(
            "INSERT INTO market.backtest_runs (run_id, start_date, end_date, timeframe, symbols, detectors,"
            " settings, detector_params, adjustment, actions, status, started_at)"
            " VALUES (%s, '2024-01-02', '2024-01-03', '5m', '{AAPL}', '{breakout_bullish}', '{}', '{}',"
            " 'splits', '{}', 'succeeded', %s)",
            (run_id, started),
        )
        conn.execute(
            "INSERT INTO market.backtest_metrics (run_id, detector, symbol, trades, wins, losses, net_pnl,"
            " gross_profit, gross_loss, max_drawdown, max_drawdown_pct, bars, skipped_signals)"
            " VALUES (%s, 'breakout_bullish', '*', 0, 0, 0, 0, 0, 0, 0, 0, 10, 0)",
            (run_id,),
        )
    return conn


def test_a_dry_run_reports_and_changes_nothing(
    dagbag, spanning: psycopg.Connection, tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.setenv("AIRFLOW_VAR_MASSIVE_DOWNLOAD_DIR", str(tmp_path))
    stale = tmp_path / "2024-11-18.abc.csv.gz"
    stale.write_text("x")
    os.utime(stale, (0, 0))
    before = snapshot(spanning)

    run = dagbag.dags["weekly_cleanup"].test(logical_date=RUN, run_conf={"dry_run": True})

    assert run.state == "success"
    assert snapshot(spanning) == before and stale.exists()
    summary = run.get_task_instance("summarize").xcom_pull(task_ids="summarize")
    assert summary["partitions_dropped"] == ["historical_bars_2024_09", "historical_bars_2024_10"]
    expected_trim = sum(
        1 for (_, _, ts) in before["bars"] if ts < FIRST_KEPT_AT and ts.astimezone(NEW_YORK).month == 11
    )
    assert summary["rows_trimmed"] == expected_trim > 0
    assert summary["files_removed"] == 1
    assert (
        summary["bytes_freed"] == sizes(spanning, ["historical_bars_2024_09", "historical_bars_2024_10"]) > 0
    )


def test_retention_drops_old_partitions_trims_the_boundary_and_keeps_the_rest(
    dagbag, spanning: psycopg.Connection, tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.setenv("AIRFLOW_VAR_MASSIVE_DOWNLOAD_DIR", str(tmp_path))
    monkeypatch.setenv("AIRFLOW_VAR_CLEANUP_QUARANTINE_RETENTION_DAYS", "200")  # its own setting
    monkeypatch.setenv("AIRFLOW_VAR_CLEANUP_BACKTEST_RETENTION_DAYS", "365")  # default: kept forever
    stale, fresh = tmp_path / "2024-11-18.abc.csv.gz", tmp_path / "2025-11-21.def.csv.gz"
    for path in (stale, fresh):
        path.write_text("x")
    os.utime(stale, (0, 0))
    freed = sizes(spanning, ["historical_bars_2024_09", "historical_bars_2024_10"])
    before = snapshot(spanning)
    counts = counted_bars(spanning)  # stored as the writers would have
    spanning.execute(
        "INSERT INTO market.bar_counts (symbol, timeframe, session_date, regular, total)"
        " SELECT * FROM unnest(%s::text[], %s::text[], %s::date[], %s::int[], %s::int[])",
        [list(column) for column in zip(*((*key, *n) for key, n in counts.items()), strict=True)],
    )
    # A drop cut short last week: September's partition detached but not dropped.
    spanning.execute("ALTER TABLE market.historical_bars DETACH PARTITION market.historical_bars_2024_09")

    run = dagbag.dags["weekly_cleanup"].test(logical_date=RUN, run_conf={"dry_run": False})

    assert run.state == "success"
    after = snapshot(spanning)
    assert after["partitions"] == before["partitions"] - {
        "historical_bars_2024_09",
        "historical_bars_2024_10",
    }
    assert after["bars"] == {bar for bar in before["bars"] if bar[2] >= FIRST_KEPT_AT}  # every timeframe
    assert min(bar[2] for bar in after["bars"]).astimezone(NEW_YORK).date() == FIRST_KEPT
    assert after["watchlist"] == before["watchlist"]
    assert {row[3] for row in after["quarantine"]} == {dt.date(2025, 6, 2), dt.date(2025, 11, 20)}  # 200 days
    assert {row[2] for row in after["ingest_ledger"]} == {
        dt.date(2024, 9, 3),
        dt.date(2025, 6, 2),
        dt.date(2025, 11, 20),
    }
    assert {(row[2], row[3]) for row in after["backfill_gaps"]} == {
        (dt.date(2023, 10, 2), "open"),  # an open gap is still being worked
        *(
            (day, status)
            for day in (dt.date(2024, 9, 3), dt.date(2025, 6, 2), dt.date(2025, 11, 20))
            for status in ("filled", "open")
        ),
    }
    assert not stale.exists() and fresh.exists()
    kept = {key: n for key, n in counts.items() if key[2] >= FIRST_KEPT}
    assert stored_counts(spanning) == kept and len(kept) < len(counts)  # the removed sessions' counts went
    summary = run.get_task_instance("summarize").xcom_pull(task_ids="summarize")
    assert summary["partitions_dropped"] == ["historical_bars_2024_09", "historical_bars_2024_10"]
    assert summary["rows_trimmed"] == len(before["bars"]) - len(after["bars"]) - sum(
        1 for bar in before["bars"] if bar[2].astimezone(NEW_YORK).month in (9, 10) and bar[2].year == 2024
    )
    assert summary["ledger_rows_pruned"] == {
        "quarantine": 2,
        "ingest_ledger": 1,
        "rest_ledger": 0,
        "backfill_gaps": 1,
        "reference_ledger": 1,  # the 2023 window; the ticker's whole-history fetch stays
        "backtest_runs": 1,
    }
    assert {row[0] for row in after["backtest_runs"]} == {"recent"}
    assert {row[0] for row in after["backtest_metrics"]} == {"recent"}  # the old run's results went with it
    assert summary["bytes_freed"] == freed and summary["files_removed"] == 1
    assert spanning.execute("SELECT to_regclass('market.historical_bars_2024_09')").fetchone() == (None,)

    again = dagbag.dags["weekly_cleanup"].test(
        logical_date=RUN, run_conf={"dry_run": False}
    )  # a re-run finds nothing left to do

    assert again.state == "success"
    assert snapshot(spanning) == after
    repeat = again.get_task_instance("summarize").xcom_pull(task_ids="summarize")
    assert (repeat["partitions_dropped"], repeat["rows_trimmed"], repeat["files_removed"]) == ([], 0, 0)


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(Path(__file__).resolve().parents[2] / "dags"))
    for task in bag.dags["weekly_cleanup"].tasks:  # dag.test() waits out real retry delays
        task.retries = 0
    return bag
