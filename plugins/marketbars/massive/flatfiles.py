"""The vendor's flat-file layout: the bucket, object keys by dataset and timeframe, exact headers."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

from marketbars.market.symbols import ASSET_CLASSES
from marketbars.market.timeframes import SOURCE_TIMEFRAMES

DEFAULT_BUCKET = "flatfiles"

_PREFIXES = {
    ("stocks", "1m"): "us_stocks_sip/minute_aggs_v1",
    ("stocks", "1d"): "us_stocks_sip/day_aggs_v1",
    ("options", "1m"): "us_options_opra/minute_aggs_v1",
    ("options", "1d"): "us_options_opra/day_aggs_v1",
    ("indices", "1m"): "us_indices/minute_aggs_v1",
    ("indices", "1d"): "us_indices/day_aggs_v1",
}

_TRADED_HEADER = ("ticker", "volume", "open", "close", "high", "low", "window_start", "transactions")
# Exact headers, in file order. Indices carry no volume and no transactions.
HEADERS: dict[str, tuple[str, ...]] = {
    "stocks": _TRADED_HEADER,
    "options": _TRADED_HEADER,
    "indices": ("ticker", "open", "close", "high", "low", "window_start"),
}


def check_dataset(dataset: str, timeframe: str) -> None:
    """Raise ValueError naming the allowed values when a dataset or timeframe is unknown."""
    if dataset not in ASSET_CLASSES:
        raise ValueError(f"unknown dataset {dataset!r}: expected one of {', '.join(ASSET_CLASSES)}")
    if timeframe not in SOURCE_TIMEFRAMES:
        raise ValueError(
            f"unknown timeframe {timeframe!r}: flat files exist for {', '.join(SOURCE_TIMEFRAMES)}"
        )


def object_key(dataset: str, timeframe: str, session: dt.date) -> str:
    """The S3 key of one trading day's file, e.g. us_stocks_sip/minute_aggs_v1/2024/03/2024-03-05.csv.gz."""
    check_dataset(dataset, timeframe)
    prefix = _PREFIXES[(dataset, timeframe)]
    return f"{prefix}/{session:%Y}/{session:%m}/{session.isoformat()}.csv.gz"


def month_prefixes(datasets: Iterable[str], sessions: Iterable[dt.date]) -> list[str]:
    """The key prefixes of every month of these sessions, for every dataset and timeframe: one LIST
    each (1,000 keys a page) instead of a HEAD per session."""
    months = sorted({(day.year, day.month) for day in sessions})
    return [
        object_key(dataset, timeframe, dt.date(year, month, 1)).rsplit("/", 1)[0] + "/"
        for dataset in sorted(set(datasets))
        for timeframe in SOURCE_TIMEFRAMES
        for year, month in months
    ]
