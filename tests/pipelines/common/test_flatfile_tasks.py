"""The mapped flat-file task groups name each instance in the grid by what it loads."""

from __future__ import annotations

from types import SimpleNamespace

import jinja2
import pytest

from marketbars.pipelines.common.flatfile_tasks import FILES_LABEL, SESSIONS_LABEL, WHAT_LABEL


@pytest.mark.parametrize(
    ("sessions", "shown"),
    [(["2024-03-05"], "2024-03-05"), (["2024-03-05", "2024-03-06", "2024-03-07"], "2024-03-05..2024-03-07")],
)
def test_an_instance_is_named_by_its_dates_and_what_it_loads(sessions: list[str], shown: str) -> None:
    task = SimpleNamespace(
        dataset="indices", timeframe="1m", sessions=sessions, files=[{"session": s} for s in sessions]
    )
    assert jinja2.Template(SESSIONS_LABEL).render(task=task) == shown
    assert jinja2.Template(WHAT_LABEL + FILES_LABEL).render(task=task) == f"indices 1m {shown}"
