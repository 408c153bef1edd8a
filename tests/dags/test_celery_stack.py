"""The distributed path without Docker: the real Airflow components as processes (API server,
scheduler, DAG processor, two Celery workers) on the machine's PostgreSQL (metadata and the
warehouse, separate databases) and Redis (the Celery broker). historical_bulk_backfill is
triggered through the REST API; its mapped tasks must run on both workers, and the warehouse
must hold exactly the files' rows.

Run with ``make test-distributed`` (needs PostgreSQL on 127.0.0.1:5432 with trust auth and Redis
on 127.0.0.1:6379, or MARKETBARS_DIST_PG_URL / MARKETBARS_DIST_REDIS_URL).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import gzip
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from marketbars.market import calendar
from sandbox import market
from sandbox.services import Postgres, airflow_env, connection_env, free_port, s3_server
from tests.alerting.test_channels import Webhook
from tests.helpers import expected_bars, publish, warehouse_bars

pytestmark = pytest.mark.distributed
ROOT = Path(__file__).resolve().parents[2]
PG_URL = os.environ.get("MARKETBARS_DIST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("MARKETBARS_DIST_REDIS_URL", "redis://127.0.0.1:6379/7")
WATCHLIST = ["AAPL", "AMZN", "DIA", "GOOGL", "IWM", "JPM", "META", "MSFT", "NVDA", "QQQ", "SPY", "TSLA"]
DAYS = calendar.sessions_between(dt.date(2024, 3, 4), dt.date(2024, 3, 15))
HEARTBEAT_TIMEOUT_S = 30
# A DAG that fails slowly: its runs miss a 5-second deadline, and three in a row pause it.
PROBE = """
import datetime as dt
import time

from airflow.sdk import DAG, AsyncCallback, DeadlineAlert, DeadlineReference, task

from marketbars.pipelines.common.dag_defaults import DEFAULT_ARGS
from marketbars.alerting.channels import DagRunFailureNotifier

with DAG(
    dag_id="ops_probe",
    schedule=None,
    start_date=dt.datetime(2024, 1, 1, tzinfo=dt.UTC),
    default_args={**DEFAULT_ARGS, "retries": 0},
    max_consecutive_failed_dag_runs=3,
    on_failure_callback=DagRunFailureNotifier(pause_after=3),
    deadline=DeadlineAlert(
        reference=DeadlineReference.DAGRUN_QUEUED_AT,
        interval=dt.timedelta(seconds=5),
        callback=AsyncCallback(
            "marketbars.alerting.channels.deadline_missed",
            kwargs={"dag_id": "ops_probe", "deadline": "0:00:05"},
        ),
    ),
):

    @task
    def slow_then_fail() -> None:
        time.sleep(15)
        raise RuntimeError("the probe fails on purpose")

    slow_then_fail()
"""
# Each worker reports its own name as the task instances' hostname, so the API shows who ran what.
IDENTITY = "import os\n\n\ndef hostname() -> str:\n    return os.environ['MARKETBARS_WORKER_NAME']\n"


def _database(name: str) -> Postgres:
    server = Postgres(PG_URL)
    with server.connect() as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    return server.with_database(name)


def _drop(name: str) -> None:
    with Postgres(PG_URL).connect() as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _request(url: str, token: str | None = None, body: dict | None = None) -> Any:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = json.dumps(body).encode() if body is not None else None
    with urllib.request.urlopen(
        urllib.request.Request(url, data=data, headers=headers), timeout=30
    ) as response:
        return json.load(response)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    suffix = uuid.uuid4().hex[:8]
    meta_name, market_name = f"airflow_dist_{suffix}", f"market_dist_{suffix}"
    meta, warehouse = _database(meta_name), _database(market_name)
    home = tmp_path_factory.mktemp("airflow-dist")
    (home / "worker_identity.py").write_text(IDENTITY)
    (home / "probes").mkdir()
    (home / "probes" / "ops_probe.py").write_text(PROBE)
    bundles = [
        {"name": "dags-folder", "classpath": "airflow.dag_processing.bundles.local.LocalDagBundle",
         "kwargs": {"path": str(ROOT / "dags")}},
        {"name": "ops-probes", "classpath": "airflow.dag_processing.bundles.local.LocalDagBundle",
         "kwargs": {"path": str(home / "probes")}},
    ]  # fmt: skip
    webhook = Webhook()
    password = uuid.uuid4().hex
    (home / "passwords.json").write_text(json.dumps({"admin": password}))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    meta_params = meta.params()
    user, host = meta_params.get("user", "postgres"), meta_params.get("host", "127.0.0.1")
    sqlalchemy = f"postgresql+psycopg2://{user}@{host}:{meta_params.get('port', 5432)}/{meta_name}"
    processes: dict[str, subprocess.Popen] = {}
    with s3_server() as s3:
        files = [market.build_file("stocks", "1m", day) for day in DAYS]
        publish(s3, *files)
        import redis

        redis.Redis.from_url(REDIS_URL).flushdb()
        env = {
            **os.environ,
            **airflow_env(home, ROOT),
            **connection_env(warehouse, s3, download_dir=home / "downloads"),
            "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": sqlalchemy,
            "AIRFLOW__CELERY__BROKER_URL": REDIS_URL,
            "AIRFLOW__CELERY__RESULT_BACKEND": f"db+{sqlalchemy.replace('+psycopg2', '')}",
            "AIRFLOW__CELERY__WORKER_CONCURRENCY": "2",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{url}/execution/",
            "AIRFLOW__API__PORT": str(port),
            "AIRFLOW__API__BASE_URL": url,
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(home / "passwords.json"),
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            "AIRFLOW__CORE__HOSTNAME_CALLABLE": "worker_identity.hostname",
            "PYTHONPATH": os.pathsep.join([str(home), str(ROOT / "plugins"), str(ROOT)]),
            "MARKETBARS_WORKER_NAME": "control-plane",
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
            "AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST": json.dumps(bundles),
            "AIRFLOW_CONN_ALERTS_WEBHOOK": json.dumps({"conn_type": "http", "host": webhook.url}),
            # A task whose worker died stops heartbeating: the scheduler fails it (and retries it)
            # after this long. Production keeps Airflow's default (300 s).
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": str(HEARTBEAT_TIMEOUT_S),
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_SEC": "5",
        }
        airflow = str(Path(sys.executable).with_name("airflow"))
        subprocess.run([airflow, "db", "migrate"], env=env, check=True, capture_output=True)
        subprocess.run(
            [airflow, "pools", "set", "massive_api", "1", "REST"], env=env, check=True, capture_output=True
        )
        components = {
            "api-server": ["api-server"],
            "scheduler": ["scheduler"],
            "dag-processor": ["dag-processor"],
            "triggerer": ["triggerer"],
            "worker-1": ["celery", "worker", "--celery-hostname", "worker-1@%h"],
            "worker-2": ["celery", "worker", "--celery-hostname", "worker-2@%h"],
        }
        try:
            for name, args in components.items():
                log = (home / f"{name}.log").open("w")
                component_env = {**env, "MARKETBARS_WORKER_NAME": name}
                processes[name] = subprocess.Popen(
                    [airflow, *args],
                    env=component_env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            deadline = time.monotonic() + 180
            token = None
            while time.monotonic() < deadline and token is None:
                try:
                    token = _request(f"{url}/auth/token", body={"username": "admin", "password": password})[
                        "access_token"
                    ]
                except OSError:
                    time.sleep(2)
            assert token, f"the API server did not come up; see {home / 'api-server.log'}"
            yield {
                "url": url, "token": token, "warehouse": warehouse, "files": files, "home": home,
                "webhook": webhook, "s3": s3, "processes": processes,
            }  # fmt: skip
        finally:
            for process in processes.values():
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGTERM)
            for process in processes.values():
                try:
                    process.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
            webhook.server.shutdown()
            _drop(meta_name)
            _drop(market_name)


def test_a_backfill_triggered_through_the_api_spreads_over_both_workers(stack: dict[str, Any]) -> None:
    url, token = stack["url"], stack["token"]
    dag = f"{url}/api/v2/dags/historical_bulk_backfill"
    _wait_for_dag(url, token, "historical_bulk_backfill")
    conf = {"start_date": DAYS[0].isoformat(), "end_date": DAYS[-1].isoformat(), "symbols": WATCHLIST}
    run_id, state = _run_to_the_end(url, token, "historical_bulk_backfill", conf=conf)
    assert state == "success", f"run {run_id} ended {state}; logs in {stack['home']}"

    instances = _request(f"{dag}/dagRuns/{urllib.request.quote(run_id)}/taskInstances?limit=100", token)[
        "task_instances"
    ]
    mapped = [ti for ti in instances if ti["task_id"] in ("ingest.download", "ingest.load")]
    assert len(mapped) == 2 * len(DAYS) and all(ti["state"] == "success" for ti in mapped)
    assert {ti["hostname"] for ti in mapped} == {"worker-1", "worker-2"}  # both workers took mapped work

    with stack["warehouse"].connect() as conn:
        assert warehouse_bars(conn) == set().union(*(expected_bars(f, WATCHLIST) for f in stack["files"]))
        (sessions,) = conn.execute("SELECT count(DISTINCT session_date) FROM market.ingest_ledger").fetchone()
    assert sessions == len(DAYS)


def _wait_for_dag(url: str, token: str, dag_id: str) -> None:
    deadline = time.monotonic() + 180
    while True:  # the DAG processor has to store the DAG first
        try:
            _request(f"{url}/api/v2/dags/{dag_id}", token)
            return
        except OSError:
            assert time.monotonic() < deadline, f"{dag_id} never appeared"
            time.sleep(3)


def _run_to_the_end(
    url: str,
    token: str,
    dag_id: str,
    logical_date: dt.datetime | None = None,
    conf: dict | None = None,
    timeout_s: float = 420,
) -> tuple[str, str]:
    """Trigger a run through the REST API and wait for it to finish: (run id, final state)."""
    when = logical_date.isoformat() if logical_date else None
    run = _request(f"{url}/api/v2/dags/{dag_id}/dagRuns", token, {"logical_date": when, "conf": conf or {}})
    path = f"{url}/api/v2/dags/{dag_id}/dagRuns/{urllib.request.quote(run['dag_run_id'])}"
    state, deadline = run["state"], time.monotonic() + timeout_s
    while state not in ("success", "failed") and time.monotonic() < deadline:
        time.sleep(3)
        state = _request(path, token)["state"]
    return run["dag_run_id"], state


def test_three_failed_runs_pause_the_dag_and_alert_from_the_dag_processor_and_the_triggerer(
    stack: dict[str, Any],
) -> None:
    url, token = stack["url"], stack["token"]
    _wait_for_dag(url, token, "ops_probe")
    for day in range(3):  # with logical dates, as scheduled runs have
        logical = dt.datetime(2026, 1, 5 + day, 20, 15, tzinfo=dt.UTC)
        assert _run_to_the_end(url, token, "ops_probe", logical)[1] == "failed"

    deadline = time.monotonic() + 120  # DAG callbacks run in the DAG processor, a little later
    while time.monotonic() < deadline:
        bodies = [json.loads(r["body"]) for r in stack["webhook"].requests]
        dag_alerts = [b for b in bodies if "failed_in_a_row" in b]
        if len(dag_alerts) == 3:
            break
        time.sleep(3)
    assert sorted((a["failed_in_a_row"], a["paused"]) for a in dag_alerts) == [
        (1, False),
        (2, False),
        (3, True),
    ]
    assert len([b for b in bodies if b.get("task_id") == "slow_then_fail"]) == 3
    assert [b for b in bodies if b["title"] == "Deadline missed: ops_probe"], (
        "no deadline alert from the triggerer"
    )
    assert _request(f"{url}/api/v2/dags/ops_probe", token)["is_paused"] is True


def _copy_into_the_warehouse(warehouse: Postgres, timeout_s: float = 300) -> int:
    """The client port of the connection that is COPYing a file's rows into the bars, once one is."""
    deadline = time.monotonic() + timeout_s
    with warehouse.connect() as conn:
        while time.monotonic() < deadline:
            row = conn.execute(
                """SELECT client_port FROM pg_stat_activity
                   WHERE datname = current_database() AND state = 'active' AND client_port IS NOT NULL
                     AND query ILIKE 'COPY %%historical_bars%%'"""
            ).fetchone()
            if row:
                return int(row[0])
            time.sleep(0.05)
    raise AssertionError("no COPY into market.historical_bars started")


def _worker_running(client_port: int, workers: dict[str, subprocess.Popen]) -> str:
    """Which worker's process tree holds the warehouse connection on this local port."""
    import psutil

    [pid] = {c.pid for c in psutil.net_connections(kind="tcp") if c.laddr and c.laddr.port == client_port}
    lineage = {p.pid for p in psutil.Process(pid).parents()} | {pid}
    [name] = [name for name, process in workers.items() if process.pid in lineage]
    return name


def _bars_of(warehouse: Postgres, day: dt.date) -> Any:
    """The day's 1m bars as sorted numpy columns: symbol, ts (ns), open, high, low, close, volume, trades."""
    import numpy as np

    with warehouse.connect() as conn:
        rows = conn.execute(
            """SELECT symbol, (extract(epoch FROM ts) * 1e9)::bigint, open, high, low, close, volume, trades
               FROM market.historical_bars WHERE timeframe = '1m'
                 AND (ts AT TIME ZONE 'America/New_York')::date = %s ORDER BY symbol, ts""",
            (day,),
        ).fetchall()
    return [np.array(column) for column in zip(*rows, strict=True)]


def _bars_in_file(body: bytes) -> Any:
    import numpy as np
    import pyarrow as pa
    import pyarrow.csv as pcsv

    table = pcsv.read_csv(pa.BufferReader(gzip.decompress(body))).sort_by(
        [("ticker", "ascending"), ("window_start", "ascending")]
    )
    names = ("ticker", "window_start", "open", "high", "low", "close", "volume", "transactions")
    return [np.array(table[name].to_pylist()) for name in names]


def test_a_worker_killed_mid_copy_is_noticed_and_its_load_retried_to_an_exact_warehouse(
    stack: dict[str, Any],
) -> None:
    import numpy as np
    import psutil

    from marketbars.massive.flatfiles import object_key

    url, token = stack["url"], stack["token"]
    day = dt.date(2024, 3, 18)
    body, rows = market.full_universe_minute_file(day, target_rows=600_000)
    stack["s3"].client().put_object(Bucket=stack["s3"].bucket, Key=object_key("stocks", "1m", day), Body=body)
    _wait_for_dag(url, token, "historical_bulk_backfill")
    conf = {"start_date": day.isoformat(), "end_date": day.isoformat(), "symbols": ["*"]}
    run = _request(
        f"{url}/api/v2/dags/historical_bulk_backfill/dagRuns", token, {"logical_date": None, "conf": conf}
    )
    load = (
        f"{url}/api/v2/dags/historical_bulk_backfill/dagRuns/{urllib.request.quote(run['dag_run_id'])}"
        "/taskInstances/ingest.load/0"
    )

    workers = {name: p for name, p in stack["processes"].items() if name.startswith("worker-")}
    victim = _worker_running(_copy_into_the_warehouse(stack["warehouse"]), workers)
    tree = psutil.Process(workers[victim].pid)
    for process in [tree, *tree.children(recursive=True)]:  # the whole worker, as if its machine died
        with contextlib.suppress(psutil.NoSuchProcess):
            process.kill()
    killed = time.monotonic()

    noticed = recovered = None
    deadline = killed + 420
    while time.monotonic() < deadline:
        instance = _request(load, token)
        if noticed is None and (
            instance["try_number"] > 1 or instance["state"] in ("up_for_retry", "failed")
        ):
            noticed = time.monotonic() - killed
        if instance["state"] == "success":
            recovered = time.monotonic() - killed
            break
        time.sleep(1)
    assert noticed is not None and recovered is not None, f"not recovered; logs in {stack['home']}"
    print(
        f"\n{victim} killed mid-COPY: the scheduler noticed after {noticed:.0f} s, the retry loaded it after "
        f"{recovered:.0f} s (heartbeat timeout {HEARTBEAT_TIMEOUT_S} s, then the task's retry delay)"
    )
    assert instance["try_number"] == 2 and instance["hostname"] != victim

    state, run_deadline = run["state"], time.monotonic() + 120
    path = f"{url}/api/v2/dags/historical_bulk_backfill/dagRuns/{urllib.request.quote(run['dag_run_id'])}"
    while state not in ("success", "failed") and time.monotonic() < run_deadline:
        time.sleep(2)
        state = _request(path, token)["state"]
    assert state == "success"
    stored, expected = _bars_of(stack["warehouse"], day), _bars_in_file(body)
    assert len(stored[0]) == len(expected[0]) == rows  # every row once: the killed COPY left nothing behind
    for ours, theirs in zip(stored, expected, strict=True):
        assert np.array_equal(ours, theirs)
