"""
### Backtest run

Backtests the setup detectors on the warehouse's bars and reports per-detector statistics, trade
lists and equity curves. Runs manually, and after fresh data (when `market.historical_bars` is
updated) over the last `lookback_days`.

**Params**
- `start_date`, `end_date` (`YYYY-MM-DD`, inclusive; empty end = the run's date, empty start =
  `lookback_days` before the end). Earlier bars are read as warm-up for indicators, never traded.
- `symbols` (list): empty = the active watchlist's stocks and indices.
- `detectors` (list): empty = every available detector. `detector_params` overrides their
  defaults, e.g. `{"breakout_bullish": {"lookback": 30}}`.
- `timeframe`: `1m`, `5m` (default), `15m`, `1h`, `4h` or `1d`; regular session only.
- `adjustment`: `splits` (default), `total_return` (splits and cash dividends) or `none`: how
  `market.bars_adjusted` adjusts the bars it reads (raw rows never change).
- `follow_renames` (default true): a renamed company's bars under its earlier tickers count as
  the requested ticker's history.
- Engine: `slippage_bps` (10), `commission` ($ per round trip, 1.00), `capital` per symbol
  (100,000), `risk_fraction` (0.01 of capital risked per trade), `atr_period` (14), `stop_atr`
  (1.5), `target_r` (2.0), `max_hold_bars` (20).
- Ranking flags: `min_trades` (30), `min_profit_factor` (1.2), `min_expectancy_r` (0.0).
- `search` (object, empty: none): a walk-forward search of one detector's parameters, e.g.
  `{"detector": "breakout_bullish", "parameters": {"lookback": [10, 20, 40], "volume_multiple":
  [1.2, 1.5]}, "folds": 3}`; `sample` and `seed` take a seeded random sample of the grid,
  `max_points` caps it (100; at most 500).

**What it does**
1. `plan` validates the params, records the run in `market.backtest_runs` (a re-run of the
   same run id replaces its results) and lists the detectors.
2. `run_batch` (mapped, one per batch of symbols, sized by bars: at most 2 million per batch):
   reads the batch's bars once through `market.bars_adjusted` with the run's `adjustment`, runs
   every detector on them in memory, and replaces the batch's rows in `market.backtest_metrics`
   and `market.backtest_trades` in one transaction.
3. With a `search`: `plan_search` splits (points x batches) into at most 500 instances and
   `search_batch` (mapped) evaluates its points on its batch, each walk-forward segment alone.
4. `report_and_rank` makes each detector's all-symbol row from every batch's trades (exactly, never
   by averaging), draws `equity.png` (every detector's curve, also stored for the Market data
   view) and writes `summary.json`, `metrics.csv` and `trades.parquet` into the run's report
   folder (`market_backtest_reports_dir`/<run id>, and S3 when `market_reports_s3_uri` is set) and
   logs the ranking by expectancy (R) and profit factor, flagging detectors below the thresholds.
   The summary lists the corporate actions the adjustment applied, the renames it followed and the
   quarantined records it ignored.

Connection: `market_db`.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import DAG, Param, get_current_context, task

from marketbars.market.corporate_actions import ADJUSTMENTS
from marketbars.pipelines.common.assets import HISTORICAL_BARS
from marketbars.pipelines.common.dag_defaults import dag_header, symbols_param


def _number(default: float, title: str, description: str, **limits: Any) -> Param:
    return Param(default, type="number", title=title, description=description, **limits)


with DAG(
    dag_id="backtest_run",
    description="Backtest the setup detectors on the warehouse: statistics, trades, equity curves, ranking",
    schedule=[HISTORICAL_BARS],
    max_active_runs=2,
    doc_md=__doc__,
    tags=["market-data", "backtest"],
    params={
        "start_date": Param(
            None,
            type=["null", "string"],
            format="date",
            title="Start date",
            description="First session (inclusive).",
        ),
        "end_date": Param(
            None,
            type=["null", "string"],
            format="date",
            title="End date",
            description="Last session; empty: today.",
        ),
        "lookback_days": Param(
            90,
            type="integer",
            minimum=1,
            maximum=3660,
            title="Lookback (calendar days)",
            description="Window when start_date is empty (runs after fresh data use it).",
        ),
        "symbols": symbols_param("Tickers (AAPL, I:SPX). Empty: the active watchlist's stocks and indices."),
        "detectors": Param(
            [],
            type="array",
            items={"type": "string", "minLength": 1},
            uniqueItems=True,
            title="Detectors",
            description="Detector names (see the README). Empty: every available detector.",
        ),
        "detector_params": Param(
            {},
            type="object",
            title="Detector parameters",
            description='Overrides of detector defaults, e.g. {"breakout_bullish": {"lookback": 30}}.',
        ),
        "timeframe": Param("5m", enum=["1m", "5m", "15m", "1h", "4h", "1d"], title="Timeframe"),
        "adjustment": Param(
            "splits",
            enum=list(ADJUSTMENTS),
            title="Adjustment",
            description="splits, total_return (splits and cash dividends) or none (raw prices).",
        ),
        "follow_renames": Param(
            True,
            type="boolean",
            title="Follow renames",
            description="Read a renamed company's earlier tickers as the requested ticker's history.",
        ),
        "search": Param(
            {},
            type="object",
            title="Parameter search",
            description=(
                'Walk-forward search of one detector\'s parameters, e.g. {"detector": "breakout_bullish",'
                ' "parameters": {"lookback": [10, 20, 40]}, "folds": 3}; optional sample and seed'
                " (a random sample of the grid), max_points (100). Empty: no search."
            ),
        ),
        "slippage_bps": _number(10, "Slippage (bps)", "Against us on every fill.", minimum=0, maximum=999),
        "commission": _number(
            1.0, "Commission ($)", "Per round trip, half at entry and half at exit.", minimum=0
        ),
        "capital": _number(
            100_000, "Capital ($)", "Per symbol; sizes trades, no leverage.", exclusiveMinimum=0
        ),
        "risk_fraction": _number(
            0.01, "Risk per trade", "Fraction of capital lost at the stop.", exclusiveMinimum=0, maximum=1
        ),
        "atr_period": Param(14, type="integer", minimum=1, maximum=500, title="ATR period (bars)"),
        "stop_atr": _number(1.5, "Stop (ATR)", "Stop distance from the signal close.", exclusiveMinimum=0),
        "target_r": _number(
            2.0, "Target (R)", "Target as a multiple of the stop distance.", exclusiveMinimum=0
        ),
        "max_hold_bars": Param(
            20, type="integer", minimum=1, maximum=100_000, title="Maximum holding (bars)"
        ),
        "min_trades": Param(30, type="integer", minimum=0, title="Flag below this many trades"),
        "min_profit_factor": _number(1.2, "Flag below this profit factor", "", minimum=0),
        "min_expectancy_r": _number(0.0, "Flag below this expectancy (R)", ""),
    },
    **dag_header(scheduled=True),
) as dag:

    @task
    def plan(params: dict[str, Any], dag_run: Any = None) -> list[dict[str, list[str]]]:
        """Validate, record the run, one work item per batch of symbols."""
        from marketbars.pipelines.backtest.tasks import plan

        return plan(params, dag_run)

    @task(map_index_template="{{ batch_label }}", max_active_tis_per_dagrun=2)
    def run_batch(symbols: list[str], dag_run: Any = None) -> dict[str, Any]:
        """Every detector over one batch of symbols, whose bars are read once."""
        from marketbars.pipelines.backtest.rules import batch_label
        from marketbars.pipelines.backtest.tasks import run_batch

        get_current_context()["batch_label"] = batch_label(symbols)  # type: ignore[typeddict-unknown-key]  # our own key
        return run_batch(symbols, dag_run.run_id)

    @task
    def plan_search(planned: list[dict[str, Any]], dag_run: Any = None) -> list[dict[str, Any]]:
        """The search's work: chunks of points x batches of symbols (none without a search)."""
        from marketbars.pipelines.backtest.tasks import plan_search

        return plan_search(planned, dag_run.run_id)

    @task(map_index_template="{{ search_label }}", max_active_tis_per_dagrun=2)
    def search_batch(symbols: list[str], points: list[int], dag_run: Any = None) -> dict[str, Any]:
        """Some points of the search on one batch of symbols, on every walk-forward segment."""
        from marketbars.pipelines.backtest.rules import search_label
        from marketbars.pipelines.backtest.tasks import search_batch

        label = search_label({"symbols": symbols, "points": points})
        get_current_context()["search_label"] = label  # type: ignore[typeddict-unknown-key]  # our own key
        return search_batch(symbols, points, dag_run.run_id)

    @task(trigger_rule="all_done")
    def report_and_rank(
        params: dict[str, Any],
        planned: Any = None,
        results: Any = None,
        search_planned: Any = None,
        searches: Any = None,
        dag_run: Any = None,
    ) -> dict[str, Any]:
        """Summary, CSVs, ranking, flags and the search's verdict; fails when a task's results are missing."""
        from marketbars.pipelines.backtest.tasks import report_and_rank
        from marketbars.pipelines.common.mapping import outputs

        return report_and_rank(
            params, dag_run.run_id, planned, outputs(results, each=dict),
            search_planned, outputs(searches, each=dict),
        )  # fmt: skip

    work = plan()
    results = run_batch.expand_kwargs(work)
    search_work = plan_search(work)
    searches = search_batch.expand_kwargs(search_work)
    report_and_rank(planned=work, results=results, search_planned=search_work, searches=searches)
