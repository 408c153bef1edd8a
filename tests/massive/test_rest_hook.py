"""MassiveRestHook on a loopback server: 429 and Retry-After, backoff, refusals, pages, the key kept out."""

from __future__ import annotations

import datetime as dt
import itertools
import json
import logging

import psycopg
import pytest
from airflow.sdk.exceptions import AirflowFailException

from sandbox.rest_server import RestServer
from tests.helpers import expected_rest, fill, warehouse_bars

pytestmark = pytest.mark.integration
MON, TUE = dt.date(2024, 3, 4), dt.date(2024, 3, 5)


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


def test_a_pagination_that_never_ends_fails_clearly(
    db_conn: psycopg.Connection, rest_api: RestServer
) -> None:
    rest_api.faults.loop_pages = {"AAPL"}
    rest_api.faults.max_page = 100
    with pytest.raises(AirflowFailException, match=r"AAPL 1m .*pagination does not end"):
        fill("AAPL", {"1m": [TUE]})
    assert len(rest_api.log) == 2


def test_a_rejected_key_the_server_echoes_is_not_in_the_error(
    db_conn: psycopg.Connection,
    rest_api: RestServer,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture,
) -> None:
    wrong = "wrong-key-Zk42xq"
    monkeypatch.setenv(
        "AIRFLOW_CONN_MASSIVE_API", json.dumps({**rest_api.airflow_connection(), "password": wrong})
    )
    rest_api.faults.echo_key = True
    with pytest.raises(AirflowFailException, match=r"HTTP 401 NOT_AUTHORIZED: .*\*\*\*") as error:
        fill("AAPL", {"1m": [TUE]})
    assert [r.status for r in rest_api.log] == [401]  # refused at once, not retried
    captured = capfd.readouterr()
    assert wrong not in str(error.value) + captured.out + captured.err
