"""Rules of completeness: what a (symbol, timeframe, session) cell should hold, how it is classified,
when its gap is retried or given up, and when an open gap alerts. Pure: no database, no Airflow."""

from __future__ import annotations

import datetime as dt
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from marketbars.market import calendar
from marketbars.market.calendar import SessionHours
from marketbars.market.timeframes import SOURCE_TIMEFRAMES
from marketbars.pipelines.common.mapping import FlatFileWork, RestWork, batch_sessions
from marketbars.pipelines.common.published import ObjectExists
from marketbars.warehouse.bar_counts import NONE, Counts, Key

STATES = ("complete", "partial", "missing", "no_trading")
VENDOR_HAS_NONE = "the vendor's flat file for the session holds no bars for it (no trading)"


@dataclass(frozen=True)
class Settings:
    coverage: float = 0.95  # a liquid symbol's session is partial below this share of regular minutes
    max_attempts: int = 5  # retries before an open gap becomes unfillable
    backoff_base: dt.timedelta = dt.timedelta(hours=12)  # the wait after the first failed retry, doubling
    backoff_cap: dt.timedelta = dt.timedelta(days=7)
    warning_after: int = 1  # an open gap older than this many trading sessions raises a warning
    critical_after: int = 7  # ... and older than this many, a critical alert


def expected_bars(asset_class: str, timeframe: str, hours: SessionHours) -> int:
    """Bars a cell should hold: every regular-session minute (390, or 210 on an early close) for stocks
    and indices, one daily bar, and for an option (traded now and then) at least one bar."""
    if timeframe == "1d" or asset_class == "options":
        return 1
    return hours.regular_minutes


def coverage(found: int, expected: int) -> float:
    return min(1.0, found / expected) if expected else 1.0


def liquid_symbols(
    coverages: Mapping[str, Iterable[float]], asset_classes: Mapping[str, str], settings: Settings
) -> set[str]:
    """Symbols held to the partial-coverage threshold: indices always (they print every minute);
    never options; stocks whose median regular-session coverage, over the sessions they traded, is
    at least halfway from the threshold to every minute (0.975 for 0.95).

    The margin keeps a stock's ordinary minute-to-minute thinness from reading as a gap: one that
    normally trades in 90 % of minutes (an ETF such as DIA) is not short on a 90 % day, and one at
    97.5 % needs a full session about three standard deviations below its norm to fall under 95 %.
    """
    floor = (1 + settings.coverage) / 2
    liquid = set()
    for symbol, asset_class in asset_classes.items():
        if asset_class == "indices":
            liquid.add(symbol)
        elif asset_class == "stocks":
            traded = [c for c in coverages.get(symbol, ()) if c > 0]
            if traded and statistics.median(traded) >= floor:
                liquid.add(symbol)
    return liquid


def classify(
    *,
    asset_class: str,
    timeframe: str,
    expected: int,
    found: int,
    total: int,
    liquid: bool,
    vendor_has_none: bool,
    settings: Settings,
) -> str:
    """complete, partial, missing or no_trading.

    found counts the bars that meet the expectation (regular-session minutes for 1m stocks and
    indices), total every bar of the session. vendor_has_none: the vendor's canonical flat file
    for the session was loaded for this symbol and holds none of its bars.
    """
    if total == 0:
        return "no_trading" if vendor_has_none else "missing"
    if timeframe == "1m" and asset_class != "options" and liquid and found < settings.coverage * expected:
        return "partial"
    return "complete"


def status_after_failure(attempts: int, settings: Settings) -> str:
    """A gap's status after its ``attempts``-th failed retry: given up once the attempts run out."""
    return "unfillable" if attempts >= settings.max_attempts else "open"


def reopens_unfillable(kind: str) -> bool:
    """An unfillable gap stays explained (no retry storm), unless its flat file was replaced since."""
    return kind == "replaced_file"


def retry_delay(attempts: int, settings: Settings) -> dt.timedelta:
    """The wait before the next retry after ``attempts`` failed ones: exponential, capped."""
    return min(settings.backoff_base * (1 << max(0, attempts - 1)), settings.backoff_cap)


def sessions_open(first_seen: dt.date, run_date: dt.date) -> int:
    """How many trading sessions a gap first seen on first_seen has stayed open by run_date."""
    if run_date <= first_seen:
        return 0
    return len(calendar.sessions_between(first_seen + dt.timedelta(days=1), run_date))


def alert_level(sessions: int, settings: Settings) -> str | None:
    if sessions > settings.critical_after:
        return "critical"
    if sessions > settings.warning_after:
        return "warning"
    return None


@dataclass(frozen=True)
class Cell:
    symbol: str
    asset_class: str
    timeframe: str
    session: dt.date
    expected: int
    found: int
    total: int
    state: str

    @property
    def key(self) -> Key:
        return (self.symbol, self.timeframe, self.session)

    def to_json(self) -> dict[str, object]:
        return {
            "symbol": self.symbol,
            "timeframe": self.timeframe,
            "session": self.session.isoformat(),
            "expected": self.expected,
            "found": self.found,
            "bars": self.total,
            "state": self.state,
        }


def replaced_cells(
    loaded: Iterable[tuple[str, str, dt.date, str, str, Sequence[str] | None]],
    current_etags: Mapping[str, str],
    asset_classes: Mapping[str, str],
) -> set[Key]:
    """Cells whose flat file changed since it was loaded: the object's ETag differs from the ledger's.

    loaded: (dataset, timeframe, session, s3_key, etag, symbols or None for every ticker).
    """
    cells = set()
    for dataset, timeframe, session, key, etag, symbols in loaded:
        current = current_etags.get(key)
        if current is None or current == etag:
            continue
        for symbol, asset_class in asset_classes.items():
            if asset_class == dataset and (symbols is None or symbol in symbols):
                cells.add((symbol, timeframe, session))
    return cells


def tries_flat_file(attempts: int, kind: str) -> bool:
    """Whether a gap's next retry goes through its flat file (when published) rather than REST.

    Retries alternate, the flat file first: a file already loaded at its current version cannot give
    what it lacks (a row it had was quarantined, or it never had the minutes), and REST may; a
    failure of either (a late file, an empty answer) gets the other next time. A replaced file is
    always re-ingested from the file.
    """
    return kind == "replaced_file" or attempts % 2 == 0


def route_retries(
    due: Mapping[Key, bool], asset_classes: Mapping[str, str], object_exists: ObjectExists | None
) -> tuple[list[FlatFileWork], list[RestWork], dict[Key, str]]:
    """Due gaps (-> whether to try the flat file) to work: through the flat file when it is wanted
    and published (one item per dataset, timeframe and symbol set, sessions batched), else through
    REST (one item per symbol, patching flat-file sessions where they lack bars). Never a symbols x
    sessions cross product. Returns (flat-file work, REST work, route of each gap)."""
    by_file: dict[tuple[str, str, dt.date], list[str]] = {}
    rest: dict[str, dict[str, list[str]]] = {}
    routes: dict[Key, str] = {}
    for (symbol, timeframe, session), file_first in sorted(due.items()):
        dataset = asset_classes[symbol]
        if file_first and object_exists is not None and object_exists(dataset, timeframe, session):
            by_file.setdefault((dataset, timeframe, session), []).append(symbol)
            routes[(symbol, timeframe, session)] = "flatfile"
        else:
            rest.setdefault(symbol, {}).setdefault(timeframe, []).append(session.isoformat())
            routes[(symbol, timeframe, session)] = "rest"
    grouped: dict[tuple[str, str, tuple[str, ...]], list[dt.date]] = {}
    for (dataset, timeframe, session), symbols in sorted(by_file.items()):
        grouped.setdefault((dataset, timeframe, tuple(sorted(symbols))), []).append(session)
    flat: list[FlatFileWork] = [
        {"dataset": dataset, "timeframe": timeframe, "sessions": batch, "symbols": list(symbols)}
        for (dataset, timeframe, symbols), sessions in sorted(grouped.items())
        for batch in batch_sessions(sessions, max_instances=40)
    ]
    rest_work: list[RestWork] = [
        {
            "symbol": symbol,
            "dataset": asset_classes[symbol],
            "sessions": sessions,
            "patch_flatfile_sessions": True,
        }
        for symbol, sessions in sorted(rest.items())
    ]
    return flat, rest_work, routes


def evaluate(
    counts: Mapping[Key, Counts],
    vendor_empty: set[Key],
    asset_classes: Mapping[str, str],
    sessions: Sequence[SessionHours],
    settings: Settings,
    timeframes: Sequence[str] = SOURCE_TIMEFRAMES,
) -> list[Cell]:
    """Every (symbol, source timeframe, session) cell of the symbols and sessions, classified from its
    bar counts (cells without bars are absent from ``counts``) and the vendor-confirmed empty ones.
    ``timeframes``: the source timeframes to classify (the minute ones are what makes a symbol
    liquid, so a partial minute cell needs ``1m`` counted)."""
    coverages = {
        symbol: [
            coverage(
                counts.get((symbol, "1m", hours.session), NONE).regular, expected_bars(kind, "1m", hours)
            )
            for hours in sessions
        ]
        for symbol, kind in asset_classes.items()
    }
    liquid = liquid_symbols(coverages, asset_classes, settings)
    cells = []
    for symbol, asset_class in sorted(asset_classes.items()):
        for timeframe in timeframes:
            for hours in sessions:
                key = (symbol, timeframe, hours.session)
                got = counts.get(key, NONE)
                expected = expected_bars(asset_class, timeframe, hours)
                state = classify(
                    asset_class=asset_class,
                    timeframe=timeframe,
                    expected=expected,
                    found=got.regular,
                    total=got.total,
                    liquid=symbol in liquid,
                    vendor_has_none=key in vendor_empty,
                    settings=settings,
                )
                cells.append(
                    Cell(
                        symbol, asset_class, timeframe, hours.session, expected, got.regular, got.total, state
                    )
                )
    return cells
