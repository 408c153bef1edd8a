"""The bar schema of the warehouse, and validated bars as sources hand them on.

Every source (the vendor adapter in ``marketbars.massive``) turns its records into ``BAR_SCHEMA`` and
its rejected rows into ``QUARANTINE_SCHEMA``; storage (``marketbars.warehouse``) accepts nothing else,
so neither side knows the other.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

import pyarrow as pa

# The variable columns of market.historical_bars, in COPY order (timeframe and source are constants).
BAR_SCHEMA = pa.schema(
    [
        ("symbol", pa.string()),
        ("ts", pa.timestamp("us", tz="UTC")),
        ("open", pa.float64()),
        ("high", pa.float64()),
        ("low", pa.float64()),
        ("close", pa.float64()),
        ("volume", pa.float64()),
        ("vwap", pa.float64()),
        ("trades", pa.int64()),
    ]
)
# A rejected source row: where it was (a file's line; none for an API answer), whose, why, and as read.
QUARANTINE_SCHEMA = pa.schema(
    [
        ("line_number", pa.int64()),
        ("symbol", pa.string()),
        ("reason", pa.string()),
        ("raw", pa.string()),
    ]
)
# The same for a source that spans several sessions (a REST answer): each row names its session.
SESSION_QUARANTINE_SCHEMA = QUARANTINE_SCHEMA.append(pa.field("session_date", pa.date32()))


@dataclass(frozen=True)
class ValidatedBars:
    """Validated rows of a stretch of one source: the bars to store and the rows rejected."""

    bars: pa.Table  # BAR_SCHEMA
    quarantined: pa.Table  # QUARANTINE_SCHEMA


@dataclass(frozen=True)
class SessionBars:
    """One symbol's validated bars for some sessions (a REST answer), with what each session got."""

    bars: pa.Table  # BAR_SCHEMA, valid rows of the requested sessions
    quarantined: pa.Table  # SESSION_QUARANTINE_SCHEMA
    loaded_by_session: dict[dt.date, int]  # every requested session, 0 when the source had no valid bar
    quarantined_by_session: dict[dt.date, int]


class NotStreamableError(Exception):
    """A ``BarStream`` found part-way that it has to be read whole: discard what it gave so far."""


class BarStream(Protocol):
    """One source file's validated bars, chunk by chunk, as storage consumes them.

    ``chunks(streaming=True)`` may raise ``NotStreamableError`` before its end; the consumer then
    discards what it stored and reads ``chunks(streaming=False)``. ``rows_read`` (every line of
    the source, malformed ones included) is set once a pass has been consumed.
    """

    rows_read: int

    def chunks(self, *, streaming: bool = True) -> Iterator[ValidatedBars]: ...
