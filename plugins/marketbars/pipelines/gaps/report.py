"""The completeness report of a gap run: a JSON audit and a symbol x session heatmap a person can read
at a glance."""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from marketbars.market.timeframes import SOURCE_TIMEFRAMES
from marketbars.pipelines.gaps.rules import STATES, Cell

COLOURS = {"complete": "#2e7d32", "partial": "#f9a825", "missing": "#c62828", "no_trading": "#9e9e9e"}


def states_by_timeframe(cells: Sequence[Cell]) -> dict[str, dict[str, int]]:
    """Cells per state, per timeframe: the run's one-line verdict."""
    return {
        tf: {state: sum(1 for c in cells if c.timeframe == tf and c.state == state) for state in STATES}
        for tf in SOURCE_TIMEFRAMES
    }


def audit(run_date: dt.date, cells: Sequence[Cell], gap_events: Mapping[str, Any]) -> dict[str, Any]:
    by_timeframe: dict[str, Counter[str]] = {}
    for cell in cells:
        by_timeframe.setdefault(cell.timeframe, Counter())[cell.state] += 1
    days = sorted({c.session for c in cells})
    return {
        "run_date": run_date.isoformat(),
        "window": {"first": days[0].isoformat(), "last": days[-1].isoformat()} if days else None,
        "symbols": sorted({c.symbol for c in cells}),
        "summary": {
            tf: {state: counts.get(state, 0) for state in STATES} for tf, counts in by_timeframe.items()
        },
        "gaps": dict(gap_events),
        "cells": [c.to_json() for c in cells],
    }


def heatmap(path: Path, run_date: dt.date, cells: Sequence[Cell]) -> Path:
    """Symbols down, sessions across, one panel per timeframe, coloured by state."""
    from matplotlib.colors import ListedColormap
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    symbols = sorted({c.symbol for c in cells})
    days = sorted({c.session for c in cells})
    timeframes = [tf for tf in SOURCE_TIMEFRAMES if any(c.timeframe == tf for c in cells)]
    index = {state: i for i, state in enumerate(STATES)}
    figure = Figure(figsize=(max(8.0, 0.32 * len(days) + 3), 0.28 * len(symbols) * len(timeframes) + 2.2))
    axes = figure.subplots(len(timeframes), 1, squeeze=False)[:, 0]
    colours = ListedColormap([COLOURS[s] for s in STATES])
    for ax, timeframe in zip(axes, timeframes, strict=True):
        grid = [[index["missing"]] * len(days) for _ in symbols]
        for cell in cells:
            if cell.timeframe == timeframe:
                grid[symbols.index(cell.symbol)][days.index(cell.session)] = index[cell.state]
        ax.imshow(
            grid, cmap=colours, vmin=-0.5, vmax=len(STATES) - 0.5, aspect="auto", interpolation="nearest"
        )
        ax.set_yticks(range(len(symbols)), symbols, fontsize=7)
        step = max(1, len(days) // 25)
        ax.set_xticks(
            range(0, len(days), step), [d.strftime("%m-%d") for d in days[::step]], fontsize=7, rotation=90
        )
        counts = Counter(c.state for c in cells if c.timeframe == timeframe)
        ax.set_title(f"{timeframe}: " + ", ".join(f"{counts.get(s, 0)} {s}" for s in STATES), fontsize=9)
    figure.legend(
        handles=[Patch(color=COLOURS[s], label=s) for s in STATES],
        loc="lower center",
        ncol=len(STATES),
        fontsize=8,
    )
    figure.suptitle(f"Completeness against the XNYS calendar, run of {run_date}", fontsize=10)
    figure.tight_layout(rect=(0, 0.05, 1, 0.97))
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    return path


def write(
    directory: Path, run_date: dt.date, cells: Sequence[Cell], gap_events: Mapping[str, Any]
) -> list[Path]:
    """completeness.json and completeness.png under directory/<run date>/; returns their paths."""
    folder = directory / run_date.isoformat()
    folder.mkdir(parents=True, exist_ok=True)
    report = folder / "completeness.json"
    report.write_text(json.dumps(audit(run_date, cells, gap_events), indent=1))
    return [report, heatmap(folder / "completeness.png", run_date, cells)]
