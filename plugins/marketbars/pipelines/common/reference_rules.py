"""Rules for fetching corporate actions: which tickers, over which window, in which batches, and what a
run's results say. Pure: values in, values out."""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Mapping, Sequence
from typing import Any, TypedDict

from marketbars.massive.reference import TICKERS_PER_REQUEST


class ReferenceWork(TypedDict):
    """One ``corporate_actions`` instance: a batch of tickers over one window (ISO dates; None: open)."""

    symbols: list[str]
    first: str | None
    last: str | None
    ticker_events: list[str]


def plan_work(
    symbols: Sequence[str],
    *,
    whole_history: Collection[str],
    events_due: Collection[str],
    first: dt.date | None,
    last: dt.date | None = None,
) -> list[ReferenceWork]:
    """Batches of at most ``TICKERS_PER_REQUEST`` tickers: those in ``whole_history`` over their
    whole history, the others over first..last; each batch refreshes the ticker histories due."""
    whole = sorted(s for s in set(symbols) if s in whole_history or first is None)
    windowed = sorted(set(symbols) - set(whole))
    work: list[ReferenceWork] = []
    for group, start, end in ((whole, None, None), (windowed, first, last)):
        for i in range(0, len(group), TICKERS_PER_REQUEST):
            batch = group[i : i + TICKERS_PER_REQUEST]
            work.append(
                {
                    "symbols": batch,
                    "first": start.isoformat() if start else None,
                    "last": end.isoformat() if end else None,
                    "ticker_events": [s for s in batch if s in events_due],
                }
            )
    return work


def label(work: Mapping[str, Any]) -> str:
    """How the grid names an instance: its tickers and window."""
    symbols = work["symbols"]
    names = symbols[0] if len(symbols) == 1 else f"{symbols[0]}..{symbols[-1]}"
    return f"{names} {work['first'] or 'all'}..{work['last'] or ''}".rstrip(".")


def summary_lines(planned: Sequence[Mapping[str, Any]], results: Sequence[Mapping[str, Any]]) -> list[str]:
    """Totals of a run's fetches and its renames; nothing when nothing was planned (the planning task
    said why)."""
    if not planned:
        return []
    totals = {kind: {"accepted": 0, "quarantined": 0, "duplicates": 0} for kind in ("split", "dividend")}
    renames: list[str] = []
    differences = 0
    for result in results:
        for kind, counts in totals.items():
            for name in counts:
                counts[name] += int(result.get(kind, {}).get(name, 0))
        renames += [f"{r['from']} -> {r['to']} on {r['on']}" for r in result.get("renames", [])]
        differences += int(result.get("factor_differences", 0))
    tickers = sum(len(w["symbols"]) for w in planned)
    described = "".join(
        f" {kind}s {c['accepted']} stored, {c['quarantined']} quarantined,"
        f" {c['duplicates']} repeats collapsed;"
        for kind, c in totals.items()
    )
    lines = [
        f"corporate actions of {tickers} ticker(s) in {len(planned)} batch(es):{described}"
        f" {differences} factor(s) differ from the vendor's"
        + (" (each one is in its corporate_actions task's log)" if differences else "")
    ]
    if renames:
        lines.append("renamed: " + ", ".join(renames))
    return lines


def missing(planned: Sequence[Mapping[str, Any]], results: Sequence[Mapping[str, Any]]) -> list[str]:
    """The planned batches (labels) without a result: their task failed."""
    done = {tuple(r["symbols"]) for r in results}
    return [label(w) for w in planned if tuple(sorted(w["symbols"])) not in done]
