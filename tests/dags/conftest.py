"""The project's DAG files as Airflow parses them, for the tests of each DAG."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

DAGS_FOLDER = Path(__file__).resolve().parents[2] / "dags"


@pytest.fixture(scope="module")
def dagbag() -> Any:
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(DAGS_FOLDER))


@pytest.fixture
def no_retries(dagbag: Any) -> Iterator[None]:
    """dag.test() waits out real retry delays: in a DAG run test a failing task fails the test at once."""
    saved = {(d, t.task_id): t.retries for d, dag in dagbag.dags.items() for t in dag.tasks}
    for dag in dagbag.dags.values():
        for task in dag.tasks:
            task.retries = 0
    yield
    for dag_id, dag in dagbag.dags.items():
        for task in dag.tasks:
            task.retries = saved[(dag_id, task.task_id)]
