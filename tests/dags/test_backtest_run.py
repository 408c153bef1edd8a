"""backtest_run through dag.test() over sample-market data loaded into the warehouse: the result
tables agree with each other and with the bars, the report folder holds every file, a retried
detector replaces its rows, and splits are applied at read time."""

from __future__ import annotations

import csv
import datetime as dt
import json
from pathlib import Path

import psycopg
import pytest

from marketbars.backtest import detectors
from marketbars.market import calendar
from marketbars.pipelines.backtest import tasks as backtest_tasks
from marketbars.warehouse.migrations import migrate
from marketbars.warehouse.rollup_rebuilds import rebuild_rollups
from sandbox import market
from tests.helpers import load_file

pytestmark = [pytest.mark.integration, pytest.mark.dagrun]
DAYS = calendar.sessions_between(dt.date(2024, 3, 4), dt.date(2024, 3, 15))
WATCHED = {"stocks": ["AAPL", "MSFT", "SPY"], "indices": ["I:SPX"]}
SLIPPAGE = 10 / 10_000


@pytest.fixture(scope="module")
def backtest_dag():
    from airflow.dag_processing.dagbag import DagBag

    dag = DagBag(dag_folder=str(Path(__file__).resolve().parents[2] / "dags")).dags["backtest_run"]
    for task in dag.tasks:  # dag.test() waits out real retry delays: a failing task fails the test at once
        task.retries = 0
    return dag


@pytest.fixture
def loaded(
    backtest_dag, airflow_metadata_db: None, airflow_connections: dict[str, str], conn: psycopg.Connection,
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
):  # fmt: skip
    """Ten sessions of 1m bars (and their derived bars) for three stocks and an index."""
    monkeypatch.setenv("AIRFLOW_VAR_MARKET_BACKTEST_REPORTS_DIR", str(tmp_path / "reports"))
    migrate(conn)
    conn.execute(
        "UPDATE market.watchlist SET active = symbol = ANY(%s)", (WATCHED["stocks"] + WATCHED["indices"],)
    )
    for day in DAYS:
        for dataset, symbols in WATCHED.items():
            load_file(conn, tmp_path, market.build_file(dataset, "1m", day), symbols)
            rebuild_rollups(conn, dataset, day, symbols)
    return backtest_dag


def bar_opens(conn: psycopg.Connection, timeframe: str) -> dict[tuple[str, dt.datetime], float]:
    rows = conn.execute(
        "SELECT symbol, ts, open FROM market.historical_bars WHERE timeframe = %s", (timeframe,)
    )
    return {(symbol, ts): price for symbol, ts, price in rows}


def run(dag, **conf):
    result = dag.test(run_conf={"start_date": DAYS[2].isoformat(), "end_date": DAYS[-1].isoformat(), **conf})
    assert result.state == "success"
    return result


def test_a_run_fills_the_tables_and_the_report_consistently(loaded, conn: psycopg.Connection) -> None:
    dag_run = run(loaded, timeframe="5m", min_trades=1)
    run_row = conn.execute(
        "SELECT status, prices, symbols, detectors, report_dir FROM market.backtest_runs WHERE run_id = %s",
        (dag_run.run_id,),
    ).fetchone()
    status, prices, symbols, names, folder = run_row
    assert (status, prices) == ("succeeded", "raw")
    assert sorted(symbols) == sorted(WATCHED["stocks"] + WATCHED["indices"])
    assert names == list(detectors.REGISTRY)

    trades = conn.execute(
        """SELECT detector, symbol, side, signal_ts, entry_ts, exit_ts, entry_price, exit_price, shares,
                  net_pnl, exit_reason FROM market.backtest_trades WHERE run_id = %s""",
        (dag_run.run_id,),
    ).fetchall()
    assert len(trades) > 20, "the sample market should trigger a fair number of setups"
    opens = bar_opens(conn, "5m")
    first_traded = calendar.session_hours(DAYS[2]).open
    for detector, symbol, side, signal_ts, entry_ts, exit_ts, entry, _exit, shares, _pnl, reason in trades:
        assert signal_ts >= first_traded, "warm-up bars never trade"
        assert signal_ts < entry_ts <= exit_ts  # filled after the signal bar: no look-ahead
        assert entry == pytest.approx(opens[(symbol, entry_ts)] * (1 + side * SLIPPAGE), rel=1e-12)
        assert symbol not in WATCHED["indices"] or detector.startswith("index_")
        assert side == detectors.REGISTRY[detector].side and shares > 0
        if detectors.REGISTRY[detector].intraday:
            assert reason != "max_hold" or entry_ts.date() == exit_ts.date()
            assert calendar.today_in_new_york(entry_ts) == calendar.today_in_new_york(exit_ts)

    per_detector = conn.execute(
        """SELECT m.detector, m.trades, m.net_pnl, count(t.*), coalesce(sum(t.net_pnl), 0)
           FROM market.backtest_metrics m LEFT JOIN market.backtest_trades t
             ON t.run_id = m.run_id AND t.detector = m.detector
           WHERE m.run_id = %s AND m.symbol = '*' GROUP BY 1, 2, 3""",
        (dag_run.run_id,),
    ).fetchall()
    assert {row[0] for row in per_detector} == set(detectors.REGISTRY)
    for detector, count, pnl, rows, total in per_detector:
        assert count == rows and pnl == pytest.approx(float(total)), detector

    folder = Path(folder)
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["status"] == "succeeded" and summary["prices"] == "raw"
    assert [r["detector"] for r in summary["ranking"]] and len(summary["ranking"]) == len(detectors.REGISTRY)
    assert summary["trades"] == len(trades)
    assert set(summary["unavailable"]) == {"gamma_squeeze", "gamma_flip"}
    with (folder / "trades.csv").open() as f:
        assert sum(1 for _ in csv.DictReader(f)) == len(trades)
    with (folder / "metrics.csv").open() as f:
        metric_rows = list(csv.DictReader(f))
    assert (
        len(metric_rows)
        == conn.execute(
            "SELECT count(*) FROM market.backtest_metrics WHERE run_id = %s", (dag_run.run_id,)
        ).fetchone()[0]
    )
    for name in detectors.REGISTRY:
        assert (folder / f"equity_{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_retried_detector_replaces_its_rows(loaded, conn: psycopg.Connection) -> None:
    dag_run = run(loaded, timeframe="1m", detectors=["breakout_bullish", "mean_reversion_long"])
    query = """SELECT detector, symbol, entry_ts, exit_ts, net_pnl FROM market.backtest_trades
               WHERE run_id = %s ORDER BY 1, 2, 3"""
    before = conn.execute(query, (dag_run.run_id,)).fetchall()
    assert before
    backtest_tasks.run_detector("breakout_bullish", dag_run.run_id)  # a retry, or a cleared task
    assert conn.execute(query, (dag_run.run_id,)).fetchall() == before


def test_splits_are_applied_at_read_time_and_reported(loaded, conn: psycopg.Connection) -> None:
    split_day = DAYS[6]
    conn.execute(
        "INSERT INTO market.splits (symbol, execution_date, split_from, split_to) VALUES ('AAPL', %s, 1, 4)",
        (split_day,),
    )
    two = ["breakout_bullish", "mean_reversion_long"]
    dag_run = run(loaded, timeframe="15m", symbols=["AAPL"], detectors=two, min_trades=0)
    status, prices, folder = conn.execute(
        "SELECT status, prices, report_dir FROM market.backtest_runs WHERE run_id = %s", (dag_run.run_id,)
    ).fetchone()
    assert (status, prices) == ("succeeded", "split_adjusted")
    summary = json.loads((Path(folder) / "summary.json").read_text())
    assert summary["splits_applied"] == [
        {"symbol": "AAPL", "execution_date": split_day.isoformat(), "split_from": 1.0, "split_to": 4.0}
    ]
    opens = bar_opens(conn, "15m")
    trades = conn.execute(
        "SELECT symbol, side, entry_ts, entry_price FROM market.backtest_trades WHERE run_id = %s",
        (dag_run.run_id,),
    ).fetchall()
    before_split = [t for t in trades if calendar.today_in_new_york(t[2]) < split_day]
    assert before_split, "the window should hold trades before the split"
    for symbol, side, entry_ts, entry in trades:
        factor = 0.25 if calendar.today_in_new_york(entry_ts) < split_day else 1.0
        assert entry == pytest.approx(opens[(symbol, entry_ts)] * factor * (1 + side * SLIPPAGE), rel=1e-12)


def test_bad_params_fail_the_run_with_the_reason(loaded, conn: psycopg.Connection) -> None:
    for conf in (
        {"detectors": ["gamma_flip"]},
        {"detectors": ["breakout_bullish"], "detector_params": {"breakout_bullish": {"lookbak": 3}}},
    ):
        result = loaded.test(run_conf={"start_date": DAYS[2].isoformat(), **conf})
        assert result.state == "failed"
    assert conn.execute("SELECT count(*) FROM market.backtest_runs").fetchone()[0] == 0
