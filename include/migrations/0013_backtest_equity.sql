-- Each detector's realised equity curve as the report drew it (its envelope: every peak and trough,
-- at most a few thousand points), so the Airflow UI shows a run's curves without reading its
-- millions of trades.
CREATE TABLE market.backtest_equity (
    run_id   text               NOT NULL REFERENCES market.backtest_runs ON DELETE CASCADE,
    detector text               NOT NULL,
    trades   integer            NOT NULL,
    capital  double precision   NOT NULL,  -- the capital of the symbols it traded
    times    timestamptz[]      NOT NULL,  -- exit times of the points kept
    returns  double precision[] NOT NULL,  -- return on capital after each, in percent
    PRIMARY KEY (run_id, detector),
    CHECK (cardinality(times) = cardinality(returns))
);
COMMENT ON TABLE market.backtest_equity IS
    'Per run and detector, the realised equity curve drawn in equity.png (its envelope), in percent of capital';
