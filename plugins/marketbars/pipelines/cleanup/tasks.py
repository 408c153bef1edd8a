"""Task bodies of weekly_cleanup: Airflow's side (params, Variables, connections) of the rules in
``rules`` and the storage in ``marketbars.warehouse.partitions`` and ``.maintenance``. XCom carries
names, dates and counts."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from marketbars.pipelines.cleanup import rules

if TYPE_CHECKING:
    from marketbars.warehouse.connection import Connection

log = logging.getLogger(__name__)


def _connect(*, dry_run: bool) -> Connection:
    """A warehouse connection; a dry run changes nothing, not even the schema."""
    from marketbars.warehouse.hook import WarehouseHook

    return WarehouseHook().connect(migrate=not dry_run)


def plan(params: Mapping[str, Any], dag_run: Any) -> dict[str, Any]:
    """What retention would remove as of the run's date: partitions to drop, the partition to trim
    and its rows, the ledger cutoffs; and the warehouse's size now."""
    from marketbars import settings
    from marketbars.market import calendar
    from marketbars.warehouse import maintenance, partitions

    run_date = calendar.today_in_new_york(dag_run.logical_date or dag_run.run_after)
    first_kept, before = rules.cutoff(run_date, int(params["retention_days"]))
    ledger_cutoffs = rules.ledger_cutoffs(
        run_date,
        {
            "quarantine": settings.QUARANTINE_RETENTION_DAYS.get(),
            "ledgers": settings.LEDGER_RETENTION_DAYS.get(),
            "backtests": settings.BACKTEST_RETENTION_DAYS.get(),
        },
    )
    with _connect(dry_run=params["dry_run"]) as conn:
        bar_partitions, estimates = partitions.bar_partitions(conn)
        split = rules.plan_partitions(bar_partitions, before)
        trim = None
        if split.trim is not None:
            rows = partitions.count_before(conn, split.trim.name, before)
            trim = {"name": split.trim.name, "rows": rows}
        size = maintenance.market_bytes(conn)
    result = {
        "run_date": run_date.isoformat(),
        "first_kept": first_kept.isoformat(),
        "before": before.isoformat(),
        "dry_run": bool(params["dry_run"]),
        "drop": [{"name": p.name, "bytes": p.bytes, "rows_estimate": estimates[p.name]} for p in split.drop],
        "trim": trim,
        "ledger_cutoffs": {table: day.isoformat() for table, day in ledger_cutoffs.items()},
        "bytes_before": size,
    }
    log.info(
        "retention %d days as of %s: bars of sessions before %s go: %d partition(s) to drop (%s), %s; "
        "warehouse %s now%s",
        params["retention_days"],
        run_date,
        first_kept,
        len(split.drop),
        ", ".join(p.name for p in split.drop) or "none",
        f"{trim['rows']:,} rows to trim from {trim['name']}" if trim else "nothing to trim",
        _mb(size),
        " (dry run: nothing will be removed)" if result["dry_run"] else "",
    )
    return result


def apply_retention(plan: Mapping[str, Any]) -> dict[str, Any]:
    """Drop the planned partitions, then trim the straddling one, then forget the removed sessions'
    bar counts; a dry run only reports them."""
    from marketbars.warehouse import bar_counts, partitions

    before = dt.datetime.fromisoformat(plan["before"])
    if plan["dry_run"]:
        return {
            "partitions_dropped": [],
            "would_drop": [p["name"] for p in plan["drop"]],
            "would_free": sum(p["bytes"] for p in plan["drop"]),
            "rows_trimmed": 0,
            "would_trim": plan["trim"]["rows"] if plan["trim"] else 0,
        }
    dropped, bytes_dropped = [], 0
    with _connect(dry_run=False) as conn:
        for planned in plan["drop"]:
            freed = drop_partition(conn, planned["name"], before)
            if freed:
                log.info("dropped market.%s (%s)", planned["name"], _mb(freed))
                dropped.append(planned["name"])
                bytes_dropped += freed
        trimmed, trimmed_from = 0, None
        straddling = rules.plan_partitions(partitions.bar_partitions(conn)[0], before).trim
        if straddling is not None:
            trimmed = sum(
                partitions.delete_span(conn, straddling.name, start, end)
                for start, end in rules.trim_days(straddling, before)
            )
            trimmed_from = straddling.name
            log.info("trimmed %s rows before %s from market.%s", f"{trimmed:,}", before, straddling.name)
        forgotten = bar_counts.forget_before(conn, dt.date.fromisoformat(plan["first_kept"]))
        log.info("forgot %s bar counts of sessions before %s", f"{forgotten:,}", plan["first_kept"])
    return {
        "partitions_dropped": dropped,
        "bytes_dropped": bytes_dropped,
        "rows_trimmed": trimmed,
        "trimmed_partition": trimmed_from,
        "counts_forgotten": forgotten,
    }


def drop_partition(conn: Connection, name: str, before: dt.datetime) -> int:
    """Drop one bar partition wholly before the cutoff; its size in bytes (0 when already gone).

    The partition is checked against the cutoff right before, so a stale plan cannot drop a newer
    one. It is detached first (concurrently: loads and readers of other months go on), then
    dropped; a drop cut short in between is finished by the next run.
    """
    from marketbars.warehouse import partitions

    current, _ = partitions.bar_partitions(conn)
    droppable = {p.name: p for p in rules.plan_partitions(current, before).drop}
    if name not in droppable:
        if name in {p.name for p in current}:
            raise ValueError(f"market.{name} is not entirely before {before.isoformat()}: not dropped")
        return 0
    partitions.detach(conn, droppable[name])
    partitions.drop_detached(conn, droppable[name])
    return droppable[name].bytes


def prune_ledgers(plan: Mapping[str, Any]) -> dict[str, int]:
    """Delete (or, in a dry run, count) ledger and quarantine rows older than their own retention."""
    from marketbars.warehouse import maintenance

    cutoffs = {table: dt.date.fromisoformat(day) for table, day in plan["ledger_cutoffs"].items()}
    with _connect(dry_run=plan["dry_run"]) as conn:
        rows = maintenance.prune(conn, cutoffs, dry_run=plan["dry_run"])
    for table, count in rows.items():
        log.info(
            "%s %s old rows of market.%s", "would prune" if plan["dry_run"] else "pruned", f"{count:,}", table
        )
    return rows


def remove_temp_files(plan: Mapping[str, Any], now: dt.datetime | None = None) -> dict[str, int]:
    """Remove downloaded flat files and abandoned partial downloads older than 24 h on this worker."""
    from marketbars import settings

    root = Path(settings.DOWNLOAD_DIR.get())
    stale = rules.stale_files([root], now or dt.datetime.now(dt.UTC))
    removed = freed = 0
    for path in stale:
        try:
            size = path.stat().st_size
            if not plan["dry_run"]:
                path.unlink()
        except FileNotFoundError:
            continue
        removed += 1
        freed += size
        log.info("%s %s (%s)", "would remove" if plan["dry_run"] else "removed", path, _mb(size))
    return {"files": removed, "bytes": freed}


def vacuum(
    plan: Mapping[str, Any], retention_result: Mapping[str, Any], pruned: Mapping[str, int]
) -> list[str]:
    """VACUUM (ANALYZE) the tables that changed; ANALYZE the bars' parent after partitions changed."""
    from marketbars.warehouse import maintenance

    if plan["dry_run"]:
        return []
    changed = [table for table, rows in pruned.items() if rows]
    if retention_result.get("rows_trimmed"):
        changed.append(retention_result["trimmed_partition"])
    with _connect(dry_run=False) as conn:
        done = maintenance.vacuum_analyze(conn, changed)
        if retention_result.get("partitions_dropped") or retention_result.get("rows_trimmed"):
            maintenance.analyze(conn, "historical_bars")
            done.append("historical_bars (ANALYZE)")
    log.info("vacuumed and analyzed: %s", ", ".join(done) or "nothing changed")
    return done


def summarize(
    plan: Mapping[str, Any],
    retention_result: Mapping[str, Any],
    pruned: Mapping[str, int],
    files: Mapping[str, int],
) -> dict[str, Any]:
    """Log the summary: partitions dropped, rows trimmed and pruned, bytes freed, files removed."""
    from marketbars.warehouse import maintenance

    with _connect(dry_run=plan["dry_run"]) as conn:
        after = maintenance.market_bytes(conn)
    dry = plan["dry_run"]
    summary = {
        "dry_run": dry,
        "first_kept": plan["first_kept"],
        "partitions_dropped": retention_result.get("would_drop" if dry else "partitions_dropped", []),
        "rows_trimmed": retention_result.get("would_trim" if dry else "rows_trimmed", 0),
        "ledger_rows_pruned": dict(pruned),
        "files_removed": files["files"],
        "file_bytes_freed": files["bytes"],
        # Dropped partitions' own pg_total_relation_size, taken as each was dropped: the space the
        # cleanup returned. (The schema's size before and after also moves with concurrent loads, and
        # a trim's or a prune's space is reused by later writes, not returned.)
        "bytes_freed": retention_result.get("would_free" if dry else "bytes_dropped", 0),
        "bytes_before": plan["bytes_before"],
        "bytes_after": after,
    }
    verb = "would be" if dry else "were"
    lines = [
        f"weekly cleanup{' (DRY RUN: nothing was removed)' if dry else ''}: bars of sessions before "
        f"{plan['first_kept']} {verb} removed",
        f"  partitions dropped : {len(summary['partitions_dropped'])} "
        f"({', '.join(summary['partitions_dropped']) or 'none'})",
        f"  rows trimmed       : {summary['rows_trimmed']:,}",
        "  ledger rows pruned : "
        + (", ".join(f"{t} {n:,}" for t, n in pruned.items()) or "none (kept by their settings)"),
        f"  temp files removed : {files['files']:,} ({_mb(files['bytes'])})",
        f"  bytes freed        : {_mb(summary['bytes_freed'])} (dropped partitions; trimmed and pruned"
        " rows' space is reused by later writes)",
        f"  warehouse size     : {_mb(plan['bytes_before'])} -> {_mb(after)}",
    ]
    for line in lines:  # one record per line: readable in any log viewer
        log.info(line)
    return summary


def _mb(size: int) -> str:
    return f"{size / 1e6:,.1f} MB"
