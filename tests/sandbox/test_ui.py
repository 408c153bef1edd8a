"""A real browser (Debian's headless Chromium, driven by Playwright) against ``make ui``: log in,
open historical_bulk_backfill's trigger form, fill the dates, trigger, and see the run succeed; then
the Market data view: a hole punched in the warehouse shown missing, then complete after a gap run.

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
from typing import Any
from urllib.parse import quote, unquote

import psutil
import psycopg
import pytest

from marketbars.market import calendar
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


def ui_warehouse() -> psycopg.Connection:
    """A connection to make ui's warehouse while it runs (MARKETBARS_PG_URL's server, or the embedded
    one, found through its postmaster.pid rather than a handle of this process: the launcher's stop
    must be what stops the server)."""
    if os.environ.get("MARKETBARS_PG_URL"):
        return start_postgres(ROOT / ".sandbox" / "pg").with_database("market_ui").connect()
    from pgserver.utils import PostmasterInfo

    info = PostmasterInfo.read_from_pgdata(ROOT / ".sandbox" / "pg")
    assert info is not None, "make ui's PostgreSQL is not running"
    return psycopg.connect(info.get_uri(database="market_ui"), autocommit=True)


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

    with ui_warehouse() as conn:
        days = conn.execute(
            "SELECT DISTINCT (ts AT TIME ZONE 'America/New_York')::date FROM market.historical_bars"
            " WHERE timeframe = '1m'"
        ).fetchall()
    assert sorted(d for (d,) in days) == [START, END]


VIEW_START, VIEW_END = dt.date(2025, 12, 15), dt.date(2025, 12, 19)
HOLE = ("AAPL", dt.date(2025, 12, 17))


def _api(page: Any, method: str, url: str, **kwargs: Any) -> Any:
    """A call to Airflow's REST API as the signed-in browser makes it (its session cookie)."""
    response = page.request.fetch(url, method=method, **kwargs)
    assert response.ok, f"{method} {url}: {response.status} {response.text()[:500]}"
    return response.json()


def _run_to_the_end(page: Any, base: str, dag_id: str, body: dict[str, Any]) -> str:
    """Trigger a run through the REST API and wait until it ends; its final state."""
    run = _api(page, "POST", f"{base}/api/v2/dags/{dag_id}/dagRuns", data=body)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        state = _api(page, "GET", f"{base}/api/v2/dags/{dag_id}/dagRuns/{quote(run['dag_run_id'])}")["state"]
        if state in ("success", "failed"):
            return str(state)
        time.sleep(3)
    return "timed out"


def _cell_state(page: Any, symbol: str, session: dt.date) -> str:
    """The Market data view's coverage heatmap, inside the Airflow UI: one cell's state."""
    view = page.frame_locator("iframe")
    form = view.locator("#coverage-form")
    form.locator("select[name=dataset]").select_option("stocks")
    form.locator("select[name=timeframe]").select_option("1m")
    form.locator("input[name=first]").fill(VIEW_START.isoformat())
    form.locator("input[name=last]").fill(VIEW_END.isoformat())
    form.get_by_role("button", name="Show").click()
    sessions = len(calendar.sessions_between(VIEW_START, VIEW_END))
    summary = view.locator("#coverage-summary").filter(has_text=f"x {sessions} sessions of stocks 1m")
    summary.wait_for(timeout=30_000)
    heatmap = view.locator("#coverage-heatmap")
    trace = heatmap.evaluate(
        "el => ({x: el.data[0].x, y: el.data[0].y, z: el.data[0].z, text: el.data[0].text})"
    )
    row, col = trace["y"].index(symbol), trace["x"].index(session.isoformat())
    assert trace["text"][row][col].startswith(f"{symbol} {session.isoformat()}: ")
    return str(trace["text"][row][col].split(": ", 1)[1].split("<br>")[0])


def test_the_market_data_view_shows_a_punched_hole_missing_then_complete_after_a_gap_run(
    ui: dict[str, str],
) -> None:
    from playwright.sync_api import sync_playwright

    base = ui["url"]
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        anonymous = browser.new_context()
        refused = anonymous.request.get(f"{base}/market-data/api/coverage")
        assert refused.status == 401, "a logged-out request must be refused"
        assert anonymous.request.get(f"{base}/market-data/").status == 401
        anonymous.close()

        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(base)
        page.fill("input[name=username]", ui["user"])
        page.fill("input[name=password]", ui["password"])
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_load_state("networkidle")
        week = {"start_date": VIEW_START.isoformat(), "end_date": VIEW_END.isoformat()}
        assert (
            _run_to_the_end(page, base, "historical_bulk_backfill", {"logical_date": None, "conf": week})
            == "success"
        )

        symbol, session = HOLE
        with ui_warehouse() as conn:
            punched = conn.execute(
                """DELETE FROM market.historical_bars WHERE symbol = %s AND timeframe = '1m'
                   AND (ts AT TIME ZONE 'America/New_York')::date = %s""",
                (symbol, session),
            ).rowcount
        assert punched > 300

        page.get_by_role("button", name="Browse").click()  # the view is in the UI's own menu
        page.get_by_text("Market data", exact=True).first.click()
        page.wait_for_url(re.compile(r".*/plugin/market-data"))
        assert _cell_state(page, symbol, session) == "missing"
        page.screenshot(path=str(ROOT / ".sandbox" / "ui" / "market-data-hole.png"))  # the README's

        _api(page, "PATCH", f"{base}/api/v2/dags/gap_detection_and_retry", data={"is_paused": False})
        gap_run = {"logical_date": "2025-12-19T00:00:00Z", "conf": {"lookback_days": 3, "symbols": [symbol]}}
        assert _run_to_the_end(page, base, "gap_detection_and_retry", gap_run) == "success"

        page.reload()
        assert _cell_state(page, symbol, session) == "complete"
        page.screenshot(path=str(ROOT / ".sandbox" / "ui" / "market-data-view.png"))
        browser.close()
