"""The vendor's REST aggregates: request paths, Retry-After, and results -> validated bars.

REST rows go through the same validation rules as flat-file rows (``marketbars.market.validation``)
and come out in the same Arrow schema, with ``vwap`` (``vw``) and ``trades`` (``n``) kept.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import json
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from marketbars.market import calendar, validation
from marketbars.market.bars import BAR_SCHEMA, SESSION_QUARANTINE_SCHEMA, SessionBars
from marketbars.market.validation import Codes, IntArray
from marketbars.massive.columns import bar_columns, to_bars

PAGE_LIMIT = 50_000  # the API's maximum: it caps the base aggregates scanned per request
MAX_PAGES = 10_000  # a pagination that goes on longer is a loop
TIMESPANS = {"1m": (1, "minute"), "1d": (1, "day")}
NS_PER_MS = 1_000_000


def aggregates_path(ticker: str, timeframe: str, start: dt.date, end: dt.date) -> str:
    """/v2/aggs/ticker/{ticker}/range/{multiplier}/{timespan}/{from}/{to} for the sessions start..end.

    from/to are millisecond timestamps (both inclusive): 00:00 New York of start to the last
    millisecond of end's New York day, so no session's late bars depend on how a date is read.
    """
    if timeframe not in TIMESPANS:
        raise ValueError(
            f"no REST aggregates for timeframe {timeframe!r}: expected one of {', '.join(TIMESPANS)}"
        )
    multiplier, timespan = TIMESPANS[timeframe]
    first = int(calendar.day_window(start)[0].timestamp() * 1000)
    last = int(calendar.day_window(end)[1].timestamp() * 1000) - 1
    return f"/v2/aggs/ticker/{quote(ticker, safe=':')}/range/{multiplier}/{timespan}/{first}/{last}"


def next_page_url(next_url: str | None) -> str | None:
    """The next page's URL without any key a server put in it: the key travels in the Authorization
    header only, never in a URL that logs, proxies and errors may show."""
    if not next_url:
        return None
    parts = urlsplit(next_url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k.lower() != "apikey"]
    return urlunsplit(parts._replace(query=urlencode(query)))


def retry_after_seconds(value: str | None, now: dt.datetime | None = None) -> float | None:
    """The wait a Retry-After header asks for (seconds, or an HTTP date); None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return max(0.0, (when - (now or dt.datetime.now(dt.UTC))).total_seconds())


Results = Sequence[Mapping[str, Any]]


def _column(results: Results, key: str, kind: pa.DataType) -> pa.Array:
    return pa.array([r.get(key) for r in results], kind)


def rest_bars(
    results: Results, *, ticker: str, dataset: str, timeframe: str, sessions: Sequence[dt.date]
) -> SessionBars:
    """Validate one ticker's aggregates for the requested sessions.

    A result on a day that is not a trading session is quarantined (timestamp_outside_session);
    results on trading sessions that were not requested are out of scope and ignored.
    """
    table, vwap, ny_dates = _as_table(results, ticker, dataset)
    wanted = set(sessions)
    bars, bad_parts = [], []
    loaded: dict[dt.date, int] = dict.fromkeys(sessions, 0)
    rejected: dict[dt.date, int] = dict.fromkeys(sessions, 0)
    for stamp in np.unique(ny_dates[~np.isnat(ny_dates)]):
        day = stamp.astype(dt.date)
        rows = np.flatnonzero(ny_dates == stamp)
        if day not in wanted and _is_session(day):
            continue  # a trading session nobody asked for: not ours to load
        part = table.take(pa.array(rows))
        codes = _day_codes(part, day, wanted, dataset, timeframe)
        valid = codes == 0
        bars.append(to_bars(part.filter(pa.array(valid)), dataset, vwap.take(pa.array(rows[valid]))))
        bad_parts.append((part, rows, codes, day))
        if day in wanted:
            loaded[day] = int(valid.sum())
            rejected[day] = int((~valid).sum())
    missing_time = np.flatnonzero(np.isnat(ny_dates))
    if len(missing_time):  # no t at all: an empty field, attributed to no session
        part = table.take(pa.array(missing_time))
        codes = np.full(len(missing_time), validation.CODES["empty_field"], dtype=np.int8)
        bad_parts.append((part, missing_time, codes, min(sessions)))  # filed under the range's first session
    quarantined = [_quarantined(part, rows, codes, results, day) for part, rows, codes, day in bad_parts]
    return SessionBars(
        bars=pa.concat_tables(bars) if bars else BAR_SCHEMA.empty_table(),
        quarantined=pa.concat_tables(quarantined) if quarantined else SESSION_QUARANTINE_SCHEMA.empty_table(),
        loaded_by_session=loaded,
        quarantined_by_session=rejected,
    )


def _as_table(results: Results, ticker: str, dataset: str) -> tuple[pa.Table, pa.Array, Any]:
    """The results in the flat files' column names, their vwap, and each one's New York date (the
    session a bar belongs to: its start's date in New York; NaT without a start)."""
    traded = dataset != "indices"
    t_ms = _column(results, "t", pa.int64())
    table = pa.table(
        {
            "ticker": pa.array([ticker] * len(results), pa.string()),
            **({"volume": _column(results, "v", pa.float64())} if traded else {}),
            "open": _column(results, "o", pa.float64()),
            "close": _column(results, "c", pa.float64()),
            "high": _column(results, "h", pa.float64()),
            "low": _column(results, "l", pa.float64()),
            "window_start": pc.multiply(t_ms, NS_PER_MS),
            **({"transactions": _column(results, "n", pa.int64())} if traded else {}),
            "ordinal": pa.array(np.arange(len(results), dtype=np.int64)),
        }
    )
    ny_dates = pc.cast(
        pc.local_timestamp(pc.cast(t_ms, pa.timestamp("ms", tz=str(calendar.NEW_YORK)))), pa.date32()
    ).to_numpy(zero_copy_only=False)
    return table, _column(results, "vw", pa.float64()), ny_dates


def _day_codes(part: pa.Table, day: dt.date, wanted: set[dt.date], dataset: str, timeframe: str) -> Codes:
    """The rules' verdict on one New York day's results; nothing from a non-trading day is right."""
    start, end = (int(t.timestamp()) * 1_000_000_000 for t in calendar.day_window(day))
    codes = validation.reason_codes(
        bar_columns(part), asset_class=dataset, timeframe=timeframe, window_start_ns=start, window_end_ns=end
    )
    if day not in wanted:
        codes[codes == 0] = validation.CODES["timestamp_outside_session"]
    return codes


def _is_session(day: dt.date) -> bool:
    try:
        return calendar.is_session(day)
    except ValueError:  # outside the calendar (a zero or negative timestamp): no session
        return False


def _quarantined(part: pa.Table, rows: IntArray, codes: Codes, results: Results, day: dt.date) -> pa.Table:
    bad = np.flatnonzero(codes != 0)
    return pa.table(
        {
            "line_number": pa.nulls(len(bad), pa.int64()),
            "symbol": part["ticker"].take(pa.array(bad)),
            "reason": pa.array([validation.REASON_NAMES[int(c)] for c in codes[bad]], pa.string()),
            "raw": pa.array([json.dumps(results[int(rows[i])], sort_keys=True) for i in bad], pa.string()),
            "session_date": pa.array([day] * len(bad), pa.date32()),
        },
        schema=SESSION_QUARANTINE_SCHEMA,
    )
