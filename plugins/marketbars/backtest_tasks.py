"""Task bodies of backtest_run: Airflow's side (params, Variables, connections) of the engine in
``marketbars.backtest`` and the SQL in ``marketbars.backtest_store``. XCom carries the run id,
detector names and counts; the run's definition lives in ``market.backtest_runs``."""

from __future__ import annotations

import datetime as dt
import logging
import re
import shutil
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

SYMBOLS_PER_READ = 20  # bars of this many symbols in memory at once
BACKTEST_CLASSES = ("stocks", "indices")  # no detector trades option contracts


def report_dir(run_id: str) -> Path:
    """``market_backtest_reports_dir`` (default ``$AIRFLOW_HOME/reports/backtests``)/<run id>."""
    from marketbars import report_files

    root = report_files.local_root("market_backtest_reports_dir", "backtests")
    return root / re.sub(r"[^A-Za-z0-9._-]+", "_", run_id)


def _window(params: Mapping[str, Any], dag_run: Any) -> tuple[dt.date, dt.date]:
    """start_date..end_date; an empty end is the run's date, an empty start ``lookback_days``
    before the end (what a run triggered by fresh data uses)."""
    from marketbars import trading_calendar

    run_date = trading_calendar.today_in_new_york(dag_run.logical_date or dag_run.run_after)
    end = dt.date.fromisoformat(params["end_date"]) if params.get("end_date") else run_date
    if params.get("start_date"):
        start = dt.date.fromisoformat(params["start_date"])
    else:
        start = end - dt.timedelta(days=int(params["lookback_days"]) - 1)
    return start, end


def plan(params: Mapping[str, Any], dag_run: Any) -> list[dict[str, str]]:
    """Validate the run, record it in ``market.backtest_runs`` (resetting a re-run of the same id),
    clear its report folder and hand out one work item per detector."""
    from airflow.sdk.exceptions import AirflowFailException

    from marketbars import backtest_store, flatfiles, warehouse
    from marketbars.backtest import detectors, runner
    from marketbars.backtest.engine import Settings
    from marketbars.hooks.warehouse import WarehouseHook

    try:
        start, end = _window(params, dag_run)
        if start > end:
            raise ValueError(f"start_date {start} is after end_date {end}")
        if params["timeframe"] not in runner.TIMEFRAMES:
            raise ValueError(
                f"timeframe {params['timeframe']!r} is not one of {', '.join(runner.TIMEFRAMES)}"
            )
        chosen = detectors.resolve(list(params.get("detectors") or []))
        overrides = dict(params.get("detector_params") or {})
        strangers = sorted(set(overrides) - {d.name for d in chosen})
        if strangers:
            raise ValueError(f"detector_params names detectors not in this run: {', '.join(strangers)}")
        for d in chosen:
            d.parameters(overrides.get(d.name))  # unknown parameter names fail here, by name
        settings = Settings.from_params(dict(params))
    except ValueError as error:
        raise AirflowFailException(f"backtest_run: {error}") from error

    run_id = dag_run.run_id
    folder = report_dir(run_id)
    with WarehouseHook().connect() as conn:
        warehouse.migrate(conn)
        watchlist = warehouse.active_watchlist_by_symbol(conn)
        requested = list(params.get("symbols") or [])
        if requested:
            classes = {s: watchlist.get(s) or flatfiles.dataset_of(s) for s in requested}
        else:
            classes = {s: kind for s, kind in watchlist.items() if kind in BACKTEST_CLASSES}
        options = sorted(s for s, kind in classes.items() if kind not in BACKTEST_CLASSES)
        if options:
            raise AirflowFailException(
                f"backtest_run: no detector trades option contracts: {', '.join(options)}"
            )
        if not classes:
            raise AirflowFailException(
                "backtest_run: no symbols (the watchlist has no active stock or index)"
            )
        spec = backtest_store.RunSpec(
            run_id=run_id,
            start_date=start,
            end_date=end,
            timeframe=params["timeframe"],
            symbols=classes,
            detectors=[d.name for d in chosen],
            settings=settings.to_json(),
            detector_params={k: dict(v) for k, v in overrides.items()},
        )
        earliest = min(_read_start(spec, d) for d in chosen)
        splits = backtest_store.read_splits(conn, list(classes), earliest, end)
        if folder.exists():
            shutil.rmtree(folder)  # a re-run's report replaces the earlier one whole
        folder.mkdir(parents=True)
        backtest_store.start_run(conn, spec, splits, str(folder))
    log.info(
        "backtest %s: %s..%s %s bars, %d symbol(s) (%s), %d detector(s); prices %s; report folder %s",
        run_id,
        start,
        end,
        spec.timeframe,
        len(classes),
        ", ".join(sorted(classes)),
        len(chosen),
        "split-adjusted ("
        + ", ".join(f"{s.symbol} {s.execution_date}" for v in splits.values() for s in v)
        + ")"
        if splits
        else "raw (market.splits records no split of these symbols in the window)",
        folder,
    )
    return [{"detector": d.name} for d in chosen]


def _read_start(spec: Any, detector: Any) -> dt.date:
    from marketbars.backtest import runner
    from marketbars.backtest.engine import Settings

    params = detector.parameters(spec.detector_params.get(detector.name))
    bars_needed = runner.history_bars(detector, params, Settings(**spec.settings))
    return runner.warmup_start(spec.start_date, spec.timeframe, bars_needed)


def run_detector(detector_name: str, run_id: str) -> dict[str, Any]:
    """Backtest one detector over the run's symbols, replace its rows and draw its equity curve."""
    from marketbars import backtest_store
    from marketbars.backtest import bars as bars_module
    from marketbars.backtest import detectors, report, runner
    from marketbars.backtest.engine import Settings
    from marketbars.hooks.warehouse import WarehouseHook

    detector = detectors.REGISTRY[detector_name]
    with WarehouseHook().connect() as conn:
        spec = backtest_store.run_spec(conn, run_id)
        params = detector.parameters(spec.detector_params.get(detector.name))
        settings = Settings(**spec.settings)
        first = _read_start(spec, detector)
        symbols = runner.eligible(detector, spec.symbols, spec.timeframe)
        splits = backtest_store.read_splits(conn, symbols, first, spec.end_date)

        def batches() -> Iterator[dict[str, Any]]:
            for i in range(0, len(symbols), SYMBOLS_PER_READ):
                chunk = symbols[i : i + SYMBOLS_PER_READ]
                raw = backtest_store.read_bars(conn, chunk, spec.timeframe, first, spec.end_date)
                yield {s: bars_module.adjust(b, splits.get(s, [])) for s, b in raw.items()}

        result = runner.run_detector(
            detector, params, settings, batches(), spec.symbols, spec.timeframe, spec.start_date
        )
        backtest_store.replace_results(conn, run_id, detector.name, result.metrics, result.trades)
        folder = Path(backtest_store.run_row(conn, run_id)["report_dir"])
    overall = result.metrics[runner.ALL_SYMBOLS]
    traded = len(result.metrics) - 1
    folder.mkdir(parents=True, exist_ok=True)
    capital = settings.capital * max(traded, 1)
    report.equity_png(
        folder / f"equity_{detector.name}.png",
        detector.name,
        result.trades,
        capital,
        f"{spec.timeframe} {spec.start_date}..{spec.end_date}, {traded} symbol(s)",
    )
    skipped: dict[str, list[str]] = {}
    for symbol, why in sorted(result.notes.items()):
        skipped.setdefault(why, []).append(symbol)
    for why, names in skipped.items():
        log.info("%s skips %s: %s", detector.name, ", ".join(names), why)
    log.info(
        "%s: %d trade(s) over %d symbol(s), net P&L %.2f, expectancy %s R",
        detector.name,
        len(result.trades),
        traded,
        overall["net_pnl"],
        "-" if overall["expectancy_r"] is None else f"{overall['expectancy_r']:.3f}",
    )
    return {
        "detector": detector.name,
        "symbols": traded,
        "trades": len(result.trades),
        "skipped_symbols": len(result.notes),
    }


def report_and_rank(
    params: Mapping[str, Any],
    run_id: str,
    planned: Sequence[Mapping[str, str]] | None,
    results: Sequence[Mapping[str, Any]],
) -> dict[str, Any]:
    """Write the run's JSON summary and CSVs from the tables, log the ranking, flag the detectors
    below the thresholds; fail when a detector's results are missing (its task failed)."""
    from airflow.sdk.exceptions import AirflowFailException

    from marketbars import backtest_store, report_files
    from marketbars.backtest import detectors, report
    from marketbars.hooks.warehouse import WarehouseHook

    thresholds = report.Thresholds(
        min_trades=int(params["min_trades"]),
        min_profit_factor=float(params["min_profit_factor"]),
        min_expectancy_r=float(params["min_expectancy_r"]),
    )
    if planned is None:  # the run row may be an earlier attempt's: never report it as this one
        raise AirflowFailException(f"backtest {run_id}: nothing to report, its plan task failed")
    with WarehouseHook().connect() as conn:
        run = backtest_store.run_row(conn, run_id)
        rows = backtest_store.metrics_of(conn, run_id)
        folder = Path(run["report_dir"])
        folder.mkdir(parents=True, exist_ok=True)
        trades = backtest_store.write_trades_csv(conn, run_id, folder / "trades.csv")
        done = {r["detector"] for r in results}
        missing = [d for d in run["detectors"] if d not in done]
        status = "incomplete" if missing else "succeeded"
    ranked = report.rank(rows, thresholds)
    report.write_metrics_csv(folder / "metrics.csv", rows, backtest_store.METRIC_COLUMNS)
    summary = {
        "run_id": run_id,
        "status": status,
        "window": {"start": run["start_date"], "end": run["end_date"], "timeframe": run["timeframe"]},
        "prices": run["prices"],
        "splits_applied": run["splits"],
        "symbols": run["detector_params"]["asset_classes"],
        "settings": run["settings"],
        "detector_params": run["detector_params"]["overrides"],
        "thresholds": vars(thresholds),
        "ranking": ranked,
        "detectors": [d for d in detectors.describe() if d["name"] in run["detectors"]],
        "unavailable": detectors.UNAVAILABLE,
        "missing_detectors": missing,
        "trades": trades,
        "metrics": rows,
        "files": ["summary.json", "metrics.csv", "trades.csv", *(f"equity_{d}.png" for d in sorted(done))],
    }
    report.write_summary(folder / "summary.json", summary)
    files = sorted(p for p in folder.iterdir() if p.is_file())
    report_files.upload(files, f"backtests/{folder.name}")
    with WarehouseHook().connect() as conn:  # finished only once its report is complete
        backtest_store.finish_run(conn, run_id, status)
    log.info(
        "backtest %s (%s %s..%s, prices %s): ranking by expectancy (R), then profit factor:",
        run_id,
        run["timeframe"],
        run["start_date"],
        run["end_date"],
        run["prices"],
    )
    for line in report.ranking_lines(ranked):
        log.info("%s", line)
    flagged = [r for r in ranked if r["flags"]]
    for r in flagged:
        log.warning("detector %s is below the thresholds: %s", r["detector"], "; ".join(r["flags"]))
    log.info("report: %s (%d files, %d trades)", folder, len(files), trades)
    if missing:
        raise AirflowFailException(
            f"backtest {run_id}: no results for {', '.join(missing)} (their tasks failed)"
        )
    return {"report_dir": str(folder), "detectors": len(ranked), "flagged": len(flagged), "trades": trades}
