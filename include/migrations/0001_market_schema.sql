-- 0001: schema `market`: bars partitioned by month, watchlist, ingest ledger and quarantine.
-- Applied once, in order, by marketbars.warehouse.migrate(); never edit a migration after it shipped.

CREATE SCHEMA IF NOT EXISTS market;

CREATE TABLE market.historical_bars (
    symbol    text             NOT NULL,
    timeframe text             NOT NULL CHECK (timeframe IN ('1m', '5m', '15m', '1h', '4h', '1d')),
    ts        timestamptz      NOT NULL,
    open      double precision NOT NULL,
    high      double precision NOT NULL,
    low       double precision NOT NULL,
    close     double precision NOT NULL,
    volume    double precision,
    vwap      double precision,
    trades    bigint,
    source    text             NOT NULL CHECK (source IN ('flatfile', 'rest', 'rollup')),
    PRIMARY KEY (symbol, timeframe, ts)
) PARTITION BY RANGE (ts);

COMMENT ON TABLE market.historical_bars IS
    'One row per bar. Monthly partitions (America/New_York months) are created on demand.';
COMMENT ON COLUMN market.historical_bars.symbol IS 'The vendor''s ticker exactly: AAPL, I:SPX, O:SPY251219C00650000';
COMMENT ON COLUMN market.historical_bars.ts IS 'Bar start (UTC); 1d bars at 00:00 America/New_York of the session date';
COMMENT ON COLUMN market.historical_bars.volume IS 'Fractional volume kept (files from 2026 carry it); NULL for indices';
COMMENT ON COLUMN market.historical_bars.vwap IS 'NULL where the source has none (flat files)';
COMMENT ON COLUMN market.historical_bars.trades IS 'Transactions; NULL where the source has none (indices)';

-- Whole-session operations (replace a day's file, count a day's rows, trim a month) select by ts
-- without a symbol; bars arrive roughly in ts order, so a BRIN index finds a day's blocks cheaply.
CREATE INDEX historical_bars_ts_brin ON market.historical_bars USING brin (ts) WITH (pages_per_range = 32);

-- Create the monthly partitions that cover [p_from, p_to). Months are New York calendar months,
-- so one session's bars (04:00-20:00 ET, daily bars at 00:00 ET) never straddle two partitions.
CREATE FUNCTION market.ensure_bar_partitions(p_from timestamptz, p_to timestamptz) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    month_start timestamp := date_trunc('month', p_from AT TIME ZONE 'America/New_York');
    last_month  timestamp := date_trunc('month', (p_to - interval '1 microsecond') AT TIME ZONE 'America/New_York');
    partition   text;
    created     integer := 0;
BEGIN
    WHILE month_start <= last_month LOOP
        partition := format('historical_bars_%s', to_char(month_start, 'YYYY_MM'));
        IF to_regclass(format('market.%I', partition)) IS NULL THEN
            -- Serialise creators. The catalog cache may not show a partition another worker has just
            -- committed (an advisory lock does not refresh it), so "already exists" means done.
            PERFORM pg_advisory_xact_lock(hashtext('market.historical_bars partitions'));
            BEGIN
                EXECUTE format(
                    'CREATE TABLE market.%I PARTITION OF market.historical_bars FOR VALUES FROM (%L) TO (%L)',
                    partition,
                    month_start AT TIME ZONE 'America/New_York',
                    (month_start + interval '1 month') AT TIME ZONE 'America/New_York');
                created := created + 1;
            EXCEPTION WHEN duplicate_table THEN
                NULL;
            END;
        END IF;
        month_start := month_start + interval '1 month';
    END LOOP;
    RETURN created;
END
$$;

CREATE TABLE market.watchlist (
    symbol      text        PRIMARY KEY,
    asset_class text        NOT NULL CHECK (asset_class IN ('stocks', 'indices', 'options')),
    active      boolean     NOT NULL DEFAULT true,
    added_at    timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE market.watchlist IS 'Symbols the scheduled DAGs maintain; inactive ones are kept but not refreshed';

-- One row per (file, symbol selection): what was loaded from which object version.
CREATE TABLE market.ingest_ledger (
    dataset          text        NOT NULL,
    timeframe        text        NOT NULL,
    session_date     date        NOT NULL,
    selection_key    text        NOT NULL,  -- '*' or 'md5:' of the sorted symbol list
    symbols          text[],                -- the selected symbols; NULL for every ticker
    s3_key           text        NOT NULL,
    etag             text        NOT NULL,
    size_bytes       bigint      NOT NULL,
    last_modified    timestamptz,
    rows_read        bigint      NOT NULL,  -- data lines in the file, every ticker
    rows_loaded      bigint      NOT NULL,
    rows_quarantined bigint      NOT NULL,
    empty_symbols    text[],                -- selected symbols the file has no row for at all (NULL for '*')
    load_seconds     double precision,
    run_id           text,
    loaded_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (dataset, timeframe, session_date, selection_key)
);
CREATE INDEX ingest_ledger_s3_key_idx ON market.ingest_ledger (s3_key);

-- Source rows that were not loaded, with the reason (see marketbars.validation.REASONS).
CREATE TABLE market.quarantine (
    id             bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    dataset        text        NOT NULL,
    timeframe      text        NOT NULL,
    session_date   date        NOT NULL,
    s3_key         text        NOT NULL,
    etag           text        NOT NULL,
    line_number    bigint,               -- physical line in the decompressed file (header = 1)
    symbol         text,
    reason         text        NOT NULL,
    raw            text,                 -- the row's fields as read, comma-separated
    quarantined_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX quarantine_session_idx ON market.quarantine (dataset, timeframe, session_date);
