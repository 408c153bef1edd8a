"""The Market data view through Airflow's own API server app: the plugin mounted and in the menu,
every route refused to an anonymous request, and each panel's exact payload on a seeded warehouse."""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from fastapi.testclient import TestClient

from marketbars.backtest.engine import Settings
from marketbars.backtest.report import EquityCurve
from marketbars.backtest.runner import DetectorResult
from marketbars.backtest.trades import Trade, Trades
from marketbars.ui import panels
from marketbars.warehouse import backtests
from marketbars.warehouse.migrations import migrate
from sandbox import market
from tests.helpers import load_file

pytestmark = pytest.mark.integration
MON, TUE = dt.date(2025, 12, 15), dt.date(2025, 12, 16)
PAGES = ["/market-data/", "/market-data/static/plotly.min.js", "/market-data/api/coverage",
         "/market-data/api/freshness", "/market-data/api/ledgers", "/market-data/api/backtests",
         "/market-data/api/backtests/any"]  # fmt: skip


@pytest.fixture(scope="module")
def api(airflow_metadata_db: None) -> Iterator[TestClient]:
    """Airflow's API server app as ``airflow api-server`` builds it, plugins included."""
    from airflow.api_fastapi.app import create_app

    with TestClient(create_app()) as client:
        yield client


@pytest.fixture
def signed_in(api: TestClient) -> dict[str, str]:
    """The header a logged-in user's requests carry (a JWT of the API server's auth manager)."""
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser

    token = get_auth_manager().generate_jwt(SimpleAuthManagerUser(username="admin", role="admin"))
    return {"Authorization": f"Bearer {token}"}


def test_every_page_and_endpoint_refuses_an_anonymous_or_forged_request(api: TestClient) -> None:
    for path in PAGES:
        assert api.get(path).status_code == 401, path
        assert api.get(path, cookies={"_token": "forged"}).status_code == 403, path
    for path in ("/market-data/docs", "/market-data/redoc", "/market-data/openapi.json"):
        assert api.get(path).status_code == 404, path  # FastAPI's own pages would skip the check: none


def test_the_view_is_mounted_and_in_the_ui_menu_with_its_chart_library(
    api: TestClient, signed_in: dict[str, str]
) -> None:
    plugins = api.get("/api/v2/plugins", headers=signed_in).json()["plugins"]
    mine = next(p for p in plugins if p["name"] == "market_data")
    assert mine["fastapi_apps"][0]["url_prefix"] == "/market-data"
    view = mine["external_views"][0]
    assert (view["name"], view["href"], view["url_route"], view["category"]) == (
        "Market data", "market-data/", "market-data", "browse"
    )  # fmt: skip
    page = api.get("/market-data/", headers=signed_in)
    assert page.status_code == 200 and 'src="static/plotly.min.js"' in page.text
    library = api.get("/market-data/static/plotly.min.js", headers=signed_in)
    assert library.status_code == 200 and b"plotly.js v" in library.content[:400]
    assert api.get("/market-data/static/secrets.env", headers=signed_in).status_code == 404


@pytest.fixture
def seeded(db_conn: psycopg.Connection, tmp_path: Path) -> psycopg.Connection:
    """Two watched stocks; Tuesday's minute file loaded for both; Monday missing, with one gap the
    gap DAG retries and one it gave up on."""
    conn = db_conn
    migrate(conn)
    conn.execute("UPDATE market.watchlist SET active = symbol IN ('AAPL', 'MSFT')")
    load_file(conn, tmp_path, market.build_file("stocks", "1m", TUE), ["AAPL", "MSFT"])
    conn.execute(
        """INSERT INTO market.backfill_gaps (symbol, timeframe, session_date, status, kind, expected, found,
               attempts, last_error, first_seen, next_retry_at) VALUES
           ('MSFT', '1m', %(day)s, 'open', 'missing', 390, 0, 2, 'HTTP 502 from the vendor',
            '2025-12-16 03:00Z', '2025-12-17 12:00Z'),
           ('AAPL', '1m', %(day)s, 'unfillable', 'missing', 390, 0, 5, 'no bars in the answer',
            '2025-12-16 03:00Z', '2025-12-18 12:00Z')""",
        {"day": MON},
    )
    return conn


def _regular_bars(conn: psycopg.Connection, symbol: str) -> int:
    (count,) = conn.execute(
        """SELECT count(*) FROM market.historical_bars WHERE symbol = %s AND timeframe = '1m'
             AND ts >= '2025-12-16 14:30Z' AND ts < '2025-12-16 21:00Z'""",
        (symbol,),
    ).fetchone() or (0,)
    return int(count)


def test_coverage_shows_each_cell_with_the_gap_rules_and_the_gaps_attempts(
    api: TestClient, signed_in: dict[str, str], seeded: psycopg.Connection
) -> None:
    aapl, msft = _regular_bars(seeded, "AAPL"), _regular_bars(seeded, "MSFT")
    assert aapl >= 0.975 * 390 and msft >= 0.975 * 390  # the sample's Tuesday: complete for both
    got = api.get(
        "/market-data/api/coverage",
        params={"dataset": "stocks", "timeframe": "1m", "first": "2025-12-13", "last": "2025-12-16"},
        headers=signed_in,
    )
    assert got.status_code == 200, got.text
    assert got.json() == {
        "dataset": "stocks",
        "timeframe": "1m",
        "first": "2025-12-13",
        "last": "2025-12-16",
        "states": ["complete", "partial", "missing", "no_trading", "open_gap", "unfillable"],
        "symbols": ["AAPL", "MSFT"],
        "sessions": ["2025-12-15", "2025-12-16"],
        "state": [[5, 0], [4, 0]],
        "found": [[0, aapl], [0, msft]],
        "expected": [[390, 390], [390, 390]],
        "gaps": [
            {
                "symbol": "AAPL",
                "session": "2025-12-15",
                "status": "unfillable",
                "kind": "missing",
                "attempts": 5,
                "last_error": "no bars in the answer",
                "next_retry_at": "2025-12-18T12:00:00+00:00",
            },
            {
                "symbol": "MSFT",
                "session": "2025-12-15",
                "status": "open",
                "kind": "missing",
                "attempts": 2,
                "last_error": "HTTP 502 from the vendor",
                "next_retry_at": "2025-12-17T12:00:00+00:00",
            },
        ],
        "counts": {
            "complete": 2,
            "partial": 0,
            "missing": 0,
            "no_trading": 0,
            "open_gap": 1,
            "unfillable": 1,
        },
    }
    bad = api.get("/market-data/api/coverage", params={"timeframe": "5s"}, headers=signed_in)
    assert bad.status_code == 400 and "timeframe must be one of 1m, 1d" in bad.json()["detail"]


def test_freshness_compares_the_latest_session_loaded_with_the_latest_closed(
    seeded: psycopg.Connection,
) -> None:
    after_tuesday = dt.datetime(2025, 12, 16, 22, 0, tzinfo=dt.UTC)  # 17:00 New York
    got = panels.freshness(seeded, after_tuesday)
    assert got["expected_session"] == "2025-12-16"
    rows = {(r["dataset"], r["timeframe"]): r for r in got["rows"]}
    assert set(rows) == {("stocks", tf) for tf in ("1m", "5m", "15m", "1h", "4h", "1d")}
    assert rows[("stocks", "1m")] | {} == {
        "dataset": "stocks", "timeframe": "1m", "latest_session": "2025-12-16",
        "expected_session": "2025-12-16", "symbols": 2, "behind": [], "fresh": True,
    }  # fmt: skip
    assert rows[("stocks", "1d")]["latest_session"] is None
    assert rows[("stocks", "1d")]["behind"] == ["AAPL", "MSFT"]
    before_close = dt.datetime(2025, 12, 16, 20, 59, tzinfo=dt.UTC)
    assert panels.freshness(seeded, before_close)["expected_session"] == "2025-12-15"


def test_ledgers_list_gaps_file_loads_quarantine_and_actions_held_back(
    api: TestClient, signed_in: dict[str, str], seeded: psycopg.Connection
) -> None:
    seeded.execute(
        """INSERT INTO market.reference_quarantine (kind, requested, symbol, day, reason, raw)
           VALUES ('split', 'NVDA', 'NVDA', '2025-12-15', 'non-positive ratio', '{"split_to": 0}')"""
    )
    got = api.get("/market-data/api/ledgers", headers=signed_in).json()
    assert [(g["symbol"], g["status"], g["attempts"]) for g in got["gaps"]] == [
        ("AAPL", "unfillable", 5), ("MSFT", "open", 2)
    ]  # fmt: skip
    assert got["gaps"][1]["next_retry_at"] == "2025-12-17T12:00:00+00:00"
    assert got["gaps"][0]["next_retry_at"] is None  # given up: no retry
    sample = market.build_file("stocks", "1m", TUE)
    (load,) = got["file_loads"]
    assert (load["dataset"], load["timeframe"], load["session_date"], load["s3_key"], load["etag"]) == (
        "stocks", "1m", "2025-12-16", sample.key, hashlib.md5(sample.body).hexdigest()
    )  # fmt: skip
    assert load["rows_loaded"] == len(sample.expected_rows(["AAPL", "MSFT"]))
    quarantined = sum(q["rows"] for q in got["quarantine"])
    assert quarantined == load["rows_quarantined"]
    for reason in got["quarantine"]:
        assert reason["sample"]["session"] == "2025-12-16" and reason["sample"]["raw"]
    (held,) = got["corporate_actions_held_back"]
    assert (held["kind"], held["symbol"], held["day"], held["reason"], held["raw"]) == (
        "split", "NVDA", "2025-12-15", "non-positive ratio", {"split_to": 0}
    )  # fmt: skip


def test_a_backtest_run_shows_its_ranking_equity_and_no_search(
    api: TestClient, signed_in: dict[str, str], seeded: psycopg.Connection
) -> None:
    spec = backtests.RunSpec(
        "manual__1", MON, TUE, "1m", {"AAPL": "stocks"}, ["breakout_bullish", "breakout_bearish"],
        Settings().to_json(), {},
    )  # fmt: skip
    backtests.start_run(seeded, spec, {}, "/tmp/report", MON)
    us = 1_765_895_400_000_000  # 2025-12-16 14:30 UTC
    win = Trade("AAPL", 1, us, us + 60_000_000, us + 120_000_000, 100.0, 102.0, 10, 99.0, 102.0, 1.0,
                20.0, 1.0, 19.0, 1.9, 0.019, 2, "target")  # fmt: skip
    from marketbars.backtest import metrics, runner

    rows, curves = {}, {}
    for detector, trades in (("breakout_bullish", Trades.of([win])), ("breakout_bearish", Trades.empty())):
        result = DetectorResult(detector, trades)
        if len(trades):
            result.metrics["AAPL"] = metrics.summarize(trades, capital=1e5, bars=390, bars_in_position=2) | {
                "bars": 390, "bars_in_position": 2, "skipped_signals": 0,
            }  # fmt: skip
        backtests.replace_batch_results(seeded, spec.run_id, ["AAPL"], [result])
        rows[detector] = runner.overall(trades, runner.overall_counts(result.metrics.values()), Settings())
        curves[detector] = EquityCurve.of(trades.exit_ts, trades.net_pnl, 1e5)
    backtests.replace_overall(seeded, spec.run_id, rows, curves)
    backtests.finish_run(seeded, spec.run_id, "succeeded")

    (run,) = api.get("/market-data/api/backtests", headers=signed_in).json()["runs"]
    assert (run["run_id"], run["status"], run["symbols"], run["stale"], run["searched"]) == (
        "manual__1", "succeeded", 1, False, False
    )  # fmt: skip
    got = api.get("/market-data/api/backtests/manual__1", headers=signed_in).json()
    assert [(r["rank"], r["detector"], r["trades"]) for r in got["ranking"]] == [
        (1, "breakout_bullish", 1), (2, "breakout_bearish", 0)
    ]  # fmt: skip
    assert got["ranking"][1]["flags"] == ["only 0 trades (< 30)"]
    assert got["ranking"][0]["net_pnl"] == 19.0 and got["ranking"][0]["profit_factor"] == "inf"
    equity = {c["detector"]: c for c in got["equity"]}
    assert equity["breakout_bullish"]["times"] == ["2025-12-16T14:32:00+00:00"]
    assert equity["breakout_bullish"]["returns"] == [pytest.approx(0.019)]
    assert equity["breakout_bearish"] == {
        "detector": "breakout_bearish",
        "trades": 0,
        "times": [],
        "returns": [],
    }
    assert got["search"] is None
    missing = api.get("/market-data/api/backtests/nope", headers=signed_in)
    assert missing.status_code == 404 and "nope" in missing.json()["detail"]


def test_a_cell_the_vendor_has_no_bars_for_stays_no_trading_though_its_gap_was_closed_unfillable(
    api: TestClient, signed_in: dict[str, str], db_conn: psycopg.Connection, tmp_path: Path
) -> None:
    from marketbars.pipelines.gaps.rules import VENDOR_HAS_NONE

    conn = db_conn
    migrate(conn)
    conn.execute("UPDATE market.watchlist SET active = false")
    conn.execute("INSERT INTO market.watchlist (symbol, asset_class) VALUES ('NOPE', 'stocks')")
    load_file(conn, tmp_path, market.build_file("stocks", "1m", TUE), ["NOPE"])  # none of its rows
    conn.execute(
        """INSERT INTO market.backfill_gaps (symbol, timeframe, session_date, status, kind, expected, found,
               attempts, last_error) VALUES ('NOPE', '1m', %s, 'unfillable', 'missing', 390, 0, 0, %s)""",
        (TUE, VENDOR_HAS_NONE),
    )
    got = api.get(
        "/market-data/api/coverage",
        params={"dataset": "stocks", "timeframe": "1m", "first": "2025-12-16", "last": "2025-12-16"},
        headers=signed_in,
    ).json()
    assert (got["symbols"], got["state"], got["found"]) == (["NOPE"], [[3]], [[0]])  # 3: no_trading
    assert got["gaps"][0]["last_error"] == VENDOR_HAS_NONE  # still explained on hover
