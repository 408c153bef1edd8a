"""Fixtures: real servers on loopback (PostgreSQL, S3) and an Airflow environment for DAG runs.

PostgreSQL is an embedded pgserver started for the session, or the server named by
MARKETBARS_PG_URL; every test that needs one gets its own fresh database.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from sandbox.rest_server import RestServer, rest_server
from sandbox.services import Postgres, S3Server, airflow_env, connection_env, s3_server, start_postgres

ROOT = Path(__file__).resolve().parents[1]
# Airflow reads its configuration on first import, which test modules trigger: set it up now.
os.environ.update(airflow_env(Path(tempfile.mkdtemp(prefix="marketbars-airflow-")), ROOT))


@pytest.fixture(scope="session")
def pg_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Postgres]:
    server = start_postgres(tmp_path_factory.mktemp("pg") / "data", keep=False)
    yield server
    server.stop()


@pytest.fixture
def db(pg_server: Postgres) -> Iterator[Postgres]:
    """A new, empty database for one test."""
    name = f"test_{uuid.uuid4().hex[:12]}"
    handle = pg_server.create_database(name)
    yield handle
    with pg_server.connect() as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def conn(db: Postgres) -> Iterator[psycopg.Connection]:
    with db.connect() as connection:
        yield connection


@pytest.fixture
def warehouse_conn(conn: psycopg.Connection) -> psycopg.Connection:
    """A connection to a database with the market schema applied."""
    from marketbars.warehouse.migrations import migrate

    migrate(conn)
    return conn


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[S3Server]:
    with s3_server() as server:
        yield server


@pytest.fixture
def s3(s3_endpoint: S3Server) -> S3Server:
    """The loopback S3 server with a new, empty bucket for one test."""
    bucket = f"flatfiles-{uuid.uuid4().hex[:10]}"
    s3_endpoint.client().create_bucket(Bucket=bucket)
    return S3Server(endpoint_url=s3_endpoint.endpoint_url, bucket=bucket, _server=s3_endpoint._server)


@pytest.fixture
def download_dir(tmp_path: Path) -> Path:
    return tmp_path / "downloads"


@pytest.fixture
def airflow_connections(
    db: Postgres, s3: S3Server, download_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> dict[str, str]:
    """market_db, massive_s3 and the Variables as AIRFLOW_CONN_* / AIRFLOW_VAR_* for this test."""
    env = connection_env(db, s3, download_dir=download_dir)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


@pytest.fixture(scope="session")
def airflow_metadata_db() -> None:
    """Airflow's own (SQLite) metadata database, migrated once: dag.test() needs it."""
    result = subprocess.run(
        [sys.executable, "-m", "airflow", "db", "migrate"], env=os.environ, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


@pytest.fixture
def rest_api(monkeypatch: pytest.MonkeyPatch) -> Iterator[RestServer]:
    """The loopback aggregates server (faults off; a test sets them), as connection massive_api."""
    with rest_server(api_key=f"key-{uuid.uuid4().hex}") as server:
        monkeypatch.setenv("AIRFLOW_CONN_MASSIVE_API", json.dumps(server.airflow_connection()))
        yield server


@pytest.fixture
def db_conn(airflow_connections: dict[str, str], conn: psycopg.Connection) -> psycopg.Connection:
    """A connection to the test's database, which the Airflow connection market_db also names."""
    return conn
