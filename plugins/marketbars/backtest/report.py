"""A backtest run's report folder: ``summary.json``, ``metrics.csv`` (one row per detector and
symbol, spreadsheet-friendly), ``trades.parquet`` (every trade, typed and compressed: a universe run
makes millions) and ``equity.png`` (every detector's curve); and the ranking of the detectors with the
ones below the thresholds flagged."""

from __future__ import annotations

import csv
import datetime as dt
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from marketbars.backtest.metrics import equity_curve
from marketbars.backtest.trades import Trades, repeated, to_arrow
from marketbars.market.symbols import ALL_SYMBOLS


@dataclass(frozen=True)
class Thresholds:
    """A detector is flagged when it traded fewer than ``min_trades`` times, or its profit factor
    or its expectancy in R is below these."""

    min_trades: int = 30
    min_profit_factor: float = 1.2
    min_expectancy_r: float = 0.0


def _number(value: Any) -> float:
    return -math.inf if value is None else float(value)


def rank(metrics: Sequence[Mapping[str, Any]], thresholds: Thresholds) -> list[dict[str, Any]]:
    """The detectors' all-symbol rows, best first: by expectancy in R, then profit factor, then
    trade count; each with the reasons it is flagged (empty when it passes)."""
    rows = [m for m in metrics if m["symbol"] == ALL_SYMBOLS]
    ordered = sorted(
        rows,
        key=lambda m: (
            -_number(m["expectancy_r"]),
            -_number(m["profit_factor"]),
            -m["trades"],
            m["detector"],
        ),
    )
    ranked = []
    for place, m in enumerate(ordered, start=1):
        flags = []
        if m["trades"] < thresholds.min_trades:
            flags.append(f"only {m['trades']} trades (< {thresholds.min_trades})")
        if m["trades"] and _number(m["profit_factor"]) < thresholds.min_profit_factor:
            flags.append(f"profit factor {_fmt(m['profit_factor'])} < {thresholds.min_profit_factor}")
        if m["trades"] and _number(m["expectancy_r"]) < thresholds.min_expectancy_r:
            flags.append(f"expectancy {_fmt(m['expectancy_r'])}R < {thresholds.min_expectancy_r}R")
        ranked.append(
            {
                "rank": place,
                "detector": m["detector"],
                "trades": m["trades"],
                "win_rate": m["win_rate"],
                "expectancy": m["expectancy"],
                "expectancy_r": m["expectancy_r"],
                "profit_factor": m["profit_factor"],
                "net_pnl": m["net_pnl"],
                "flags": flags,
            }
        )
    return ranked


def ranking_lines(ranked: Sequence[Mapping[str, Any]]) -> list[str]:
    """The ranking as aligned lines for the task log."""
    lines = [
        f"{'#':>2}  {'detector':<28} {'trades':>6} {'win%':>6} {'exp $':>10} {'exp R':>7} {'PF':>6}  flags"
    ]
    for r in ranked:
        win = "-" if r["win_rate"] is None else f"{100 * r['win_rate']:.1f}"
        lines.append(
            f"{r['rank']:>2}  {r['detector']:<28} {r['trades']:>6} {win:>6} {_fmt(r['expectancy'], 2):>10} "
            f"{_fmt(r['expectancy_r']):>7} {_fmt(r['profit_factor']):>6}  {'; '.join(r['flags']) or 'ok'}"
        )
    return lines


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and math.isinf(value):
        return "inf"
    return f"{value:.{digits}f}"


def json_value(value: Any) -> Any:
    """JSON has no infinity nor NaN: an infinite profit factor (wins and no loss) is written as
    "inf", an undefined number as null; dates and times as ISO 8601."""
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dt.date | dt.datetime):
        return value.isoformat()
    return value


def json_safe(value: Any) -> Any:
    """``json_value`` through nested mappings and lists: what summary.json and the Market data
    view's API write."""
    if isinstance(value, Mapping):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return json_value(value)


def write_summary(path: Path, summary: Mapping[str, Any]) -> Path:
    path.write_text(json.dumps(json_safe(summary), indent=2, sort_keys=False) + "\n")
    return path


def write_metrics_csv(path: Path, metrics: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> Path:
    """One row per detector and symbol; empty cells where a statistic is undefined, "inf" for an
    infinite profit factor."""
    with path.open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(columns)
        for m in metrics:
            writer.writerow(["" if m[c] is None else json_value(m[c]) for c in columns])
    return path


class TradesFile:
    """``trades.parquet``: every trade of the run with its detector, one row group per detector,
    written as each detector's trades are read (the report holds one detector's at a time)."""

    def __init__(self, path: Path) -> None:
        import pyarrow.parquet as pq

        self._writer = pq.ParquetWriter(
            path,
            self._table("", Trades.empty()).schema,
            compression="snappy",  # zstd is 20 % smaller and twice as slow to write: prices barely compress
            use_dictionary=["detector", "symbol", "exit_reason"],
        )
        self.rows = 0

    @staticmethod
    def _table(detector: str, trades: Trades) -> pa.Table:
        return pa.table({"detector": repeated(detector, len(trades)), **to_arrow(trades)})

    def write(self, detector: str, trades: Trades) -> None:
        if len(trades):
            self._writer.write_table(self._table(detector, trades))
            self.rows += len(trades)

    def __enter__(self) -> TradesFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self._writer.close()


@dataclass(frozen=True)
class EquityCurve:
    """A detector's realised equity as drawn: its return on capital (percent) after closed trades,
    in exit order, cut to its envelope (``envelope``); ``trades`` counts them all."""

    times: np.ndarray  # exit times, epoch microseconds
    returns: np.ndarray
    trades: int
    capital: float

    @classmethod
    def of(cls, exit_ts: np.ndarray, pnl: np.ndarray, capital: float) -> EquityCurve:
        """From trades' exit times and net P&L in ``Trades.in_trade_order``, against ``capital``."""
        returns = (equity_curve(pnl, capital)[1:] / capital - 1) * 100
        times, kept = envelope(exit_ts, returns)
        return cls(times, kept, len(pnl), capital)


def equity_figure(path: Path, curves: Mapping[str, EquityCurve], subtitle: str) -> Path:
    """Every detector's realised equity in one figure: its return on its capital (the capital of the
    symbols it traded) after each closed trade, in exit order."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(11, 6))  # fixed margins: a layout engine would draw the figure twice
    axes = figure.subplots()
    figure.subplots_adjust(left=0.07, right=0.98, top=0.91, bottom=0.13)
    colours = _palette(len(curves))
    for (detector, curve), colour in zip(sorted(curves.items()), colours, strict=True):
        if not curve.trades:
            continue
        axes.step(
            curve.times.astype("datetime64[us]"),
            curve.returns,
            where="post",
            color=colour,
            linewidth=1.0,
            label=f"{detector} ({curve.trades})",
        )
    axes.axhline(0, color="#9e9e9e", linewidth=0.8, linestyle="--")
    axes.set_title(f"Realised equity by detector (trades)\n{subtitle}", fontsize=10)
    axes.set_ylabel("return on capital (%)")
    if axes.get_legend_handles_labels()[0]:
        axes.legend(fontsize=7, ncols=2, loc="upper left")
    else:
        axes.text(0.5, 0.5, "no trades", ha="center", va="center", transform=axes.transAxes)
    figure.autofmt_xdate()
    figure.savefig(path, dpi=100)
    return path


ENVELOPE_BUCKETS = 1_000  # about one per pixel column of the figure (1,100 wide); its min and max kept


def envelope(
    times: np.ndarray, values: np.ndarray, buckets: int = ENVELOPE_BUCKETS
) -> tuple[np.ndarray, np.ndarray]:
    """A long curve cut to what a figure can show: of each of ``buckets`` runs of consecutive
    points, its first, lowest, highest and last, in time order (every peak and trough stays drawn;
    a run is narrower than a pixel). A curve of few points comes back whole."""
    count = len(values)
    if count <= 4 * buckets:
        return times, values
    edges = np.linspace(0, count, buckets + 1).astype(np.int64)
    run = np.repeat(np.arange(buckets), np.diff(edges))
    by_value = np.lexsort((values, run))  # each run's points, lowest first
    keep = np.unique(
        np.concatenate((edges[:-1], edges[1:] - 1, by_value[edges[:-1]], by_value[edges[1:] - 1]))
    )
    return times[keep], values[keep]


def _palette(count: int) -> list[Any]:
    from matplotlib import colormaps

    tab20 = colormaps["tab20"]
    return [tab20(i % tab20.N) for i in range(count)]


def search_heatmap(path: Path, detector: str, ranking: Sequence[Mapping[str, Any]], subtitle: str) -> Path:
    """The search's out-of-sample expectancy (R a trade) over its first two searched parameters (the
    best over any others); one row when it searched one. Cells without trades are blank."""
    from matplotlib.figure import Figure

    varied = (
        sorted(name for name in ranking[0]["parameters"] if len({r["parameters"][name] for r in ranking}) > 1)
        or sorted(ranking[0]["parameters"])[:1]
    )
    x_name, y_name = varied[0], (varied[1] if len(varied) > 1 else None)
    xs = sorted({r["parameters"][x_name] for r in ranking})
    ys = sorted({r["parameters"][y_name] for r in ranking}) if y_name else [0.0]
    grid = np.full((len(ys), len(xs)), np.nan)
    for r in ranking:
        value = r["out_of_sample"]["expectancy_r"]
        row, col = ys.index(r["parameters"][y_name]) if y_name else 0, xs.index(r["parameters"][x_name])
        if value is not None and not value <= grid[row, col]:
            grid[row, col] = value
    figure = Figure(figsize=(max(4.0, 1.0 + 0.9 * len(xs)), max(2.5, 1.5 + 0.6 * len(ys))))
    axes = figure.subplots()
    figure.subplots_adjust(left=0.16, right=0.88, top=0.82, bottom=0.2)
    limit = float(np.nanmax(np.abs(grid))) if np.isfinite(grid).any() else 1.0
    image = axes.imshow(grid, cmap="RdYlGn", vmin=-limit, vmax=limit, aspect="auto", origin="lower")
    for (row, col), value in np.ndenumerate(grid):
        if np.isfinite(value):
            axes.text(col, row, f"{value:.2f}", ha="center", va="center", fontsize=8)
    axes.set_xticks(range(len(xs)), [f"{x:g}" for x in xs])
    axes.set_yticks(range(len(ys)), [f"{y:g}" for y in ys] if y_name else [""])
    axes.set_xlabel(x_name)
    axes.set_ylabel(y_name or "")
    axes.set_title(f"{detector}: out-of-sample expectancy (R)\n{subtitle}", fontsize=9)
    figure.colorbar(image, ax=axes)
    figure.savefig(path, dpi=100)
    return path
