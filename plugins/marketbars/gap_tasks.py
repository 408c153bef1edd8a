"""Task bodies of gap_detection_and_retry: Airflow's side (Variables, connections, hooks) of the rules in
``marketbars.gaps`` and the SQL in ``marketbars.gap_ledger``."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable, Mapping
from typing import Any

log = logging.getLogger(__name__)
Key = tuple[str, str, dt.date]


def settings_from_variables() -> Any:
    from airflow.sdk import Variable

    from marketbars import gaps

    return gaps.Settings(
        coverage=float(Variable.get("gaps_coverage_threshold", default=0.95)),
        max_attempts=int(Variable.get("gaps_max_attempts", default=5)),
        backoff_base=dt.timedelta(hours=float(Variable.get("gaps_backoff_hours", default=12))),
    )


def _asset_classes(conn: Any, requested: Iterable[str]) -> dict[str, str]:
    """The symbols to check -> their asset class: the param's, or the active watchlist."""
    from marketbars import flatfiles, warehouse

    watchlist = warehouse.active_watchlist_by_symbol(conn)
    requested = list(requested)
    if not requested:
        return watchlist
    return {symbol: watchlist.get(symbol) or flatfiles.dataset_of(symbol) for symbol in requested}


def _etags(classes: Mapping[str, str], days: Iterable[dt.date]) -> dict[str, str] | None:
    """key -> ETag of the flat files of these datasets and months; None without a massive_s3 connection."""
    from airflow.sdk import Variable
    from airflow.sdk.exceptions import AirflowNotFoundException

    from marketbars import flatfiles
    from marketbars.daily import months_of
    from marketbars.hooks.flatfiles import MassiveFlatFilesHook

    hook = MassiveFlatFilesHook(bucket=Variable.get("massive_flatfiles_bucket", default="flatfiles"))
    try:
        hook.get_connection(hook.aws_conn_id)
    except AirflowNotFoundException:
        log.warning("no massive_s3 connection is configured: every retry goes through the REST API")
        return None
    etags: dict[str, str] = {}
    for dataset in sorted(set(classes.values())):
        for timeframe in ("1m", "1d"):
            for year, month in months_of(days):
                prefix = (
                    flatfiles.object_key(dataset, timeframe, dt.date(year, month, 1)).rsplit("/", 1)[0] + "/"
                )
                etags.update(hook.objects(prefix))
    return etags


def detect(params: Mapping[str, Any], dag_run: Any) -> dict[str, Any]:
    """Measure completeness, open and close gaps, and route the gaps due for a retry."""
    from airflow.sdk.exceptions import AirflowFailException

    from marketbars import flatfiles, gap_ledger, gaps, trading_calendar, warehouse
    from marketbars.hooks.warehouse import WarehouseHook

    run_date = trading_calendar.today_in_new_york(dag_run.logical_date or dag_run.run_after)
    lookback = int(params["lookback_days"])
    if not 1 <= lookback <= 366:
        raise AirflowFailException(f"lookback_days={lookback} must be between 1 and 366")
    requested = list(params.get("symbols") or [])
    problems = [p for s in requested for p in flatfiles.symbol_problems(flatfiles.dataset_of(s), [s])]
    if problems:
        raise AirflowFailException("invalid symbols: " + "; ".join(problems))
    settings = settings_from_variables()
    window = trading_calendar.sessions_between(run_date - dt.timedelta(days=lookback - 1), run_date)
    with WarehouseHook().connect() as conn:
        warehouse.migrate(conn)
        classes = _asset_classes(conn, requested)
        still_open = gap_ledger.list_gaps(conn, status="open", symbols=list(classes))
        days = sorted(set(window) | {g.session for g in still_open})
        etags = _etags(classes, days) if days else None
        cells = gap_ledger.evaluate(conn, classes, days, settings)
        replaced = gaps.replaced_cells(gap_ledger.loaded_versions(conn, days), etags or {}, classes)
        opened, filled, explained = [], [], []
        for cell in cells:
            if cell.key in replaced:
                if gap_ledger.open_gap(
                    conn, cell.key, kind="replaced_file", expected=cell.expected, found=cell.found
                ):
                    opened.append(cell.key)
            elif cell.state in ("missing", "partial"):
                if gap_ledger.open_gap(
                    conn, cell.key, kind=cell.state, expected=cell.expected, found=cell.found
                ):
                    opened.append(cell.key)
            elif cell.state == "complete":
                if gap_ledger.close_gap(conn, cell.key, status="filled", found=cell.found):
                    filled.append(cell.key)
            elif gap_ledger.close_gap(conn, cell.key, status="unfillable", found=0, error=_VENDOR_HAS_NONE):
                explained.append(cell.key)
        due = {
            g.key: gaps.tries_flat_file(g.attempts, g.kind) for g in gap_ledger.due_gaps(conn, list(classes))
        }
    exists = None if etags is None else (lambda d, tf, s: flatfiles.object_key(d, tf, s) in etags)
    flat, rest, routes = gaps.route_retries(due, classes, exists)
    log.info(
        "run date %s: %d symbols x %d sessions (%s..%s) x 2 timeframes; gaps opened %d, filled %d, "
        "explained %d; %d due for a retry (%d through flat files, %d through REST)",
        run_date,
        len(classes),
        len(days),
        days[0] if days else "-",
        days[-1] if days else "-",
        len(opened),
        len(filled),
        len(explained),
        len(due),
        sum(1 for r in routes.values() if r == "flatfile"),
        sum(1 for r in routes.values() if r == "rest"),
    )
    return {
        "run_date": run_date.isoformat(),
        "days": [d.isoformat() for d in days],
        "asset_classes": classes,
        "flatfile": flat,
        "rest": rest,
        "retried": [[s, tf, d.isoformat(), routes[(s, tf, d)]] for s, tf, d in due],
        "events": {
            "opened": [_label(k) for k in opened],
            "filled": [_label(k) for k in filled],
            "explained": [_label(k) for k in explained],
        },
    }


_VENDOR_HAS_NONE = "the vendor's flat file for the session holds no bars for it (no trading)"


def _label(key: Key) -> str:
    symbol, timeframe, session = key
    return f"{symbol} {timeframe} {session}"


def _retry_errors(
    plan: Mapping[str, Any], loads: Iterable[Iterable[Mapping[str, Any]]], fills: Iterable[Mapping[str, Any]]
) -> dict[Key, str]:
    """Why a retried gap's work did not fill it, when its task says so."""
    loaded = {(r["dataset"], r["timeframe"], r["session"]) for batch in loads for r in batch or ()}
    filled = {f["symbol"]: f for f in fills if f}
    errors: dict[Key, str] = {}
    for symbol, timeframe, day, route in plan["retried"]:
        key = (symbol, timeframe, dt.date.fromisoformat(day))
        if route == "flatfile":
            if (plan["asset_classes"][symbol], timeframe, day) not in loaded:
                errors[key] = "the flat-file load of the session failed (see the flatfiles.load task's log)"
        elif symbol not in filled:
            errors[key] = "the REST fill failed (see the rest_fill task's log)"
        elif day in (filled[symbol].get(timeframe) or {}).get("gaps", []):
            errors[key] = "the REST API answered with no bars for the session"
    return errors


def verify(plan: Mapping[str, Any] | None, loads: Any, fills: Any) -> dict[str, Any]:
    """After the retries: settle each retried gap, write the report, raise the alerts for aging gaps."""
    from airflow.sdk.exceptions import AirflowFailException

    from marketbars import gap_ledger, gap_report, gaps, report_files
    from marketbars.hooks.warehouse import WarehouseHook
    from marketbars.mapped import outputs

    if plan is None:
        raise AirflowFailException("gap detection failed before anything was retried (see detect_gaps)")
    settings = settings_from_variables()
    run_date = dt.date.fromisoformat(plan["run_date"])
    classes = plan["asset_classes"]
    days = [dt.date.fromisoformat(d) for d in plan["days"]]
    errors = _retry_errors(plan, outputs(loads, each=list), outputs(fills, each=dict))
    events = {k: list(v) for k, v in plan["events"].items()} | {"retried": [], "unfillable": []}
    with WarehouseHook().connect() as conn:
        cells = gap_ledger.evaluate(conn, classes, days, settings)
        by_key = {c.key: c for c in cells}
        for symbol, timeframe, day, _route in plan["retried"]:
            key = (symbol, timeframe, dt.date.fromisoformat(day))
            cell = by_key[key]
            events["retried"].append(_label(key))
            if cell.state == "complete":
                gap_ledger.close_gap(conn, key, status="filled", found=cell.found)
                events["filled"].append(_label(key))
            elif cell.state == "no_trading":
                gap_ledger.close_gap(conn, key, status="unfillable", found=0, error=_VENDOR_HAS_NONE)
                events["unfillable"].append(_label(key))
            else:
                error = (
                    errors.get(key) or f"still {cell.state}: {cell.found} of {cell.expected} bars expected"
                ) + _quarantined_note(gap_ledger.quarantined_rows(conn, classes[symbol], key))
                [gap] = [g for g in gap_ledger.list_gaps(conn, symbols=[symbol]) if g.key == key]
                status = gap_ledger.record_failed_attempt(
                    conn,
                    key,
                    found=cell.found,
                    error=error,
                    retry_in=gaps.retry_delay(gap.attempts + 1, settings),
                    max_attempts=settings.max_attempts,
                )
                if status == "unfillable":
                    events["unfillable"].append(f"{_label(key)}: {error} (after {gap.attempts + 1} attempts)")
        still_open = gap_ledger.list_gaps(conn, status="open", symbols=list(classes))
    events["open"] = [
        {
            "gap": _label(g.key),
            "kind": g.kind,
            "attempts": g.attempts,
            "last_error": g.last_error,
            "next_retry_at": g.next_retry_at.isoformat(),
            "first_seen": g.first_seen.isoformat(),
        }
        for g in still_open
    ]
    _alert(still_open, run_date, settings)
    paths = gap_report.write(report_files.local_root("market_reports_dir", "gaps"), run_date, cells, events)
    report_files.upload(paths, f"gaps/{run_date.isoformat()}")
    for path in paths:
        log.info("completeness report: %s", path)
    states = {
        tf: {s: sum(1 for c in cells if c.timeframe == tf and c.state == s) for s in gaps.STATES}
        for tf in ("1m", "1d")
    }
    log.info("cells by state: %s; gaps still open: %d", states, len(still_open))
    return {
        "cells": len(cells),
        "opened": len(events["opened"]),
        "filled": len(events["filled"]),
        "unfillable": len(events["unfillable"]),
        "open": len(still_open),
    }


def _quarantined_note(reasons: Mapping[str, int]) -> str:
    if not reasons:
        return ""
    return "; the source's rows for it were quarantined: " + ", ".join(
        f"{reason} x{count}" for reason, count in sorted(reasons.items())
    )


def _alert(still_open: Iterable[Any], run_date: dt.date, settings: Any) -> None:
    from marketbars import alerts, gaps
    from marketbars.trading_calendar import NEW_YORK

    by_level: dict[str, list[str]] = {}
    for gap in still_open:
        age = gaps.sessions_open(gap.first_seen.astimezone(NEW_YORK).date(), run_date)
        level = gaps.alert_level(age, settings)
        if level:
            by_level.setdefault(level, []).append(
                f"{gap.symbol} {gap.timeframe} {gap.session}: open for {age} trading sessions, "
                f"{gap.attempts} attempts, last error: {gap.last_error or 'none yet'}"
            )
    for level, lines in sorted(by_level.items()):
        limit = settings.critical_after if level == "critical" else settings.warning_after
        alerts.emit(
            alerts.Alert(level, f"{len(lines)} gap(s) open for more than {limit} trading sessions", lines)
        )


def rebuild_pending_rollups(params: Mapping[str, Any], dag_run: Any) -> dict[str, int]:
    """Rebuild the derived bars of 1m writes in the lookback window whose rebuild never ran (a task
    that died between its load and its rebuild, and was not retried)."""
    from marketbars import trading_calendar, warehouse
    from marketbars.hooks.warehouse import WarehouseHook

    run_date = trading_calendar.today_in_new_york(dag_run.logical_date or dag_run.run_after)
    first = run_date - dt.timedelta(days=int(params["lookback_days"]) - 1)
    rebuilt = bars = 0
    with WarehouseHook().connect() as conn:
        warehouse.migrate(conn)
        for dataset, session, symbols in warehouse.pending_rollups(conn, first):
            counts = warehouse.rebuild_rollups(conn, dataset, session, symbols)
            log.info(
                "%s %s %s: derived bars were pending; rebuilt %s",
                dataset,
                session,
                "every ticker" if symbols == ["*"] else ", ".join(symbols),
                ", ".join(f"{tf} {n:,}" for tf, n in counts.derived_bars.items()),
            )
            rebuilt += 1
            bars += sum(counts.derived_bars.values())
    if not rebuilt:
        log.info("no derived bars pending since %s", first)
    return {"rebuilt": rebuilt, "derived_bars": bars}
