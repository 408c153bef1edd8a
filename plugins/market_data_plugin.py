"""Registers the "Market data" view with Airflow: the FastAPI app of ``marketbars.ui.app``, mounted
by the API server at ``/market-data``, and an entry in the UI's Browse menu that shows it.

Every Airflow process that loads plugins imports this file (schedulers, workers), and only the API
server serves the app: it is built on its first request, so no other process pays for importing
the API server's auth and the view's code."""

from __future__ import annotations

import asyncio
from typing import Any

from airflow.plugins_manager import AirflowPlugin


def _build() -> Any:
    from marketbars.ui.app import create_app

    return create_app()


class _BuiltOnFirstRequest:
    """An ASGI app that builds ``marketbars.ui.app.create_app()`` when the first request comes, in a
    worker thread (its imports would otherwise hold up the API server's event loop), once."""

    def __init__(self) -> None:
        self._app: Any = None
        self._building = asyncio.Lock()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if self._app is None:
            async with self._building:
                if self._app is None:
                    self._app = await asyncio.to_thread(_build)
        await self._app(scope, receive, send)

    def __repr__(self) -> str:
        return "marketbars.ui.app:create_app"


class MarketDataPlugin(AirflowPlugin):
    name = "market_data"
    fastapi_apps = [{"app": _BuiltOnFirstRequest(), "url_prefix": "/market-data", "name": "Market data"}]
    external_views = [
        {
            "name": "Market data",
            "href": "market-data/",  # relative: the UI's base URL is prepended
            "url_route": "market-data",  # shown inside the UI, at /plugin/market-data
            "destination": "nav",
            "category": "browse",
        }
    ]
