-- Backtests run per batch of symbols (every detector on bars read once); the all-symbol row is made
-- from every batch's trades and these exact counts, never by averaging per-batch figures.
ALTER TABLE market.backtest_metrics ADD COLUMN bars_in_position bigint;
COMMENT ON COLUMN market.backtest_metrics.bars_in_position IS
    'Bars spent in a position (exposure = bars_in_position / bars); NULL on rows of runs before 0009';
