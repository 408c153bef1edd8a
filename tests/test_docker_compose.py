"""docker-compose.yaml, checked statically (no Docker engine runs here): it parses, has the
official Airflow 3 stack's services wired as required, and every variable it needs is documented."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
AIRFLOW_SERVICES = {
    "airflow-apiserver": "api-server",
    "airflow-scheduler": "scheduler",
    "airflow-dag-processor": "dag-processor",
    "airflow-worker": "celery worker",
    "airflow-triggerer": "triggerer",
}


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yaml").read_text())


def test_the_stack_has_every_component_with_a_health_check(compose: dict) -> None:
    services = compose["services"]
    assert set(services) == {*AIRFLOW_SERVICES, "airflow-init", "postgres", "redis"}
    for name, command in AIRFLOW_SERVICES.items():
        assert services[name]["command"] == command, name
        assert services[name]["build"] == "." and services[name]["image"].startswith("market-bars-airflow:")
    for name, service in services.items():
        if name != "airflow-init":
            assert service["healthcheck"]["test"], name


def test_airflow_runs_celery_on_redis_with_one_shared_jwt_secret_and_separate_databases(
    compose: dict,
) -> None:
    for name in AIRFLOW_SERVICES:
        env = compose["services"][name]["environment"]
        assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
        assert env["AIRFLOW__CELERY__BROKER_URL"].startswith("redis://redis:6379")
        assert env["AIRFLOW__API_AUTH__JWT_SECRET"] == "${AIRFLOW_JWT_SECRET:?set it in .env}"
        assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].endswith("@postgres:5432/airflow")
        assert env["AIRFLOW_CONN_MARKET_DB"].endswith("@postgres:5432/market")
    assert compose["services"]["airflow-worker"]["deploy"]["replicas"] == "${AIRFLOW_WORKERS:-2}"
    init_sql = (ROOT / "include" / "docker" / "init-databases.sh").read_text()
    assert "CREATE DATABASE airflow" in init_sql and "CREATE DATABASE market" in init_sql


def test_components_wait_for_what_they_need(compose: dict) -> None:
    services = compose["services"]
    for name in AIRFLOW_SERVICES:
        needs = services[name]["depends_on"]
        assert needs["postgres"]["condition"] == "service_healthy"
        assert needs["redis"]["condition"] == "service_healthy"
        assert needs["airflow-init"]["condition"] == "service_completed_successfully"
    assert services["airflow-worker"]["depends_on"]["airflow-apiserver"]["condition"] == "service_healthy"
    init = " ".join(services["airflow-init"]["command"])
    assert "airflow db migrate" in init and "airflow users create --role Admin" in init
    assert "airflow pools set massive_api" in init


def test_no_secret_is_a_literal_and_every_variable_is_documented() -> None:
    text = (ROOT / "docker-compose.yaml").read_text()
    needed = set(re.findall(r"(?<!\$)\$\{([A-Z_][A-Z0-9_]*)", text))  # $${X}: the container's own
    documented = {
        line.split("=", 1)[0].lstrip("# ").strip()
        for line in (ROOT / ".env.example").read_text().splitlines()
        if "=" in line and re.match(r"#?\s*[A-Z_][A-Z0-9_]*=", line)
    }
    assert needed - documented == set()
    for line in text.splitlines():
        if re.search(r"(?i)(password|secret|fernet)[A-Z_]*:\s*\S", line):
            assert "${" in line or line.strip().startswith("#"), f"literal secret? {line.strip()}"


def test_the_image_is_the_official_one_plus_the_requirements() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^FROM apache/airflow:3\.3\.2", dockerfile, re.M)
    assert "pip install" in dockerfile and "requirements.txt" in dockerfile
