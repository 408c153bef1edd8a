"""The REST rate limit shared by every worker through the warehouse, and the pauses the API asks for."""

from __future__ import annotations

import datetime as dt
import itertools
import threading

import psycopg
import pytest

from sandbox.rest_server import RestServer
from sandbox.services import Postgres
from tests.helpers import expected_rest, fill, warehouse_bars

pytestmark = pytest.mark.integration
MON, TUE = dt.date(2024, 3, 4), dt.date(2024, 3, 5)


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
