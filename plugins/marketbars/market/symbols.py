"""Symbols: the asset classes, the ticker forms a user may ask for, and the all-symbols marker.

The warehouse stores the vendor's tickers exactly (the contract), so their forms are the project's
own vocabulary: ``AAPL``, ``I:SPX``, ``O:SPY251219C00650000``. Symbols are case-sensitive.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

# Also the flat-file datasets: one dataset per asset class.
ASSET_CLASSES: tuple[str, ...] = ("stocks", "indices", "options")
# Every symbol: a selection of every ticker in a source, or a statistic over all of a run's symbols.
# No ticker is "*".
ALL_SYMBOLS = "*"

TICKER_PATTERNS: dict[str, re.Pattern[str]] = {
    "stocks": re.compile(r"^[A-Z][A-Za-z0-9.]{0,11}$"),
    "indices": re.compile(r"^I:[A-Z0-9][A-Za-z0-9._^-]{0,23}$"),
    "options": re.compile(r"^O:[A-Z][A-Z0-9.]{0,5}\d{6}[CP]\d{8}$"),
}
TICKER_EXAMPLES = {"stocks": "AAPL, BRK.B", "indices": "I:SPX, I:VIX", "options": "O:SPY251219C00650000"}


def selects_all(symbols: Iterable[str]) -> bool:
    """True for the selection of every ticker (``["*"]``)."""
    return list(symbols) == [ALL_SYMBOLS]


def symbol_problems(asset_class: str, symbols: Iterable[str]) -> list[str]:
    """Human-readable problems with a symbol selection for an asset class; empty when it is valid."""
    symbols = list(symbols)
    if ALL_SYMBOLS in symbols:
        return [] if symbols == [ALL_SYMBOLS] else [f'"{ALL_SYMBOLS}" selects every ticker and must be alone']
    pattern = TICKER_PATTERNS[asset_class]
    problems = []
    for symbol in symbols:
        if not pattern.match(symbol):
            hint = (
                f" (did you mean {symbol.strip().upper()!r}?)"
                if pattern.match(symbol.strip().upper())
                else ""
            )
            problems.append(
                f"{symbol!r} is not in the vendor's {asset_class} ticker form "
                f"({TICKER_EXAMPLES[asset_class]}){hint}"
            )
    duplicates = sorted({s for s in symbols if symbols.count(s) > 1})
    if duplicates:
        problems.append(f"symbols listed more than once: {', '.join(duplicates)}")
    return problems


def asset_class_of(ticker: str) -> str:
    """The asset class a ticker belongs to, from its form."""
    return "indices" if ticker.startswith("I:") else "options" if ticker.startswith("O:") else "stocks"
