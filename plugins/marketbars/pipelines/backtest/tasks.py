"""Task bodies of backtest_run: Airflow's side (params, Variables, connections) of the rules in
``rules``, the engine in ``marketbars.backtest`` and the storage in ``marketbars.warehouse.backtests``.
XCom carries the run id, detector names and counts; the run's definition lives in
``market.backtest_runs``."""

from __future__ import annotations

import datetime as dt
import logging
import shutil
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from marketbars.pipelines.backtest import rules

log = logging.getLogger(__name__)
T = TypeVar("T")


def report_dir(run_id: str) -> Path:
    """``market_backtest_reports_dir`` (default ``$AIRFLOW_HOME/reports/backtests``)/<run id>."""
    from marketbars import settings
    from marketbars.pipelines.common import reports

    return reports.local_root(settings.BACKTEST_REPORTS_DIR) / rules.folder_name(run_id)


def plan(params: Mapping[str, Any], dag_run: Any) -> list[dict[str, list[str]]]:
    """Validate the run, record it in ``market.backtest_runs`` (resetting a re-run of the same id),
    clear its report folder and hand out one work item per batch of symbols (sized by bars)."""
    from marketbars.market import calendar
    from marketbars.warehouse import backtests, watchlist
    from marketbars.warehouse.hook import WarehouseHook

    run_date = calendar.today_in_new_york(dag_run.logical_date or dag_run.run_after)
    request = _checked(rules.parse_request, params, run_date)
    searched = _checked(rules.parse_search, params.get("search"), request)
    folder = report_dir(dag_run.run_id)
    with WarehouseHook().connect() as conn:
        classes = _checked(
            rules.asset_classes, list(params.get("symbols") or []), watchlist.active_asset_classes(conn)
        )
        spec = backtests.RunSpec(
            run_id=dag_run.run_id,
            start_date=request.start,
            end_date=request.end,
            timeframe=request.timeframe,
            symbols=classes,
            detectors=[d.name for d in request.detectors],
            settings=request.settings.to_json(),
            detector_params=request.overrides,
            adjustment=request.adjustment,
            follow_renames=request.follow_renames,
        )
        earliest = min(_read_start(spec, d) for d in request.detectors)
        if searched:
            earliest = min(earliest, _search_start(spec, searched.detector, searched.points))
        actions = _actions(conn, spec, earliest)
        if folder.exists():
            shutil.rmtree(folder)  # a re-run's report replaces the earlier one whole
        folder.mkdir(parents=True)
        search_json = None
        if searched:
            search_json = {
                "detector": searched.detector,
                "points": searched.points,
                "segments": [p.to_json() for p in searched.segments],
            }
            log.info(
                "searches %d point(s) of %s over %d walk-forward fold(s)",
                len(searched.points), searched.detector, len(searched.segments) - 1,
            )  # fmt: skip
        version = backtests.start_run(conn, spec, actions, str(folder), earliest, search_json)
    log.info(
        "backtest %s: %s..%s %s bars, %d symbol(s) (%s), %d detector(s); adjustment %s%s; report folder %s",
        spec.run_id,
        spec.start_date,
        spec.end_date,
        spec.timeframe,
        len(classes),
        rules.shown(sorted(classes)),
        len(spec.detectors),
        spec.adjustment,
        ", following renames" if spec.follow_renames else "",
        folder,
    )
    log.info("reads the data of %s..%s at version %s", earliest, spec.end_date, version[:12])
    for line in rules.action_lines(actions):
        log.info("%s", line)
    bars_each = rules.bars_per_symbol(earliest, spec.end_date, spec.timeframe)
    batches = rules.symbol_batches(list(classes), bars_each)
    log.info(
        "%d batch(es) of at most %d symbol(s) (%s bars each at most), every detector on each batch's bars",
        len(batches),
        max((len(b) for b in batches), default=0),
        f"{bars_each:,}",
    )
    return [{"symbols": batch} for batch in batches]


def _actions(conn: Any, spec: Any, earliest: dt.date) -> dict[str, list[dict[str, Any]]]:
    """What the run's read applies (the actions after its first warm-up session, under its
    adjustment), the renames it stitches, and the quarantined records it ignores."""
    from marketbars.warehouse import corporate_actions

    symbols = sorted(spec.symbols)
    renames = corporate_actions.company_tickers(conn, symbols) if spec.follow_renames else []
    applied = corporate_actions.applied_actions(conn, symbols, spec.adjustment, spec.follow_renames, earliest)
    return {
        "applied": [a.to_json() for a in applied],
        "renames": [{"symbol": r, "earlier_ticker": t, "until": d.isoformat()} for r, t, d in renames],
        "quarantined": corporate_actions.quarantined(conn, symbols + [t for _, t, _ in renames], earliest),
    }


def _checked(rule: Callable[..., T], *args: Any) -> T:
    """A rule's answer; its ValueError fails the task at once (no retry can fix the params)."""
    from airflow.sdk.exceptions import AirflowFailException

    try:
        return rule(*args)
    except ValueError as error:
        raise AirflowFailException(f"backtest_run: {error}") from error


def _read_start(spec: Any, detector: Any) -> dt.date:
    from marketbars.backtest.engine import Settings

    overrides = spec.detector_params.get(detector.name)
    return rules.read_start(spec.start_date, spec.timeframe, detector, overrides, Settings(**spec.settings))


def run_batch(symbols: Sequence[str], run_id: str) -> dict[str, Any]:
    """Every detector of the run over one batch of symbols: the bars read once (from the earliest
    warm-up any detector needs), each detector on the bars its own warm-up starts with; the batch's
    per-symbol metrics and trades replaced in one transaction. XCom: counts."""
    from marketbars.backtest import detectors, runner
    from marketbars.backtest.engine import Settings
    from marketbars.warehouse import backtests
    from marketbars.warehouse.hook import WarehouseHook

    with WarehouseHook().connect() as conn:
        spec = backtests.run_spec(conn, run_id)
        settings = Settings(**spec.settings)
        jobs = []
        for name in spec.detectors:
            detector = detectors.REGISTRY[name]
            jobs.append(
                runner.Job(
                    detector, detector.parameters(spec.detector_params.get(name)), _read_start(spec, detector)
                )
            )
        wanted = [
            s
            for s in symbols
            if any(j.detector.applies_to(spec.symbols[s], spec.timeframe) is None for j in jobs)
        ]
        bars = backtests.read_bars(
            conn,
            wanted,
            spec.timeframe,
            min(job.read_start for job in jobs),
            spec.end_date,
            adjustment=spec.adjustment,
            follow_renames=spec.follow_renames,
        )
        classes = {s: spec.symbols[s] for s in symbols}
        results = runner.run_batch(jobs, settings, bars, symbols, classes, spec.timeframe, spec.start_date)
        backtests.replace_batch_results(conn, run_id, symbols, results)
    for result in results:
        skipped: dict[str, list[str]] = {}
        for symbol, why in sorted(result.notes.items()):
            skipped.setdefault(why, []).append(symbol)
        for why, names in skipped.items():
            log.info("%s skips %s: %s", result.detector, ", ".join(names), why)
    trades = {r.detector: len(r.trades) for r in results}
    label, read = rules.batch_label(list(symbols)), sum(len(b) for b in bars.values())
    log.info(
        "%s: %s bars read once for %d detector(s); trades %s",
        label,
        f"{read:,}",
        len(jobs),
        ", ".join(f"{d} {n}" for d, n in trades.items()),
    )
    return {"batch": label, "bars": read, "trades": sum(trades.values())}


def report_and_rank(
    params: Mapping[str, Any],
    run_id: str,
    planned: Sequence[Mapping[str, Any]] | None,
    results: Sequence[Mapping[str, Any]],
    search_planned: Sequence[Mapping[str, Any]] | None = (),
    search_results: Sequence[Mapping[str, Any]] = (),
) -> dict[str, Any]:
    """Write the run's JSON summary and CSVs from the tables, log the ranking, flag the detectors
    below the thresholds; fail when a batch's or a search instance's results are missing (its task
    failed)."""
    from airflow.sdk.exceptions import AirflowFailException

    from marketbars.backtest import detectors, report
    from marketbars.pipelines.common import reports
    from marketbars.warehouse import backtests
    from marketbars.warehouse.hook import WarehouseHook

    thresholds = report.Thresholds(
        min_trades=int(params["min_trades"]),
        min_profit_factor=float(params["min_profit_factor"]),
        min_expectancy_r=float(params["min_expectancy_r"]),
    )
    if planned is None:  # the run row may be an earlier attempt's: never report it as this one
        raise AirflowFailException(f"backtest {run_id}: nothing to report, its plan task failed")
    done = {r["batch"] for r in results}
    missing = [label for label in (rules.batch_label(b["symbols"]) for b in planned) if label not in done]
    searched_done = {r["label"] for r in search_results}
    if search_planned is None:
        missing.append("the search (its planning failed)")
    missing += [
        rules.search_label(w) for w in search_planned or () if rules.search_label(w) not in searched_done
    ]
    status = "incomplete" if missing else "succeeded"
    with WarehouseHook().connect() as conn:
        run = backtests.run_row(conn, run_id)
        folder = Path(run["report_dir"])
        folder.mkdir(parents=True, exist_ok=True)
        trades = _combine(conn, run, folder)
        searched = _judge_search(conn, run, folder)
        fresh = backtests.freshness(conn, run_id)
        rows = backtests.metrics_of(conn, run_id)
    ranked = report.rank(rows, thresholds)
    report.write_metrics_csv(folder / "metrics.csv", rows, backtests.METRIC_COLUMNS)
    summary = {
        "run_id": run_id,
        "status": status,
        "window": {"start": run["start_date"], "end": run["end_date"], "timeframe": run["timeframe"]},
        "adjustment": run["adjustment"],
        "follow_renames": run["follow_renames"],
        "search": searched,
        "data": {
            "from": run["data_from"],
            "version": run["data_version"],
            "stale": fresh.stale if fresh else None,  # changed while the run read it
        },
        "actions_applied": run["actions"]["applied"],
        "renames_followed": run["actions"]["renames"],
        "actions_quarantined": run["actions"]["quarantined"],
        "symbols": run["detector_params"]["asset_classes"],
        "settings": run["settings"],
        "detector_params": run["detector_params"]["overrides"],
        "thresholds": vars(thresholds),
        "ranking": ranked,
        "detectors": [d for d in detectors.describe() if d["name"] in run["detectors"]],
        "unavailable": detectors.UNAVAILABLE,
        "missing_batches": missing,
        "trades": trades,
        "metrics": rows,
        "files": [
            "summary.json",
            "metrics.csv",
            "trades.parquet",
            "equity.png",
            *(["search.json", "search_heatmap.png"] if searched else []),
        ],
    }
    report.write_summary(folder / "summary.json", summary)
    files = sorted(p for p in folder.iterdir() if p.is_file())
    reports.upload(files, f"backtests/{folder.name}")
    with WarehouseHook().connect() as conn:  # finished only once its report is complete
        backtests.finish_run(conn, run_id, status)
    log.info(
        "backtest %s (%s %s..%s, adjustment %s): ranking by expectancy (R), then profit factor:",
        run_id,
        run["timeframe"],
        run["start_date"],
        run["end_date"],
        run["adjustment"],
    )
    for line in report.ranking_lines(ranked):
        log.info("%s", line)
    if fresh and fresh.stale:
        log.warning(
            "the warehouse's data for %s..%s changed while this run read it (version %s, now %s): its"
            " results may mix both; run it again",
            run["data_from"], run["end_date"], fresh.read_version[:12], fresh.current_version[:12],
        )  # fmt: skip
    flagged = [r for r in ranked if r["flags"]]
    for r in flagged:
        log.warning("detector %s is below the thresholds: %s", r["detector"], "; ".join(r["flags"]))
    log.info("report: %s (%d files, %d trades)", folder, len(files), trades)
    if missing:
        raise AirflowFailException(
            f"backtest {run_id}: no results for {'; '.join(missing)} (their tasks failed)"
        )
    return {"report_dir": str(folder), "detectors": len(ranked), "flagged": len(flagged), "trades": trades}


def _combine(conn: Any, run: Mapping[str, Any], folder: Path) -> int:
    """Each detector's all-symbol row from every batch's stored trades and exact counts (never an
    average of batch figures) and its equity curve (stored for the UI), ``trades.parquet`` and the
    run's one equity figure. One detector's trades are in hand at a time while the next one's are
    read (on a connection of their own). Returns the trades written."""
    from marketbars.backtest import report, runner
    from marketbars.backtest.engine import Settings
    from marketbars.warehouse import backtests
    from marketbars.warehouse.hook import WarehouseHook

    settings = Settings(**run["settings"])
    counts = backtests.trade_counts(conn, run["run_id"])
    rows, curves = {}, {}
    with (
        WarehouseHook().connect() as reading,
        report.TradesFile(folder / "trades.parquet") as trades_file,
    ):
        stored = _read_ahead(
            lambda detector: backtests.detector_trades(reading, run["run_id"], detector), run["detectors"]
        )
        for detector, trades in stored:
            trades_file.write(detector, trades)
            tally = counts.get(detector, runner.NO_COUNTS)
            rows[detector] = runner.overall_columns(
                trades.net_pnl, trades.return_pct, trades.r_multiple, tally, settings
            )
            capital = settings.capital * max(tally["symbols"], 1)
            curves[detector] = report.EquityCurve.of(trades.exit_ts, trades.net_pnl, capital)
    backtests.replace_overall(conn, run["run_id"], rows, curves)
    subtitle = f"{run['timeframe']} {run['start_date']}..{run['end_date']}, adjustment {run['adjustment']}"
    report.equity_figure(folder / "equity.png", curves, subtitle)
    return trades_file.rows


def _read_ahead(read: Callable[[str], T], keys: Sequence[str]) -> Iterator[tuple[str, T]]:
    """``read(key)`` for each key in order, the next one read in a thread while the caller works on
    this one (the database's work and the caller's overlap; at most two results are in memory)."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1, thread_name_prefix="read-ahead") as pool:
        pending = pool.submit(read, keys[0]) if keys else None
        for i, key in enumerate(keys):
            assert pending is not None
            result = pending.result()
            pending = pool.submit(read, keys[i + 1]) if i + 1 < len(keys) else None
            yield key, result


def _search_start(spec: Any, name: str, points: Sequence[Mapping[str, float]]) -> dt.date:
    """The first session the search reads: the longest warm-up of any point before the window."""
    from marketbars.backtest import detectors, runner
    from marketbars.backtest.engine import Settings

    detector, settings = detectors.REGISTRY[name], Settings(**spec.settings)
    bars_needed = max(runner.history_bars(detector, point, settings) for point in points)
    return runner.warmup_start(spec.start_date, spec.timeframe, bars_needed)


def plan_search(planned: Sequence[Mapping[str, Any]] | None, run_id: str) -> list[dict[str, Any]]:
    """The search's work: (chunks of points) x (the run's batches of symbols), under the mapping
    limit; none when the run searches nothing."""
    from marketbars.warehouse import backtests
    from marketbars.warehouse.hook import WarehouseHook

    if not planned:
        return []
    with WarehouseHook().connect() as conn:
        searched = backtests.search_of(conn, run_id)
    if not searched:
        return []
    work = rules.search_work(len(searched["points"]), [b["symbols"] for b in planned])
    log.info(
        "search: %d point(s) x %d batch(es) in %d task(s)", len(searched["points"]), len(planned), len(work)
    )
    return work


def search_batch(symbols: Sequence[str], points: Sequence[int], run_id: str) -> dict[str, Any]:
    """Some points of the search over one batch of symbols, whose bars are read once: each point on
    each walk-forward segment alone (no bar after the segment in memory), the batch's tallies
    replaced in one transaction. XCom: counts."""
    from marketbars.backtest import detectors, runner, search
    from marketbars.backtest.engine import Settings
    from marketbars.warehouse import backtests
    from marketbars.warehouse.hook import WarehouseHook

    with WarehouseHook().connect() as conn:
        spec = backtests.run_spec(conn, run_id)
        searched = backtests.search_of(conn, run_id) or {}
        detector, settings = detectors.REGISTRY[searched["detector"]], Settings(**spec.settings)
        parts = [search.Segment.of_json(pair) for pair in searched["segments"]]
        chosen = [searched["points"][i] for i in points]
        eligible = runner.eligible(detector, {s: spec.symbols[s] for s in symbols}, spec.timeframe)
        first = _search_start(spec, detector.name, chosen)
        bars = backtests.read_bars(
            conn, eligible, spec.timeframe, first, spec.end_date,
            adjustment=spec.adjustment, follow_renames=spec.follow_renames,
        )  # fmt: skip
        tallies: dict[tuple[int, int], search.Tally] = {}
        for index, point in zip(points, chosen, strict=True):
            needed = runner.history_bars(detector, point, settings)

            def warmup(day: dt.date, needed: int = needed) -> dt.date:
                return runner.warmup_start(day, spec.timeframe, needed)

            for segment in range(len(parts)):
                tallies[(index, segment)] = search.Tally()
            for symbol_bars in bars.values():
                for segment, tally in enumerate(
                    search.evaluate(detector, point, settings, symbol_bars, parts, warmup)
                ):
                    tallies[(index, segment)] = tallies[(index, segment)] + tally
        backtests.replace_search_tallies(conn, run_id, rules.batch_label(list(symbols)), tallies)
    trades = sum(t.trades for t in tallies.values())
    label = rules.search_label({"symbols": symbols, "points": points})
    log.info("%s: %d trade(s) over %d segment(s)", label, trades, len(parts))
    return {"label": label, "points": len(points), "trades": trades}


def search_verdict(conn: Any, run_id: str) -> dict[str, Any] | None:
    """The run's search judged out of sample (``search.judge``) from every batch's tallies: the
    ranking, the folds' choices, the walk-forward figure and the warnings (None: no search)."""
    from marketbars.backtest import search
    from marketbars.warehouse import backtests

    searched = backtests.search_of(conn, run_id)
    if not searched:
        return None
    parts = [search.Segment.of_json(pair) for pair in searched["segments"]]
    stored = backtests.search_tallies(conn, run_id)
    tallies = [
        [stored.get((point, segment), search.Tally()) for segment in range(len(parts))]
        for point in range(len(searched["points"]))
    ]
    verdict = search.judge(searched["points"], tallies, parts)
    return {
        "detector": searched["detector"],
        "folds": verdict.folds,
        "walk_forward": verdict.walk_forward.to_json(),
        "chosen_in_sample": verdict.chosen_in_sample.to_json(),
        "warnings": verdict.warnings,
        "ranking": verdict.ranking,
    }


def _judge_search(conn: Any, run: Mapping[str, Any], folder: Path) -> dict[str, Any] | None:
    """``search_verdict``, logged with the overfitting warning when it applies, written to
    search.json and drawn as a heatmap."""
    from marketbars.backtest import report

    result = search_verdict(conn, run["run_id"])
    if result is None:
        return None
    report.write_summary(folder / "search.json", result)
    window = f"{run['timeframe']} {run['start_date']}..{run['end_date']}"
    subtitle = f"{len(result['folds'])} walk-forward folds, {window}"
    report.search_heatmap(folder / "search_heatmap.png", result["detector"], result["ranking"], subtitle)
    log.info("search of %s, ranked by out-of-sample expectancy (in-sample beside it):", result["detector"])
    for row in result["ranking"][:10]:
        log.info("  %s", rules.search_line(row))
    for fold in result["folds"]:
        log.info("  fold %d: training %s..%s chose %s", fold["fold"], *fold["train"], fold["chosen"])
    log.info(
        "  walk-forward (each fold's choice on its test segment): %s",
        rules.tally_text(result["walk_forward"]),
    )
    for warning in result["warnings"]:
        log.warning("search of %s: %s", result["detector"], warning)
    return {k: v for k, v in result.items() if k != "ranking"} | {"best": result["ranking"][:5]}
