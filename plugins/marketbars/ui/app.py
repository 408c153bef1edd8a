"""The Market data view: a FastAPI app that Airflow's API server mounts at ``/market-data``.

Every route, the page and its static files included, requires an authenticated Airflow user through
the API server's own auth (``requires_authenticated``: the UI's session cookie or a bearer token);
an anonymous request gets 401. Plugin apps are not protected by default, so the dependency is on the
app itself. Each request reads the warehouse on a read-only connection with bound parameters; no
connection detail reaches a response.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from airflow.api_fastapi.core_api.security import requires_authenticated
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query
from fastapi.responses import FileResponse

from marketbars.backtest.report import json_safe
from marketbars.ui import panels

if TYPE_CHECKING:
    from marketbars.warehouse.connection import Connection

STATIC = Path(__file__).with_name("static")
PAGE_FILES = {"market_data.js": "text/javascript", "market_data.css": "text/css"}
DEFAULT_SESSIONS = 63  # the coverage window when none is asked for: about three months


@contextmanager
def read_only() -> Iterator[Connection]:
    """A warehouse connection whose transactions cannot write (``default_transaction_read_only``)."""
    from marketbars.warehouse.hook import WarehouseHook

    with WarehouseHook().connect() as conn:  # the schema brought up to date first, as a task would
        conn.execute("SET default_transaction_read_only = on")
        yield conn


def answer(panel: Callable[[Connection], dict[str, Any]]) -> dict[str, Any]:
    """A panel's payload, JSON-safe (``report.json_safe``: dates as ISO 8601, an infinite profit factor
    as "inf"); a bad choice is a 400 and an unknown run a 404, with the reason. Anything else is the
    server's fault: a 500."""
    try:
        with read_only() as conn:
            payload: dict[str, Any] = json_safe(panel(conn))
            return payload
    except panels.BadChoice as error:
        raise HTTPException(status_code=400, detail=str(error)) from error
    except panels.UnknownRun as error:
        raise HTTPException(status_code=404, detail=str(error)) from error


def plotly_js() -> Path:
    """plotly.js as the plotly package ships it: the charts work offline, with no CDN."""
    import plotly

    return Path(plotly.__file__).parent / "package_data" / "plotly.min.js"


router = APIRouter()


@router.get("/", include_in_schema=False)
def page() -> FileResponse:
    return FileResponse(STATIC / "index.html", media_type="text/html")


@router.get("/static/{name}", include_in_schema=False)
def static(name: str) -> FileResponse:
    """The page's own files, and plotly.js; nothing else (no path is joined from the request)."""
    if name == "plotly.min.js":
        return FileResponse(plotly_js(), media_type="text/javascript")
    if name not in PAGE_FILES:
        raise HTTPException(status_code=404, detail=f"no file {name!r}")
    return FileResponse(STATIC / name, media_type=PAGE_FILES[name])


@router.get("/api/coverage")
def coverage(
    dataset: str = "stocks",
    timeframe: str = "1m",
    first: Annotated[dt.date | None, Query(description="first session (default: 63 back)")] = None,
    last: Annotated[dt.date | None, Query(description="last session (default: latest closed)")] = None,
) -> dict[str, Any]:
    """Symbol x session states of the active watchlist's ``dataset`` (the gap DAG's rules)."""

    def panel(conn: Connection) -> dict[str, Any]:
        end = last or panels.latest_closed_session(dt.datetime.now(dt.UTC))
        start = first or end - dt.timedelta(days=DEFAULT_SESSIONS * 7 // 5)
        return panels.coverage(conn, dataset, timeframe, start, end)

    return answer(panel)


@router.get("/api/freshness")
def freshness() -> dict[str, Any]:
    """Per dataset and timeframe, the latest session loaded against the latest expected."""
    return answer(lambda conn: panels.freshness(conn, dt.datetime.now(dt.UTC)))


@router.get("/api/ledgers")
def ledgers() -> dict[str, Any]:
    """Open and unfillable gaps, recent file loads, quarantine reasons, actions held back."""
    return answer(lambda conn: panels.ledgers(conn, dt.datetime.now(dt.UTC)))


@router.get("/api/backtests")
def backtests() -> dict[str, Any]:
    """The latest backtest runs, each with whether later data made it stale."""
    return answer(panels.backtests)


@router.get("/api/backtests/{run_id}")
def backtest(run_id: str) -> dict[str, Any]:
    """A run's ranking, its equity curves and its search's out-of-sample table."""
    return answer(lambda conn: panels.backtest(conn, run_id))


def create_app() -> FastAPI:
    app = FastAPI(
        title="Market data",
        description="The warehouse's coverage, freshness, ledgers and backtests (read-only).",
        dependencies=[Depends(requires_authenticated())],
        # FastAPI's own pages would not carry the dependency: none (the README documents the API).
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.include_router(router)
    return app
