"""Retention rules: the cutoff, which partitions are dropped or trimmed, which files are stale."""

from __future__ import annotations

import datetime as dt
import itertools
import os
from pathlib import Path

import pytest

from marketbars.market.calendar import NEW_YORK
from marketbars.pipelines.cleanup import rules as retention
from marketbars.warehouse.partitions import Partition


def month(year: int, month: int) -> Partition:
    start = dt.datetime(year, month, 1, tzinfo=NEW_YORK)
    end = dt.datetime(year + month // 12, month % 12 + 1, 1, tzinfo=NEW_YORK)
    return Partition(
        f"historical_bars_{year}_{month:02d}", start.astimezone(dt.UTC), end.astimezone(dt.UTC), 1
    )


def test_the_cutoff_is_midnight_new_york_retention_days_before_the_run() -> None:
    first_kept, before = retention.cutoff(dt.date(2025, 11, 21), 365)
    assert first_kept == dt.date(2024, 11, 21)
    assert before == dt.datetime(2024, 11, 21, 5, 0, tzinfo=dt.UTC)  # EST
    assert retention.cutoff(dt.date(2025, 11, 21), 200)[1].hour == 4  # 2025-05-05, EDT


def test_a_tiny_retention_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 30"):
        retention.cutoff(dt.date(2025, 11, 21), 7)


def test_partitions_wholly_before_the_cutoff_are_dropped_and_the_straddling_one_trimmed() -> None:
    partitions = [month(2024, m) for m in range(9, 13)] + [month(2025, 1)]
    _, before = retention.cutoff(dt.date(2025, 11, 21), 365)
    plan = retention.plan_partitions(reversed(partitions), before)
    assert [p.name for p in plan.drop] == ["historical_bars_2024_09", "historical_bars_2024_10"]
    assert plan.trim is not None and plan.trim.name == "historical_bars_2024_11"
    assert [p.name for p in plan.keep] == ["historical_bars_2024_12", "historical_bars_2025_01"]


def test_a_cutoff_on_a_month_boundary_trims_nothing() -> None:
    partitions = [month(2024, 10), month(2024, 11)]
    before = month(2024, 11).start
    plan = retention.plan_partitions(partitions, before)
    assert [p.name for p in plan.drop] == ["historical_bars_2024_10"] and plan.trim is None


def test_trim_days_cover_the_partition_up_to_the_cutoff_one_new_york_day_each() -> None:
    partition = month(2024, 3)  # DST starts on 10 March: a 23-hour day
    before = dt.datetime.combine(dt.date(2024, 3, 12), dt.time(0), NEW_YORK).astimezone(dt.UTC)
    days = retention.trim_days(partition, before)
    assert len(days) == 11
    assert days[0][0] == partition.start and days[-1][1] == before
    assert all(a[1] == b[0] for a, b in itertools.pairwise(days))  # contiguous
    assert days[9][1] - days[9][0] == dt.timedelta(hours=23)


def test_only_the_downloads_own_names_older_than_a_day_are_stale(tmp_path: Path) -> None:
    now = dt.datetime(2025, 11, 21, 12, tzinfo=dt.UTC)
    folder = tmp_path / "us_stocks_sip" / "minute_aggs_v1" / "2025" / "11"
    folder.mkdir(parents=True)
    old = now - dt.timedelta(hours=25)
    files = {
        "2025-11-18.abc123.csv.gz": old,  # a cached download never loaded
        ".2025-11-18.abc123.csv.gz.4242-0a1b2c3d.part": old,  # an abandoned partial download
        ".2025-11-18.abc123.csv.gz.worker-2.local-4242-0b1b2c3d.part": old,  # ... named with its host
        "2025-11-20.def456.csv.gz": now - dt.timedelta(hours=2),  # recent: may be in use
        ".2025-11-20.def456.csv.gz.4343-0a1b2c3d.part": now - dt.timedelta(minutes=1),  # downloading
        "notes.txt": old,  # not ours
        "2025-11-18.csv": old,  # not ours either
    }
    for name, mtime in files.items():
        path = folder / name
        path.write_text("x")
        os.utime(path, (mtime.timestamp(), mtime.timestamp()))
    stale = retention.stale_files([tmp_path, tmp_path / "missing"], now)
    assert sorted(p.name for p in stale) == [
        ".2025-11-18.abc123.csv.gz.4242-0a1b2c3d.part",
        ".2025-11-18.abc123.csv.gz.worker-2.local-4242-0b1b2c3d.part",
        "2025-11-18.abc123.csv.gz",
    ]
