"""Massive's REST API (aggregates and reference data), over the Airflow connection ``massive_api``."""

from __future__ import annotations

import datetime as dt
import json
import logging
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any, Literal, Protocol, overload
from urllib.parse import quote, quote_plus, urlsplit

from airflow.sdk import BaseHook

if TYPE_CHECKING:
    import requests

DEFAULT_HOST = "https://api.massive.com"
log = logging.getLogger(__name__)


class RateLimiter(Protocol):
    def acquire(self) -> None: ...
    def pause(self, seconds: float) -> None: ...


class MassiveApiError(RuntimeError):
    """An answer that retrying cannot change (status ERROR, a 4xx other than 429)."""


class MassiveNotAuthorizedError(MassiveApiError):
    """HTTP 401/403 or NOT_AUTHORIZED: the key or its plan does not cover the request."""


class RetryableApiError(RuntimeError):
    """429, 5xx, a timeout or a dropped connection: worth another attempt, after ``retry_after`` if given."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@dataclass
class Pages:
    """Every page of one query: the results of all pages in order, and what it took to get them."""

    results: list[dict[str, Any]] = field(default_factory=list)
    requests: int = 0  # HTTP requests sent, retries included
    request_ids: list[str] = field(default_factory=list)
    delayed: bool = False  # the API answered DELAYED (the plan's data delay) at least once


class MassiveRestHook(BaseHook):
    """Reads aggregates (bars) and reference data (corporate actions) from Massive's REST API, politely.

    The connection is an ``http`` connection: host (default ``https://api.massive.com``) and the API
    key as password. The key travels only in the ``Authorization`` header, to that host only, so it
    never appears in a URL, a log line, an exception or XCom.

    Every HTTP request first takes a slot from ``limiter``; HTTP 429 honours ``Retry-After`` (for
    every worker, through the limiter) or backs off exponentially with jitter, as do 5xx answers,
    timeouts and dropped connections; 401/403 and ``NOT_AUTHORIZED`` fail at once.

    :param limiter: the shared rate limiter (``marketbars.warehouse.rate_limits.PostgresRateLimiter``).
    :param max_attempts: attempts per page before giving up.
    :param backoff_max: cap of the exponential backoff, in seconds.
    """

    conn_name_attr = "http_conn_id"
    default_conn_name = "massive_api"
    conn_type = "http"
    hook_name = "Massive REST API"

    def __init__(
        self,
        http_conn_id: str = default_conn_name,
        *,
        limiter: RateLimiter,
        max_attempts: int = 8,
        backoff_max: float = 60.0,
        timeout: tuple[float, float] = (10.0, 60.0),
    ) -> None:
        super().__init__()
        self.http_conn_id = http_conn_id
        self.limiter = limiter
        self.max_attempts = max_attempts
        self.backoff_max = backoff_max
        self.timeout = timeout

    @cached_property
    def base_url(self) -> str:
        host = (self.get_connection(self.http_conn_id).host or DEFAULT_HOST).rstrip("/")
        return host if "://" in host else f"https://{host}"

    @cached_property
    def session(self) -> requests.Session:
        import requests

        session = requests.Session()
        session.headers.update({"Authorization": f"Bearer {self._key}", "Accept": "application/json"})
        return session

    @cached_property
    def _key(self) -> str:
        """The API key, registered with Airflow's secrets masker as soon as it is read: whatever
        prints it afterwards (a log line, a traceback) prints *** instead."""
        from airflow.sdk.log import mask_secret

        key = self.get_connection(self.http_conn_id).password
        if not key:
            raise MassiveNotAuthorizedError(f"connection {self.http_conn_id!r} has no API key (its password)")
        mask_secret(key)
        return str(key)

    def _quoted(self, text: str) -> str:
        """Text quoted from an answer, with the key taken out: a server or proxy that echoes the
        request back must not carry the key into an exception (tracebacks bypass the masker)."""
        for form in {self._key, quote(self._key, safe=""), quote_plus(self._key)}:
            text = text.replace(form, "***")
        return text

    def aggregates(self, ticker: str, timeframe: str, start: dt.date, end: dt.date) -> Pages:
        """Every bar of ``ticker`` in the sessions start..end (inclusive), unadjusted, oldest first.

        The range is sent as the millisecond bounds of the New York days, so a session's after-hours
        bars (after midnight UTC in winter) are in it however the API reads a bare date.
        """
        from marketbars.massive.aggregates import PAGE_LIMIT, aggregates_path

        return self.pages(
            aggregates_path(ticker, timeframe, start, end),
            {"adjusted": "false", "sort": "asc", "limit": PAGE_LIMIT},
            what=f"{ticker} {timeframe} {start}..{end}",
        )

    def pages(self, path: str, params: dict[str, Any], *, what: str) -> Pages:
        """Every page of a list query (``results`` a list), following ``next_url`` on this host only.

        :param what: names the query in errors and logs (a ticker and window).
        """
        from marketbars.massive.aggregates import MAX_PAGES, next_page_url

        url: str | None = self.base_url + path
        query: dict[str, Any] | None = params
        out = Pages()
        seen: set[str] = set()
        while url:
            body = self._get(url, query, out, what=what)
            out.results.extend(body.get("results") or [])  # "results": null happens: a gap, not an error
            out.delayed |= body.get("status") == "DELAYED"
            url, query = next_page_url(body.get("next_url")), None  # the cursor carries the query
            if url is None:
                break
            here, there = urlsplit(self.base_url), urlsplit(url)
            if (there.scheme, there.netloc) != (here.scheme, here.netloc):
                raise MassiveApiError(
                    f"{what}: next_url points at another host or scheme; the key is not sent there"
                )
            if url in seen or len(seen) >= MAX_PAGES:
                raise MassiveApiError(
                    f"{what}: the API's pagination does not end (page {len(seen) + 1} repeats)"
                )
            seen.add(url)
        return out

    def document(
        self, path: str, params: dict[str, Any], *, what: str
    ) -> tuple[dict[str, Any] | None, Pages]:
        """One answer whose ``results`` is an object; None when the API does not know the subject
        (HTTP 404 / ``NOT_FOUND``), which is an answer, not an error."""
        out = Pages()
        body = self._get(self.base_url + path, params, out, what=what, missing_ok=True)
        return body, out

    @overload
    def _get(
        self,
        url: str,
        params: dict[str, Any] | None,
        out: Pages,
        what: str,
        missing_ok: Literal[False] = False,
    ) -> dict[str, Any]: ...
    @overload
    def _get(
        self, url: str, params: dict[str, Any] | None, out: Pages, what: str, missing_ok: Literal[True]
    ) -> dict[str, Any] | None: ...
    def _get(
        self, url: str, params: dict[str, Any] | None, out: Pages, what: str, missing_ok: bool = False
    ) -> dict[str, Any] | None:
        import tenacity

        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception_type(RetryableApiError),
            wait=_RetryAfterOrBackoff(self.backoff_max),
            stop=tenacity.stop_after_attempt(self.max_attempts),
            before_sleep=lambda state: log.warning(
                "%s; attempt %d of %d",
                state.outcome.exception() if state.outcome else "no outcome",
                state.attempt_number,
                self.max_attempts,
            ),
            reraise=True,
        )
        for attempt in retrying:
            with attempt:
                self.limiter.acquire()
                out.requests += 1
                body = self._request(url, params, what, missing_ok)
                if body is not None and body.get("request_id"):
                    out.request_ids.append(str(body["request_id"]))
                return body
        raise AssertionError("unreachable: tenacity re-raises the last error")

    def _request(
        self, url: str, params: dict[str, Any] | None, what: str, missing_ok: bool = False
    ) -> dict[str, Any] | None:
        import requests

        from marketbars.massive.aggregates import retry_after_seconds

        try:
            response = self.session.get(url, params=params, timeout=self.timeout)
            content = response.content
        except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError) as exc:
            raise RetryableApiError(
                f"{what}: {type(exc).__name__} (connection dropped or timed out)"
            ) from exc
        try:  # the status code decides; an error page need not be JSON
            body = json.loads(content) if content else {}
        except ValueError:
            if response.status_code == 200:  # a 200 whose body is not JSON was cut short
                raise RetryableApiError(f"{what}: HTTP 200 with an unreadable body") from None
            body = {}
        body = body if isinstance(body, dict) else {}
        status, message = (
            body.get("status"),
            self._quoted(str(body.get("error") or body.get("message") or "")),
        )
        if response.status_code == 429:
            wait = retry_after_seconds(response.headers.get("Retry-After"))
            if wait is not None:
                self.limiter.pause(wait)
            raise RetryableApiError(f"{what}: HTTP 429 (over the plan's rate)", retry_after=wait)
        if response.status_code >= 500:
            raise RetryableApiError(f"{what}: HTTP {response.status_code} from the API")
        if response.status_code in (401, 403) or status == "NOT_AUTHORIZED":
            raise MassiveNotAuthorizedError(
                f"{what}: the API refused the request (HTTP {response.status_code} {status}: {message}). "
                "The API key's plan does not include this data; retrying will not help."
            )
        if missing_ok and (response.status_code == 404 or status == "NOT_FOUND"):
            return None
        if response.status_code >= 400 or status == "ERROR":
            raise MassiveApiError(f"{what}: the API answered HTTP {response.status_code} {status}: {message}")
        return body


class _RetryAfterOrBackoff:
    """tenacity wait: after a Retry-After the shared limiter already holds every worker back, so no
    extra wait; otherwise exponential backoff with jitter."""

    def __init__(self, maximum: float) -> None:
        import tenacity

        self.backoff = tenacity.wait_exponential_jitter(initial=1, max=maximum)

    def __call__(self, state: Any) -> float:
        error = state.outcome.exception()
        if isinstance(error, RetryableApiError) and error.retry_after is not None:
            return 0.0
        return float(self.backoff(state))
