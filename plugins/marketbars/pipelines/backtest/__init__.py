"""backtest_run: the engine over the warehouse's bars, results in the warehouse, a report folder per run."""
