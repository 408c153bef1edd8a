"""Corporate actions in the project's own terms, and the rules that decide which records may be applied.

Splits, cash dividends and ticker changes arrive from the vendor's reference data, which has known
faults: the same split listed twice, two different ratios for one ticker and date, a ``split_from``
of 2,000,000, a ratio that says the opposite of its ``adjustment_type``. These rules are pure:
records in, the accepted ones and the rejected ones (each with its reason) out. A rejected record is
kept in quarantine and never applied; an exact duplicate collapses into the record it repeats.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Generic, TypeVar

from marketbars.market.symbols import TICKER_PATTERNS

KINDS = ("split", "dividend", "ticker_change")
ADJUSTMENTS = ("none", "splits", "total_return")  # market.bars_adjusted's adjust, backtest_run's adjustment
SPLIT_TYPES = ("forward_split", "reverse_split", "stock_dividend")
MAX_SPLIT_RATIO = Decimal(1000)  # 1:1000 .. 1000:1
DIVIDEND_CURRENCY = "USD"  # prices are in dollars: a dividend in another currency cannot adjust them
DISTRIBUTION_TYPES = ("recurring", "special", "supplemental", "irregular", "unknown")

Raw = Mapping[str, Any]  # the vendor's record as it arrived, kept with a rejection


@dataclass(frozen=True)
class Split:
    """``split_to`` new shares for ``split_from`` old ones; trading is split-adjusted from the
    execution date's pre-market on."""

    symbol: str
    execution_date: dt.date
    split_from: Decimal
    split_to: Decimal
    adjustment_type: str
    source_id: str
    vendor_factor: Decimal | None = None  # the vendor's historical_adjustment_factor
    raw: Raw = field(default_factory=dict, compare=False, repr=False)

    @property
    def day(self) -> dt.date:
        return self.execution_date

    @property
    def terms(self) -> tuple[Any, ...]:
        """What two records of one ticker and day must agree on to be the same split."""
        return (self.split_from / self.split_to, self.adjustment_type)

    def describe(self) -> str:
        return f"{self.split_to.normalize():f}-for-{self.split_from.normalize():f} {self.adjustment_type}"


@dataclass(frozen=True)
class Dividend:
    """A cash dividend per share, as declared (the vendor's amounts are not split-adjusted)."""

    symbol: str
    ex_dividend_date: dt.date
    cash_amount: Decimal
    currency: str
    distribution_type: str
    source_id: str
    declaration_date: dt.date | None = None
    record_date: dt.date | None = None
    pay_date: dt.date | None = None
    frequency: int | None = None
    vendor_factor: Decimal | None = None
    raw: Raw = field(default_factory=dict, compare=False, repr=False)

    @property
    def day(self) -> dt.date:
        return self.ex_dividend_date

    @property
    def terms(self) -> tuple[Any, ...]:
        return (self.cash_amount, self.currency)

    def describe(self) -> str:
        return f"{self.cash_amount.normalize():f} {self.currency} {self.distribution_type}"


@dataclass(frozen=True)
class TickerChange:
    """From ``valid_from`` on, the company (``composite_figi``) trades as ``ticker``."""

    composite_figi: str
    ticker: str
    valid_from: dt.date
    name: str | None = None
    raw: Raw = field(default_factory=dict, compare=False, repr=False)

    @property
    def symbol(self) -> str:
        return self.ticker

    @property
    def day(self) -> dt.date:
        return self.valid_from

    @property
    def terms(self) -> tuple[Any, ...]:
        return (self.ticker,)

    def describe(self) -> str:
        return f"ticker {self.ticker}"


@dataclass(frozen=True)
class Rejected:
    """A reference record that must not be applied, and why."""

    kind: str
    symbol: str
    day: dt.date | None
    reason: str
    raw: Raw
    source_id: str | None = None


Action = TypeVar("Action", Split, Dividend, TickerChange)


@dataclass
class Checked(Generic[Action]):
    """The outcome of checking one batch of records of one kind."""

    accepted: list[Action] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)
    collapsed: list[Action] = field(default_factory=list)  # exact repeats of a record kept or rejected


def split_problem(split: Split) -> str:
    """Why a split cannot be applied on its own terms; empty when it can."""
    if split.split_from <= 0 or split.split_to <= 0:
        return f"non-positive ratio {split.split_from}:{split.split_to}"
    ratio = split.split_to / split.split_from
    if not 1 / MAX_SPLIT_RATIO <= ratio <= MAX_SPLIT_RATIO:
        return (
            f"ratio {split.split_from}:{split.split_to} is outside 1:{MAX_SPLIT_RATIO}..{MAX_SPLIT_RATIO}:1"
        )
    if split.adjustment_type not in SPLIT_TYPES:
        return f"unknown adjustment_type {split.adjustment_type!r}"
    grows = split.adjustment_type != "reverse_split"  # forward splits and stock dividends add shares
    if (ratio > 1) != grows or ratio == 1:
        return (
            f"ratio {split.split_from}:{split.split_to} contradicts adjustment_type {split.adjustment_type}"
            f" ({'more' if grows else 'fewer'} shares after it)"
        )
    return ""


def dividend_problem(dividend: Dividend) -> str:
    """Why a cash dividend cannot be applied; empty when it can."""
    if dividend.cash_amount <= 0:
        return f"non-positive cash amount {dividend.cash_amount}"
    if dividend.currency != DIVIDEND_CURRENCY:
        return f"paid in {dividend.currency or 'no currency'}, not {DIVIDEND_CURRENCY}"
    return ""


def ticker_change_problem(change: TickerChange) -> str:
    if not TICKER_PATTERNS["stocks"].fullmatch(change.ticker):
        return f"ticker {change.ticker!r} is not a stock ticker"
    return ""


def check_splits(splits: Iterable[Split]) -> Checked[Split]:
    """Accept the splits that can be applied: valid on their own, and alone on their ticker and day."""
    return _check(splits, "split", split_problem, key=lambda s: (s.symbol, s.execution_date))


def check_dividends(dividends: Iterable[Dividend]) -> Checked[Dividend]:
    """Accept the dividends that can be applied. A regular and a special dividend may share an ex-date;
    two amounts for one ticker, ex-date and distribution type conflict."""
    return _check(
        dividends,
        "dividend",
        dividend_problem,
        key=lambda d: (d.symbol, d.ex_dividend_date, d.distribution_type),
    )


def check_ticker_changes(changes: Iterable[TickerChange]) -> Checked[TickerChange]:
    """Accept a company's ticker history: one ticker per company and day."""
    return _check(
        changes, "ticker_change", ticker_change_problem, key=lambda c: (c.composite_figi, c.valid_from)
    )


def _check(
    records: Iterable[Action], kind: str, problem: Callable[[Action], str], key: Callable[[Action], Hashable]
) -> Checked[Action]:
    """Reject records invalid on their own; collapse exact repeats; reject every record of a ticker
    and day whose valid records disagree (which one is right cannot be known)."""
    out: Checked[Action] = Checked()
    groups: dict[Hashable, dict[tuple[Any, ...], list[Action]]] = {}
    for record in records:
        reason = problem(record)
        if reason:
            out.rejected.append(_rejected(kind, record, reason))
        else:
            groups.setdefault(key(record), {}).setdefault(record.terms, []).append(record)
    for variants in groups.values():
        ordered = [sorted(same, key=_identity) for same in variants.values()]
        firsts = [same[0] for same in ordered]
        out.collapsed.extend(record for same in ordered for record in same[1:])
        if len(firsts) == 1:
            out.accepted.append(firsts[0])
            continue
        described = "; ".join(
            f"{r.describe()} ({_identity(r) or 'no id'})" for r in sorted(firsts, key=_identity)
        )
        for record in firsts:
            out.rejected.append(
                _rejected(
                    kind, record, f"conflicting records for {record.symbol} on {record.day}: {described}"
                )
            )
    out.accepted.sort(key=lambda r: (r.symbol, r.day))
    return out


def _identity(record: Split | Dividend | TickerChange) -> str:
    return getattr(record, "source_id", "") or ""


def _rejected(kind: str, record: Split | Dividend | TickerChange, reason: str) -> Rejected:
    return Rejected(kind, record.symbol, record.day, reason, record.raw, _identity(record) or None)


def renamed_to(history: Sequence[TickerChange], ticker: str) -> TickerChange | None:
    """The company's current ticker when it is no longer ``ticker`` (which it once had); None when
    ``ticker`` is still current or not in the history at all."""
    if not history:
        return None
    latest = max(history, key=lambda c: c.valid_from)
    if latest.ticker == ticker or all(c.ticker != ticker for c in history):
        return None
    return latest


def asked_for(
    records: Iterable[Action], symbols: Iterable[str], first: dt.date | None, last: dt.date | None
) -> tuple[list[Action], list[Action]]:
    """(records of the symbols within first..last, the others): a query's answer replaces what it
    covered, so a record it did not ask for is never written."""
    wanted = set(symbols)
    kept: list[Action] = []
    strays: list[Action] = []
    for record in records:
        inside = (first is None or record.day >= first) and (last is None or record.day <= last)
        (kept if record.symbol in wanted and inside else strays).append(record)
    return kept, strays
