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

# A ticker must match its form whole (fullmatch: "$" would also match before a final newline).
TICKER_PATTERNS: dict[str, re.Pattern[str]] = {
    "stocks": re.compile(r"[A-Z][A-Za-z0-9.]{0,11}"),
    "indices": re.compile(r"I:[A-Z0-9][A-Za-z0-9._^-]{0,23}"),
    "options": re.compile(r"O:[A-Z][A-Z0-9.]{0,5}\d{6}[CP]\d{8}"),
}
TICKER_EXAMPLES = {"stocks": "AAPL, BRK.B", "indices": "I:SPX, I:VIX", "options": "O:SPY251219C00650000"}
# The most symbols one run takes by name: beyond it, every ticker ("*") is the way.
MAX_SYMBOLS = 500


def selects_all(symbols: Iterable[str]) -> bool:
    """True for the selection of every ticker (``["*"]``)."""
    return list(symbols) == [ALL_SYMBOLS]


def symbol_problems(
    asset_class: str | None, symbols: Iterable[str], *, every_ticker: bool = True
) -> list[str]:
    """Human-readable problems with a symbol selection; empty when it is valid. Each ticker must
    match the form of ``asset_class`` whole, or, when it is None, the form its own prefix says.
    ``every_ticker``: whether ``["*"]`` (every ticker in a source) is a selection here."""
    symbols = list(symbols)
    if ALL_SYMBOLS in symbols:
        if not every_ticker:
            return [f'"{ALL_SYMBOLS}" (every ticker) is not a selection here: name the tickers, or none']
        return [] if symbols == [ALL_SYMBOLS] else [f'"{ALL_SYMBOLS}" selects every ticker and must be alone']
    problems = [
        p for symbol in symbols if (p := _form_problem(asset_class or asset_class_of(symbol), symbol))
    ]
    duplicates = sorted({s for s in symbols if symbols.count(s) > 1})
    if duplicates:
        problems.append(f"symbols listed more than once: {', '.join(duplicates)}")
    if len(symbols) > MAX_SYMBOLS:
        more = f'; ["{ALL_SYMBOLS}"] selects every ticker' if every_ticker else ""
        problems.append(f"{len(symbols)} symbols: one run takes at most {MAX_SYMBOLS}{more}")
    return problems


def _form_problem(asset_class: str, symbol: str) -> str:
    pattern = TICKER_PATTERNS[asset_class]
    if pattern.fullmatch(symbol):
        return ""
    guess = symbol.strip().upper()
    hint = f" (did you mean {guess!r}?)" if pattern.fullmatch(guess) else ""
    return (
        f"{symbol!r} is not in the vendor's {asset_class} ticker form ({TICKER_EXAMPLES[asset_class]}){hint}"
    )


def asset_class_of(ticker: str) -> str:
    """The asset class a ticker belongs to, from its form."""
    return "indices" if ticker.startswith("I:") else "options" if ticker.startswith("O:") else "stocks"
