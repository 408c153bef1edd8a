"""The warehouse SQL against a real PostgreSQL: schema, partitions, transactional replace, ledger."""

from __future__ import annotations

import datetime as dt
import threading
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from marketbars.market.provenance import FileVersion
from marketbars.massive.csv_reader import FlatFileReader
from marketbars.warehouse import quarantine
from marketbars.warehouse.bars import selection_key, session_rows
from marketbars.warehouse.file_loads import _MERGE_CHANGES, _MERGE_DELETE, current_load, replace_session
from marketbars.warehouse.partitions import ensure_partitions
from sandbox import market, reference
from sandbox.services import Postgres
from tests.helpers import counted_bars, expected_bars, stored_counts, warehouse_bars, write

pytestmark = pytest.mark.integration
DAY = dt.date(2024, 3, 5)
SELECTION = ["AAPL", "MSFT", "ZVZZT"]


def _version(sample: market.SampleFile, etag: str) -> FileVersion:
    return FileVersion(sample.dataset, sample.timeframe, sample.session, sample.key, etag, len(sample.body))


def _reader(tmp_path: Path, sample: market.SampleFile, symbols: list[str]) -> FlatFileReader:
    path = write(tmp_path / f"{sample.session}-{len(sample.body)}.csv.gz", sample)
    return FlatFileReader(
        path, dataset=sample.dataset, timeframe=sample.timeframe, session=sample.session, symbols=symbols
    )


def _load(conn: psycopg.Connection, tmp_path: Path, sample: market.SampleFile, symbols: list[str], etag: str):
    ensure_partitions(conn, sample.session, sample.session)
    return replace_session(conn, _version(sample, etag), symbols, _reader(tmp_path, sample, symbols))


def _insert_rest_bar(conn: psycopg.Connection, symbol: str, ts: dt.datetime) -> None:
    conn.execute(
        "INSERT INTO market.historical_bars VALUES (%s, '1m', %s, 1, 1, 1, 1, 10, 1, 5, 'rest')", (symbol, ts)
    )


def test_a_load_holds_exactly_the_files_rows_and_quarantine(
    warehouse_conn: psycopg.Connection, tmp_path: Path
) -> None:
    sample = market.build_file("stocks", "1m", DAY)
    counts = _load(warehouse_conn, tmp_path, sample, SELECTION, etag="v1")
    assert warehouse_bars(warehouse_conn) == expected_bars(sample, SELECTION)
    assert counts.rows_loaded == len(expected_bars(sample, SELECTION))
    quarantined = warehouse_conn.execute("SELECT line_number, reason FROM market.quarantine").fetchall()
    assert dict(quarantined) == sample.expected_quarantine(SELECTION)
    ledger = warehouse_conn.execute(
        "SELECT selection_key, symbols, etag, rows_loaded, rows_read FROM market.ingest_ledger"
    ).fetchall()
    assert ledger == [(selection_key(SELECTION), sorted(SELECTION), "v1", counts.rows_loaded,
                       len(sample.lines))]  # fmt: skip
    assert stored_counts(warehouse_conn) == counted_bars(warehouse_conn) != {}


def test_a_named_symbol_the_file_lacks_is_counted_as_empty(
    warehouse_conn: psycopg.Connection, tmp_path: Path
) -> None:
    sample = market.build_file("stocks", "1m", DAY)
    _load(warehouse_conn, tmp_path, sample, ["AAPL", "NOTLISTED"], etag="v1")
    stored = warehouse_conn.execute("SELECT symbol, total > 0 FROM market.bar_counts ORDER BY 1").fetchall()
    assert stored == [("AAPL", True), ("NOTLISTED", False)]  # a known empty cell, not an unknown one


def test_a_replaced_file_replaces_rows_and_rest_bars_but_nothing_outside_the_selection(
    warehouse_conn: psycopg.Connection, tmp_path: Path
) -> None:
    old = market.build_file("stocks", "1m", DAY, pathologies=[])
    new = market.build_file(
        "stocks", "1m", DAY, pathologies=["conflicting_duplicate", "duplicate_row", "empty_field"]
    )
    _load(warehouse_conn, tmp_path, old, SELECTION, etag="v1")
    in_session = dt.datetime(2024, 3, 5, 15, 0, tzinfo=dt.UTC)
    warehouse_conn.execute(
        "DELETE FROM market.historical_bars WHERE symbol = 'MSFT' AND ts = %s", (in_session,)
    )
    _insert_rest_bar(warehouse_conn, "MSFT", in_session)  # a REST bar the flat file now covers
    _insert_rest_bar(warehouse_conn, "NVDA", in_session)  # a symbol outside the selection
    _insert_rest_bar(warehouse_conn, "AAPL", in_session + dt.timedelta(days=1))  # another session
    _insert_rest_bar(
        warehouse_conn, "AAPL", in_session + dt.timedelta(seconds=30)
    )  # a row the new file lacks
    _load(warehouse_conn, tmp_path, new, SELECTION, etag="v2")
    assert warehouse_bars(warehouse_conn, day=DAY, symbols=SELECTION) == expected_bars(new, SELECTION)
    assert warehouse_bars(warehouse_conn, day=DAY, symbols=["NVDA"]) != set()
    assert warehouse_bars(warehouse_conn, day=DAY + dt.timedelta(days=1)) != set()
    etags = warehouse_conn.execute("SELECT etag FROM market.ingest_ledger").fetchall()
    assert etags == [("v2",)]
    assert dict(warehouse_conn.execute("SELECT line_number, reason FROM market.quarantine").fetchall()) == (
        new.expected_quarantine(SELECTION)
    )
    selection_day = {
        k: n for k, n in counted_bars(warehouse_conn).items() if k[0] in SELECTION and k[2] == DAY
    }
    assert stored_counts(warehouse_conn) == selection_day  # bars inserted by hand elsewhere: not counted


def test_all_tickers_of_one_dataset_leave_the_other_datasets_alone(
    warehouse_conn: psycopg.Connection, tmp_path: Path
) -> None:
    stocks = market.build_file("stocks", "1m", DAY)
    indices = market.build_file("indices", "1m", DAY)
    _load(warehouse_conn, tmp_path, indices, ["*"], etag="i1")
    _load(warehouse_conn, tmp_path, stocks, ["*"], etag="s1")
    _load(warehouse_conn, tmp_path, stocks, ["*"], etag="s1")
    every_index = {i.ticker for i in market.instruments("indices")}
    assert warehouse_bars(warehouse_conn, symbols=every_index) == expected_bars(indices)
    every_stock = {reference.listed_ticker(i.ticker, DAY) for i in market.instruments("stocks")}  # PALT
    assert warehouse_bars(warehouse_conn, symbols=every_stock) == expected_bars(stocks)
    assert stored_counts(warehouse_conn) == counted_bars(warehouse_conn)
    assert {symbol for symbol, _, _ in stored_counts(warehouse_conn)} == every_index | every_stock


def test_a_crash_mid_load_leaves_the_previous_state(
    warehouse_conn: psycopg.Connection, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = market.build_file("stocks", "1m", DAY, pathologies=[])
    new = market.build_file("stocks", "1m", DAY, pathologies=["duplicate_row"])
    _load(warehouse_conn, tmp_path, old, SELECTION, etag="v1")
    before = warehouse_bars(warehouse_conn)

    def crash(*args: object, **kwargs: object) -> None:
        raise ConnectionResetError("the worker died after the bars were copied")

    monkeypatch.setattr(quarantine, "write", crash)
    with pytest.raises(ConnectionResetError):
        _load(warehouse_conn, tmp_path, new, SELECTION, etag="v2")
    assert warehouse_bars(warehouse_conn) == before
    assert warehouse_conn.execute("SELECT etag FROM market.ingest_ledger").fetchall() == [("v1",)]
    assert stored_counts(warehouse_conn) == counted_bars(warehouse_conn) != {}


def test_current_load_is_verified_against_the_rows_present(
    warehouse_conn: psycopg.Connection, tmp_path: Path
) -> None:
    sample = market.build_file("stocks", "1m", DAY)
    counts = _load(warehouse_conn, tmp_path, sample, SELECTION, etag="v1")
    current = current_load(warehouse_conn, _version(sample, "v1"), SELECTION)
    assert current is not None and current.rows_loaded == counts.rows_loaded
    assert current_load(warehouse_conn, _version(sample, "v2"), SELECTION) is None  # new ETag
    assert current_load(warehouse_conn, _version(sample, "v1"), ["AAPL"]) is None  # other selection
    warehouse_conn.execute("UPDATE market.historical_bars SET source = 'rest' WHERE symbol = 'AAPL' AND ts = "
                           "(SELECT min(ts) FROM market.historical_bars WHERE symbol = 'AAPL')")  # fmt: skip
    assert current_load(warehouse_conn, _version(sample, "v1"), SELECTION) is None  # REST took a bar
    _load(warehouse_conn, tmp_path, sample, SELECTION, etag="v1")
    assert current_load(warehouse_conn, _version(sample, "v1"), SELECTION) is not None
    warehouse_conn.execute(
        "DELETE FROM market.historical_bars WHERE ctid = (SELECT min(ctid) FROM market.historical_bars)"
    )
    assert current_load(warehouse_conn, _version(sample, "v1"), SELECTION) is None  # a row went missing


def test_concurrent_loads_of_one_file_take_turns(
    db: Postgres, warehouse_conn: psycopg.Connection, tmp_path: Path
) -> None:
    sample = market.build_file("stocks", "1m", DAY)
    reader = _reader(tmp_path, sample, ["*"])
    ensure_partitions(warehouse_conn, DAY, DAY)
    errors: list[BaseException] = []

    def load() -> None:
        try:
            with db.connect() as own:
                replace_session(own, _version(sample, "v1"), ["*"], reader)
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=load) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert warehouse_bars(warehouse_conn) == expected_bars(sample)


def test_the_merge_is_one_linear_pass_over_the_sessions_partition(
    warehouse_conn: psycopg.Connection, tmp_path: Path
) -> None:
    """A correlated subplan here was quadratic (minutes per full-universe day instead of seconds), and
    a DELETE without the window read every monthly partition."""
    sample = market.build_file("stocks", "1m", DAY)
    ensure_partitions(warehouse_conn, dt.date(2024, 2, 1), dt.date(2024, 4, 30))  # 3 months
    _load(warehouse_conn, tmp_path, sample, ["*"], etag="v1")
    in_window, params = session_rows(sample.dataset, sample.timeframe, sample.session, ["*"])

    def explain(statement: sql.Composable, args: tuple) -> str:
        return "\n".join(row[0] for row in warehouse_conn.execute(sql.SQL("EXPLAIN ") + statement, args))

    with warehouse_conn.transaction():
        warehouse_conn.execute(
            "CREATE TEMPORARY TABLE flatfile_incoming (LIKE market.historical_bars) ON COMMIT DROP"
        )
        warehouse_conn.execute("INSERT INTO flatfile_incoming SELECT * FROM market.historical_bars")
        warehouse_conn.execute("ANALYZE flatfile_incoming")
        warehouse_conn.execute(sql.SQL(_MERGE_CHANGES).format(w=in_window), params)
        changes = explain(sql.SQL(_MERGE_CHANGES.split(" AS\n", 1)[1]).format(w=in_window), params)
        delete = explain(sql.SQL(_MERGE_DELETE), params[:3])
    assert "Full Join" in changes and "SubPlan" not in changes, changes
    for plan in (changes, delete):  # only March's partition is read, not February's or April's
        assert "historical_bars_2024_03" in plan and "2024_02" not in plan and "2024_04" not in plan, plan
