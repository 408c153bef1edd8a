"""The download and load operators end to end: moto S3 -> local disk -> PostgreSQL, via their connections."""

from __future__ import annotations

import datetime as dt
import gzip
import re
from pathlib import Path

import psycopg
import pytest
from airflow.sdk.exceptions import AirflowFailException

from marketbars.operators.flatfile_load import FlatFileLoadOperator
from sandbox import market
from sandbox.services import S3Server
from tests.helpers import download, expected_bars, load, publish, quarantined_lines, warehouse_bars

pytestmark = pytest.mark.integration
WATCHLIST = ["AAPL", "MSFT", "SPY", "ZVZZT"]
DAY = dt.date(2024, 11, 29)  # an early close


def bars_with_versions(conn: psycopg.Connection) -> set[tuple]:
    """Rows with their xmin: unchanged xmin proves a re-run rewrote nothing."""
    return set(conn.execute("SELECT symbol, ts, xmin::text FROM market.historical_bars").fetchall())


@pytest.fixture
def loaded_db(airflow_connections: dict[str, str], conn: psycopg.Connection) -> psycopg.Connection:
    return conn


def test_load_matches_the_source_row_for_row_and_a_rerun_changes_nothing(
    loaded_db: psycopg.Connection, s3: S3Server, download_dir: Path
) -> None:
    sample = market.build_file("stocks", "1m", DAY)
    publish(s3, sample)
    files = download(s3, download_dir, [DAY.isoformat()])
    [result] = load(s3, download_dir, files, WATCHLIST)
    expected = expected_bars(sample, WATCHLIST)
    assert warehouse_bars(loaded_db) == expected
    assert quarantined_lines(loaded_db, sample.key) == sample.expected_quarantine(WATCHLIST)
    assert result == {
        "session": "2024-11-29", "dataset": "stocks", "timeframe": "1m", "key": sample.key,
        "etag": files[0]["etag"], "action": "loaded",
        "rows_read": len(sample.lines), "rows_loaded": len(expected),
        "rows_quarantined": len(sample.expected_quarantine(WATCHLIST)),
    }  # fmt: skip
    before = bars_with_versions(loaded_db)
    [again] = load(s3, download_dir, download(s3, download_dir, [DAY.isoformat()]), WATCHLIST)
    assert again["action"] == "current" and again["rows_loaded"] == len(expected)
    assert bars_with_versions(loaded_db) == before


def test_every_ticker_loads_with_a_star_selection(
    loaded_db: psycopg.Connection, s3: S3Server, download_dir: Path
) -> None:
    sample = market.build_file("stocks", "1m", DAY)
    publish(s3, sample)
    load(s3, download_dir, download(s3, download_dir, [DAY.isoformat()]), ["*"])
    assert warehouse_bars(loaded_db) == expected_bars(sample)
    assert quarantined_lines(loaded_db, sample.key) == sample.quarantine


def test_a_replaced_file_is_ingested_again_with_exactly_its_rows(
    loaded_db: psycopg.Connection, s3: S3Server, download_dir: Path
) -> None:
    first = market.build_file("stocks", "1m", DAY, pathologies=[])
    corrected = market.build_file("stocks", "1m", DAY, pathologies=["duplicate_row", "high_below_low"])
    publish(s3, first)
    load(s3, download_dir, download(s3, download_dir, [DAY.isoformat()]), WATCHLIST)
    publish(s3, corrected)
    files = download(s3, download_dir, [DAY.isoformat()])
    [result] = load(s3, download_dir, files, WATCHLIST)
    assert (files[0]["status"], result["action"]) == ("downloaded", "loaded")
    assert warehouse_bars(loaded_db) == expected_bars(corrected, WATCHLIST)
    assert loaded_db.execute("SELECT etag FROM market.ingest_ledger").fetchall() == [(files[0]["etag"],)]


def test_a_truncated_object_fails_clearly_commits_nothing_and_leaves_no_file(
    loaded_db: psycopg.Connection, s3: S3Server, download_dir: Path
) -> None:
    sample = market.build_file("stocks", "1m", DAY)
    s3.client().put_object(Bucket=s3.bucket, Key=sample.key, Body=sample.body[: len(sample.body) * 2 // 3])
    files = download(s3, download_dir, [DAY.isoformat()])
    # Downloaded again once, still corrupt: the vendor's object is, and no retry of the same ETag helps.
    with pytest.raises(AirflowFailException) as failed:
        load(s3, download_dir, files, WATCHLIST)
    message = str(failed.value)
    assert re.search(
        r"minute_aggs_v1/2024/11/2024-11-29\.csv\.gz \(ETag \w+\): truncated or corrupt gzip", message
    )
    assert "The vendor's object is corrupt" in message and "gap_detection_and_retry" in message
    assert loaded_db.execute("SELECT count(*) FROM market.historical_bars").fetchone() == (0,)
    assert loaded_db.execute("SELECT count(*) FROM market.ingest_ledger").fetchone() == (0,)
    assert loaded_db.execute("SELECT count(*) FROM market.quarantine").fetchone() == (0,)
    assert [p for p in download_dir.rglob("*") if p.is_file()] == []  # a replaced version is fetched anew


def test_a_zero_byte_object_fails_clearly(
    loaded_db: psycopg.Connection, s3: S3Server, download_dir: Path
) -> None:
    s3.client().put_object(Bucket=s3.bucket, Key=market.build_file("stocks", "1m", DAY).key, Body=b"")
    with pytest.raises(AirflowFailException, match=r"the file is empty \(0 bytes\)"):
        load(s3, download_dir, download(s3, download_dir, [DAY.isoformat()]), WATCHLIST)


def test_a_local_copy_damaged_after_its_download_is_fetched_again_and_loads(
    loaded_db: psycopg.Connection, s3: S3Server, download_dir: Path
) -> None:
    sample = market.build_file("stocks", "1m", DAY)
    publish(s3, sample)
    files = download(s3, download_dir, [DAY.isoformat()])
    path = Path(files[0]["path"])
    path.write_bytes(b"\x1f\x8b" + bytes(len(sample.body) - 2))  # same size, not a gzip stream
    [result] = load(s3, download_dir, files, WATCHLIST)
    assert result["action"] == "loaded"
    assert warehouse_bars(loaded_db) == expected_bars(sample, WATCHLIST)


def test_header_drift_fails_without_retry_and_commits_nothing(
    loaded_db: psycopg.Connection, s3: S3Server, download_dir: Path
) -> None:
    sample = market.build_file("stocks", "1m", DAY)
    text = gzip.decompress(sample.body).decode().replace("transactions", "trades", 1)
    s3.client().put_object(Bucket=s3.bucket, Key=sample.key, Body=gzip.compress(text.encode()))
    drift = r"s3://.*/2024-11-29\.csv\.gz \(ETag \w+\): header drift.*missing \['transactions'\]"
    with pytest.raises(AirflowFailException, match=drift):
        load(s3, download_dir, download(s3, download_dir, [DAY.isoformat()]), WATCHLIST)
    assert loaded_db.execute("SELECT count(*) FROM market.historical_bars").fetchone() == (0,)


def test_a_file_of_the_wrong_day_is_quarantined_and_fails_the_task(
    loaded_db: psycopg.Connection, s3: S3Server, download_dir: Path
) -> None:
    shifted = market.build_file("stocks", "1m", DAY, pathologies=[market.WHOLE_FILE_NEXT_DAY])
    publish(s3, shifted)
    with pytest.raises(AirflowFailException, match="too many rejected rows"):
        load(s3, download_dir, download(s3, download_dir, [DAY.isoformat()]), WATCHLIST)
    assert loaded_db.execute("SELECT count(*) FROM market.historical_bars").fetchone() == (0,)
    reasons = loaded_db.execute("SELECT reason, count(*) FROM market.quarantine GROUP BY reason").fetchall()
    assert reasons == [("timestamp_outside_session", len(shifted.expected_quarantine(WATCHLIST)))]


def test_a_worker_without_the_local_copy_fetches_it_again(
    loaded_db: psycopg.Connection, s3: S3Server, download_dir: Path
) -> None:
    sample = market.build_file("stocks", "1m", DAY)
    publish(s3, sample)
    files = download(s3, download_dir, [DAY.isoformat()])
    Path(files[0]["path"]).unlink()
    load(s3, download_dir, files, WATCHLIST)
    assert warehouse_bars(loaded_db) == expected_bars(sample, WATCHLIST)


def test_indices_load_without_volume(loaded_db: psycopg.Connection, s3: S3Server, download_dir: Path) -> None:
    sample = market.build_file("indices", "1m", DAY)
    publish(s3, sample)
    load(
        s3,
        download_dir,
        download(s3, download_dir, [DAY.isoformat()], "indices"),
        ["I:SPX", "I:VIX"],
        "indices",
    )
    bars = warehouse_bars(loaded_db)
    assert bars == expected_bars(sample, ["I:SPX", "I:VIX"])
    assert {(b[6], b[7]) for b in bars} == {(None, None)}


def test_one_bad_file_does_not_stop_the_rest_of_its_batch(
    loaded_db: psycopg.Connection, s3: S3Server, download_dir: Path
) -> None:
    days = [dt.date(2024, 11, 26), dt.date(2024, 11, 27), DAY]
    good_first, truncated, drifted = (market.build_file("stocks", "1m", d) for d in days)
    publish(s3, good_first)
    s3.client().put_object(Bucket=s3.bucket, Key=truncated.key, Body=truncated.body[:5000])
    text = gzip.decompress(drifted.body).decode().replace("transactions", "trades", 1)
    s3.client().put_object(Bucket=s3.bucket, Key=drifted.key, Body=gzip.compress(text.encode()))
    files = download(s3, download_dir, [d.isoformat() for d in days])
    # Both are the data's problems (a corrupt object, a new format): no retry can fix them.
    with pytest.raises(AirflowFailException, match="2 of 3 files did not load cleanly") as error:
        load(s3, download_dir, files, WATCHLIST)
    assert "2024-11-27 s3://" in str(error.value) and "truncated or corrupt" in str(error.value)
    assert "2024-11-29 s3://" in str(error.value) and "header drift" in str(error.value)
    assert warehouse_bars(loaded_db) == expected_bars(good_first, WATCHLIST)  # the good file loaded
    assert [d for (d,) in loaded_db.execute("SELECT session_date FROM market.ingest_ledger")] == [days[0]]


def test_a_loaded_files_local_copy_is_removed_unless_asked_to_keep_it(
    loaded_db: psycopg.Connection, s3: S3Server, download_dir: Path
) -> None:
    publish(s3, market.build_file("stocks", "1m", DAY))
    files = download(s3, download_dir, [DAY.isoformat()])
    load(s3, download_dir, files, WATCHLIST)
    assert not Path(files[0]["path"]).exists()
    files = download(s3, download_dir, [DAY.isoformat()])
    op = FlatFileLoadOperator(
        task_id="load", dataset="stocks", timeframe="1m", files=files, symbols=WATCHLIST, bucket=s3.bucket,
        download_dir=str(download_dir), keep_local_copy=True,
    )  # fmt: skip
    assert [r["action"] for r in op.execute({})] == ["current"]
    assert Path(files[0]["path"]).exists()
