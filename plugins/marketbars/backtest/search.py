"""Walk-forward parameter search, pure: the points searched, the folds, each point's results per
segment of the window, and the verdict judged out of sample.

The window's sessions are cut into ``folds + 1`` contiguous segments. Fold i trains on segment i and
tests on segment i + 1 (rolling walk-forward). Every point is simulated on each segment alone: its
bars end with the segment's last session (nothing later is in memory) and it trades from the
segment's first session (earlier bars are warm-up only), so no test bar ever reaches a training
result. A segment's tallies add up across symbol batches exactly (counts and sums of trades).
"""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from marketbars.backtest.bars import Bars
from marketbars.backtest.detectors import Detector
from marketbars.backtest.engine import Settings, simulate
from marketbars.backtest.trades import Trades

MAX_POINTS = 500  # one search's points, whatever it asks for
# In-sample expectancy this many times the out-of-sample one (or an out-of-sample loss) is a wide
# margin: the winners fit the training data's noise.
OVERFIT_RATIO = 2.0


@dataclass(frozen=True)
class Segment:
    first: dt.date
    last: dt.date

    def to_json(self) -> list[str]:
        return [self.first.isoformat(), self.last.isoformat()]

    @classmethod
    def of_json(cls, pair: Sequence[str]) -> Segment:
        return cls(dt.date.fromisoformat(pair[0]), dt.date.fromisoformat(pair[1]))


@dataclass
class Tally:
    """A point's trades on one segment, as counts and sums (they add across batches exactly)."""

    trades: int = 0
    wins: int = 0
    sum_r: float = 0.0
    sum_pnl: float = 0.0

    @classmethod
    def of(cls, trades: Trades) -> Tally:
        return cls(
            len(trades),
            int(np.count_nonzero(trades.net_pnl > 0)),
            float(trades.r_multiple.sum()),
            float(trades.net_pnl.sum()),
        )

    def __add__(self, other: Tally) -> Tally:
        return Tally(
            self.trades + other.trades,
            self.wins + other.wins,
            self.sum_r + other.sum_r,
            self.sum_pnl + other.sum_pnl,
        )

    @property
    def expectancy_r(self) -> float | None:
        return self.sum_r / self.trades if self.trades else None

    def to_json(self) -> dict[str, Any]:
        win_rate = self.wins / self.trades if self.trades else None
        return {"trades": self.trades, "win_rate": win_rate, "expectancy_r": self.expectancy_r,
                "net_pnl": self.sum_pnl}  # fmt: skip


def points(
    detector: Detector,
    ranges: Mapping[str, Sequence[float]],
    *,
    sample: int = 0,
    seed: int = 0,
    max_points: int = MAX_POINTS,
) -> list[dict[str, float]]:
    """The points searched: every combination of ``ranges`` (parameter -> values), or a seeded
    random sample of ``sample`` of them; each a full parameter set (defaults for the rest). The
    same seed gives the same points. ValueError names a bad parameter or too many points."""
    if not ranges:
        raise ValueError(f"search of {detector.name}: give at least one parameter and its values")
    names = sorted(ranges)
    for name in names:
        values = ranges[name]
        if not isinstance(values, Sequence) or isinstance(values, str) or not values:
            raise ValueError(f"search of {detector.name}: {name} needs a list of values, not {values!r}")
    grid = [dict(zip(names, combo, strict=True)) for combo in itertools.product(*(ranges[n] for n in names))]
    if sample > 0 and sample < len(grid):
        chosen = np.random.default_rng(seed).choice(len(grid), size=sample, replace=False)
        grid = [grid[i] for i in sorted(chosen.tolist())]
    cap = min(max_points, MAX_POINTS)
    if len(grid) > cap:
        raise ValueError(
            f"search of {detector.name}: {len(grid)} points is more than {cap}; narrow the ranges or"
            " sample some (sample, seed)"
        )
    return [detector.parameters(point) for point in grid]


def segments(sessions: Sequence[dt.date], folds: int) -> list[Segment]:
    """``folds + 1`` contiguous segments of the sessions, as equal as they can be."""
    if folds < 1:
        raise ValueError(f"folds={folds}: a walk-forward search needs at least one fold")
    count = folds + 1
    if len(sessions) < 2 * count:
        raise ValueError(
            f"{len(sessions)} sessions are too few for {folds} folds (two sessions a segment at least)"
        )
    edges = np.linspace(0, len(sessions), count + 1).round().astype(int)
    return [Segment(sessions[lo], sessions[hi - 1]) for lo, hi in itertools.pairwise(edges.tolist())]


def evaluate(
    detector: Detector,
    params: Mapping[str, float],
    settings: Settings,
    bars: Bars,
    parts: Sequence[Segment],
    warmup_start: Callable[[dt.date], dt.date],
) -> list[Tally]:
    """One point on one symbol, each segment on its own: the bars from the segment's warm-up to its
    last session (no later bar), trading from its first session."""
    tallies = []
    for part in parts:
        view = bars.since(warmup_start(part.first)).until(part.last)
        start = view.first_index_on_or_after(part.first)
        if start >= len(view):
            tallies.append(Tally())
            continue
        outcome = simulate(
            view,
            detector.signals(view, params),
            detector.side,
            settings,
            start=start,
            intraday=detector.intraday,
        )
        tallies.append(Tally.of(outcome.trades))
    return tallies


@dataclass
class Verdict:
    """The search judged out of sample."""

    ranking: list[dict[str, Any]]  # every point, best out-of-sample expectancy first
    folds: list[dict[str, Any]]  # per fold: the point training chose, and how it did in its test
    walk_forward: Tally  # the chosen points' test segments together: the honest figure
    chosen_in_sample: Tally  # the same points on the segments that chose them
    warnings: list[str] = field(default_factory=list)


def judge(
    searched: Sequence[Mapping[str, float]], tallies: Sequence[Sequence[Tally]], parts: Sequence[Segment]
) -> Verdict:
    """Rank every point by its out-of-sample expectancy (R) over the test segments (1..k), its
    in-sample one (0..k-1) beside it; pick each fold's point by its training segment alone, and
    warn when in-sample beats out-of-sample by a wide margin. ``tallies[point][segment]``."""
    k = len(parts) - 1
    rows: list[dict[str, Any]] = []
    for index, (point, per_segment) in enumerate(zip(searched, tallies, strict=True)):
        in_sample, out_of_sample = _total(per_segment[:k]), _total(per_segment[1:])
        rows.append({"point": index, "parameters": dict(point), "in_sample": in_sample.to_json(),
                     "out_of_sample": out_of_sample.to_json()})  # fmt: skip
    rows.sort(
        key=lambda r: (r["out_of_sample"]["expectancy_r"] is None, -(r["out_of_sample"]["expectancy_r"] or 0))
    )
    folds, walk_forward, chosen_in_sample = [], Tally(), Tally()
    for fold in range(k):
        best = max(range(len(searched)), key=lambda i: (_score(tallies[i][fold]), -i))
        train, test = tallies[best][fold], tallies[best][fold + 1]
        walk_forward, chosen_in_sample = walk_forward + test, chosen_in_sample + train
        folds.append({
            "fold": fold + 1,
            "train": parts[fold].to_json(),
            "test": parts[fold + 1].to_json(),
            "chosen": dict(searched[best]),
            "in_sample": train.to_json(),
            "out_of_sample": test.to_json(),
        })  # fmt: skip
    verdict = Verdict(rows, folds, walk_forward, chosen_in_sample)
    inside, outside = chosen_in_sample.expectancy_r, walk_forward.expectancy_r
    if (
        inside is not None
        and inside > 0
        and (outside is None or outside <= 0 or inside > OVERFIT_RATIO * outside)
    ):
        shown = "no trades" if outside is None else f"{outside:.3f} R"
        verdict.warnings.append(
            f"overfitting: the points chosen in training made {inside:.3f} R a trade there and {shown}"
            " in the following test segments; in-sample results overstate this detector"
        )
    return verdict


def _out_of_sample_first(row: Mapping[str, Any]) -> tuple[bool, float]:
    expectancy = row["out_of_sample"]["expectancy_r"]
    return (expectancy is None, -(expectancy or 0.0))


def _total(parts: Sequence[Tally]) -> Tally:
    total = Tally()
    for part in parts:
        total = total + part
    return total


def _score(tally: Tally) -> float:
    return tally.expectancy_r if tally.expectancy_r is not None else float("-inf")
