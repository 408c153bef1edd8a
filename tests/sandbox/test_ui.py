"""A real browser (Debian's headless Chromium, driven by Playwright) against ``make ui``: log in,
open historical_bulk_backfill's trigger form, fill the dates, trigger, and see the run succeed.

Run with ``make test-browser`` (it installs Chromium from the OS packages and Playwright first).
"""

from __future__ import annotations

import datetime as dt
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import unquote

import psutil
import pytest

from sandbox.services import free_port, start_postgres

pytestmark = pytest.mark.browser
ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("MARKETBARS_CHROMIUM", "/usr/bin/chromium")
START, END = dt.date(2025, 12, 17), dt.date(2025, 12, 18)


def running(predicate: Callable[[psutil.Process], bool]) -> list[str]:
    """Command lines of the live (not zombie) processes the predicate picks."""
    found = []
    for proc in psutil.process_iter(["status", "cmdline"]):
        try:
            if proc.info["status"] != psutil.STATUS_ZOMBIE and predicate(proc):
                found.append(" ".join(proc.info["cmdline"] or []))
        except psutil.Error:
            continue
    return found


def of_the_ui(proc: psutil.Process) -> bool:
    """A process of make ui's Airflow (its AIRFLOW_HOME) or the launcher itself."""
    home = str(ROOT / ".sandbox" / "ui" / "airflow")
    return proc.environ().get("AIRFLOW_HOME") == home or "sandbox.ui" in " ".join(proc.cmdline())


def postgres_of(data_dir: Path) -> Callable[[psutil.Process], bool]:
    return lambda proc: proc.name() == "postgres" and str(data_dir) in " ".join(proc.cmdline())


@pytest.fixture(scope="module")
def ui() -> Iterator[dict[str, str]]:
    """`python -m sandbox.ui` on a free port: the README's one command for the local UI. Stopping it
    (SIGTERM, as a supervisor does) must stop everything it started."""
    pg_data = ROOT / ".sandbox" / "pg"
    pg_before = running(postgres_of(pg_data))
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "sandbox.ui", "--port", str(port)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )  # fmt: skip
    found: dict[str, str] = {}
    deadline = time.monotonic() + 400
    assert process.stdout is not None
    for line in process.stdout:
        if match := re.match(r"Airflow UI: (\S+)", line):
            found["url"] = match[1]
        if match := re.match(r"login: (\S+) / (\S+)", line):
            found["user"], found["password"] = match[1], match[2]
            break
        if time.monotonic() > deadline:
            break
    try:
        assert {"url", "user", "password"} <= set(found), "make ui did not print the address and login"
        yield found
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=90)
        left = running(of_the_ui)
        assert left == [], f"make ui left processes running: {left}"
        if not pg_before:  # it started the embedded PostgreSQL: it stops it too
            assert running(postgres_of(pg_data)) == []


def test_a_backfill_triggered_from_the_form_runs_and_loads_the_days(ui: dict[str, str]) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(ui["url"])
        page.fill("input[name=username]", ui["user"])
        page.fill("input[name=password]", ui["password"])
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_load_state("networkidle")

        page.goto(f"{ui['url']}/dags/historical_bulk_backfill")
        page.get_by_role("button", name="Trigger").first.click()
        form = page.get_by_role("dialog")
        assert form.get_by_text("First session to load (inclusive).").is_visible()  # the param's description
        form.locator("#element_start_date").fill(START.isoformat())
        form.locator("#element_end_date").fill(END.isoformat())
        form.get_by_role("button", name="Trigger").click()
        page.wait_for_url(re.compile(r".*/dags/historical_bulk_backfill/runs/manual__.*"), timeout=30_000)
        run_id = unquote(page.url.rsplit("/runs/", 1)[1])

        state = None  # the run's own row in the DAG's run list (task badges say "Success" earlier)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            page.goto(f"{ui['url']}/dags/historical_bulk_backfill/runs")
            page.wait_for_load_state("networkidle")
            row = page.get_by_role("row").filter(has_text=run_id)
            if row.count():
                text = row.first.inner_text()
                state = next((s for s in ("Success", "Failed") if re.search(rf"\b{s}\b", text)), None)
                if state:
                    break
            time.sleep(3)
        page.screenshot(path=str(ROOT / ".sandbox" / "ui" / "triggered-run.png"))
        browser.close()
    assert state == "Success", f"the run did not succeed ({state}); see .sandbox/ui/standalone.log"

    with start_postgres(ROOT / ".sandbox" / "pg").with_database("market_ui").connect() as conn:
        days = conn.execute(
            "SELECT DISTINCT (ts AT TIME ZONE 'America/New_York')::date FROM market.historical_bars"
            " WHERE timeframe = '1m'"
        ).fetchall()
    assert sorted(d for (d,) in days) == [START, END]
