"""Task bodies of gap_detection_and_retry: Airflow's side (params, Variables, connections, the
warehouse) of the rules in ``rules``. XCom carries the plan: cells as labels, work items, counts."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypedDict, TypeVar

from marketbars.pipelines.common.mapping import FlatFileWork, RestWork
from marketbars.pipelines.gaps import rules
from marketbars.warehouse.bar_counts import Key
from marketbars.warehouse.gap_ledger import Gap

if TYPE_CHECKING:
    from marketbars.warehouse.connection import Connection

log = logging.getLogger(__name__)
T = TypeVar("T", str, int, float)  # as marketbars.settings.Setting takes


class GapPlan(TypedDict):
    run_date: str
    days: list[str]
    asset_classes: dict[str, str]
    flatfile: list[FlatFileWork]
    rest: list[RestWork]
    retried: list[list[str]]  # [symbol, timeframe, session, route]
    events: dict[str, list[str]]  # opened, filled, explained -> cell labels


def settings_from_variables(*, fallback_to_defaults: bool = False) -> rules.Settings:
    """The rules' settings from their Variables; ``fallback_to_defaults``: the defaults where no
    Variable backend is reachable (the UI reads them in the API server, outside a task)."""
    from marketbars import settings

    def value(setting: settings.Setting[T]) -> T:
        return setting.get_or_default() if fallback_to_defaults else setting.get()

    return rules.Settings(
        coverage=value(settings.GAPS_COVERAGE),
        max_attempts=value(settings.GAPS_MAX_ATTEMPTS),
        backoff_base=dt.timedelta(hours=value(settings.GAPS_BACKOFF_HOURS)),
    )


def _connect() -> Connection:
    from marketbars.warehouse.hook import WarehouseHook

    return WarehouseHook().connect()


def _checked_symbols(params: Mapping[str, Any]) -> list[str]:
    from airflow.sdk.exceptions import AirflowFailException

    from marketbars.market.symbols import symbol_problems

    lookback = int(params["lookback_days"])
    if not 1 <= lookback <= 366:
        raise AirflowFailException(f"lookback_days={lookback} must be between 1 and 366")
    requested = list(params.get("symbols") or [])
    problems = symbol_problems(None, requested, every_ticker=False)
    if problems:
        raise AirflowFailException("invalid symbols: " + "; ".join(problems))
    return requested


def _asset_classes(conn: Connection, requested: Iterable[str]) -> dict[str, str]:
    """The symbols to check -> their asset class: the param's, or the active watchlist."""
    from marketbars.market.symbols import asset_class_of
    from marketbars.warehouse import watchlist

    active = watchlist.active_asset_classes(conn)
    requested = list(requested)
    if not requested:
        return active
    return {symbol: active.get(symbol) or asset_class_of(symbol) for symbol in requested}


def evaluate(
    conn: Connection,
    asset_classes: Mapping[str, str],
    days: Sequence[dt.date],
    settings: rules.Settings,
    timeframes: Sequence[str] | None = None,
    *,
    recount: bool = True,
) -> list[rules.Cell]:
    """Every cell of the symbols and sessions, classified from the warehouse's counts; of some source
    timeframes only when asked (the daily cells need no minute counted).

    ``recount``: count the bars and store the counts (the gap DAG, which is what corrects a count gone
    stale); otherwise read the stored counts, counting only cells without one, and write nothing (the
    Market data view)."""
    from marketbars.market.calendar import session_hours
    from marketbars.market.timeframes import SOURCE_TIMEFRAMES
    from marketbars.warehouse import bar_counts, ledgers

    chosen = tuple(timeframes or SOURCE_TIMEFRAMES)
    sessions = [session_hours(d) for d in sorted(set(days))]
    symbols = sorted(asset_classes)
    selected = bar_counts.cells(symbols, sessions, chosen)
    counts = bar_counts.refresh(conn, asset_classes, selected) if recount else bar_counts.kept(conn, selected)
    vendor_empty = ledgers.vendor_empty_cells(conn, symbols, [s.session for s in sessions])
    return rules.evaluate(counts, vendor_empty, asset_classes, sessions, settings, chosen)


def detect(params: Mapping[str, Any], dag_run: Any) -> GapPlan:
    """Measure completeness, open and close gaps, and route the gaps due for a retry."""
    from marketbars.market import calendar
    from marketbars.pipelines.common.published import REST_ONLY, exists_in, published_files
    from marketbars.warehouse import gap_ledger, ledgers

    run_date = calendar.today_in_new_york(dag_run.logical_date or dag_run.run_after)
    requested = _checked_symbols(params)
    settings = settings_from_variables()
    window = calendar.sessions_between(
        run_date - dt.timedelta(days=int(params["lookback_days"]) - 1), run_date
    )
    with _connect() as conn:
        classes = _asset_classes(conn, requested)
        still_open = gap_ledger.list_gaps(conn, status="open", symbols=list(classes))
        days = sorted(set(window) | {g.session for g in still_open})
        etags = published_files(classes.values(), days) if days else None
        if days and etags is None:
            log.warning(REST_ONLY)
        cells = evaluate(conn, classes, days, settings)
        replaced = rules.replaced_cells(ledgers.loaded_files(conn, days), etags or {}, classes)
        events = _update_ledger(conn, cells, replaced)
        due = {
            g.key: rules.tries_flat_file(g.attempts, g.kind) for g in gap_ledger.due_gaps(conn, list(classes))
        }
    flat, rest, routes = rules.route_retries(due, classes, exists_in(etags))
    log.info(
        "run date %s: %d symbols x %d sessions (%s..%s) x 2 timeframes; gaps opened %d, filled %d, "
        "explained %d; %d due for a retry (%d through flat files, %d through REST)",
        run_date,
        len(classes),
        len(days),
        days[0] if days else "-",
        days[-1] if days else "-",
        len(events["opened"]),
        len(events["filled"]),
        len(events["explained"]),
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
        "events": events,
    }


def _update_ledger(conn: Connection, cells: Sequence[rules.Cell], replaced: set[Key]) -> dict[str, list[str]]:
    """Open a gap for every short cell (and every cell whose file was replaced), close the complete
    ones, explain the vendor-confirmed empty ones; the cells that changed, by event."""
    from marketbars.warehouse import gap_ledger

    events: dict[str, list[str]] = {"opened": [], "filled": [], "explained": []}
    for cell in cells:
        kind = "replaced_file" if cell.key in replaced else cell.state
        if kind in ("replaced_file", "missing", "partial"):
            if gap_ledger.open_gap(
                conn,
                cell.key,
                kind=kind,
                expected=cell.expected,
                found=cell.found,
                reopen_unfillable=rules.reopens_unfillable(kind),
            ):
                events["opened"].append(_label(cell.key))
        elif cell.state == "complete":
            if gap_ledger.close_gap(conn, cell.key, status="filled", found=cell.found):
                events["filled"].append(_label(cell.key))
        elif gap_ledger.close_gap(conn, cell.key, status="unfillable", found=0, error=rules.VENDOR_HAS_NONE):
            events["explained"].append(_label(cell.key))
    return events


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

    from marketbars import settings as registry
    from marketbars.pipelines.common import reports
    from marketbars.pipelines.common.mapping import outputs
    from marketbars.pipelines.gaps import report
    from marketbars.warehouse import gap_ledger

    if plan is None:
        raise AirflowFailException("gap detection failed before anything was retried (see detect_gaps)")
    settings = settings_from_variables()
    run_date = dt.date.fromisoformat(plan["run_date"])
    errors = _retry_errors(plan, outputs(loads, each=list), outputs(fills, each=dict))
    events: dict[str, list[Any]] = {k: list(v) for k, v in plan["events"].items()} | {
        "retried": [],
        "unfillable": [],
    }
    with _connect() as conn:
        cells = evaluate(
            conn, plan["asset_classes"], [dt.date.fromisoformat(d) for d in plan["days"]], settings
        )
        _settle_retries(conn, plan, {c.key: c for c in cells}, errors, events, settings)
        still_open = gap_ledger.list_gaps(conn, status="open", symbols=list(plan["asset_classes"]))
    events["open"] = [_open_gap(g) for g in still_open]
    _alert(still_open, run_date, settings)
    paths = report.write(reports.local_root(registry.GAP_REPORTS_DIR), run_date, cells, events)
    reports.upload(paths, f"gaps/{run_date.isoformat()}")
    for path in paths:
        log.info("completeness report: %s", path)
    log.info("cells by state: %s; gaps still open: %d", report.states_by_timeframe(cells), len(still_open))
    return {
        "cells": len(cells),
        "opened": len(events["opened"]),
        "filled": len(events["filled"]),
        "unfillable": len(events["unfillable"]),
        "open": len(still_open),
    }


def _settle_retries(
    conn: Connection,
    plan: Mapping[str, Any],
    cells: Mapping[Key, rules.Cell],
    errors: Mapping[Key, str],
    events: dict[str, list[Any]],
    settings: rules.Settings,
) -> None:
    """A retried gap that is complete now closes as filled, one the vendor confirms empty as
    unfillable; any other counts a failed attempt, with why (and gives up once they run out)."""
    from marketbars.warehouse import gap_ledger

    for symbol, timeframe, day, _route in plan["retried"]:
        key = (symbol, timeframe, dt.date.fromisoformat(day))
        cell = cells[key]
        events["retried"].append(_label(key))
        if cell.state == "complete":
            gap_ledger.close_gap(conn, key, status="filled", found=cell.found)
            events["filled"].append(_label(key))
        elif cell.state == "no_trading":
            gap_ledger.close_gap(conn, key, status="unfillable", found=0, error=rules.VENDOR_HAS_NONE)
            events["unfillable"].append(_label(key))
        else:
            error = (
                errors.get(key) or f"still {cell.state}: {cell.found} of {cell.expected} bars expected"
            ) + _quarantined_note(gap_ledger.quarantined_rows(conn, plan["asset_classes"][symbol], key))
            [gap] = [g for g in gap_ledger.list_gaps(conn, symbols=[symbol]) if g.key == key]
            attempts = gap.attempts + 1
            status = rules.status_after_failure(attempts, settings)
            gap_ledger.record_failed_attempt(
                conn,
                gap,
                found=cell.found,
                error=error,
                retry_in=rules.retry_delay(attempts, settings),
                status=status,
            )
            if status == "unfillable":
                events["unfillable"].append(f"{_label(key)}: {error} (after {attempts} attempts)")


def _open_gap(gap: Gap) -> dict[str, Any]:
    return {
        "gap": _label(gap.key),
        "kind": gap.kind,
        "attempts": gap.attempts,
        "last_error": gap.last_error,
        "next_retry_at": gap.next_retry_at.isoformat(),
        "first_seen": gap.first_seen.isoformat(),
    }


def _quarantined_note(reasons: Mapping[str, int]) -> str:
    if not reasons:
        return ""
    return "; the source's rows for it were quarantined: " + ", ".join(
        f"{reason} x{count}" for reason, count in sorted(reasons.items())
    )


def _alert(still_open: Iterable[Gap], run_date: dt.date, settings: rules.Settings) -> None:
    from marketbars.alerting.channels import emit
    from marketbars.alerting.messages import Alert
    from marketbars.market.calendar import NEW_YORK

    by_level: dict[str, list[str]] = {}
    for gap in still_open:
        age = rules.sessions_open(gap.first_seen.astimezone(NEW_YORK).date(), run_date)
        level = rules.alert_level(age, settings)
        if level:
            by_level.setdefault(level, []).append(
                f"{gap.symbol} {gap.timeframe} {gap.session}: open for {age} trading sessions, "
                f"{gap.attempts} attempts, last error: {gap.last_error or 'none yet'}"
            )
    for level, lines in sorted(by_level.items()):
        limit = settings.critical_after if level == "critical" else settings.warning_after
        emit(Alert(level, f"{len(lines)} gap(s) open for more than {limit} trading sessions", lines))


def rebuild_pending_rollups(params: Mapping[str, Any], dag_run: Any) -> dict[str, int]:
    """Rebuild the derived bars of 1m writes in the lookback window whose rebuild never ran (a task
    that died between its load and its rebuild, and was not retried)."""
    from marketbars.market import calendar
    from marketbars.market.symbols import selects_all
    from marketbars.warehouse import rollup_rebuilds

    run_date = calendar.today_in_new_york(dag_run.logical_date or dag_run.run_after)
    first = run_date - dt.timedelta(days=int(params["lookback_days"]) - 1)
    rebuilt = bars = 0
    with _connect() as conn:
        for dataset, session, symbols in rollup_rebuilds.pending_rollups(conn, first):
            counts = rollup_rebuilds.rebuild_rollups(conn, dataset, session, symbols)
            log.info(
                "%s %s %s: derived bars were pending; rebuilt %s",
                dataset,
                session,
                "every ticker" if selects_all(symbols) else ", ".join(symbols),
                ", ".join(f"{tf} {n:,}" for tf, n in counts.derived_bars.items()),
            )
            rebuilt += 1
            bars += sum(counts.derived_bars.values())
    if not rebuilt:
        log.info("no derived bars pending since %s", first)
    return {"rebuilt": rebuilt, "derived_bars": bars}
