"""The vendor's flat-file layout: datasets, object keys, exact headers and ticker forms."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable

DATASETS = ("stocks", "indices", "options")
TIMEFRAMES = ("1m", "1d")

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

# The vendor's ticker forms. Symbols are case-sensitive and stored exactly as the vendor spells them.
TICKER_PATTERNS: dict[str, re.Pattern[str]] = {
    "stocks": re.compile(r"^[A-Z][A-Za-z0-9.]{0,11}$"),
    "indices": re.compile(r"^I:[A-Z0-9][A-Za-z0-9._^-]{0,23}$"),
    "options": re.compile(r"^O:[A-Z][A-Z0-9.]{0,5}\d{6}[CP]\d{8}$"),
}
TICKER_EXAMPLES = {"stocks": "AAPL, BRK.B", "indices": "I:SPX, I:VIX", "options": "O:SPY251219C00650000"}
ALL_TICKERS = "*"


def check_dataset(dataset: str, timeframe: str) -> None:
    """Raise ValueError naming the allowed values when a dataset or timeframe is unknown."""
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}: expected one of {', '.join(DATASETS)}")
    if timeframe not in TIMEFRAMES:
        raise ValueError(f"unknown timeframe {timeframe!r}: flat files exist for {', '.join(TIMEFRAMES)}")


def object_key(dataset: str, timeframe: str, session: dt.date) -> str:
    """The S3 key of one trading day's file, e.g. us_stocks_sip/minute_aggs_v1/2024/03/2024-03-05.csv.gz."""
    check_dataset(dataset, timeframe)
    prefix = _PREFIXES[(dataset, timeframe)]
    return f"{prefix}/{session:%Y}/{session:%m}/{session.isoformat()}.csv.gz"


def symbol_problems(dataset: str, symbols: Iterable[str]) -> list[str]:
    """Human-readable problems with a symbol selection for a dataset; empty when it is valid."""
    symbols = list(symbols)
    if ALL_TICKERS in symbols:
        return [] if symbols == [ALL_TICKERS] else [f'"{ALL_TICKERS}" selects every ticker and must be alone']
    pattern = TICKER_PATTERNS[dataset]
    problems = []
    for symbol in symbols:
        if not pattern.match(symbol):
            hint = (
                f" (did you mean {symbol.strip().upper()!r}?)"
                if pattern.match(symbol.strip().upper())
                else ""
            )
            problems.append(
                f"{symbol!r} is not in the vendor's {dataset} ticker form ({TICKER_EXAMPLES[dataset]}){hint}"
            )
    duplicates = sorted({s for s in symbols if symbols.count(s) > 1})
    if duplicates:
        problems.append(f"symbols listed more than once: {', '.join(duplicates)}")
    return problems


def dataset_of(ticker: str) -> str:
    """The dataset a vendor ticker belongs to, from its form."""
    return "indices" if ticker.startswith("I:") else "options" if ticker.startswith("O:") else "stocks"
