-- The walk-forward parameter search of backtest_run: what was searched (backtest_runs.search: the
-- detector, the points, the segments) and each point's tallies per segment and batch of symbols,
-- which add up exactly across batches (counts and sums of the trades).
ALTER TABLE market.backtest_runs ADD COLUMN search jsonb;

CREATE TABLE market.backtest_search (
    run_id   text             NOT NULL REFERENCES market.backtest_runs ON DELETE CASCADE,
    point    integer          NOT NULL,  -- index into backtest_runs.search -> 'points'
    segment  integer          NOT NULL,  -- index into backtest_runs.search -> 'segments'
    batch    text             NOT NULL,  -- the batch of symbols (its first and last ticker, its size)
    trades   integer          NOT NULL,
    wins     integer          NOT NULL,
    sum_r    double precision NOT NULL,
    sum_pnl  double precision NOT NULL,
    PRIMARY KEY (run_id, point, segment, batch)
);
