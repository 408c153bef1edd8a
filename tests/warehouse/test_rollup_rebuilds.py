"""Derived bars in the warehouse: rebuilt by every 1m writer, equal to an independent recomputation."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import psycopg
import pytest

from marketbars.market.calendar import NEW_YORK
from marketbars.warehouse.migrations import migrate
from marketbars.warehouse.rollup_rebuilds import pending_rollups, rebuild_rollups
from sandbox import market
from sandbox.rest_server import RestServer
from sandbox.services import S3Server
from tests.helpers import (
    ROLLUP_WIDTHS,
    download,
    fill,
    load,
    load_file,
    publish,
    reference_rollups,
    warehouse_bars,
)

pytestmark = pytest.mark.integration
EARLY_CLOSE = dt.date(2024, 11, 29)
DST_START = dt.date(2024, 3, 11)  # the first session of daylight saving time
WATCHLIST = ["AAPL", "MSFT", "SPY", "ZVZZT"]


def derived_bars(conn: psycopg.Connection, day: dt.date) -> dict[str, set]:
    derived = {}
    for timeframe in ROLLUP_WIDTHS:
        rows = warehouse_bars(conn, timeframe, day)
        assert {row[9] for row in rows} <= {"rollup"}
        derived[timeframe] = {row[:9] for row in rows}
    return derived


def assert_rollups_follow_the_minutes(conn: psycopg.Connection, day: dt.date, close: dt.time) -> None:
    minutes = warehouse_bars(conn, "1m", day)
    expected = reference_rollups(minutes, day, close)
    assert expected["5m"], "nothing to compare"
    assert derived_bars(conn, day) == expected


def load_with_operators(s3: S3Server, download_dir: Path, day: dt.date, symbols: list[str], dataset="stocks"):
    files = download(s3, download_dir, [day.isoformat()], dataset=dataset)
    return load(s3, download_dir, files, symbols, dataset=dataset)


def test_a_minute_file_load_rebuilds_derived_bars_and_a_rerun_rewrites_nothing(
    db_conn: psycopg.Connection, s3: S3Server, download_dir: Path
) -> None:
    publish(s3, market.build_file("stocks", "1m", EARLY_CLOSE))
    load_with_operators(s3, download_dir, EARLY_CLOSE, WATCHLIST)
    assert_rollups_follow_the_minutes(db_conn, EARLY_CLOSE, dt.time(13))
    hourly = {row[1] for row in derived_bars(db_conn, EARLY_CLOSE)["1h"]}
    assert len(hourly) == 4  # 09:30, 10:30, 11:30 and the 12:30-13:00 bar cut by the early close

    versions = set(db_conn.execute("SELECT symbol, timeframe, ts, xmin::text FROM market.historical_bars"))
    [again] = load_with_operators(s3, download_dir, EARLY_CLOSE, WATCHLIST)
    assert again["action"] == "current"
    assert (
        set(db_conn.execute("SELECT symbol, timeframe, ts, xmin::text FROM market.historical_bars"))
        == versions
    )


def test_a_rebuild_cut_short_is_redone_by_the_next_attempt(
    db_conn: psycopg.Connection, s3: S3Server, download_dir: Path
) -> None:
    publish(s3, market.build_file("stocks", "1m", EARLY_CLOSE))
    load_with_operators(s3, download_dir, EARLY_CLOSE, WATCHLIST)
    expected = derived_bars(db_conn, EARLY_CLOSE)
    # As if the task died between the load's commit and the rebuild's.
    db_conn.execute("DELETE FROM market.historical_bars WHERE source = 'rollup'")
    db_conn.execute("UPDATE market.ingest_ledger SET rollups_at = NULL")
    [again] = load_with_operators(s3, download_dir, EARLY_CLOSE, WATCHLIST)
    assert again["action"] == "current"
    assert derived_bars(db_conn, EARLY_CLOSE) == expected


def test_index_rollups_carry_no_volume_vwap_or_trades(
    db_conn: psycopg.Connection, s3: S3Server, download_dir: Path
) -> None:
    publish(s3, market.build_file("indices", "1m", EARLY_CLOSE))
    load_with_operators(s3, download_dir, EARLY_CLOSE, ["I:SPX", "I:NDX"], dataset="indices")
    assert_rollups_follow_the_minutes(db_conn, EARLY_CLOSE, dt.time(13))
    assert {row[6:9] for rows in derived_bars(db_conn, EARLY_CLOSE).values() for row in rows} == {
        (None, None, None)
    }


def test_a_dst_session_and_missing_minutes_rebuild_only_what_changed(
    conn: psycopg.Connection, tmp_path: Path
) -> None:
    migrate(conn)
    sample = market.build_file("stocks", "1m", DST_START)
    load_file(conn, tmp_path, sample, ["*"])
    first = rebuild_rollups(conn, "stocks", DST_START, ["*"])
    assert first.replaced == 0 and first.minute_bars > 0
    assert_rollups_follow_the_minutes(conn, DST_START, dt.time(16))
    # 09:30 New York is 13:30 UTC after the change (14:30 the session before).
    assert min(row[1] for row in derived_bars(conn, DST_START)["4h"]) == dt.datetime(
        2024, 3, 11, 13, 30, tzinfo=dt.UTC
    )
    versions = set(conn.execute("SELECT symbol, timeframe, ts, xmin::text FROM market.historical_bars"))
    unchanged = rebuild_rollups(conn, "stocks", DST_START, ["*"])
    assert unchanged.replaced == 0 and unchanged.derived_bars == first.derived_bars
    assert (
        set(conn.execute("SELECT symbol, timeframe, ts, xmin::text FROM market.historical_bars")) == versions
    )
    # Minutes go missing (a thin ticker's quiet spell, a hole); the rebuild follows them.
    before = derived_bars(conn, DST_START)
    conn.execute(
        "DELETE FROM market.historical_bars WHERE timeframe = '1m' AND symbol = 'AAPL'"
        " AND ts >= '2024-03-11 14:00+00' AND ts < '2024-03-11 15:07+00'"
    )
    again = rebuild_rollups(conn, "stocks", DST_START, ["*"])
    after = derived_bars(conn, DST_START)
    changed = sum(len(before[tf] - after[tf]) for tf in before)
    assert again.replaced == changed > 0  # only AAPL's bars over the hole were rewritten
    assert {row[0] for tf in before for row in before[tf] - after[tf]} == {"AAPL"}
    assert_rollups_follow_the_minutes(conn, DST_START, dt.time(16))


def test_rest_fills_and_patches_rebuild_derived_bars_with_vwap(
    db_conn: psycopg.Connection, rest_api: RestServer, s3: S3Server, download_dir: Path
) -> None:
    monday, tuesday = dt.date(2024, 3, 4), dt.date(2024, 3, 5)

    def fill_aapl(day: dt.date, patch: bool = False) -> dict:
        return fill("AAPL", {"1m": [day]}, patch=patch)

    fill_aapl(monday)
    assert_rollups_follow_the_minutes(db_conn, monday, dt.time(16))
    assert all(row[8] is not None for row in derived_bars(db_conn, monday)["1h"])  # REST bars carry vw

    publish(s3, market.build_file("stocks", "1m", tuesday))
    load_with_operators(s3, download_dir, tuesday, ["AAPL"])
    db_conn.execute(
        "DELETE FROM market.historical_bars WHERE timeframe = '1m' AND ts >= '2024-03-05 15:00+00'"
        " AND ts < '2024-03-05 15:20+00'"
    )
    assert fill_aapl(tuesday, patch=True)["1m"]["patched"] == ["2024-03-05"]
    assert_rollups_follow_the_minutes(db_conn, tuesday, dt.time(16))
    patched_hour = next(
        row
        for row in derived_bars(db_conn, tuesday)["1h"]
        if row[1] == dt.datetime(2024, 3, 5, 14, 30, tzinfo=dt.UTC)
    )
    assert patched_hour[8] is not None  # the patched minutes' vwaps weigh in; the file's have none


def test_a_replaced_file_rewrites_only_the_derived_bars_that_changed(
    db_conn: psycopg.Connection, s3: S3Server, download_dir: Path
) -> None:
    first = market.build_file("stocks", "1m", EARLY_CLOSE, pathologies=[])
    corrected = market.build_file(
        "stocks", "1m", EARLY_CLOSE, pathologies=["high_below_low", "conflicting_duplicate"]
    )
    publish(s3, first)
    load_with_operators(s3, download_dir, EARLY_CLOSE, ["*"])
    before = derived_bars(db_conn, EARLY_CLOSE)
    versions = dict(
        ((s, tf, ts), x)
        for s, tf, ts, x in db_conn.execute(
            "SELECT symbol, timeframe, ts, xmin::text FROM market.historical_bars WHERE source = 'rollup'"
        )
    )
    publish(s3, corrected)
    [result] = load_with_operators(s3, download_dir, EARLY_CLOSE, ["*"])
    assert result["action"] == "loaded"
    assert_rollups_follow_the_minutes(db_conn, EARLY_CLOSE, dt.time(13))
    after = derived_bars(db_conn, EARLY_CLOSE)
    changed = {(row[0], tf, row[1]) for tf in before for row in after[tf] - before[tf]}
    assert changed, "the corrected file should change some derived bars"
    rewritten = {
        (s, tf, ts)
        for s, tf, ts, x in db_conn.execute(
            "SELECT symbol, timeframe, ts, xmin::text FROM market.historical_bars WHERE source = 'rollup'"
        )
        if versions.get((s, tf, ts)) != x
    }
    assert rewritten == changed  # the merge left every unchanged derived bar alone


def test_a_rebuild_that_never_ran_is_found_and_done(
    db_conn: psycopg.Connection, rest_api: RestServer, tmp_path: Path
) -> None:
    from marketbars.pipelines.gaps.tasks import rebuild_pending_rollups

    migrate(db_conn)
    sample = market.build_file("stocks", "1m", DST_START)
    load_file(db_conn, tmp_path, sample, ["AAPL", "MSFT"])  # a load whose task died before its rebuild
    fill("NVDA", {"1m": [DST_START]})
    db_conn.execute("DELETE FROM market.historical_bars WHERE symbol = 'NVDA' AND source = 'rollup'")
    db_conn.execute("UPDATE market.rest_ledger SET rollups_at = NULL")  # ... and a fill's that did too
    assert pending_rollups(db_conn, DST_START) == [
        ("stocks", DST_START, ["AAPL", "MSFT"]),
        ("stocks", DST_START, ["NVDA"]),
    ]

    class Run:
        logical_date = dt.datetime.combine(DST_START, dt.time(21), NEW_YORK)
        run_after = logical_date

    result = rebuild_pending_rollups({"lookback_days": 3}, Run())

    assert result["rebuilt"] == 2 and result["derived_bars"] > 0
    assert pending_rollups(db_conn, DST_START) == []
    assert_rollups_follow_the_minutes(db_conn, DST_START, dt.time(16))
    assert {row[0] for row in derived_bars(db_conn, DST_START)["1h"]} == {"AAPL", "MSFT", "NVDA"}


def test_a_patch_retry_rebuilds_even_when_it_adds_nothing(
    db_conn: psycopg.Connection, rest_api: RestServer, s3: S3Server, download_dir: Path
) -> None:
    day = dt.date(2024, 3, 5)
    publish(s3, market.build_file("stocks", "1m", day))
    load_with_operators(s3, download_dir, day, ["AAPL"])
    db_conn.execute(
        "DELETE FROM market.historical_bars WHERE timeframe = '1m' AND ts >= '2024-03-05 15:00+00'"
        " AND ts < '2024-03-05 15:20+00'"
    )

    def patch() -> dict:
        return fill("AAPL", {"1m": [day]}, patch=True)

    patch()
    # As if the first attempt died after the patch committed and before its rebuild.
    db_conn.execute("DELETE FROM market.historical_bars WHERE source = 'rollup'")
    assert patch()["1m"]["bars"] == 0  # the retry patches nothing ...
    assert_rollups_follow_the_minutes(db_conn, day, dt.time(16))  # ... and still rebuilds
