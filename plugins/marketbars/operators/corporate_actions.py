"""Fetch some tickers' corporate actions (splits, cash dividends, ticker changes) from Massive's REST
reference endpoints into the warehouse."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator, Context
from airflow.sdk.exceptions import AirflowFailException

from marketbars import settings

if TYPE_CHECKING:
    from marketbars.market.corporate_actions import Checked
    from marketbars.massive.rest_hook import MassiveRestHook
    from marketbars.warehouse.connection import Connection


class CorporateActionsOperator(BaseOperator):
    """Refresh the splits, cash dividends and ticker histories of a few tickers.

    Guarantees:

    * splits (``/stocks/v1/splits``) and dividends (``/stocks/v1/dividends``) of every ticker, with
      ``ticker.any_of`` (one query per kind, every ``next_url`` page) over the window first..last
      (None: open), through the same hook, shared rate limit and pool as the aggregates;
    * every record is checked (``marketbars.market.corporate_actions``): exact repeats collapse,
      invalid and conflicting records go to ``market.reference_quarantine`` with their reason and
      are never applied;
    * per kind, the tickers' stored records and quarantined records in the window are replaced in
      one transaction, and ``market.reference_ledger`` records the fetch: a retry or re-run leaves
      the same rows;
    * the ticker histories of ``ticker_events`` (``/vX/reference/tickers/{ticker}/events``) replace
      their companies' ``market.ticker_history``; a ticker the vendor reports renamed is logged as a
      warning and, with ``follow_watchlist_renames``, the watchlist refreshes its new ticker from
      then on (the old one kept, inactive), whose whole history of actions is fetched at once;
    * cumulative factors that differ from the vendor's ``historical_adjustment_factor`` are logged;
    * 401/403, ``status: ERROR`` and other 4xx answers fail at once, naming the tickers; 429, 5xx
      and dropped connections are retried; the API key is never logged.

    Returns (XCom): the tickers, counts per kind, the renames found, and the factor differences.

    :param symbols: stock tickers (at most ``TICKERS_PER_REQUEST``).
    :param first: first day of the window (ISO date), None for the whole history.
    :param last: last day of the window (ISO date), None for no end (announced actions included).
    :param ticker_events: tickers whose company history to refresh (a subset of ``symbols``).
    :param follow_watchlist_renames: move a renamed watchlist ticker to its new ticker.
    :param requests_per_minute: the API plan's limit, for every worker together (<= 0: no limit).
    :param http_conn_id: the REST connection (``massive_api``).
    :param postgres_conn_id: the warehouse connection (``market_db``).
    """

    template_fields: Sequence[str] = ("symbols", "first", "last", "ticker_events", "requests_per_minute")
    ui_color = "#f3e5f5"

    def __init__(
        self,
        *,
        symbols: Sequence[str],
        first: str | None = None,
        last: str | None = None,
        ticker_events: Sequence[str] = (),
        follow_watchlist_renames: bool = False,
        requests_per_minute: float | str = settings.REST_REQUESTS_PER_MINUTE.default_value(),
        http_conn_id: str = "massive_api",
        postgres_conn_id: str = "market_db",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.symbols = symbols
        self.first = first
        self.last = last
        self.ticker_events = ticker_events
        self.follow_watchlist_renames = follow_watchlist_renames
        self.requests_per_minute = requests_per_minute
        self.http_conn_id = http_conn_id
        self.postgres_conn_id = postgres_conn_id

    def execute(self, context: Context) -> dict[str, Any]:
        from marketbars.massive.reference import TICKERS_PER_REQUEST
        from marketbars.massive.rest_hook import MassiveApiError, MassiveRestHook
        from marketbars.warehouse import corporate_actions
        from marketbars.warehouse.hook import WarehouseHook
        from marketbars.warehouse.rate_limits import PostgresRateLimiter

        symbols = sorted(self.symbols)
        if len(symbols) > TICKERS_PER_REQUEST:
            raise AirflowFailException(
                f"{len(symbols)} tickers: one task takes at most {TICKERS_PER_REQUEST}"
            )
        first, last = _day(self.first), _day(self.last)
        run_id = context.get("run_id")
        result: dict[str, Any] = {"symbols": symbols, "renames": []}
        followed: list[str] = []
        with WarehouseHook(self.postgres_conn_id).connect() as conn:
            limiter = PostgresRateLimiter(conn, "massive", float(self.requests_per_minute))
            hook = MassiveRestHook(self.http_conn_id, limiter=limiter)
            try:
                for ticker in sorted(self.ticker_events):
                    rename = self._ticker_history(conn, hook, ticker, run_id)
                    if rename:
                        result["renames"].append(rename)
                for kind in ("split", "dividend"):
                    result[kind] = self._refresh(kind, conn, hook, symbols, first, last, run_id)
                followed = sorted({r["to"] for r in result["renames"] if r["followed"]} - set(symbols))
                if followed:  # new to the watchlist: their whole history, now
                    for kind in ("split", "dividend"):
                        self._refresh(kind, conn, hook, followed, None, None, run_id)
            except MassiveApiError as exc:  # 401/403, status ERROR, other 4xx: a retry cannot help
                raise AirflowFailException(str(exc)) from exc
            differences = corporate_actions.factor_differences(conn, [*symbols, *followed])
        for difference in differences:
            self.log.warning("factor differs from the vendor's: %s", difference.describe())
        result["factor_differences"] = len(differences)
        self.log.info("waited %.1f s in total for the shared rate limit", limiter.waited)
        return result

    def _refresh(
        self,
        kind: str,
        conn: Connection,
        hook: MassiveRestHook,
        symbols: list[str],
        first: dt.date | None,
        last: dt.date | None,
        run_id: str | None,
    ) -> dict[str, int]:
        """One kind's records of the tickers over the window: fetched, checked, stored with the rest
        quarantined, and the fetch recorded, in one transaction."""
        from marketbars.market import corporate_actions as rules
        from marketbars.massive import reference
        from marketbars.warehouse import corporate_actions

        steps: dict[
            str, tuple[str, Callable[..., Any], Callable[..., Any], Callable[..., Any], Callable[..., Any]]
        ]
        steps = {
            "split": (
                reference.SPLITS_PATH, reference.splits_query, reference.parse_splits,
                rules.check_splits, corporate_actions.replace_splits,
            ),
            "dividend": (
                reference.DIVIDENDS_PATH, reference.dividends_query, reference.parse_dividends,
                rules.check_dividends, corporate_actions.replace_dividends,
            ),
        }  # fmt: skip
        path, query, parse, check, replace = steps[kind]
        what = _what(f"{kind}s", symbols, first, last)
        answer = hook.pages(path, query(symbols, first, last), what=what)
        parsed, unreadable = parse(answer.results)
        kept, strays = rules.asked_for(parsed, symbols, first, last)
        checked = check(kept)
        checked.rejected[:0] = unreadable
        fetch = corporate_actions.Fetch(
            kind, symbols, first, last, answer.requests, answer.request_ids, run_id
        )
        replace(conn, fetch, checked)
        return self._report(what, checked, strays, answer.requests)

    def _ticker_history(
        self, conn: Connection, hook: MassiveRestHook, ticker: str, run_id: str | None
    ) -> dict[str, Any] | None:
        """Refresh the company history of ``ticker``; its rename, if the vendor reports one."""
        from marketbars.market.corporate_actions import check_ticker_changes, renamed_to
        from marketbars.massive.reference import EVENTS_QUERY, events_path, parse_ticker_events
        from marketbars.warehouse import corporate_actions, watchlist

        what = f"{ticker} ticker events"
        body, answer = hook.document(events_path(ticker), dict(EVENTS_QUERY), what=what)
        figi, changes, unreadable = parse_ticker_events(body or {}, ticker)
        checked = check_ticker_changes(changes)
        checked.rejected[:0] = unreadable
        fetch = corporate_actions.Fetch(
            "ticker_change", [ticker], None, None, answer.requests, answer.request_ids, run_id
        )
        corporate_actions.replace_ticker_history(conn, fetch, figi, checked)
        if body is None:
            self.log.info("%s: the vendor has no ticker history for it (HTTP 404)", ticker)
        self._report(what, checked, [], answer.requests)
        latest = renamed_to(checked.accepted, ticker)
        if latest is None:
            return None
        followed = self.follow_watchlist_renames and watchlist.follow_rename(conn, ticker, latest.ticker)
        self.log.warning(
            "%s was renamed: the vendor reports the company (%s) trading as %s since %s. %s",
            ticker,
            latest.composite_figi,
            latest.ticker,
            latest.valid_from,
            f"The watchlist now refreshes {latest.ticker}; {ticker} stays listed, inactive."
            if followed
            else f"Read its bars with follow_renames to see one history under {latest.ticker}.",
        )
        return {
            "from": ticker,
            "to": latest.ticker,
            "on": latest.valid_from.isoformat(),
            "followed": followed,
        }

    def _report(
        self, what: str, checked: Checked[Any], strays: Sequence[Any], requests: int
    ) -> dict[str, int]:
        for rejected in checked.rejected:
            self.log.warning(
                "%s: quarantined %s %s %s: %s",
                what,
                rejected.kind,
                rejected.symbol,
                rejected.day,
                rejected.reason,
            )
        for stray in strays:
            self.log.warning(
                "%s: ignored a record the query did not ask for: %s %s", what, stray.symbol, stray.day
            )
        self.log.info(
            "%s: %d accepted, %d quarantined, %d exact repeat(s) collapsed, in %d request(s)",
            what,
            len(checked.accepted),
            len(checked.rejected),
            len(checked.collapsed),
            requests,
        )
        return {
            "accepted": len(checked.accepted),
            "quarantined": len(checked.rejected),
            "duplicates": len(checked.collapsed),
            "requests": requests,
        }


def _day(value: str | None) -> dt.date | None:
    return dt.date.fromisoformat(value) if value else None


def _what(kind: str, symbols: Sequence[str], first: dt.date | None, last: dt.date | None) -> str:
    names = symbols[0] if len(symbols) == 1 else f"{symbols[0]}..{symbols[-1]} ({len(symbols)} tickers)"
    return f"{kind} of {names} {first or 'start'}..{last or 'open'}"
