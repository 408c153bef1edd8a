"""A rate limit shared by every worker, kept in the warehouse database (see migration 0003)."""

from __future__ import annotations

import datetime as dt
import time
from typing import Any


class PostgresRateLimiter:
    """Spaces requests to one API so that, across all workers together, at most ``per_minute`` go out
    in any minute: each request reserves the next free slot (60 / per_minute seconds apart) and
    waits for it. ``per_minute`` <= 0 means the plan has no limit.

    The connection must be in autocommit mode, so that each reservation commits at once.
    """

    def __init__(self, conn: Any, api: str, per_minute: float) -> None:
        self.conn = conn
        self.api = api
        self.per_minute = per_minute
        self.waited = 0.0  # seconds spent waiting for slots, for the task's log

    def acquire(self) -> None:
        """Block until this process may send one request."""
        if self.per_minute <= 0:
            return
        interval = dt.timedelta(seconds=60.0 / self.per_minute)
        (wait,) = self.conn.execute("SELECT market.reserve_api_slot(%s, %s)", (self.api, interval)).fetchone()
        if wait > 0:
            self.waited += wait
            time.sleep(wait)

    def pause(self, seconds: float) -> None:
        """The API asked for a pause (HTTP 429 Retry-After): no worker sends before it ends."""
        self.conn.execute("SELECT market.pause_api(%s, %s)", (self.api, float(seconds)))
