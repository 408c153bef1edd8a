"""gap_detection_and_retry through dag.test(): holes punched into a loaded warehouse are found,
repaired from flat files or REST, or explained, with the report and the alerts."""

from __future__ import annotations

import datetime as dt
import json
import logging
from pathlib import Path

import psycopg
import pytest

from marketbars.market import calendar
from marketbars.warehouse import gap_ledger
from marketbars.warehouse.migrations import migrate
from sandbox import market
from sandbox.rest_server import RestServer
from sandbox.services import S3Server
from tests.helpers import expected_bars, load_file, publish, warehouse_bars

pytestmark = [pytest.mark.integration, pytest.mark.dagrun]
DAYS = calendar.sessions_between(dt.date(2024, 11, 20), dt.date(2024, 11, 26))  # 5 sessions
RUN = dt.datetime.combine(DAYS[-1], dt.time(21, 0), calendar.NEW_YORK)
WATCHED = {"stocks": ["AAPL", "MSFT"], "indices": ["I:SPX"]}


def files(day: dt.date) -> list[market.SampleFile]:
    return [market.build_file(dataset, tf, day) for dataset in WATCHED for tf in ("1m", "1d")]


def delete(
    conn: psycopg.Connection, symbol: str, timeframe: str | None, start: dt.datetime, end: dt.datetime
) -> None:
    conn.execute(
        "DELETE FROM market.historical_bars WHERE symbol = %s AND (%s::text IS NULL OR timeframe = %s)"
        " AND ts >= %s AND ts < %s",
        (symbol, timeframe, timeframe, start, end),
    )


def gap_rows(conn: psycopg.Connection) -> dict[tuple, tuple]:
    return {g.key: (g.status, g.kind, g.attempts, g.last_error) for g in gap_ledger.list_gaps(conn)}


@pytest.fixture
def seeded(
    dagbag_gaps, airflow_metadata_db: None, airflow_connections: dict[str, str], rest_api: RestServer,
    conn: psycopg.Connection, s3: S3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
):  # fmt: skip
    """Five sessions loaded for AAPL, MSFT and I:SPX; the files of all but the last published."""
    monkeypatch.setenv("AIRFLOW_VAR_MASSIVE_API_REQUESTS_PER_MINUTE", "6000")
    monkeypatch.setenv("AIRFLOW_VAR_MARKET_REPORTS_DIR", str(tmp_path / "reports"))
    migrate(conn)
    conn.execute("UPDATE market.watchlist SET active = symbol IN ('AAPL', 'MSFT', 'I:SPX')")
    for day in DAYS:
        for sample in files(day):
            load_file(conn, tmp_path, sample, WATCHED[sample.dataset])
    publish(s3, *(f for day in DAYS[:-1] for f in files(day)))
    return dagbag_gaps


@pytest.fixture(scope="module")
def dagbag_gaps():
    from airflow.dag_processing.dagbag import DagBag

    dags = DagBag(dag_folder=str(Path(__file__).resolve().parents[2] / "dags")).dags
    dag = dags["gap_detection_and_retry"]
    for task in dag.tasks:  # dag.test() waits out real retry delays: a failing task fails the test at once
        task.retries = 0
    return dag


def test_holes_are_repaired_from_flat_files_and_rest_and_reported(
    seeded, conn: psycopg.Connection, rest_api: RestServer, tmp_path: Path
) -> None:
    d1, d2, last = DAYS[1], DAYS[2], DAYS[-1]
    delete(conn, "AAPL", "1m", *calendar.day_window(d1))  # a whole session: from its flat file
    hours = calendar.session_hours(d2)
    delete(
        conn, "MSFT", "1m", hours.open, hours.open + dt.timedelta(minutes=200)
    )  # partial: from its flat file
    delete(conn, "AAPL", None, *calendar.day_window(last))  # the last session: its file is not out: REST

    run = seeded.test(logical_date=RUN, run_conf={"lookback_days": 7})

    assert run.state == "success"
    assert gap_rows(conn) == {
        ("AAPL", "1m", d1): ("filled", "missing", 0, None),
        ("MSFT", "1m", d2): ("filled", "partial", 0, None),
        ("AAPL", "1m", last): ("filled", "missing", 0, None),
        ("AAPL", "1d", last): ("filled", "missing", 0, None),
    }
    assert warehouse_bars(conn, "1m", d1, ["AAPL"]) == expected_bars(
        market.build_file("stocks", "1m", d1), ["AAPL"]
    )
    assert warehouse_bars(conn, "1m", d2, ["MSFT"]) == expected_bars(
        market.build_file("stocks", "1m", d2), ["MSFT"]
    )
    assert {b[9] for b in warehouse_bars(conn, "1m", last, ["AAPL"])} == {"rest"}
    assert {(r.ticker, r.status) for r in rest_api.log} == {("AAPL", 200)}
    report = tmp_path / "reports" / last.isoformat()
    audit = json.loads((report / "completeness.json").read_text())
    assert audit["summary"]["1m"] == {"complete": 15, "partial": 0, "missing": 0, "no_trading": 0}
    assert sorted(audit["gaps"]["filled"]) == sorted(
        [f"AAPL 1m {d1}", f"MSFT 1m {d2}", f"AAPL 1m {last}", f"AAPL 1d {last}"]
    )
    png = (report / "completeness.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 10_000


def test_a_rest_source_that_keeps_answering_empty_becomes_unfillable(
    seeded, conn: psycopg.Connection, rest_api: RestServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIRFLOW_VAR_GAPS_MAX_ATTEMPTS", "2")
    monkeypatch.setenv("AIRFLOW_VAR_GAPS_BACKOFF_HOURS", "0")
    last = DAYS[-1]
    delete(conn, "MSFT", "1m", *calendar.day_window(last))
    rest_api.faults.empty_sessions = {("MSFT", last)}
    for expected_attempts, expected_status in ((1, "open"), (2, "unfillable")):
        assert seeded.test(logical_date=RUN, run_conf={"lookback_days": 7}).state == "success"
        status, kind, attempts, error = gap_rows(conn)[("MSFT", "1m", last)]
        assert (status, kind, attempts) == (expected_status, "missing", expected_attempts)
        assert error == "the REST API answered with no bars for the session"
    requests = len(rest_api.requests_for("MSFT"))
    assert seeded.test(logical_date=RUN, run_conf={"lookback_days": 7}).state == "success"
    assert len(rest_api.requests_for("MSFT")) == requests  # unfillable: not asked again
    assert gap_rows(conn)[("MSFT", "1m", last)][0] == "unfillable"


def with_bad_row(sample: market.SampleFile, symbol: str) -> market.SampleFile:
    """The file with the symbol's row corrupted (high and low swapped): the load quarantines it."""
    import dataclasses
    import gzip

    high, low = sample.header.index("high"), sample.header.index("low")
    lines = []
    for line in sample.lines:
        fields = line.split(",")
        if fields[0] == symbol:
            fields[high], fields[low] = fields[low], fields[high]
        lines.append(",".join(fields))
    text = ",".join(sample.header) + "\n" + "".join(line + "\n" for line in lines)
    return dataclasses.replace(sample, lines=tuple(lines), body=gzip.compress(text.encode(), mtime=0))


def test_a_bar_the_flat_file_got_wrong_is_repaired_from_rest_on_the_next_attempt(
    seeded, conn: psycopg.Connection, rest_api: RestServer, s3: S3Server, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    monkeypatch.setenv("AIRFLOW_VAR_GAPS_BACKOFF_HOURS", "0")
    day = DAYS[1]
    bad = with_bad_row(market.build_file("stocks", "1d", day), "AAPL")
    publish(s3, bad)  # the vendor's current file, loaded: the bar is quarantined
    load_file(conn, tmp_path, bad, WATCHED["stocks"])
    assert warehouse_bars(conn, "1d", day, ["AAPL"]) == set()

    assert seeded.test(logical_date=RUN, run_conf={"lookback_days": 7}).state == "success"
    status, kind, attempts, error = gap_rows(conn)[("AAPL", "1d", day)]
    assert (status, kind, attempts) == ("open", "missing", 1)
    assert error == (  # the one-row selection is all rejected: the ledger says why (no task fails)
        "still missing: 0 of 1 bars expected; the source's rows for it were quarantined: high_below_low x1"
    )
    assert rest_api.requests_for("AAPL") == []  # the first retry went to the flat file

    assert seeded.test(logical_date=RUN, run_conf={"lookback_days": 7}).state == "success"
    assert gap_rows(conn)[("AAPL", "1d", day)][:3] == ("filled", "missing", 1)
    [bar] = warehouse_bars(conn, "1d", day, ["AAPL"])
    assert bar[9] == "rest" and len(rest_api.requests_for("AAPL")) == 1


def test_a_replaced_flat_file_is_ingested_again(seeded, conn: psycopg.Connection, s3: S3Server) -> None:
    first = DAYS[0]
    corrected = market.build_file("stocks", "1m", first, pathologies=["duplicate_row", "high_below_low"])
    publish(s3, corrected)
    assert seeded.test(logical_date=RUN, run_conf={"lookback_days": 7}).state == "success"
    assert gap_rows(conn) == {
        ("AAPL", "1m", first): ("filled", "replaced_file", 0, None),
        ("MSFT", "1m", first): ("filled", "replaced_file", 0, None),
    }
    assert warehouse_bars(conn, "1m", first, ["AAPL", "MSFT"]) == expected_bars(corrected, ["AAPL", "MSFT"])


def test_alerts_fire_when_gaps_age(
    seeded, conn: psycopg.Connection, caplog: pytest.LogCaptureFixture
) -> None:
    seen = {
        ("AAPL", dt.date(2024, 11, 25)): 1,
        ("MSFT", dt.date(2024, 11, 22)): 2,
        ("I:SPX", dt.date(2024, 11, 13)): 9,
    }
    for (symbol, first_seen), _ in seen.items():
        session = DAYS[1]
        delete(conn, symbol, "1d", *calendar.day_window(session))
        gap_ledger.open_gap(conn, (symbol, "1d", session), kind="missing", expected=1, found=0)
        conn.execute(
            "UPDATE market.backfill_gaps SET first_seen = %s, next_retry_at = now() + interval '1 day'"
            " WHERE symbol = %s",
            (dt.datetime.combine(first_seen, dt.time(21), calendar.NEW_YORK), symbol),
        )
    caplog.set_level(logging.WARNING, logger="marketbars.alerts")
    assert seeded.test(logical_date=RUN, run_conf={"lookback_days": 7}).state == "success"
    alerts = [r for r in caplog.records if r.name == "marketbars.alerts"]
    assert [(r.levelname, r.getMessage().splitlines()[0]) for r in alerts] == [
        ("CRITICAL", "ALERT [CRITICAL] 1 gap(s) open for more than 7 trading sessions"),
        ("WARNING", "ALERT [WARNING] 1 gap(s) open for more than 1 trading sessions"),
    ]
    assert "I:SPX 1d 2024-11-21: open for 9 trading sessions, 0 attempts" in alerts[0].getMessage()
    assert "MSFT 1d 2024-11-21: open for 2 trading sessions" in alerts[1].getMessage()
    assert "AAPL" not in caplog.text.split("ALERT", 1)[-1]


def test_a_flat_file_without_the_symbol_explains_its_gap(
    seeded, conn: psycopg.Connection, tmp_path: Path
) -> None:
    day = next(
        d
        for d in DAYS[:-1]
        if not any(line.startswith("ZVZZT,") for line in market.build_file("stocks", "1m", d).lines)
    )
    conn.execute("INSERT INTO market.watchlist (symbol, asset_class) VALUES ('ZVZZT', 'stocks')")
    load_file(conn, tmp_path, market.build_file("stocks", "1m", day), ["ZVZZT"])
    gap_ledger.open_gap(conn, ("ZVZZT", "1m", day), kind="missing", expected=390, found=0)
    assert (
        seeded.test(logical_date=RUN, run_conf={"lookback_days": 7, "symbols": ["ZVZZT"]}).state == "success"
    )
    status, _kind, _attempts, error = gap_rows(conn)[("ZVZZT", "1m", day)]
    assert status == "unfillable" and "no trading" in error


def test_a_ticker_with_a_trailing_newline_is_refused_before_any_gap_or_request(
    seeded, conn: psycopg.Connection, rest_api: RestServer
) -> None:
    before = gap_rows(conn)
    run = seeded.test(logical_date=RUN, run_conf={"lookback_days": 7, "symbols": ["AAPL\n"]})
    assert run.state == "failed"
    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    assert states["detect_gaps"] == "failed"
    assert gap_rows(conn) == before and rest_api.log == []
