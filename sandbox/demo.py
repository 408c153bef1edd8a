"""The main job, end to end on embedded defaults: ``make demo`` (or ``python -m sandbox.demo``).

Starts an embedded PostgreSQL and an S3 server on loopback, publishes four weeks of the sample
market in the vendor's formats, runs ``historical_bulk_backfill`` through Airflow itself
(``airflow dags test``) and prints what the warehouse holds. Production differs only in the
Airflow connections.

The sample market has corporate actions (``include/sample_market/reference.json``): NVDA splits
10-for-1 on 2025-12-29, SIRI 1-for-10 on 2026-01-05, AAPL and JPM pay dividends, PALT becomes PLTR
on 2026-01-02, and the vendor's records carry a duplicate, a conflicting pair, an absurd ratio and
other faults. The demo shows raw against adjusted bars across the split (a chart in
``.sandbox/reports/corporate_actions``), the rename read as one history, and the quarantined records.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from marketbars.market.calendar import NEW_YORK, sessions_between
from sandbox import market
from sandbox.rest_server import rest_server
from sandbox.services import Postgres, airflow_env, connection_env, s3_server, start_postgres

ROOT = Path(__file__).resolve().parents[1]
WORKDIR = ROOT / ".sandbox"
# Christmas and New Year: two holidays, an early close (Dec 24) and files from 2026 with fractional volume.
DEMO_START, DEMO_END = dt.date(2025, 12, 15), dt.date(2026, 1, 9)
DAG_ID = "historical_bulk_backfill"


def _section(title: str) -> None:
    print(f"\n== {title}", flush=True)


def _airflow(args: list[str], env: dict[str, str], log_path: Path) -> float:
    """Run an Airflow CLI command with the project's environment; its output goes to log_path."""
    started = time.perf_counter()
    airflow = str(Path(sys.executable).with_name("airflow"))
    with log_path.open("w") as log:
        result = subprocess.run([airflow, *args], env=env, stdout=log, stderr=subprocess.STDOUT, check=False)
    if result.returncode != 0:
        tail = log_path.read_text().splitlines()[-40:]
        sys.exit(
            f"airflow {' '.join(args)} failed (exit {result.returncode}); log {log_path}:\n" + "\n".join(tail)
        )
    return time.perf_counter() - started


def _summary_lines(log_path: Path) -> list[str]:
    """The summarize task's table (printed by the task), from the run's log."""
    lines = log_path.read_text(errors="replace").splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("session") and "action" in line)
    end = next(i for i in range(start, len(lines)) if lines[i].startswith("total"))
    return lines[start : end + 1]


TASK_LOGGERS = (
    "marketbars.pipelines.common.reference_tasks",
    "marketbars.pipelines.daily.tasks",
    "marketbars.pipelines.gaps.tasks",
    "marketbars.pipelines.cleanup.tasks",
    "marketbars.pipelines.backtest.tasks",
)


def _run_scheduled(
    env: dict[str, str], dag_id: str, run_date: dt.date, log_path: Path, conf: dict | None = None
) -> None:
    """A scheduled DAG's run for run_date; prints what its tasks logged through the project's loggers."""
    logical = dt.datetime.combine(run_date, dt.time(20, 15), NEW_YORK).isoformat()
    extra = ["-c", json.dumps(conf)] if conf else []
    print(
        f"$ airflow dags test {dag_id} {logical}" + (f" -c '{json.dumps(conf)}'" if conf else ""), flush=True
    )
    seconds = _airflow(["dags", "test", dag_id, logical, *extra], env, log_path)
    for line in log_path.read_text(errors="replace").splitlines():
        message = line.split("] ", 1)[-1] if "] " in line else line
        if "ALERT [" in line:  # an alert's first line; its last one carries the logger's name
            print("   ", message.strip())
    for line in _logged(log_path, (*TASK_LOGGERS, " was renamed: ")):
        print("   ", line)
    print(f"    ({seconds:.0f} s through Airflow; full log: {log_path.relative_to(ROOT)})")


def _logged(log_path: Path, markers: tuple[str, ...]) -> list[str]:
    """The messages of the log lines that carry one of the markers (a logger's name, a phrase)."""
    out = []
    for line in log_path.read_text(errors="replace").splitlines():
        if any(marker in line for marker in markers) and "[marketbars.alerts]" not in line:
            message = line.split("] ", 1)[-1] if "] " in line else line
            out.append(message.split(" [marketbars")[0].split(" [airflow.task")[0].rstrip())
    return out


def _run_backfill(env: dict[str, str], conf: dict, log_path: Path) -> None:
    print(f"$ airflow dags test {DAG_ID} -c '{json.dumps(conf)}'", flush=True)
    seconds = _airflow(["dags", "test", DAG_ID, "-c", json.dumps(conf)], env, log_path)
    for line in _summary_lines(log_path):
        print("   ", line)
    for line in _logged(log_path, ("marketbars.pipelines.common.reference_tasks", " was renamed: ")):
        print("   ", line)
    print(f"    ({seconds:.0f} s through Airflow; full log: {log_path.relative_to(ROOT)})")


def _punch_holes(db: Postgres, last_session: dt.date) -> list[str]:
    """Delete a whole published session of one symbol and most of the latest session of another."""
    first = sessions_between(DEMO_START, DEMO_END)[2]
    holes = [
        ("AAPL", first, dt.time(0), dt.time(23, 59)),
        ("MSFT", last_session, dt.time(11, 0), dt.time(16, 0)),
    ]
    with db.connect() as conn:
        for symbol, day, start, end in holes:
            conn.execute(
                "DELETE FROM market.historical_bars WHERE symbol = %s AND timeframe = '1m'"
                " AND ts >= %s AND ts <= %s",
                (symbol, dt.datetime.combine(day, start, NEW_YORK), dt.datetime.combine(day, end, NEW_YORK)),
            )
    return [f"{symbol} 1m {day} {start:%H:%M}-{end:%H:%M} ET" for symbol, day, start, end in holes]


def _print_gap_ledger(db: Postgres) -> None:
    with db.connect() as conn:
        rows = conn.execute(
            """SELECT status, kind, timeframe, count(*), sum(attempts),
                      string_agg(DISTINCT symbol, ', ' ORDER BY symbol)
               FROM market.backfill_gaps GROUP BY 1, 2, 3 ORDER BY 1, 2, 3"""
        ).fetchall()
    print("    market.backfill_gaps:")
    for status, kind, timeframe, count, attempts, symbols in rows:
        print(f"      {status:<10} {kind:<14} {timeframe}: {count:>3} gaps, {attempts} attempts ({symbols})")


NY_TS = "(ts AT TIME ZONE 'America/New_York')"
REPORT_QUERIES = {
    "by_timeframe": f"""
        SELECT timeframe, count(DISTINCT symbol), count(*), count(DISTINCT {NY_TS}::date),
               min({NY_TS}), max({NY_TS})
        FROM market.historical_bars GROUP BY timeframe
        ORDER BY array_position(ARRAY['1m', '5m', '15m', '1h', '4h', '1d'], timeframe)""",
    "watchlist_minutes": f"""
        SELECT symbol, count(*) FILTER (WHERE {NY_TS}::time >= '09:30' AND {NY_TS}::time < '16:00'), count(*)
        FROM market.historical_bars
        WHERE timeframe = '1m' AND symbol IN (SELECT symbol FROM market.watchlist)
        GROUP BY symbol ORDER BY symbol""",
    "early_close": f"""
        SELECT max({NY_TS}) FROM market.historical_bars
        WHERE symbol = 'I:SPX' AND timeframe = '1m' AND {NY_TS}::date = '2025-12-24'""",
    "hourly_early_close": f"""
        SELECT {NY_TS}, volume FROM market.historical_bars
        WHERE symbol = 'AAPL' AND timeframe = '1h' AND {NY_TS}::date = '2025-12-24' ORDER BY ts""",
    "fractional": """
        SELECT symbol, ts, volume FROM market.historical_bars
        WHERE timeframe = '1m' AND volume <> trunc(volume) ORDER BY ts, symbol LIMIT 1""",
    "quarantine": """
        SELECT reason, count(*), min(format('%s line %s: %s', s3_key, line_number, raw))
        FROM market.quarantine GROUP BY reason ORDER BY count(*) DESC, reason""",
    "ledger": """
        SELECT dataset, timeframe, count(*), sum(rows_loaded), sum(rows_quarantined)
        FROM market.ingest_ledger GROUP BY dataset, timeframe ORDER BY dataset, timeframe""",
}


CORPORATE_ACTION_QUERIES = {
    "splits": """
        SELECT symbol, execution_date, split_to::text || '-for-' || split_from::text, adjustment_type,
               source_id
        FROM market.splits ORDER BY 2, 1""",
    "dividends": """
        SELECT symbol, ex_dividend_date, cash_amount, currency, source_id
        FROM market.dividends ORDER BY 2, 1""",
    "quarantined": """
        SELECT kind, symbol, day, reason, source_id
        FROM market.reference_quarantine ORDER BY kind, day, symbol""",
    "collapsed": """
        SELECT coalesce(sum(duplicates), 0) FROM market.reference_ledger
        WHERE kind = 'split' AND window_from = '-infinity'""",
    "nvda_daily": """
        SELECT (r.ts AT TIME ZONE 'America/New_York')::date, r.close, a.close, r.volume, a.volume
        FROM market.bars_adjusted(ARRAY['NVDA'], '1d', %(start)s, %(end)s, 'none') r
        JOIN market.bars_adjusted(ARRAY['NVDA'], '1d', %(start)s, %(end)s, 'splits') a USING (ts)
        WHERE (r.ts AT TIME ZONE 'America/New_York')::date BETWEEN '2025-12-24' AND '2025-12-31'
        ORDER BY r.ts""",
    "nvda_raw": """
        SELECT ts, close FROM market.bars_adjusted(ARRAY['NVDA'], '1h', %(start)s, %(end)s, 'none')
        ORDER BY ts""",
    "nvda_adjusted": """
        SELECT ts, close FROM market.bars_adjusted(ARRAY['NVDA'], '1h', %(start)s, %(end)s, 'splits')
        ORDER BY ts""",
    "pltr_followed": """
        SELECT count(*), min(ts AT TIME ZONE 'America/New_York')::date,
               count(*) FILTER (WHERE ts < '2026-01-02 00:00 America/New_York')
        FROM market.bars_adjusted(ARRAY['PLTR'], '1d', %(start)s, %(end)s, 'splits', true)""",
    "pltr_alone": """
        SELECT count(*) FROM market.bars_adjusted(ARRAY['PLTR'], '1d', %(start)s, %(end)s)""",
    "watchlist": """
        SELECT symbol, active FROM market.watchlist WHERE symbol IN ('PALT', 'PLTR') ORDER BY 1""",
}


def _corporate_actions(db: Postgres) -> None:
    """What the vendor's reference data left in the warehouse, and what market.bars_adjusted makes of it."""
    _section("Corporate actions: stored, quarantined, and applied when bars are read (raw rows never change)")
    window = {
        "start": dt.datetime.combine(DEMO_START, dt.time(), NEW_YORK),
        "end": dt.datetime.combine(DEMO_END, dt.time(23), NEW_YORK),
    }
    with db.connect() as conn:
        q = {name: conn.execute(sql, window).fetchall() for name, sql in CORPORATE_ACTION_QUERIES.items()}
    print("    market.splits (validated, applied at read time):")
    for symbol, day, ratio, kind, source_id in q["splits"]:
        print(f"      {symbol:<5} {day} {ratio} {kind} (vendor id {source_id})")
    print(f"      ({q['collapsed'][0][0]} exact duplicate record(s) collapsed into the ones above)")
    print("    market.dividends:")
    for symbol, day, amount, currency, source_id in q["dividends"]:
        print(f"      {symbol:<5} ex {day} {amount} {currency} (vendor id {source_id})")
    print("    market.reference_quarantine (never applied):")
    for kind, symbol, day, reason, source_id in q["quarantined"]:
        print(f"      {kind:<8} {symbol:<5} {day}  {reason} ({source_id})")
    print("    NVDA 1d across its 10-for-1 split, raw -> market.bars_adjusted(adjust => 'splits'):")
    for day, raw_close, close, raw_volume, volume in q["nvda_daily"]:
        prices = f"close {raw_close:>8.2f} -> {close:>7.2f}"
        print(f"      {day}  {prices}   volume {raw_volume:>11,.0f} -> {volume:>11,.0f}")
    count, first, from_palt = q["pltr_followed"][0]
    print(
        f"    PLTR read with follow_renames: {count} daily bars from {first}, {from_palt} of them PALT's"
        f" from before the 2026-01-02 rename; without it: {q['pltr_alone'][0][0]}"
    )
    print("    watchlist: " + ", ".join(f"{s} {'active' if a else 'inactive'}" for s, a in q["watchlist"]))
    chart = _split_chart(q["nvda_raw"], q["nvda_adjusted"])
    print(f"    chart: {chart.relative_to(ROOT)} (NVDA 1h closes, raw and split-adjusted)")


def _split_chart(raw: list[tuple], adjusted: list[tuple]) -> Path:
    from matplotlib.dates import date2num
    from matplotlib.figure import Figure

    folder = WORKDIR / "reports" / "corporate_actions"
    folder.mkdir(parents=True, exist_ok=True)
    figure = Figure(figsize=(9, 4.5), layout="constrained")
    axes = figure.subplots()
    axes.plot([r[0] for r in raw], [r[1] for r in raw], color="#c62828", linewidth=1, label="raw (as stored)")
    axes.plot(
        [r[0] for r in adjusted], [r[1] for r in adjusted], color="#1565c0", linewidth=1.2,
        label="market.bars_adjusted(adjust => 'splits')",
    )  # fmt: skip
    split_day = date2num(dt.datetime.combine(dt.date(2025, 12, 29), dt.time(4), NEW_YORK))
    axes.axvline(float(split_day), color="#9e9e9e", linestyle="--")
    axes.set_yscale("log")
    axes.set_ylabel("close ($, log scale)")
    axes.set_title("NVDA 1h closes across the 10-for-1 split of 2025-12-29 (sample market)", fontsize=10)
    axes.legend(loc="upper right")
    figure.autofmt_xdate()
    path = folder / "NVDA_split.png"
    figure.savefig(path, dpi=100)
    return path


def _report(db: Postgres) -> None:
    with db.connect() as conn:
        q = {name: conn.execute(sql).fetchall() for name, sql in REPORT_QUERIES.items()}
    _section("market.historical_bars now holds")
    for tf, symbols, bars, days, first, last in q["by_timeframe"]:
        span = f"{first:%Y-%m-%d %H:%M} .. {last:%Y-%m-%d %H:%M} ET"
        print(f"    {tf}: {bars:>9,} bars, {symbols:>3} symbols, {days} sessions, {span}")
    print("    minute bars per watchlist symbol (regular session 09:30-16:00 ET / all hours):")
    for symbol, regular, total in q["watchlist_minutes"]:
        print(f"      {symbol:<7} {regular:>6,} / {total:>6,}")
    if q["early_close"][0][0]:
        print(f"    early close 2025-12-24: last I:SPX minute bar starts {q['early_close'][0][0]:%H:%M} ET")
    if q["hourly_early_close"]:
        starts = ", ".join(f"{ts:%H:%M}" for ts, _ in q["hourly_early_close"])
        print(
            f"    derived 1h bars of AAPL on the early close 2025-12-24 start {starts} ET"
            f" (the last, 12:30, is cut at the 13:00 close: volume {q['hourly_early_close'][-1][1]:,.0f})"
        )
    if q["fractional"]:
        symbol, ts, volume = q["fractional"][0]
        print(f"    fractional volume kept: {symbol} {ts:%Y-%m-%d %H:%M}Z volume {volume}")
    _section("market.quarantine: rows the source got wrong, with the reason")
    for reason, count, example in q["quarantine"]:
        print(f"    {reason:<26} {count:>3}  e.g. {example}")
    _section("market.ingest_ledger: one row per file and symbol selection")
    for dataset, timeframe, files, loaded, quarantined in q["ledger"]:
        print(
            f"    {dataset:<8} {timeframe}: {files} files, {loaded:,} rows loaded, {quarantined} quarantined"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--start", type=dt.date.fromisoformat, default=DEMO_START)
    parser.add_argument("--end", type=dt.date.fromisoformat, default=DEMO_END)
    args = parser.parse_args()
    WORKDIR.mkdir(exist_ok=True)
    logs = WORKDIR / "logs"
    logs.mkdir(exist_ok=True)

    _section("Embedded services")
    server = start_postgres(WORKDIR / "pg")
    db = server.create_database("market_demo")  # a clean warehouse on every demo run
    where = (
        "MARKETBARS_PG_URL"
        if os.environ.get("MARKETBARS_PG_URL")
        else f"embedded pgserver in {WORKDIR.name}/pg"
    )
    print(f"    PostgreSQL: {where}, database market_demo (created empty)")
    with s3_server() as s3, rest_server() as api:
        started = time.perf_counter()
        files = market.build_market(args.start, args.end)
        market.upload(s3.client(), s3.bucket, files)
        print(
            f"    S3 (moto server): {s3.endpoint_url}, bucket {s3.bucket}: {len(files)} objects, "
            f"{sum(len(f.lines) for f in files):,} rows ({time.perf_counter() - started:.1f} s to build)"
        )
        holidays = sorted(
            {f.session for f in files if f.dataset == "indices"}
            - {f.session for f in files if f.dataset == "stocks"}
        )
        print(
            f"    sample market {args.start}..{args.end}: stocks and indices, minute and day files; "
            f"index files also on the holidays {', '.join(map(str, holidays))}"
        )

        print(f"    REST aggregates endpoint (loopback): {api.url}, the same sample market, with vw")
        env = {
            **os.environ,
            **airflow_env(WORKDIR / "airflow", ROOT),
            **connection_env(db, s3, download_dir=WORKDIR / "downloads"),
            "AIRFLOW_CONN_MASSIVE_API": json.dumps(api.airflow_connection()),
            "AIRFLOW_VAR_MASSIVE_API_REQUESTS_PER_MINUTE": "600",  # the loopback server's "plan"
            "AIRFLOW_VAR_WATCHLIST_INITIAL_HISTORY_SESSIONS": "20",
            "AIRFLOW_VAR_MARKET_REPORTS_DIR": str(WORKDIR / "reports"),
            "AIRFLOW_VAR_MARKET_BACKTEST_REPORTS_DIR": str(WORKDIR / "reports" / "backtests"),
            "AIRFLOW_VAR_GAPS_BACKOFF_HOURS": "0",  # retry at once, to show the second run
        }
        _section("Airflow metadata database")
        seconds = _airflow(["db", "migrate"], env, logs / "db-migrate.log")
        print(f"    airflow db migrate ({seconds:.0f} s, SQLite in .sandbox/airflow)")
        _airflow(["pools", "set", "massive_api", "1", "Massive REST API"], env, logs / "pools.log")

        period = {"start_date": args.start.isoformat(), "end_date": args.end.isoformat()}
        _section("1. Stock minute bars for the watchlist (symbols: [] = the active watchlist)")
        _run_backfill(env, {**period, "dataset": "stocks", "timeframe": "1m"}, logs / "run-stocks-1m.log")
        _section("2. Index minute bars for the watchlist")
        _run_backfill(env, {**period, "dataset": "indices", "timeframe": "1m"}, logs / "run-indices-1m.log")
        _section('3. Daily bars for every ticker in the stock files (symbols: ["*"])')
        _run_backfill(
            env,
            {**period, "dataset": "stocks", "timeframe": "1d", "symbols": ["*"]},
            logs / "run-stocks-1d.log",
        )
        _section("4. Run 1 again with the same params: nothing changes (action = current)")
        _run_backfill(
            env, {**period, "dataset": "stocks", "timeframe": "1m"}, logs / "run-stocks-1m-again.log"
        )
        next_session = sessions_between(args.end + dt.timedelta(days=1), args.end + dt.timedelta(days=7))[0]
        with db.connect() as conn:
            conn.execute(
                "INSERT INTO market.watchlist (symbol, asset_class)"
                " VALUES ('AMD', 'stocks'), ('SIRI', 'stocks'), ('PALT', 'stocks')"
            )
        _section(
            f"5. The daily backfill for {next_session}, after AMD, SIRI and PALT join the watchlist: "
            "corporate actions first (PALT is now PLTR), then flat files where published, REST for the rest"
        )
        _run_scheduled(env, "watchlist_daily_backfill", next_session, logs / "run-daily.log")
        print(f"    REST requests served: {len(api.log)}")
        _section(
            f"6. Holes punched into the warehouse, then gap_detection_and_retry for {next_session}: "
            "found, repaired from flat files or REST, reported"
        )
        for hole in _punch_holes(db, next_session):
            print(f"    deleted {hole}")
        gap_run = 0

        def run_gap_dag() -> None:
            nonlocal gap_run
            gap_run += 1
            served = len(api.log)
            _run_scheduled(env, "gap_detection_and_retry", next_session, logs / f"run-gaps-{gap_run}.log")
            print(f"    REST requests served: {len(api.log) - served}")
            _print_gap_ledger(db)

        run_gap_dag()
        _corporate_actions(db)
        _section(
            "7. gap_detection_and_retry again (backoff set to 0 for the demo): what the flat files could "
            "not fill is retried through REST"
        )
        run_gap_dag()
        _section(
            "8. backtest_run over the whole sample on 5m bars: every detector, results in "
            "market.backtest_*, a report folder per run"
        )
        _run_scheduled(
            env,
            "backtest_run",
            next_session,
            logs / "run-backtest.log",
            {"start_date": args.start.isoformat(), "end_date": next_session.isoformat(), "timeframe": "5m"},
        )
        _section(
            "9. weekly_cleanup as of the next Saturday with a 35-day retention: bars before the cutoff go "
            "(whole older partitions would be dropped; the straddling December one is trimmed)"
        )
        saturday = next_session + dt.timedelta(days=(5 - next_session.weekday()) % 7)
        _run_scheduled(env, "weekly_cleanup", saturday, logs / "run-cleanup.log", {"retention_days": 35})
    _report(db)


if __name__ == "__main__":
    main()
