"""backtest_run through dag.test() over sample-market data loaded into the warehouse: the result
tables agree with each other and with the bars, the report folder holds every file, batches combine
exactly and a retried batch replaces its rows, and corporate actions are applied at read time (a
split's gap is no signal when adjusted) and reported."""

from __future__ import annotations

import csv
import datetime as dt
import json
from pathlib import Path

import psycopg
import pyarrow.parquet as pq
import pytest

from marketbars.backtest import detectors, runner, search
from marketbars.backtest.engine import Settings
from marketbars.market import calendar
from marketbars.market.symbols import ALL_SYMBOLS
from marketbars.pipelines.backtest import rules as backtest_rules
from marketbars.pipelines.backtest import tasks as backtest_tasks
from marketbars.warehouse import backtests
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
    # dag.test() leaves a run's conf in the DAG's params: name the search, so none leaks into the next
    result = dag.test(
        run_conf={"start_date": DAYS[2].isoformat(), "end_date": DAYS[-1].isoformat(), "search": {}, **conf}
    )
    assert result.state == "success"
    return result


def test_a_run_fills_the_tables_and_the_report_consistently(loaded, conn: psycopg.Connection) -> None:
    dag_run = run(loaded, timeframe="5m", min_trades=1)
    run_row = conn.execute(
        "SELECT status, adjustment, symbols, detectors, report_dir FROM market.backtest_runs"
        " WHERE run_id = %s",
        (dag_run.run_id,),
    ).fetchone()
    status, adjustment, symbols, names, folder = run_row
    assert (status, adjustment) == ("succeeded", "splits")
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
    assert summary["status"] == "succeeded" and summary["adjustment"] == "splits"
    assert summary["actions_applied"] == summary["actions_quarantined"] == []
    assert [r["detector"] for r in summary["ranking"]] and len(summary["ranking"]) == len(detectors.REGISTRY)
    assert summary["trades"] == len(trades)
    assert set(summary["unavailable"]) == {"gamma_squeeze", "gamma_flip"}
    written = pq.read_table(folder / "trades.parquet").to_pylist()
    as_stored = sorted((t[0], t[1], t[4], t[9], t[10]) for t in trades)
    assert (
        sorted((w["detector"], w["symbol"], w["entry_ts"], w["net_pnl"], w["exit_reason"]) for w in written)
        == as_stored
    )
    with (folder / "metrics.csv").open() as f:
        metric_rows = list(csv.DictReader(f))
    assert (
        len(metric_rows)
        == conn.execute(
            "SELECT count(*) FROM market.backtest_metrics WHERE run_id = %s", (dag_run.run_id,)
        ).fetchone()[0]
    )
    assert (folder / "equity.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_batches_combine_exactly_into_the_one_task_figures_and_a_retry_replaces_its_rows(
    loaded, conn: psycopg.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Four symbols in four batches (a tiny bar budget): each detector's all-symbol row equals, to
    the last bit, the one computed by a single task holding every symbol's bars."""
    monkeypatch.setattr(backtest_rules, "MAX_BARS_PER_BATCH", 1)
    chosen = ["breakout_bullish", "mean_reversion_long", "index_mean_reversion_long"]
    dag_run = run(loaded, timeframe="1m", detectors=chosen)
    planned = dag_run.get_task_instance("plan").xcom_pull(task_ids="plan")
    assert [b["symbols"] for b in planned] == [["AAPL"], ["I:SPX"], ["MSFT"], ["SPY"]]

    spec = backtests.run_spec(conn, dag_run.run_id)
    settings = Settings(**spec.settings)
    stored = {
        row["detector"]: row for row in backtests.metrics_of(conn, dag_run.run_id) if row["symbol"] == "*"
    }
    for name in chosen:
        detector = detectors.REGISTRY[name]
        params = detector.parameters()
        first = runner.warmup_start(spec.start_date, "1m", runner.history_bars(detector, params, settings))
        everything = backtests.read_bars(
            conn, sorted(spec.symbols), "1m", first, spec.end_date, adjustment="splits", follow_renames=True
        )
        one_task = runner.run_detector(
            detector, params, settings, [everything], spec.symbols, "1m", spec.start_date
        ).metrics[ALL_SYMBOLS]
        assert {k: stored[name][k] for k in one_task} == one_task, name
        assert one_task["trades"] > 0 or name == "index_mean_reversion_long"

    query = """SELECT detector, symbol, entry_ts, exit_ts, net_pnl FROM market.backtest_trades
               WHERE run_id = %s ORDER BY 1, 2, 3"""
    before = conn.execute(query, (dag_run.run_id,)).fetchall()
    assert before
    backtest_tasks.run_batch(["MSFT"], dag_run.run_id)  # a retry, or a cleared task
    assert conn.execute(query, (dag_run.run_id,)).fetchall() == before


def test_a_result_is_flagged_stale_once_its_windows_data_is_reloaded(
    loaded, conn: psycopg.Connection, tmp_path: Path
) -> None:
    dag_run = run(loaded, timeframe="5m", detectors=["breakout_bullish"])
    summary = json.loads(
        (Path(backtests.run_row(conn, dag_run.run_id)["report_dir"]) / "summary.json").read_text()
    )
    assert summary["data"]["stale"] is False and len(summary["data"]["version"]) == 32
    assert backtests.freshness(conn, dag_run.run_id) == backtests.Freshness(
        summary["data"]["version"], summary["data"]["version"], False
    )
    outside = calendar.sessions_between(DAYS[-1] + dt.timedelta(days=1), DAYS[-1] + dt.timedelta(days=7))[0]
    load_file(conn, tmp_path, market.build_file("stocks", "1m", outside), WATCHED["stocks"])
    assert not backtests.freshness(conn, dag_run.run_id).stale, "a load after the window changes nothing"

    replaced = market.build_file("stocks", "1m", DAYS[5], pathologies=[])  # the vendor's corrected file
    load_file(conn, tmp_path, replaced, WATCHED["stocks"])
    stale = backtests.freshness(conn, dag_run.run_id)
    assert stale.stale and stale.read_version == summary["data"]["version"] != stale.current_version


def test_a_walk_forward_search_is_ranked_out_of_sample_and_reproducible(
    loaded, conn: psycopg.Connection
) -> None:
    ranges = {"lookback": [5, 10, 20], "volume_multiple": [1.0, 1.5]}
    conf = {
        "timeframe": "5m",
        "detectors": ["breakout_bullish", "mean_reversion_long"],
        "search": {"detector": "breakout_bullish", "parameters": ranges, "sample": 4, "seed": 11, "folds": 2},
    }
    first = run(loaded, **conf)
    folder = Path(backtests.run_row(conn, first.run_id)["report_dir"])
    found = json.loads((folder / "search.json").read_text())
    assert len(found["ranking"]) == 4 and len(found["folds"]) == 2
    expectancies = [r["out_of_sample"]["expectancy_r"] for r in found["ranking"]]
    scored = [e for e in expectancies if e is not None]
    assert scored == sorted(scored, reverse=True) and expectancies[: len(scored)] == scored
    searched = backtests.search_of(conn, first.run_id)
    assert all(f["chosen"] in searched["points"] for f in found["folds"])
    assert any(r["out_of_sample"]["trades"] for r in found["ranking"]), "the sample should trade"
    assert (folder / "search_heatmap.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["search"]["walk_forward"] == found["walk_forward"]

    # The tallies the tasks stored are what evaluating each point on every symbol at once gives.
    spec, settings = backtests.run_spec(conn, first.run_id), Settings()
    detector = detectors.REGISTRY["breakout_bullish"]
    parts = [
        search.Segment(dt.date.fromisoformat(a), dt.date.fromisoformat(b)) for a, b in searched["segments"]
    ]
    stored = backtests.search_tallies(conn, first.run_id)
    for index, point in enumerate(searched["points"]):
        needed = runner.history_bars(detector, point, settings)
        bars = backtests.read_bars(
            conn, ["AAPL", "MSFT", "SPY"], "5m", runner.warmup_start(spec.start_date, "5m", needed),
            spec.end_date, adjustment="splits", follow_renames=True,
        )  # fmt: skip
        expected = [search.Tally()] * len(parts)
        for symbol_bars in bars.values():
            tallies = search.evaluate(
                detector,
                point,
                settings,
                symbol_bars,
                parts,
                lambda d, n=needed: runner.warmup_start(d, "5m", n),
            )
            expected = [a + b for a, b in zip(expected, tallies, strict=True)]
        got = [stored.get((index, segment), search.Tally()) for segment in range(len(parts))]
        assert [(t.trades, t.wins) for t in got] == [(t.trades, t.wins) for t in expected]
        assert [t.sum_r for t in got] == pytest.approx([t.sum_r for t in expected], rel=1e-12)

    again = run(loaded, **conf)
    repeated = json.loads(
        (Path(backtests.run_row(conn, again.run_id)["report_dir"]) / "search.json").read_text()
    )
    assert repeated["ranking"] == found["ranking"] and repeated["folds"] == found["folds"]


def test_splits_are_applied_at_read_time_and_reported(loaded, conn: psycopg.Connection) -> None:
    split_day = DAYS[6]
    conn.execute(
        "INSERT INTO market.splits (symbol, execution_date, split_from, split_to) VALUES ('AAPL', %s, 1, 4)",
        (split_day,),
    )
    two = ["breakout_bullish", "mean_reversion_long"]
    dag_run = run(loaded, timeframe="15m", symbols=["AAPL"], detectors=two, min_trades=0)
    status, adjustment, folder = conn.execute(
        "SELECT status, adjustment, report_dir FROM market.backtest_runs WHERE run_id = %s", (dag_run.run_id,)
    ).fetchone()
    assert (status, adjustment) == ("succeeded", "splits")
    summary = json.loads((Path(folder) / "summary.json").read_text())
    assert summary["actions_applied"] == [
        {"symbol": "AAPL", "ticker": "AAPL", "kind": "split", "day": split_day.isoformat(), "source_id": None,
         "price_factor": 0.25, "detail": "4-for-1 split"}
    ]  # fmt: skip
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


SPLIT_SESSIONS = calendar.sessions_between(dt.date(2025, 9, 15), dt.date(2025, 12, 31))
NVDA_SPLIT = dt.date(2025, 12, 29)  # the sample market's 10-for-1
# A 40-day z-score: the split day's adjusted close is about -1, its raw close (a 90 % fall) about -6
# (the most one close in 40 can be is sqrt(39) = 6.2).
OVERSOLD = {"mean_reversion_long": {"lookback": 40, "z_entry": 4.5}}


def test_a_split_gap_is_a_signal_only_in_raw_prices(
    backtest_dag, airflow_metadata_db: None, airflow_connections: dict[str, str], conn: psycopg.Connection,
    rest_api, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
):  # fmt: skip
    """NVDA's raw bars fall 90 % overnight into its split: a raw read sees a collapse, the adjusted
    read (the default) an ordinary day. The split comes from the vendor's records (a duplicate too)."""
    from marketbars.operators.corporate_actions import CorporateActionsOperator

    monkeypatch.setenv("AIRFLOW_VAR_MARKET_BACKTEST_REPORTS_DIR", str(tmp_path / "reports"))
    migrate(conn)
    for day in SPLIT_SESSIONS:
        load_file(conn, tmp_path, market.build_file("stocks", "1d", day), ["NVDA"])
    fetch = CorporateActionsOperator(task_id="ca", symbols=["NVDA"], requests_per_minute=6000)
    fetch.execute({"run_id": "t"})
    window = {"start_date": "2025-12-15", "end_date": SPLIT_SESSIONS[-1].isoformat(), "timeframe": "1d"}
    trade = {
        "symbols": ["NVDA"],
        "detectors": ["mean_reversion_long"],
        "detector_params": OVERSOLD,
        "search": {},
    }
    signal_days = {}
    for adjustment in ("none", "splits"):
        result = backtest_dag.test(run_conf={**window, **trade, "adjustment": adjustment})
        assert result.state == "success"
        rows = conn.execute(
            "SELECT signal_ts FROM market.backtest_trades WHERE run_id = %s", (result.run_id,)
        )
        signal_days[adjustment] = {calendar.today_in_new_york(ts) for (ts,) in rows}
    assert signal_days["none"] == {NVDA_SPLIT}, "the raw 90 % gap is an oversold signal"
    assert signal_days["splits"] == set(), "split-adjusted, the split day is an ordinary day"
    folder = conn.execute(
        "SELECT report_dir FROM market.backtest_runs WHERE adjustment = 'splits'"
    ).fetchone()[0]
    summary = json.loads((Path(folder) / "summary.json").read_text())
    assert [(a["day"], a["price_factor"], a["detail"]) for a in summary["actions_applied"]] == [
        ("2025-12-29", 0.1, "10-for-1 forward_split")
    ]


def test_bad_params_fail_the_run_with_the_reason(loaded, conn: psycopg.Connection) -> None:
    for conf in (
        {"detectors": ["gamma_flip"]},
        {"detectors": ["breakout_bullish"], "detector_params": {"breakout_bullish": {"lookbak": 3}}},
    ):
        result = loaded.test(run_conf={"start_date": DAYS[2].isoformat(), **conf})
        assert result.state == "failed"
    assert conn.execute("SELECT count(*) FROM market.backtest_runs").fetchone()[0] == 0
