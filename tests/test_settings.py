"""The settings registry: the one definition of every Variable, the README's table and
airflow_settings.yaml agree with it, and a setting reads what is set or else its default."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import yaml

from marketbars import settings

ROOT = Path(__file__).resolve().parents[1]


def readme_rows() -> list[tuple[str, str, str]]:
    """(name, default, description) of the README's Variables table."""
    lines = (ROOT / "README.md").read_text().splitlines()
    start = lines.index("| Variable | default | what it sets |") + 2
    rows = []
    for line in lines[start:]:
        match = re.fullmatch(r"\| `([a-z0-9_]+)` \| (.+?) \| (.+?) \|", line)
        if match is None:
            break
        rows.append((match[1], match[2], match[3]))
    return rows


def test_the_readme_documents_every_setting_exactly() -> None:
    documented = {name: (default, description) for name, default, description in readme_rows()}
    registered = {s.name: (s.readme_default, s.description) for s in settings.REGISTRY}
    assert documented == registered


def test_airflow_settings_declares_every_setting_and_no_other() -> None:
    declared = yaml.safe_load((ROOT / "airflow_settings.yaml").read_text())["airflow"]["variables"]
    assert sorted(v["variable_name"] for v in declared) == sorted(s.name for s in settings.REGISTRY)


def test_every_name_is_defined_once() -> None:
    names = [s.name for s in settings.REGISTRY]
    assert len(names) == len(set(names)) == 21
    code = [*(ROOT / "plugins" / "marketbars").rglob("*.py"), *(ROOT / "dags").glob("*.py")]
    literals = {
        path.name: {
            node.value for node in ast.walk(ast.parse(path.read_text())) if isinstance(node, ast.Constant)
        }
        for path in code
        if path.name != "settings.py"
    }
    named = {
        (file, name)
        for file, values in literals.items()
        for value in values
        if isinstance(value, str)
        for name in names
        if value == name or f"'{name}'" in value
    }
    assert named == set()  # every other module reads them through the registry


def test_a_setting_reads_the_variable_or_its_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW_VAR_GAPS_MAX_ATTEMPTS", "7")
    monkeypatch.setenv("AIRFLOW_VAR_MASSIVE_FLATFILES_BUCKET", " ")  # blank counts as unset
    monkeypatch.setenv("AIRFLOW_HOME", "/srv/airflow")
    assert settings.GAPS_MAX_ATTEMPTS.get() == 7
    assert settings.BUCKET.get() == "flatfiles"
    assert settings.GAPS_COVERAGE.get() == 0.95
    assert settings.GAP_REPORTS_DIR.get() == "/srv/airflow/reports/gaps"
    assert settings.BUCKET.template == "{{ var.value.get('massive_flatfiles_bucket', 'flatfiles') }}"
