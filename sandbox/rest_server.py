"""A real HTTP server on loopback that answers like Massive's aggregates and reference endpoints, with
faults on demand.

``GET /v2/aggs/ticker/{ticker}/range/1/{minute|day}/{from}/{to}`` serves the sample market (the
same bars as the flat files, plus ``vw``) in the documented response shape: ``limit`` caps the base
(minute) aggregates a page covers, ``next_url`` carries an opaque cursor, index bars carry only
o/h/l/c/t, and an empty answer is ``"results": null``. Authentication is ``Authorization: Bearer``
or ``apiKey``. Faults are scripted per ticker: a number of 429s (with or without Retry-After),
500s or dropped connections before the real answer, 403 NOT_AUTHORIZED, sessions with no bars,
or a 429 on every n-th request. Every request is logged (time, ticker, query without the key,
status) so tests can check rates and parameters at the server.

The reference endpoints serve the sample market's corporate actions (``sandbox.reference``):
``GET /stocks/v1/splits`` and ``GET /stocks/v1/dividends`` (``ticker`` / ``ticker.any_of``, date
``.gte`` / ``.lte`` filters, ``sort``, ``limit``, ``next_url``), logged as tickers ``splits`` and
``dividends``; ``GET /vX/reference/tickers/{ticker}/events`` (404 for a ticker it does not know),
logged as ``events:{ticker}``.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import math
import re
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from marketbars.market import calendar
from marketbars.market.calendar import NEW_YORK, day_window
from sandbox import market, reference

PATH = re.compile(
    r"^/v2/aggs/ticker/(?P<ticker>[^/]+)/range/(?P<mult>\d+)/(?P<span>minute|day)/(?P<start>[^/]+)/(?P<end>[^/]+)$"
)
EVENTS_PATH = re.compile(r"^/vX/reference/tickers/(?P<ticker>[^/]+)/events$")
REFERENCE_LISTS = {  # path -> (logged as, the date field its filters and sort use)
    "/stocks/v1/splits": ("splits", "execution_date"),
    "/stocks/v1/dividends": ("dividends", "ex_dividend_date"),
}
MAX_LIMIT = 50_000
MAX_REFERENCE_LIMIT = 5000


Answer = tuple[int, dict[str, Any], dict[str, str]]  # (HTTP status, JSON body, headers); 0 drops the line


@dataclass
class Faults:
    """What the server does wrong, and for which tickers. Counts are used up as requests arrive."""

    too_many: dict[str, int] = field(default_factory=dict)  # ticker -> 429s before answering
    retry_after: float | None = None  # Retry-After seconds on those 429s (None: no header)
    server_errors: dict[str, int] = field(default_factory=dict)  # ticker -> 500s before answering
    dropped: dict[str, int] = field(default_factory=dict)  # ticker -> connections closed unanswered
    not_authorized: set[str] = field(default_factory=set)  # tickers the plan does not cover: 403
    empty_sessions: set[tuple[str, dt.date]] = field(default_factory=set)  # (ticker, session): no bars
    every_nth_429: int = 0  # a 429 on every n-th request overall (0: never)
    max_page: int = MAX_LIMIT  # a page covers at most this many base aggregates, whatever limit says
    html_errors: bool = False  # error answers as an HTML page instead of JSON (proxies do that)
    loop_pages: set[str] = field(default_factory=set)  # tickers whose next_url points back at itself
    extra_bars: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # appended to an answer
    enforce_per_minute: float = 0  # the plan's limit, enforced like the vendor: 429 + Retry-After (0: none)
    burst: float = 2  # requests the enforced limit lets through back to back
    echo_key: bool = False  # error answers and next_url quote the request's key back (as proxies do)
    reference_page: int = MAX_REFERENCE_LIMIT  # reference pages hold at most this many records
    extra_reference: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # "splits" -> records


@dataclass
class LoggedRequest:
    at: float  # time.monotonic()
    ticker: str
    path: str
    query: dict[str, str]  # without apiKey
    status: int
    error: str | None = None  # the answer's error text (tells an injected 429 from an enforced one)


@dataclass
class RestServer:
    url: str
    api_key: str
    faults: Faults
    log: list[LoggedRequest]

    def airflow_connection(self) -> dict[str, Any]:
        """The ``massive_api`` connection as Airflow's JSON connection format."""
        return {"conn_type": "http", "host": self.url, "password": self.api_key}

    def requests_for(self, ticker: str) -> list[LoggedRequest]:
        return [r for r in self.log if r.ticker == ticker]


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # no access log on stderr
        return

    def do_GET(self) -> None:
        state = self.server
        parts = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        key = (
            query.pop("apiKey", None) or self.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        )
        match = PATH.match(parts.path)
        events = EVENTS_PATH.match(parts.path)
        ticker = unquote(match["ticker"]) if match else ""
        if parts.path in REFERENCE_LISTS:
            ticker = REFERENCE_LISTS[parts.path][0]
        elif events:
            ticker = "events:" + unquote(events["ticker"])
        with state.lock:
            state.count += 1
            number = state.count
        status, body, headers = self._answer(state, match, ticker, key, query, number)
        if state.faults.echo_key:
            body = _echo(body, status, key, parts.path)
        state.log.append(
            LoggedRequest(time.monotonic(), ticker, parts.path, query, status, body.get("error"))
        )
        if status == 0:  # drop the connection without an answer
            self.connection.shutdown(socket.SHUT_RDWR)
            self.close_connection = True
            return
        payload = json.dumps(body).encode()
        kind = "application/json"
        if status >= 400 and state.faults.html_errors:
            payload, kind = f"<html><body><h1>{status}</h1></body></html>".encode(), "text/html"
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(payload)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)

    def _answer(
        self,
        state: _Server,
        match: re.Match | None,
        ticker: str,
        key: str,
        query: dict[str, str],
        number: int,
    ) -> Answer:
        request_id = uuid.uuid4().hex
        known = match is not None or ticker in ("splits", "dividends") or ticker.startswith("events:")
        refused = self._refusal(state, known, ticker, key, number, request_id)
        if refused is not None:
            return refused
        cursor = query.get("cursor")
        if cursor:
            query = json.loads(base64.urlsafe_b64decode(cursor.encode()))
        if ticker.startswith("events:"):
            return _events(ticker.removeprefix("events:"), request_id)
        if match is None:
            return self._reference_list(state, ticker, query, request_id)
        faults = state.faults
        try:
            (start, first_ms), (end, last_ms) = _bound(match["start"], False), _bound(match["end"], True)
        except ValueError:
            error = "from/to must be YYYY-MM-DD or a millisecond timestamp"
            return 400, {"status": "ERROR", "request_id": request_id, "error": error}, {}
        if end < start:
            return 400, {"status": "ERROR", "request_id": request_id, "error": "'to' is before 'from'"}, {}
        timeframe = "1m" if match["span"] == "minute" else "1d"
        limit = min(int(query.get("limit", 5000)), MAX_LIMIT, faults.max_page)
        offset = int(query.get("offset", 0))
        window = (start, end), (first_ms, last_ms)
        results, next_offset = _page(faults, ticker, timeframe, *window, offset, limit)
        if ticker in faults.extra_bars and not offset:
            results = results + faults.extra_bars[ticker]
        if ticker in faults.loop_pages:
            next_offset = offset  # a cursor that leads back to the same page, forever
        body: dict[str, Any] = {
            "ticker": ticker,
            "queryCount": len(results),
            "resultsCount": len(results),
            "count": len(results),
            "adjusted": query.get("adjusted", "true") == "true",
            "results": results or None,
            "status": "OK",
            "request_id": request_id,
        }
        if next_offset is not None:
            state_query = {**query, "offset": next_offset}
            token = base64.urlsafe_b64encode(json.dumps(state_query).encode()).decode()
            body["next_url"] = f"{state.url}{urlsplit(self.path).path}?cursor={token}"
        return 200, body, {}

    def _reference_list(self, state: _Server, name: str, query: dict[str, str], request_id: str) -> Answer:
        """A page of splits or dividends matching the query, and the next page's cursor."""
        path = urlsplit(self.path).path
        date_field = REFERENCE_LISTS[path][1]
        tickers = (query.get("ticker.any_of") or query.get("ticker") or "").split(",")
        if name == "splits":
            records = reference.split_records(tickers)
        else:
            records = reference.dividend_records(tickers, _previous_close)
        records += state.faults.extra_reference.get(name, [])
        first, last = query.get(f"{date_field}.gte", ""), query.get(f"{date_field}.lte", "9999-12-31")
        selected = [
            r for r in records if r.get("ticker") in tickers and first <= str(r.get(date_field)) <= last
        ]
        descending = query.get("sort", f"{date_field}.desc").endswith(".desc")
        selected.sort(key=lambda r: (str(r.get(date_field)), str(r.get("id"))), reverse=descending)
        limit = min(int(query.get("limit", 100)), MAX_REFERENCE_LIMIT, state.faults.reference_page)
        offset = int(query.get("offset", 0))
        body: dict[str, Any] = {
            "results": selected[offset : offset + limit],
            "status": "OK",
            "request_id": request_id,
        }
        if offset + limit < len(selected):
            token = base64.urlsafe_b64encode(
                json.dumps({**query, "offset": offset + limit}).encode()
            ).decode()
            body["next_url"] = f"{state.url}{path}?cursor={token}"
        return 200, body, {}

    def _refusal(
        self, state: _Server, known: bool, ticker: str, key: str, number: int, request_id: str
    ) -> Answer | None:
        """What the vendor answers instead of data: a bad key or path, the plan's limit, a fault."""
        if key != state.api_key:
            return (
                401,
                {"status": "NOT_AUTHORIZED", "request_id": request_id, "message": "Unknown API Key"},
                {},
            )
        if not known:
            return 404, {"status": "NOT_FOUND", "request_id": request_id, "message": "no such endpoint"}, {}
        faults = state.faults
        if faults.enforce_per_minute > 0:
            wait = state.take_token(faults.enforce_per_minute, faults.burst)
            if wait > 0:
                body = {
                    "status": "ERROR",
                    "request_id": request_id,
                    "error": "over the plan's requests per minute",
                }
                return 429, body, {"Retry-After": str(math.ceil(wait))}  # HTTP delay-seconds: an integer
        if ticker in faults.not_authorized:
            message = (
                "You are not entitled to this data. Please upgrade your plan at https://massive.com/pricing"
            )
            return 403, {"status": "NOT_AUTHORIZED", "request_id": request_id, "message": message}, {}
        for budget, status in ((faults.dropped, 0), (faults.server_errors, 500), (faults.too_many, 429)):
            with state.lock:
                if budget.get(ticker, 0) > 0:
                    budget[ticker] -= 1
                    return self._fault(status, request_id, faults)
        if faults.every_nth_429 and number % faults.every_nth_429 == 0:
            return self._fault(429, request_id, faults)
        return None

    @staticmethod
    def _fault(status: int, request_id: str, faults: Faults) -> tuple[int, dict[str, Any], dict[str, str]]:
        if status == 0:
            return 0, {}, {}
        if status == 429:
            headers = {} if faults.retry_after is None else {"Retry-After": f"{faults.retry_after:g}"}
            return (
                429,
                {
                    "status": "ERROR",
                    "request_id": request_id,
                    "error": "injected: exceeded the maximum requests",
                },
                headers,
            )
        return 500, {"status": "ERROR", "request_id": request_id, "error": "internal error"}, {}


def _echo(body: dict[str, Any], status: int, key: str, path: str) -> dict[str, Any]:
    """The answer as a careless proxy or server gives it: the request, key included, quoted back."""
    if "next_url" in body:
        body = {**body, "next_url": f"{body['next_url']}&apiKey={key}"}
    if status >= 400:
        quoted = f"request {path}?apiKey={key} (Authorization: Bearer {key})"
        body = {**body, "error": f"{body.get('error') or body.get('message') or 'refused'}: {quoted}"}
        body["message"] = body["error"]
    return body


def _events(ticker: str, request_id: str) -> Answer:
    """A ticker's company history, or 404 when the sample market does not know the ticker."""
    known = {t for i in market.universe() for t in reference.tickers_of(i.ticker)}
    results = reference.events(ticker, known.__contains__)
    if results is None:
        return (
            404,
            {"status": "NOT_FOUND", "request_id": request_id, "message": f"ticker {ticker} not found"},
            {},
        )
    return 200, {"results": results, "status": "OK", "request_id": request_id}, {}


def _previous_close(ticker: str, day: dt.date) -> float | None:
    """The sample market's close of the last session before ``day`` (under that day's ticker)."""
    before = calendar.sessions_between(day - dt.timedelta(days=14), day - dt.timedelta(days=1))
    if not before:
        return None
    bars, _ = market.rest_results(ticker, "1d", before[-1])
    return float(bars[-1]["c"]) if bars else None


def _page(
    faults: Faults,
    ticker: str,
    timeframe: str,
    days: tuple[dt.date, dt.date],
    window_ms: tuple[int, int],
    offset: int,
    limit: int,
) -> tuple[list[dict[str, Any]], int | None]:
    """One page of the sample market's bars in the window, from ``offset``; the next page's offset
    once the base aggregates the page scanned would pass ``limit`` (as the vendor's limit works)."""
    results: list[dict[str, Any]] = []
    day, scanned, position = days[0], 0, 0
    while day <= days[1]:
        if (ticker, day) not in faults.empty_sessions:
            bars, base = market.rest_results(ticker, timeframe, day)
            per_bar = max(1, base // max(1, len(bars))) if bars else 0
            for bar in bars:
                if not window_ms[0] <= bar["t"] <= window_ms[1]:
                    continue
                if position >= offset:
                    if results and scanned + per_bar > limit:
                        return results, position
                    results.append(bar)
                    scanned += per_bar
                position += 1
        day += dt.timedelta(days=1)
    return results, None


def _bound(text: str, end: bool) -> tuple[dt.date, int]:
    """A from/to value: (the New York date it falls on, its millisecond bound)."""
    if text.isdigit():
        ms = int(text)
        return dt.datetime.fromtimestamp(ms / 1000, NEW_YORK).date(), ms
    day = dt.date.fromisoformat(text)
    start, stop = day_window(day)
    return day, int((stop if end else start).timestamp() * 1000) - (1 if end else 0)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, api_key: str, faults: Faults) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.api_key = api_key
        self.faults = faults
        self.log: list[LoggedRequest] = []
        self.lock = threading.Lock()
        self.count = 0
        self.url = f"http://127.0.0.1:{self.server_address[1]}"
        self.tokens: float | None = None
        self.refilled = 0.0

    def take_token(self, per_minute: float, burst: float) -> float:
        """Token bucket of the enforced limit: 0 when the request may pass, else the seconds to wait."""
        with self.lock:
            now = time.monotonic()
            rate = per_minute / 60.0
            if self.tokens is None:
                self.tokens = burst
            self.tokens = min(burst, self.tokens + (now - self.refilled) * rate)
            self.refilled = now
            if self.tokens >= 1:
                self.tokens -= 1
                return 0.0
            return (1 - self.tokens) / rate


@contextmanager
def rest_server(api_key: str = "sandbox-rest-key", faults: Faults | None = None) -> Iterator[RestServer]:
    """Run the aggregates server on 127.0.0.1 for the duration of the block."""
    server = _Server(api_key, faults or Faults())
    thread = threading.Thread(target=server.serve_forever, name="rest-server", daemon=True)
    thread.start()
    try:
        yield RestServer(url=server.url, api_key=api_key, faults=server.faults, log=server.log)
    finally:
        server.shutdown()
        server.server_close()
