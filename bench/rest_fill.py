"""Benchmark: REST fills of 50 symbols x 5 sessions of minute bars under the plan's rate limit.

    python -m bench.rest_fill [--per-minute 300] [--workers 4]

The loopback server answers like the aggregates endpoint, enforces the configured limit the way
the vendor does (HTTP 429 with Retry-After when a client goes over it) and also injects 429s
without Retry-After on every 12th request. Side by side in one run:

* project: RestFillOperator.execute() per symbol (what each mapped task runs: pages, validation,
  COPY into PostgreSQL), on --workers concurrent workers sharing the rate limit in the database;
* baseline: a client with the official client's retry policy (urllib3 Retry: 3 retries, backoff
  factor 0.1) and no pacing, fetching the same 50 ranges one after another (HTTP only).

Reports the achieved request rate as a fraction of the limit (target >= 0.9), requests per
symbol-range against the minimum the pagination allows, 429s received, and failed tasks (target 0).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SESSIONS = [dt.date(2024, 3, d) for d in (4, 5, 6, 7, 8)]
SYMBOLS = [f"SYM{i:02d}" for i in range(1, 51)]
INJECT_EVERY = 12


def _project(server: Any, per_minute: float, workers: int) -> dict[str, Any]:
    from marketbars.operators.rest_fill import RestFillOperator

    failures: list[str] = []
    lock = threading.Lock()

    def task(symbol: str) -> None:
        op = RestFillOperator(
            task_id=f"rest_fill_{symbol}",
            symbol=symbol,
            dataset="stocks",
            sessions={"1m": [d.isoformat() for d in SESSIONS]},
            requests_per_minute=per_minute,
        )
        try:
            op.execute({"run_id": "bench"})
        except Exception as exc:  # a failed task: counted, the run goes on
            with lock:
                failures.append(f"{symbol}: {exc}")

    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(task, SYMBOLS))
    return {"seconds": time.monotonic() - started, "failures": failures}


def _baseline(server: Any) -> dict[str, Any]:
    import requests
    from requests.adapters import HTTPAdapter
    from urllib3.util.retry import Retry

    session = requests.Session()
    retry = Retry(total=3, backoff_factor=0.1, status_forcelist=[413, 429, 499, 500, 502, 503, 504])
    session.mount("http://", HTTPAdapter(max_retries=retry))
    session.headers["Authorization"] = f"Bearer {server.api_key}"
    failures: list[str] = []
    started = time.monotonic()
    for symbol in SYMBOLS:
        url = f"{server.url}/v2/aggs/ticker/{symbol}/range/1/minute/{SESSIONS[0]}/{SESSIONS[-1]}"
        params: dict[str, Any] | None = {"adjusted": "false", "sort": "asc", "limit": 50_000}
        try:
            while url:
                response = session.get(url, params=params, timeout=30)
                response.raise_for_status()
                url, params = response.json().get("next_url"), None
        except Exception as exc:  # what the naive client leaves undone
            failures.append(f"{symbol}: {type(exc).__name__}")
    return {"seconds": time.monotonic() - started, "failures": failures}


def _rates(log: list[Any], per_minute: float) -> dict[str, Any]:
    times = sorted(r.at for r in log)
    elapsed = times[-1] - times[0] if len(times) > 1 else float("nan")
    rate = (len(times) - 1) / elapsed * 60 if len(times) > 1 else 0.0
    ok = [r for r in log if r.status == 200]
    return {
        "requests": len(log),
        "ok": len(ok),
        "enforced_429": sum(1 for r in log if r.status == 429 and "injected" not in (r.error or "")),
        "injected_429": sum(1 for r in log if r.status == 429 and "injected" in (r.error or "")),
        "per_minute": rate,
        "fraction_of_limit": rate / per_minute,
        "ok_per_symbol_range": len(ok) / len(SYMBOLS),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--per-minute", type=float, default=300)
    parser.add_argument("--workers", type=int, default=4)
    args = parser.parse_args()

    from marketbars.warehouse import migrations
    from marketbars.warehouse.connection import one
    from sandbox import market
    from sandbox.rest_server import Faults, rest_server
    from sandbox.services import airflow_env, start_postgres

    os.environ.update(airflow_env(Path(tempfile.mkdtemp(prefix="bench-airflow-")), ROOT))
    db = start_postgres(ROOT / ".sandbox" / "pg").create_database("bench_rest")
    with db.connect() as conn:
        migrations.migrate(conn)
    base = {s: sum(market.rest_results(s, "1m", d)[1] for d in SESSIONS) for s in SYMBOLS}
    minimum = sum(math.ceil(b / 50_000) for b in base.values()) / len(SYMBOLS)
    results = {}
    for name in ("project", "baseline"):
        faults = Faults(enforce_per_minute=args.per_minute, every_nth_429=INJECT_EVERY)
        with rest_server(faults=faults) as server:
            os.environ["AIRFLOW_CONN_MARKET_DB"] = json.dumps(db.airflow_connection())
            os.environ["AIRFLOW_CONN_MASSIVE_API"] = json.dumps(server.airflow_connection())
            run = _project(server, args.per_minute, args.workers) if name == "project" else _baseline(server)
            results[name] = run | _rates(server.log, args.per_minute)
    with db.connect() as conn:
        (bars,) = one(conn, "SELECT count(*) FROM market.historical_bars WHERE source = 'rest'")

    bars_total = sum(base.values())
    print(f"\n50 symbols x 5 sessions of minute bars ({bars_total:,} bars); limit {args.per_minute:g}/min,")
    print(f"enforced by the server (429 + Retry-After); a 429 injected on every {INJECT_EVERY}th request\n")
    header = (
        f"{'client':<10} {'seconds':>8} {'requests':>9} {'ok':>5} {'429 over limit':>15} {'429 injected':>13}"
    )
    print(header + f" {'rate/limit':>11} {'ok requests per range':>22} {'failed':>7}")
    for name, r in results.items():
        print(
            f"{name:<10} {r['seconds']:>8.1f} {r['requests']:>9} {r['ok']:>5} {r['enforced_429']:>15} "
            f"{r['injected_429']:>13} {r['fraction_of_limit']:>11.2f} {r['ok_per_symbol_range']:>22.2f} "
            f"{len(r['failures']):>7}"
        )
    project = results["project"]
    print(f"\nminimum requests per symbol-range the pagination allows: {minimum:.2f}")
    print(f"project wrote {bars:,} bars")
    checks = {
        "achieved rate >= 0.9 of the limit": project["fraction_of_limit"] >= 0.9,
        "never over the limit (no enforced 429)": project["enforced_429"] == 0,
        "requests per symbol-range = the minimum": project["ok_per_symbol_range"] == minimum,
        "zero failed tasks": not project["failures"],
        "every bar written": bars == sum(base.values()),
    }
    for check, ok in checks.items():
        print(f"  {'MET ' if ok else 'MISS'}  {check}")
    for failure in project["failures"][:5]:
        print("  failed:", failure)
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    summary = {
        k: {m: v for m, v in r.items() if m != "failures"} | {"failed": len(r["failures"])}
        for k, r in results.items()
    }
    (out / "rest_fill.json").write_text(json.dumps({"results": summary, "checks": checks}, indent=2))


if __name__ == "__main__":
    main()
