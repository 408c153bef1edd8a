"""The Airflow UI locally, in one command: ``make ui`` (or ``python -m sandbox.ui``).

Starts ``airflow standalone`` (API server and UI, scheduler, DAG processor, triggerer) with this
project's DAGs and plugins, imports ``airflow_settings.yaml`` (connections, pools, Variables, as
the Astro CLI would), and prints the UI's address and login. Secrets come from the environment or
an untracked ``.env`` (``.env.example`` documents each); without them, the connections point at
the sandbox: an embedded PostgreSQL, an S3 server and a REST server on loopback serving the
sample market (2025-12-15..2026-01-09), so a backfill triggered from the form runs for real.
Stop it with Ctrl-C or SIGTERM: either stops everything it started.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sandbox import market
from sandbox.rest_server import rest_server
from sandbox.services import airflow_env, connection_env, s3_server, start_postgres

ROOT = Path(__file__).resolve().parents[1]
WORKDIR = ROOT / ".sandbox" / "ui"
SAMPLE = ("2025-12-15", "2026-01-09")
USER = "admin"
MANUAL_DAGS = ["historical_bulk_backfill"]


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines of a .env file (comments, blanks and empty values skipped; quotes removed)."""
    values: dict[str, str] = {}
    if not path.is_file():
        return values
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        if value:
            values[key.strip()] = value
    return values


def settings_files(settings: Mapping[str, Any], folder: Path) -> dict[str, Path]:
    """airflow_settings.yaml (Astro CLI format) as the files ``airflow {connections,variables,pools}
    import`` read."""
    section = settings.get("airflow", {})
    connections = {}
    for c in section.get("connections", []):
        conn = {"conn_type": c["conn_type"]}
        for key in ("host", "port", "schema", "login", "password"):
            if c.get(f"conn_{key}") not in (None, ""):
                conn[key] = c[f"conn_{key}"]
        if c.get("conn_extra"):
            conn["extra"] = json.dumps(c["conn_extra"])
        connections[c["conn_id"]] = conn
    variables = {v["variable_name"]: str(v["variable_value"]) for v in section.get("variables", [])}
    pools = {
        p["pool_name"]: {"slots": p["pool_slot"], "description": p.get("pool_description", "")}
        for p in section.get("pools", [])
    }
    files = {}
    for name, content in (("connections", connections), ("variables", variables), ("pools", pools)):
        files[name] = folder / f"{name}.json"
        files[name].write_text(json.dumps(content, indent=2))
    return files


def _airflow(args: list[str], env: Mapping[str, str], log: Path) -> None:
    airflow = str(Path(sys.executable).with_name("airflow"))
    with log.open("a") as out:
        result = subprocess.run(
            [airflow, *args], env=dict(env), stdout=out, stderr=subprocess.STDOUT, check=False
        )
    if result.returncode != 0:
        sys.exit(f"airflow {' '.join(args)} failed; see {log}")


def wait_until_up(url: str, process: subprocess.Popen, timeout_s: float = 240) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            sys.exit(f"airflow standalone exited ({process.returncode}); see {WORKDIR / 'standalone.log'}")
        try:
            with urllib.request.urlopen(f"{url}/api/v2/monitor/health", timeout=5) as response:
                health = json.load(response)
            if all(health.get(part, {}).get("status") == "healthy" for part in ("metadatabase", "scheduler")):
                return
        except OSError:
            pass
        time.sleep(2)
    sys.exit(f"the UI did not come up within {timeout_s:.0f} s; see {WORKDIR / 'standalone.log'}")


def unpause(
    dag_ids: list[str], env: Mapping[str, str], process: subprocess.Popen, timeout_s: float = 180
) -> None:
    """Unpause the manual DAGs once the DAG processor has stored them, so a run triggered from the
    form starts at once (the scheduled ones stay paused until you unpause them)."""
    airflow = str(Path(sys.executable).with_name("airflow"))
    deadline = time.monotonic() + timeout_s
    for dag_id in dag_ids:
        while True:
            result = subprocess.run(
                [airflow, "dags", "unpause", dag_id],
                env=dict(env),
                capture_output=True,
                text=True,
                check=False,
            )
            if result.returncode == 0:
                break
            if process.poll() is not None or time.monotonic() > deadline:
                sys.exit(f"could not unpause {dag_id}: {result.stderr.strip()[-400:]}")
            time.sleep(3)


def _stop_on_sigterm() -> None:
    """SIGTERM ends the launcher the way Ctrl-C does, so everything it started is stopped: Airflow's
    components (their own session, so the terminal's Ctrl-C does not reach them twice), the S3 and
    REST servers, and the embedded PostgreSQL (at exit, when no other process uses it)."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)


def stop(process: subprocess.Popen, timeout_s: float = 30) -> None:
    """SIGTERM to the whole process group of ``process``, SIGKILL to what is left after timeout_s;
    returns once no process of the group runs (or it has had its SIGKILL)."""
    for signum, wait_s in ((signal.SIGTERM, timeout_s), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(process.pid, signum)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            process.poll()  # reap the group's leader once it exits
            if not _group_runs(process.pid):
                return
            time.sleep(0.5)
    process.poll()


def _group_runs(pgid: int) -> bool:
    """Whether a process of the group still runs (zombies waiting to be reaped do not count)."""
    import psutil

    for proc in psutil.process_iter(["status"]):
        try:
            if os.getpgid(proc.pid) == pgid and proc.info["status"] != psutil.STATUS_ZOMBIE:
                return True
        except (ProcessLookupError, psutil.Error):
            continue
    return False


def main() -> None:
    _stop_on_sigterm()
    logging.getLogger("pgserver").setLevel(logging.WARNING)  # its exit-time INFO lines outlive stdout
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--port", type=int, default=8080)
    args = parser.parse_args()

    import datetime as dt

    import yaml

    WORKDIR.mkdir(parents=True, exist_ok=True)
    log = WORKDIR / "standalone.log"
    log.write_text("")
    home = WORKDIR / "airflow"
    shutil.rmtree(home, ignore_errors=True)  # a fresh Airflow, like the fresh sandbox warehouse below
    password = secrets.token_urlsafe(12)
    passwords_file = home / "passwords.json"
    home.mkdir(parents=True, exist_ok=True)
    passwords_file.write_text(json.dumps({USER: password}))
    url = f"http://127.0.0.1:{args.port}"

    server = start_postgres(ROOT / ".sandbox" / "pg")
    db = server.create_database("market_ui")
    with s3_server() as s3, rest_server() as api:
        start, end = (dt.date.fromisoformat(d) for d in SAMPLE)
        market.upload(s3.client(), s3.bucket, market.build_market(start, end))
        env = {
            **os.environ,
            **airflow_env(home, ROOT),
            **connection_env(db, s3, download_dir=WORKDIR / "downloads"),
            "AIRFLOW_CONN_MASSIVE_API": json.dumps(api.airflow_connection()),
            "AIRFLOW_VAR_MASSIVE_API_REQUESTS_PER_MINUTE": "600",
            "AIRFLOW_VAR_MARKET_REPORTS_DIR": str(WORKDIR / "reports"),
            "AIRFLOW_VAR_MARKET_BACKTEST_REPORTS_DIR": str(WORKDIR / "reports" / "backtests"),
            "AIRFLOW__API__PORT": str(args.port),
            "AIRFLOW__API__BASE_URL": url,
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{USER}:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords_file),
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",  # the schedules start when you say so
            **read_env_file(ROOT / ".env"),  # your own secrets win over the sandbox's
            # standalone starts its components as `airflow ...` subprocesses: this venv's first.
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        }
        _airflow(["db", "migrate"], env, log)
        with tempfile.TemporaryDirectory() as folder:
            files = settings_files(yaml.safe_load((ROOT / "airflow_settings.yaml").read_text()), Path(folder))
            _airflow(["connections", "import", "--overwrite", str(files["connections"])], env, log)
            _airflow(
                ["variables", "import", "--action-on-existing-key", "overwrite", str(files["variables"])],
                env,
                log,
            )
            _airflow(["pools", "import", str(files["pools"])], env, log)
        airflow = str(Path(sys.executable).with_name("airflow"))
        with log.open("a") as out:
            process = subprocess.Popen(
                [airflow, "standalone"], env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        try:
            wait_until_up(url, process)
            unpause(MANUAL_DAGS, env, process)
            print(f"Airflow UI: {url}", flush=True)
            print(f"login: {USER} / {password}", flush=True)
            print(
                f"sample market {SAMPLE[0]}..{SAMPLE[1]} in the sandbox S3 bucket; trigger "
                "historical_bulk_backfill from its form. Logs: .sandbox/ui/standalone.log. Ctrl-C stops.",
                flush=True,
            )
            print(
                f"Market data view (Browse > Market data): {url}/plugin/market-data; the warehouse starts"
                " empty: a backfill of sample sessions fills it",
                flush=True,
            )
            process.wait()
        except KeyboardInterrupt:
            pass
        finally:
            stop(process)


if __name__ == "__main__":
    main()
