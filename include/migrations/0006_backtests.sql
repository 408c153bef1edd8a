-- 0006: stock splits for read-time adjustment, and the results of backtest_run.

CREATE TABLE market.splits (
    symbol         text             NOT NULL,
    execution_date date             NOT NULL,
    split_from     double precision NOT NULL CHECK (split_from > 0),
    split_to       double precision NOT NULL CHECK (split_to > 0),
    loaded_at      timestamptz      NOT NULL DEFAULT now(),
    PRIMARY KEY (symbol, execution_date)
);
COMMENT ON TABLE market.splits IS
    'Splits from the vendor''s reference data (split_to new shares for split_from old ones, from the open of '
    'execution_date). Bars are stored unadjusted; backtests adjust at read time.';

CREATE TABLE market.backtest_runs (
    run_id          text        PRIMARY KEY,  -- the Airflow run id
    start_date      date        NOT NULL,
    end_date        date        NOT NULL,
    timeframe       text        NOT NULL,
    symbols         text[]      NOT NULL,
    detectors       text[]      NOT NULL,
    settings        jsonb       NOT NULL,     -- engine parameters
    detector_params jsonb       NOT NULL,     -- per-detector overrides of their defaults
    prices          text        NOT NULL CHECK (prices IN ('split_adjusted', 'raw')),
    splits          jsonb       NOT NULL,     -- the splits applied, when split_adjusted
    status          text        NOT NULL CHECK (status IN ('running', 'succeeded', 'incomplete')),
    report_dir      text,
    started_at      timestamptz NOT NULL DEFAULT now(),
    finished_at     timestamptz,
    CHECK (start_date <= end_date)
);
COMMENT ON TABLE market.backtest_runs IS 'One row per backtest_run DAG run; re-running a run id replaces its results';

-- Statistics per detector and symbol; symbol '*' holds the detector over every symbol it traded.
CREATE TABLE market.backtest_metrics (
    run_id           text             NOT NULL REFERENCES market.backtest_runs ON DELETE CASCADE,
    detector         text             NOT NULL,
    symbol           text             NOT NULL,
    trades           integer          NOT NULL,
    wins             integer          NOT NULL,
    losses           integer          NOT NULL,
    win_rate         double precision,
    net_pnl          double precision NOT NULL,
    gross_profit     double precision NOT NULL,
    gross_loss       double precision NOT NULL,
    profit_factor    double precision,  -- 'Infinity' when there are wins and no loss
    expectancy       double precision,
    expectancy_r     double precision,
    avg_win          double precision,
    avg_loss         double precision,
    largest_win      double precision,
    largest_loss     double precision,
    max_drawdown     double precision NOT NULL,
    max_drawdown_pct double precision NOT NULL,
    sharpe           double precision,
    exposure         double precision,
    bars             bigint           NOT NULL,
    skipped_signals  integer          NOT NULL,
    PRIMARY KEY (run_id, detector, symbol)
);

CREATE TABLE market.backtest_trades (
    run_id         text             NOT NULL REFERENCES market.backtest_runs ON DELETE CASCADE,
    detector       text             NOT NULL,
    symbol         text             NOT NULL,
    entry_ts       timestamptz      NOT NULL,
    side           smallint         NOT NULL CHECK (side IN (-1, 1)),
    signal_ts      timestamptz      NOT NULL,
    exit_ts        timestamptz      NOT NULL,
    entry_price    double precision NOT NULL,  -- fills, slippage included
    exit_price     double precision NOT NULL,
    shares         bigint           NOT NULL CHECK (shares > 0),
    stop           double precision NOT NULL,
    target         double precision NOT NULL,
    risk_per_share double precision NOT NULL,
    gross_pnl      double precision NOT NULL,
    commission     double precision NOT NULL,
    net_pnl        double precision NOT NULL,
    r_multiple     double precision NOT NULL,
    return_pct     double precision NOT NULL,
    bars_held      integer          NOT NULL,
    exit_reason    text             NOT NULL
        CHECK (exit_reason IN ('stop', 'target', 'max_hold', 'end_of_session', 'end_of_data')),
    PRIMARY KEY (run_id, detector, symbol, entry_ts)
);
COMMENT ON COLUMN market.backtest_trades.exit_ts IS 'Start of the bar the exit filled in';
