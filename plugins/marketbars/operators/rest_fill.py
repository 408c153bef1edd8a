"""Fill one symbol's sessions from Massive's REST aggregates."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator, Context
from airflow.sdk.exceptions import AirflowFailException

from marketbars import settings
from marketbars.market.timeframes import SOURCE_TIMEFRAMES

if TYPE_CHECKING:
    from marketbars.massive.rest_hook import MassiveRestHook
    from marketbars.warehouse.connection import Connection


class RestFillOperator(BaseOperator):
    """Load one symbol's bars for some sessions from the REST API into ``market.historical_bars``.

    Guarantees:

    * one aggregates query per timeframe over the sessions' range (``adjusted=false``,
      ``sort=asc``, ``limit=50000``, every ``next_url`` page), each request paced by the rate limit
      shared through the warehouse (``requests_per_minute``; run it in the ``massive_api`` pool);
    * rows pass the same validation as flat-file rows (bad ones are quarantined, source ``rest``)
      and are written per timeframe in one transaction with ``source = 'rest'``, ``vwap`` and
      ``trades`` kept; a bar a flat file loaded is never overwritten: a session a flat file holds
      is left alone, or with ``patch_flatfile_sessions`` gets REST bars only where it has none;
    * after a session's minute bars changed, its derived bars (5m, 15m, 1h, 4h) are rebuilt from
      them (``marketbars.market.rollups``), one transaction per session;
    * a trading session with no bars (``results`` empty or null) is recorded as a gap
      (``market.rest_ledger.status = 'empty'``) and reported, never as complete;
    * 401/403 / ``NOT_AUTHORIZED``, ``status: ERROR`` and other 4xx answers fail at once without
      retries, naming the ticker; the API key is never logged.

    Returns (XCom): symbol, and per timeframe the sessions loaded, gaps, sessions held by flat
    files, sessions patched, bars and requests.

    :param symbol: the vendor ticker (``AAPL``, ``I:SPX``, ``O:...``).
    :param dataset: its asset class (``stocks``, ``indices``, ``options``).
    :param sessions: per timeframe (``1m``, ``1d``), the ISO dates to fill.
    :param requests_per_minute: the API plan's limit, for every worker together (<= 0: no limit).
    :param patch_flatfile_sessions: gap repair: fill the minutes a flat-file session lacks.
    :param http_conn_id: the REST connection (``massive_api``).
    :param postgres_conn_id: the warehouse connection (``market_db``).
    """

    template_fields: Sequence[str] = ("symbol", "dataset", "sessions", "requests_per_minute")
    ui_color = "#fff3e0"

    def __init__(
        self,
        *,
        symbol: str,
        dataset: str,
        sessions: dict[str, Sequence[str]],
        requests_per_minute: float | str = settings.REST_REQUESTS_PER_MINUTE.default_value(),
        patch_flatfile_sessions: bool = False,
        http_conn_id: str = "massive_api",
        postgres_conn_id: str = "market_db",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.symbol = symbol
        self.dataset = dataset
        self.sessions = sessions
        self.requests_per_minute = requests_per_minute
        self.patch_flatfile_sessions = patch_flatfile_sessions
        self.http_conn_id = http_conn_id
        self.postgres_conn_id = postgres_conn_id

    def execute(self, context: Context) -> dict[str, Any]:
        from marketbars.massive.rest_hook import MassiveApiError, MassiveRestHook
        from marketbars.warehouse.hook import WarehouseHook
        from marketbars.warehouse.rate_limits import PostgresRateLimiter

        derived = sorted(set(self.sessions) - set(SOURCE_TIMEFRAMES))
        if derived:  # 5m..4h are rolled up from 1m; a REST fill of them would fight the rollups
            raise AirflowFailException(f"{self.symbol}: REST fills 1m and 1d bars only, not {derived}")
        result: dict[str, Any] = {"symbol": self.symbol}
        with WarehouseHook(self.postgres_conn_id).connect() as conn:
            limiter = PostgresRateLimiter(conn, "massive", float(self.requests_per_minute))
            hook = MassiveRestHook(self.http_conn_id, limiter=limiter)
            for timeframe, days in sorted(self.sessions.items()):
                sessions = sorted(dt.date.fromisoformat(d) for d in days)
                if not sessions:
                    continue
                try:
                    result[timeframe] = self._fill(conn, hook, timeframe, sessions, context.get("run_id"))
                except MassiveApiError as exc:  # 401/403, status ERROR, other 4xx: a retry cannot help
                    raise AirflowFailException(str(exc)) from exc
            self.log.info("%s: waited %.1f s in total for the shared rate limit", self.symbol, limiter.waited)
        return result

    def _fill(
        self,
        conn: Connection,
        hook: MassiveRestHook,
        timeframe: str,
        sessions: list[dt.date],
        run_id: str | None,
    ) -> dict[str, Any]:
        from marketbars.market.provenance import ApiFetch
        from marketbars.massive.aggregates import rest_bars
        from marketbars.warehouse import partitions, rest_writes, rollup_rebuilds

        partitions.ensure_partitions(conn, sessions[0], sessions[-1])
        answer = hook.aggregates(self.symbol, timeframe, sessions[0], sessions[-1])
        parsed = rest_bars(
            answer.results, ticker=self.symbol, dataset=self.dataset, timeframe=timeframe, sessions=sessions
        )
        fetch = ApiFetch(
            self.symbol, self.dataset, timeframe, tuple(sessions), answer.requests, tuple(answer.request_ids)
        )
        statuses = rest_writes.replace_rest_sessions(
            conn, fetch, parsed, run_id, patch_flatfile_sessions=self.patch_flatfile_sessions
        )
        if timeframe == "1m":  # the minutes changed unless a flat file kept the session as it was
            for session, (status, _) in sorted(statuses.items()):
                # A patch that added nothing is rebuilt too: it may be the retry of one whose
                # rebuild never ran (and a rebuild over unchanged minutes writes nothing).
                if status != "flatfile":
                    rollup_rebuilds.rebuild_rollups(conn, self.dataset, session, [self.symbol])

        def days(status: str) -> list[str]:
            return sorted(d.isoformat() for d, (s, _) in statuses.items() if s == status)

        summary: dict[str, Any] = {
            "loaded": days("loaded"),
            "gaps": days("empty"),
            "flatfile": days("flatfile"),
            "patched": days("patched"),
            "bars": sum(rows for _, rows in statuses.values()),
            "quarantined": sum(parsed.quarantined_by_session.values()),
            "requests": answer.requests,
        }
        self.log.info(
            "%s %s %s..%s: %d bars written: %d sessions loaded, %d patched, in %d request(s)%s",
            self.symbol,
            timeframe,
            sessions[0],
            sessions[-1],
            summary["bars"],
            len(summary["loaded"]),
            len(summary["patched"]),
            answer.requests,
            " (the plan's data is DELAYED)" if answer.delayed else "",
        )
        if summary["gaps"]:
            self.log.warning(
                "%s %s: no bars from the API for trading session(s) %s: recorded as gaps, not complete",
                self.symbol,
                timeframe,
                ", ".join(summary["gaps"]),
            )
        return summary
