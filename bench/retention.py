"""Benchmark: removing a month of bars by dropping its partition, against a row DELETE of the same month.

    python -m bench.retention [--rows 40000000]

Fills two monthly partitions of ``market.historical_bars`` with the same synthetic minute bars
(``--rows`` each, generated server-side; about 4 minutes and 11 GB of disk for the default 40M),
then, side by side:

* project: what ``weekly_cleanup`` runs for a month wholly before the cutoff
  (``marketbars.pipelines.cleanup.tasks.drop_partition``), timed in its two steps: the detach
  (``partitions.bar_partitions`` and the re-check against the cutoff, then ``partitions.detach``:
  ``DETACH PARTITION ... CONCURRENTLY``, the month is gone from every query) and
  ``partitions.drop_detached``, the ``DROP TABLE`` of the detached table (its files go back to the
  filesystem);
* the filesystem's own floor for that second step: ``rm`` of a file of the partition's size on
  the same filesystem (on a filesystem mounted with ``discard`` freeing blocks is not free);
* baseline: ``DELETE FROM market.historical_bars WHERE ts >= <month start> AND ts < <month end>``
  on the other month, the row-by-row way, then a plain VACUUM (which a DELETE needs before the
  space can be reused).

Target: the month dropped in under 1 s. Uses the embedded PostgreSQL (or MARKETBARS_PG_URL).
"""

from __future__ import annotations

import argparse
import datetime as dt
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from marketbars.warehouse.partitions import Partition

ROOT = Path(__file__).resolve().parents[1]
DROPPED, DELETED = (2023, 1), (2023, 5)  # both 31 days, no DST change: equal row counts
TARGET_S = 1.0

# Minute bars for (symbols x minutes) of one month, generated in the server: no client transfer.
_FILL = """
INSERT INTO market.{partition}
SELECT 'S' || lpad(s::text, 5, '0'), '1m', %(start)s + (m * interval '1 minute'),
       100 + (s %% 50), 101 + (s %% 50), 99 + (s %% 50), 100.5 + (s %% 50), 1000, NULL, 10, 'flatfile'
FROM generate_series(1, %(symbols)s) AS s, generate_series(0, %(minutes)s - 1) AS m"""


def _month(year: int, month: int) -> tuple[dt.datetime, dt.datetime, str]:
    from marketbars.warehouse.partitions import month_bounds

    name = f"historical_bars_{year}_{month:02d}"
    bounds = month_bounds(name)
    assert bounds is not None, name
    return bounds[0], bounds[1], name


def _fill(conn, year: int, month: int, rows: int) -> int:
    from psycopg import sql

    from marketbars.warehouse import partitions

    start, end, name = _month(year, month)
    mid_month = start.date() + dt.timedelta(days=10)
    partitions.ensure_partitions(conn, mid_month, mid_month)
    minutes = int((end - start).total_seconds() // 60)
    symbols = max(1, round(rows / minutes))
    conn.execute(
        sql.SQL(_FILL).format(partition=sql.Identifier(name)),
        {"start": start, "symbols": symbols, "minutes": minutes},
    )
    conn.execute(sql.SQL("VACUUM (ANALYZE) market.{}").format(sql.Identifier(name)))
    (count,) = conn.execute(sql.SQL("SELECT count(*) FROM market.{}").format(sql.Identifier(name))).fetchone()
    return int(count)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=40_000_000, help="rows in each month")
    args = parser.parse_args()

    from marketbars.warehouse import migrations, partitions
    from sandbox.services import start_postgres

    server = start_postgres(ROOT / ".sandbox" / "pg")
    db = server.create_database("bench_retention")  # fresh: the bench destroys what it measures
    with db.connect() as conn:
        migrations.migrate(conn)
        print(f"filling two months with {args.rows:,} minute bars each (server-side) ...", flush=True)
        started = time.perf_counter()
        counts = {ym: _fill(conn, *ym, args.rows) for ym in (DROPPED, DELETED)}
        print(f"  {sum(counts.values()):,} rows in {time.perf_counter() - started:.0f} s", flush=True)

        start, end, name = _month(*DROPPED)
        size = {p.name: p.bytes for p in partitions.bar_partitions(conn)[0]}[name]
        conn.execute("CHECKPOINT")  # the fill's dirty pages are not the drop's cost
        started = time.perf_counter()
        partition = _detach(conn, name, end)
        detached = time.perf_counter()
        assert partition.bytes == size
        partitions.drop_detached(conn, partition)
        finished = time.perf_counter()
        detach_s, drop_s = detached - started, finished - detached
        project = finished - started
        gone = conn.execute("SELECT to_regclass(%s)", (f"market.{name}",)).fetchone() == (None,)
        assert gone, "the partition was not dropped"

        start, end, _ = _month(*DELETED)
        started = time.perf_counter()
        deleted = conn.execute(
            "DELETE FROM market.historical_bars WHERE ts >= %s AND ts < %s", (start, end)
        ).rowcount
        baseline_delete = time.perf_counter() - started
        conn.execute("VACUUM market.historical_bars")
        baseline = time.perf_counter() - started
        assert deleted == counts[DELETED]
    server.create_database("bench_retention")  # give the disk back
    floor = _rm_seconds(ROOT / ".sandbox" / "pg", size)

    print(f"\none month each: {counts[DROPPED]:,} rows ({size / 1e9:.1f} GB with its index)")
    print(f"{'method':<52} {'seconds':>9}")
    print(f"{'project: drop_partition, in all':<52} {project:>9.3f}")
    print(f"{'  of which detach (the month is out of every query)':<52} {detach_s:>9.3f}")
    print(f"{'  of which DROP TABLE of the detached month':<52} {drop_s:>9.3f}")
    print(f"{'filesystem floor: rm of a file that size':<52} {floor:>9.3f}")
    print(
        f"{'baseline: DELETE ... WHERE ts in the month':<52} {baseline_delete:>9.1f}"
        f"   (+ VACUUM: {baseline:.1f} s; {baseline_delete / project:,.0f}x slower)"
    )
    print(
        f"\n  {'MET ' if detach_s < TARGET_S else 'MISS'}  a month out of the warehouse"
        f" in under {TARGET_S:.0f} s"
    )
    print(
        f"  {'MET ' if project < TARGET_S else 'MISS'}  a month dropped, its space returned, in under"
        f" {TARGET_S:.0f} s (the filesystem alone takes {floor:.2f} s to free that much here)"
    )


def _detach(conn, name: str, before: dt.datetime) -> Partition:
    """The first step of ``marketbars.pipelines.cleanup.tasks.drop_partition``: the partition
    re-checked against the cutoff (wholly before it), then detached; the Partition detached."""
    from marketbars.pipelines.cleanup import rules
    from marketbars.warehouse import partitions

    current, _ = partitions.bar_partitions(conn)
    droppable = {p.name: p for p in rules.plan_partitions(current, before).drop}
    if name not in droppable:
        raise ValueError(f"market.{name} is not entirely before {before.isoformat()}: not dropped")
    partitions.detach(conn, droppable[name])
    return droppable[name]


def _rm_seconds(folder: Path, size: int) -> float:
    """Seconds to remove a written, synced file of `size` bytes in folder (the OS's share of a DROP)."""
    import os

    path = folder / "bench-rm-probe"
    block = b"\1" * (1 << 20)
    with path.open("wb") as out:
        for _ in range(size // len(block)):
            out.write(block)
        out.flush()
        os.fsync(out.fileno())
    started = time.perf_counter()
    path.unlink()
    return time.perf_counter() - started


if __name__ == "__main__":
    main()
