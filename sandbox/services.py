"""Real servers on loopback for the demo, the tests and the benchmarks.

* PostgreSQL: the embedded ``pgserver`` (PostgreSQL 16 in a wheel), or the server named by the
  environment variable ``MARKETBARS_PG_URL`` (e.g. ``postgresql://postgres@127.0.0.1:5432/postgres``).
* S3: moto in server mode on 127.0.0.1, a real HTTP S3 endpoint that boto3 and S3Hook talk to.

Only the Airflow connections differ from production: ``connection_env`` renders them.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import socket
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

PG_URL_ENV = "MARKETBARS_PG_URL"
S3_ACCESS_KEY = "sandbox-access-key"
S3_SECRET_KEY = "sandbox-secret-key"  # a throwaway credential for the loopback server only
S3_REGION = "us-east-1"
# Server settings like the machine the performance figures were measured on.
PG_TUNING = {"shared_buffers": "1GB", "max_wal_size": "8GB", "checkpoint_timeout": "30min"}


@dataclass(frozen=True)
class Postgres:
    """A reachable PostgreSQL server; the conninfo names the database this handle points at."""

    conninfo: str
    embedded: Any = field(default=None, repr=False, compare=False)  # the pgserver handle, if ours

    def stop(self) -> None:
        """Stop an embedded server started with keep=False now (instead of at interpreter exit)."""
        if self.embedded is not None and self.embedded.cleanup_mode is not None:
            atexit.unregister(self.embedded._cleanup)
            self.embedded.cleanup()

    def params(self) -> dict[str, Any]:
        return conninfo_to_dict(self.conninfo)

    def with_database(self, name: str) -> Postgres:
        return Postgres(make_conninfo(self.conninfo, dbname=name), self.embedded)

    def connect(self, **kwargs: Any) -> psycopg.Connection:
        return psycopg.connect(self.conninfo, autocommit=True, **kwargs)

    def create_database(self, name: str, *, replace: bool = True) -> Postgres:
        """A fresh, empty database on this server (dropped first when it exists and replace is set)."""
        with self.connect() as conn:
            if replace:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.with_database(name)

    def airflow_connection(self) -> dict[str, Any]:
        """The ``market_db`` connection as Airflow's JSON connection format."""
        p = self.params()
        return {
            "conn_type": "postgres",
            "host": p.get("host", "127.0.0.1"),
            "port": int(p.get("port", 5432)),
            "login": p.get("user", "postgres"),
            "password": p.get("password") or None,
            "schema": p.get("dbname", "postgres"),
        }


def start_postgres(data_dir: Path, *, keep: bool = True) -> Postgres:
    """The server of MARKETBARS_PG_URL, else an embedded one whose data lives in data_dir.

    The embedded server stops when the last process using it exits (also on SIGTERM, for the
    launchers that turn it into a normal exit); keep=False also deletes data_dir then, keep=True
    keeps the data for the next start.
    """
    if os.environ.get(PG_URL_ENV):
        return Postgres(os.environ[PG_URL_ENV])
    import pgserver
    from pgserver._commands import pg_ctl

    data_dir.parent.mkdir(parents=True, exist_ok=True)
    fresh = not (data_dir / "PG_VERSION").exists()
    server = pgserver.get_server(data_dir, cleanup_mode="stop" if keep else "delete")
    if fresh:
        server.psql("; ".join(f"ALTER SYSTEM SET {k} = '{v}'" for k, v in PG_TUNING.items()) + ";")
        pg_ctl(["-w", "restart"], pgdata=data_dir, user=server.system_user, timeout=60)
    return Postgres(server.get_uri(), server)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class S3Server:
    """moto's S3 server on loopback, with the flat-files bucket created."""

    endpoint_url: str
    bucket: str
    _server: Any

    def client(self) -> Any:
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=S3_ACCESS_KEY,
            aws_secret_access_key=S3_SECRET_KEY,
            region_name=S3_REGION,
        )

    def airflow_connection(self) -> dict[str, Any]:
        """The ``massive_s3`` connection as Airflow's JSON connection format."""
        return {
            "conn_type": "aws",
            "login": S3_ACCESS_KEY,
            "password": S3_SECRET_KEY,
            "extra": {"endpoint_url": self.endpoint_url, "region_name": S3_REGION},
        }

    def stop(self) -> None:
        self._server.stop()


@contextmanager
def s3_server(bucket: str = "flatfiles") -> Iterator[S3Server]:
    """Run moto's S3 server on 127.0.0.1 for the duration of the block."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no access log line per request
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    s3 = S3Server(endpoint_url=f"http://127.0.0.1:{port}", bucket=bucket, _server=server)
    try:
        s3.client().create_bucket(Bucket=bucket)
        yield s3
    finally:
        server.stop()


def connection_env(
    postgres: Postgres, s3: S3Server | None, *, download_dir: Path | None = None
) -> dict[str, str]:
    """AIRFLOW_CONN_* / AIRFLOW_VAR_* environment variables pointing the project at these servers."""
    env = {"AIRFLOW_CONN_MARKET_DB": json.dumps(postgres.airflow_connection())}
    if s3 is not None:
        env["AIRFLOW_CONN_MASSIVE_S3"] = json.dumps(s3.airflow_connection())
        env["AIRFLOW_VAR_MASSIVE_FLATFILES_BUCKET"] = s3.bucket
    if download_dir is not None:
        env["AIRFLOW_VAR_MASSIVE_DOWNLOAD_DIR"] = str(download_dir)
    return env


def airflow_env(
    airflow_home: Path, project_root: Path, extra: Mapping[str, str] | None = None
) -> dict[str, str]:
    """Environment for running this project's DAGs with Airflow (SQLite metadata in airflow_home)."""
    airflow_home.mkdir(parents=True, exist_ok=True)
    return {
        "AIRFLOW_HOME": str(airflow_home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(project_root / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(project_root / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
        "AIRFLOW__API_AUTH__JWT_SECRET": uuid.uuid4().hex,
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
        # `airflow dags test` cannot run a DAG with a Deadline Alert in Airflow 3.3.2 (see
        # marketbars.pipelines.common.dag_defaults.daily_deadline); the scheduler can.
        "MARKETBARS_DAILY_DEADLINE_MINUTES": "0",
        **dict(extra or {}),
    }
