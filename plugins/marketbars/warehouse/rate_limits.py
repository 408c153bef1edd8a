"""An API's rate limit shared by every worker, kept in ``market.api_rate_state`` (see migration 0003)."""

from __future__ import annotations

import datetime as dt
import time

from marketbars.warehouse.connection import Connection, one

# Slots are this much further apart than the plan's limit strictly needs, so that a request sent a
# little late never puts N+1 requests in a sliding minute.
MARGIN = 1.02


class PostgresRateLimiter:
    """Spaces requests to one API so that, across all workers together, at most ``per_minute`` go out
    in any minute: each request reserves the next free slot (60 / per_minute seconds apart, plus a
    2 % margin) and waits for it. ``per_minute`` <= 0 means the plan has no limit; pauses the API
    asked for (``pause``) hold in every case.

    The connection must be in autocommit mode, so that each reservation commits at once.
    """

    def __init__(self, conn: Connection, api: str, per_minute: float) -> None:
        self.conn = conn
        self.api = api
        self.interval = (
            dt.timedelta(seconds=60.0 * MARGIN / per_minute) if per_minute > 0 else dt.timedelta(0)
        )
        self.waited = 0.0  # seconds spent waiting for slots and pauses, for the task's log

    def acquire(self) -> None:
        """Block until this process may send one request."""
        while True:
            (wait,) = one(self.conn, "SELECT market.reserve_api_slot(%s, %s)", (self.api, self.interval))
            self._sleep(wait)
            (paused,) = one(self.conn, "SELECT market.api_pause_left(%s)", (self.api,))
            if paused <= 0:
                return
            self._sleep(paused)  # a pause began while we waited: wait it out, then take a new slot

    def pause(self, seconds: float) -> None:
        """The API asked for a pause (HTTP 429 Retry-After): no worker sends before it ends."""
        self.conn.execute("SELECT market.pause_api(%s, %s)", (self.api, float(seconds)))

    def _sleep(self, seconds: float) -> None:
        if seconds > 0:
            self.waited += seconds
            time.sleep(seconds)
