"""Rules of the weekly cleanup: what is old enough to go. Pure: values in, values out.

Bars are kept for ``retention_days`` calendar days before the run's date (New York): a bar goes
when its session date is before the cutoff date. Monthly partitions wholly before the cutoff are
dropped (cheap whatever their size); the one that straddles it is trimmed row by row.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from marketbars.market.calendar import NEW_YORK
from marketbars.massive.local_copies import CACHED_NAME, PARTIAL_NAME
from marketbars.warehouse.partitions import Partition

MIN_RETENTION_DAYS = 30  # a guard against a typo wiping the warehouse
STALE_FILE_AGE = dt.timedelta(hours=24)
# The tables each ledger retention setting governs (a kind's days: 0 keeps its rows forever).
LEDGER_TABLES: dict[str, tuple[str, ...]] = {
    "quarantine": ("quarantine",),
    "ledgers": ("ingest_ledger", "rest_ledger", "backfill_gaps", "reference_ledger"),
    "backtests": ("backtest_runs",),
}


@dataclass(frozen=True)
class PartitionPlan:
    drop: list[Partition]  # wholly before the cutoff
    trim: Partition | None  # straddles the cutoff: rows before it are deleted
    keep: list[Partition]


def cutoff(run_date: dt.date, retention_days: int) -> tuple[dt.date, dt.datetime]:
    """The first session date kept, and the instant bars before it start (00:00 New York, in UTC)."""
    if retention_days < MIN_RETENTION_DAYS:
        raise ValueError(f"retention_days must be at least {MIN_RETENTION_DAYS}, got {retention_days}")
    first_kept = run_date - dt.timedelta(days=retention_days)
    return first_kept, dt.datetime.combine(first_kept, dt.time(0), NEW_YORK).astimezone(dt.UTC)


def plan_partitions(partitions: Iterable[Partition], before: dt.datetime) -> PartitionPlan:
    """Split the bar partitions by the cutoff instant."""
    drop, keep, trim = [], [], None
    for partition in sorted(partitions, key=lambda p: p.start):
        if partition.end <= before:
            drop.append(partition)
        elif partition.start < before:
            if trim is not None:
                raise ValueError(f"partitions {trim.name} and {partition.name} overlap")
            trim = partition
        else:
            keep.append(partition)
    return PartitionPlan(drop=drop, trim=trim, keep=keep)


def ledger_cutoffs(run_date: dt.date, retention_days: Mapping[str, int]) -> dict[str, dt.date]:
    """The first date each ledger table keeps, from each kind's retention in days (0: kept forever,
    so the table is left out)."""
    return {
        table: run_date - dt.timedelta(days=days)
        for kind, days in retention_days.items()
        if days > 0
        for table in LEDGER_TABLES[kind]
    }


def trim_days(partition: Partition, before: dt.datetime) -> list[tuple[dt.datetime, dt.datetime]]:
    """The New York days of a partition before the cutoff, as [start, end) instants: the trim
    deletes one day per transaction, so no transaction holds a month's row locks."""
    day = partition.start.astimezone(NEW_YORK).date()
    spans: list[tuple[dt.datetime, dt.datetime]] = []
    while True:
        start = dt.datetime.combine(day, dt.time(0), NEW_YORK).astimezone(dt.UTC)
        if start >= before:
            return spans
        day += dt.timedelta(days=1)
        end = dt.datetime.combine(day, dt.time(0), NEW_YORK).astimezone(dt.UTC)
        spans.append((max(start, partition.start), min(end, before)))


def stale_files(
    roots: Sequence[Path], now: dt.datetime, max_age: dt.timedelta = STALE_FILE_AGE
) -> list[Path]:
    """Downloaded flat files and abandoned partial downloads not modified for max_age, by name
    pattern only: a download in progress keeps its partial file's mtime fresh."""
    horizon = now.timestamp() - max_age.total_seconds()
    found = []
    for root in roots:
        if not root.is_dir():
            continue
        for path in root.rglob("*"):
            if not (CACHED_NAME.fullmatch(path.name) or PARTIAL_NAME.fullmatch(path.name)):
                continue
            try:
                if path.is_file() and not path.is_symlink() and path.stat().st_mtime < horizon:
                    found.append(path)
            except FileNotFoundError:  # removed meanwhile (loaded by a task)
                continue
    return sorted(found)
