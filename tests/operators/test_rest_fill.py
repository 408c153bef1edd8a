"""RestFillOperator and MassiveRestHook against a real HTTP server on loopback and a real PostgreSQL."""

from __future__ import annotations

import datetime as dt
import itertools
import json
import logging
import math
import threading
from pathlib import Path

import psycopg
import pytest
from airflow.sdk.exceptions import AirflowFailException

from marketbars.market.calendar import day_window
from marketbars.massive.rest_hook import MassiveApiError, MassiveRestHook
from marketbars.operators.flatfile_download import FlatFileDownloadOperator
from marketbars.operators.flatfile_load import FlatFileLoadOperator
from marketbars.operators.rest_fill import RestFillOperator
from marketbars.warehouse.ledgers import rest_sessions_since
from marketbars.warehouse.migrations import migrate
from marketbars.warehouse.rate_limits import PostgresRateLimiter
from marketbars.warehouse.watchlist import complete_history, plan_history, symbols_needing_history
from sandbox import market
from sandbox.rest_server import RestServer
from sandbox.services import Postgres, S3Server
from tests.helpers import EPOCH, expected_bars, publish, warehouse_bars

pytestmark = pytest.mark.integration
MON, TUE = dt.date(2024, 3, 4), dt.date(2024, 3, 5)


def fill(
    symbol: str,
    sessions: dict[str, list[dt.date]],
    *,
    per_minute: float = 6000,
    dataset: str = "stocks",
    patch: bool = False,
):
    op = RestFillOperator(
        task_id="rest_fill",
        symbol=symbol,
        dataset=dataset,
        sessions={tf: [d.isoformat() for d in days] for tf, days in sessions.items()},
        requests_per_minute=per_minute,
        patch_flatfile_sessions=patch,
    )
    return op.execute({"run_id": "test"})


def expected_rest(symbol: str, timeframe: str, days: list[dt.date]) -> set[tuple]:
    rows = set()
    for day in days:
        for r in market.rest_results(symbol, timeframe, day)[0]:
            ts = EPOCH + dt.timedelta(milliseconds=r["t"])
            rows.add(
                (symbol, ts, r["o"], r["h"], r["l"], r["c"], r.get("v"), r.get("n"), r.get("vw"), "rest")
            )
    return rows


@pytest.fixture
def db_conn(airflow_connections: dict[str, str], conn: psycopg.Connection) -> psycopg.Connection:
    return conn


def test_pages_are_followed_and_rows_match_the_api_exactly(
    db_conn: psycopg.Connection, rest_api: RestServer
) -> None:
    rest_api.faults.max_page = 400  # force several pages
    result = fill("AAPL", {"1m": [MON, TUE], "1d": [MON, TUE]})
    assert warehouse_bars(db_conn, "1m") == expected_rest("AAPL", "1m", [MON, TUE])
    assert warehouse_bars(db_conn, "1d") == expected_rest("AAPL", "1d", [MON, TUE])
    minute_bars = sum(len(market.rest_results("AAPL", "1m", d)[0]) for d in (MON, TUE))
    assert result["1m"]["requests"] == math.ceil(minute_bars / 400)  # the minimum the pagination allows
    assert result["1m"]["loaded"] == ["2024-03-04", "2024-03-05"] and result["1m"]["gaps"] == []
    first_pages = [r.query for r in rest_api.log if "cursor" not in r.query]
    assert first_pages and all(
        q == {"adjusted": "false", "sort": "asc", "limit": "50000"} for q in first_pages
    )
    assert all(set(r.query) == {"cursor"} for r in rest_api.log if "cursor" in r.query)
    ledger = db_conn.execute(
        "SELECT timeframe, session_date, status, rows_loaded FROM market.rest_ledger ORDER BY 1, 2"
    )
    assert [row[2] for row in ledger.fetchall()] == ["loaded"] * 4


def test_429s_with_retry_after_are_honoured_by_every_worker(
    db_conn: psycopg.Connection, rest_api: RestServer
) -> None:
    rest_api.faults.too_many = {"MSFT": 2}
    rest_api.faults.retry_after = 1.0
    fill("MSFT", {"1m": [TUE]})
    assert warehouse_bars(db_conn, "1m") == expected_rest("MSFT", "1m", [TUE])
    log = rest_api.requests_for("MSFT")
    assert [r.status for r in log] == [429, 429, 200]
    assert all(later.at - earlier.at >= 0.95 for earlier, later in itertools.pairwise(log))


def test_429s_without_retry_after_500s_and_dropped_connections_back_off_and_succeed(
    db_conn: psycopg.Connection, rest_api: RestServer
) -> None:
    rest_api.faults.too_many = {"NVDA": 1}
    rest_api.faults.server_errors = {"NVDA": 1}
    rest_api.faults.dropped = {"NVDA": 1}
    result = fill("NVDA", {"1m": [TUE]})
    assert [r.status for r in rest_api.requests_for("NVDA")] == [0, 500, 429, 200]
    assert result["1m"]["requests"] == 4
    assert warehouse_bars(db_conn, "1m") == expected_rest("NVDA", "1m", [TUE])


def test_not_authorized_fails_at_once_naming_the_ticker_and_the_plan(
    db_conn: psycopg.Connection, rest_api: RestServer
) -> None:
    rest_api.faults.not_authorized = {"O:SPY240315C00510000"}
    with pytest.raises(
        AirflowFailException, match=r"O:SPY240315C00510000 1m .*refused.*plan does not include"
    ):
        fill("O:SPY240315C00510000", {"1m": [TUE]}, dataset="options")
    assert len(rest_api.log) == 1  # no retry storm


def test_an_error_status_fails_clearly(db_conn: psycopg.Connection, rest_api: RestServer) -> None:
    with db_conn:
        migrate(db_conn)
        hook = MassiveRestHook(limiter=PostgresRateLimiter(db_conn, "massive", 0))
        with pytest.raises(
            MassiveApiError, match=r"AAPL 1m 2024-03-05\.\.2024-03-04: .*ERROR: 'to' is before 'from'"
        ):
            hook.aggregates("AAPL", "1m", TUE, MON)


def test_no_results_for_a_trading_session_is_a_gap_not_complete(
    db_conn: psycopg.Connection, rest_api: RestServer
) -> None:
    rest_api.faults.empty_sessions = {("JPM", TUE)}
    result = fill("JPM", {"1m": [MON, TUE]})
    assert result["1m"]["gaps"] == ["2024-03-05"] and result["1m"]["loaded"] == ["2024-03-04"]
    statuses = db_conn.execute(
        "SELECT session_date, status, rows_loaded FROM market.rest_ledger ORDER BY 1"
    ).fetchall()
    assert statuses == [(MON, "loaded", len(market.rest_results("JPM", "1m", MON)[0])), (TUE, "empty", 0)]
    only_empty = fill("JPM", {"1m": [TUE]})
    assert only_empty["1m"]["gaps"] == ["2024-03-05"]
    assert rest_api.log[-1].status == 200  # the API answered {"results": null}: recorded, not retried


def test_index_bars_have_no_volume_vwap_or_trades(db_conn: psycopg.Connection, rest_api: RestServer) -> None:
    fill("I:SPX", {"1m": [TUE]}, dataset="indices")
    bars = warehouse_bars(db_conn, "1m")
    assert bars == expected_rest("I:SPX", "1m", [TUE]) and len(bars) == 390
    assert {(b[6], b[7], b[8]) for b in bars} == {(None, None, None)}


def test_the_configured_rate_holds_across_workers(
    db: Postgres, db_conn: psycopg.Connection, rest_api: RestServer
) -> None:
    per_minute = 240  # one request every 0.25 s, for two workers together
    errors: list[BaseException] = []

    def worker(symbol: str) -> None:
        try:
            fill(symbol, {"1m": [MON, TUE], "1d": [MON, TUE]}, per_minute=per_minute)
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(s,)) for s in ("AAPL", "MSFT")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    times = sorted(r.at for r in rest_api.log)
    assert len(times) == 4
    assert min(b - a for a, b in itertools.pairwise(times)) >= 60 / per_minute - 0.02


def test_the_api_key_never_reaches_logs_exceptions_or_xcom(
    db_conn: psycopg.Connection,
    rest_api: RestServer,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    rest_api.faults.too_many = {"AAPL": 1}
    rest_api.faults.dropped = {"AAPL": 1}
    result = fill("AAPL", {"1m": [TUE]})
    rest_api.faults.not_authorized = {"TSLA"}
    with pytest.raises(AirflowFailException) as error:
        fill("TSLA", {"1m": [TUE]})
    captured = capfd.readouterr()
    text = caplog.text + captured.out + captured.err + json.dumps(result) + str(error.value)
    assert "attempt 1 of 8" in text  # the retries were logged...
    assert rest_api.api_key not in text  # ...without the key


def test_flat_files_win_over_rest_in_both_orders(
    db_conn: psycopg.Connection, rest_api: RestServer, s3: S3Server, download_dir: Path
) -> None:
    sample = market.build_file("stocks", "1m", TUE)
    publish(s3, sample)
    fill("AAPL", {"1m": [TUE]})  # REST first: the file was not published yet
    assert {b[9] for b in warehouse_bars(db_conn, "1m")} == {"rest"}
    common = {"dataset": "stocks", "timeframe": "1m", "bucket": s3.bucket, "download_dir": str(download_dir)}
    files = FlatFileDownloadOperator(task_id="d", sessions=[TUE.isoformat()], **common).execute({})
    FlatFileLoadOperator(task_id="l", files=files, symbols=["AAPL"], **common).execute({})
    assert warehouse_bars(db_conn, "1m") == expected_bars(
        sample, ["AAPL"]
    )  # replaced, no duplicates, no REST
    again = fill("AAPL", {"1m": [TUE]})  # REST after the flat file: left alone
    assert again["1m"]["flatfile"] == ["2024-03-05"] and again["1m"]["loaded"] == []
    assert warehouse_bars(db_conn, "1m") == expected_bars(sample, ["AAPL"])
    start, end = day_window(TUE)
    assert db_conn.execute(
        "SELECT count(*) FROM market.historical_bars WHERE source = 'rest' AND ts >= %s AND ts < %s",
        (start, end),
    ).fetchone() == (0,)


def test_gap_repair_patches_only_the_minutes_a_flat_file_session_lacks(
    db_conn: psycopg.Connection, rest_api: RestServer, s3: S3Server, download_dir: Path
) -> None:
    sample = market.build_file("stocks", "1m", TUE)
    publish(s3, sample)
    common = {"dataset": "stocks", "timeframe": "1m", "bucket": s3.bucket, "download_dir": str(download_dir)}
    files = FlatFileDownloadOperator(task_id="d", sessions=[TUE.isoformat()], **common).execute({})
    FlatFileLoadOperator(task_id="l", files=files, symbols=["AAPL"], **common).execute({})
    from_file = warehouse_bars(db_conn, "1m")
    holes = sorted(b[1] for b in from_file)[100:110]
    db_conn.execute("DELETE FROM market.historical_bars WHERE ts = ANY(%s)", (holes,))

    result = fill("AAPL", {"1m": [TUE]}, patch=True)

    kept = {b for b in from_file if b[1] not in holes}
    rest_rows = {b[1]: b for b in expected_rest("AAPL", "1m", [TUE])}
    lacking = set(rest_rows) - {b[1] for b in kept}  # the holes and the minute the file's row was bad
    assert set(holes) < lacking and len(lacking) == len(holes) + 1
    assert result["1m"]["patched"] == ["2024-03-05"] and result["1m"]["bars"] == len(lacking)
    after = warehouse_bars(db_conn, "1m")
    assert after == kept | {rest_rows[ts] for ts in lacking}
    assert fill("AAPL", {"1m": [TUE]}, patch=True)["1m"]["bars"] == 0  # a re-run adds nothing
    assert warehouse_bars(db_conn, "1m") == after
    ledger = db_conn.execute("SELECT status, rows_loaded FROM market.rest_ledger").fetchall()
    assert ledger == [("patched", 0)]
    # The flat file stays canonical: loading it again replaces the patch with the file's own bars.
    db_conn.execute("DELETE FROM market.historical_bars WHERE ts = %s", (holes[0],))
    FlatFileLoadOperator(task_id="l", files=files, symbols=["AAPL"], **common).execute({})
    assert warehouse_bars(db_conn, "1m") == from_file == expected_bars(sample, ["AAPL"])


def test_an_html_403_fails_at_once_and_an_html_429_still_honours_retry_after(
    db_conn: psycopg.Connection, rest_api: RestServer
) -> None:
    rest_api.faults.html_errors = True
    rest_api.faults.not_authorized = {"TSLA"}
    with pytest.raises(AirflowFailException, match=r"TSLA 1m .*HTTP 403"):
        fill("TSLA", {"1m": [TUE]})
    assert len(rest_api.requests_for("TSLA")) == 1
    rest_api.faults.too_many = {"AAPL": 1}
    rest_api.faults.retry_after = 1.0
    fill("AAPL", {"1m": [TUE]})
    first, second = rest_api.requests_for("AAPL")
    assert (first.status, second.status) == (429, 200) and second.at - first.at >= 0.95


def test_retry_after_is_honoured_even_without_a_configured_limit(
    db_conn: psycopg.Connection, rest_api: RestServer
) -> None:
    rest_api.faults.too_many = {"AAPL": 2}
    rest_api.faults.retry_after = 1.0
    fill("AAPL", {"1m": [TUE]}, per_minute=0)  # the plan has no limit
    log = rest_api.requests_for("AAPL")
    assert [r.status for r in log] == [429, 429, 200]
    assert all(b.at - a.at >= 0.95 for a, b in itertools.pairwise(log))


def test_a_pause_holds_back_requests_that_already_had_a_slot(
    db_conn: psycopg.Connection, rest_api: RestServer
) -> None:
    rest_api.faults.max_page = 150  # MSFT keeps paging while AAPL is told to wait
    rest_api.faults.too_many = {"AAPL": 1}
    rest_api.faults.retry_after = 1.5
    threads = [threading.Thread(target=fill, args=(s, {"1m": [MON, TUE]})) for s in ("MSFT", "AAPL")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    [too_many] = [r for r in rest_api.log if r.status == 429]
    during = [r for r in rest_api.log if too_many.at + 0.1 < r.at < too_many.at + 1.4]
    assert during == [], [(r.ticker, round(r.at - too_many.at, 2)) for r in during]
    assert warehouse_bars(db_conn, "1m", symbols=["MSFT"]) == expected_rest("MSFT", "1m", [MON, TUE])


def test_a_pagination_that_never_ends_fails_clearly(
    db_conn: psycopg.Connection, rest_api: RestServer
) -> None:
    rest_api.faults.loop_pages = {"AAPL"}
    rest_api.faults.max_page = 100
    with pytest.raises(AirflowFailException, match=r"AAPL 1m .*pagination does not end"):
        fill("AAPL", {"1m": [TUE]})
    assert len(rest_api.log) == 2


def test_bars_on_a_non_trading_day_are_quarantined_once(
    db_conn: psycopg.Connection, rest_api: RestServer
) -> None:
    saturday_ms = int(dt.datetime(2024, 3, 9, 15, tzinfo=dt.UTC).timestamp() * 1000)
    bar = {"o": 1, "h": 1, "l": 1, "c": 1, "v": 1, "n": 1, "vw": 1}
    rest_api.faults.extra_bars = {"AAPL": [bar | {"t": saturday_ms}, bar | {"t": 0}]}
    rest_api.faults.max_page = 100_000
    for _ in range(2):  # a re-run replaces, never duplicates
        fill("AAPL", {"1m": [MON, TUE]})
    rows = db_conn.execute(
        "SELECT session_date, reason, source FROM market.quarantine ORDER BY session_date"
    ).fetchall()
    assert rows == [
        (dt.date(1969, 12, 31), "timestamp_outside_session", "rest"),
        (dt.date(2024, 3, 9), "timestamp_outside_session", "rest"),
    ]
    assert warehouse_bars(db_conn, "1m") == expected_rest("AAPL", "1m", [MON, TUE])


def test_history_is_only_done_when_completed_and_rest_ledger_follows_flat_files(
    db_conn: psycopg.Connection, rest_api: RestServer, s3: S3Server, download_dir: Path
) -> None:
    migrate(db_conn)
    fill("AAPL", {"1m": [TUE]})  # bars, but no history record: loaded some other way, established
    assert symbols_needing_history(db_conn, ["AAPL", "MSFT"]) == ["MSFT"]  # MSFT: nothing yet
    plan_history(db_conn, ["MSFT"], MON, TUE)
    fill("MSFT", {"1m": [TUE]})  # part of its history loaded, the run failed before the rest
    assert symbols_needing_history(db_conn, ["AAPL", "MSFT"]) == ["MSFT"]
    complete_history(db_conn, ["MSFT"])
    assert symbols_needing_history(db_conn, ["AAPL", "MSFT"]) == []
    assert rest_sessions_since(db_conn, MON) == {("AAPL", "1m"): [TUE], ("MSFT", "1m"): [TUE]}
    publish(s3, market.build_file("stocks", "1m", TUE))
    common = {"dataset": "stocks", "timeframe": "1m", "bucket": s3.bucket, "download_dir": str(download_dir)}
    files = FlatFileDownloadOperator(task_id="d", sessions=[TUE.isoformat()], **common).execute({})
    FlatFileLoadOperator(task_id="l", files=files, symbols=["AAPL"], **common).execute({})
    assert rest_sessions_since(db_conn, MON) == {("MSFT", "1m"): [TUE]}  # AAPL's is a flat file now
