-- 0008: corporate actions (splits, cash dividends, ticker changes) from the vendor's reference data,
-- what was rejected and why, what was fetched and when; and the one read that applies them to bars,
-- market.bars_adjusted(). Raw bars never change.

-- Splits: the contract's columns in numeric, plus the vendor record's identity and its own factor.
ALTER TABLE market.splits
    ALTER COLUMN split_from TYPE numeric USING split_from::numeric,
    ALTER COLUMN split_to TYPE numeric USING split_to::numeric,
    ADD COLUMN adjustment_type text CHECK (adjustment_type IN ('forward_split', 'reverse_split', 'stock_dividend')),
    ADD COLUMN historical_adjustment_factor numeric,  -- the vendor's cumulative factor, compared with ours
    ADD COLUMN source_id text UNIQUE;                 -- the vendor's record id: a re-fetch replaces the row
COMMENT ON TABLE market.splits IS
    'Validated splits: split_to new shares for split_from old ones, trading split-adjusted from the '
    'execution date''s pre-market on. Bars stay unadjusted; market.bars_adjusted applies splits when read.';

CREATE TABLE market.dividends (
    symbol                       text        NOT NULL,
    ex_dividend_date             date        NOT NULL,
    distribution_type            text        NOT NULL,  -- recurring, special, supplemental, irregular, unknown
    cash_amount                  numeric     NOT NULL CHECK (cash_amount > 0),  -- per share, as declared
    currency                     text        NOT NULL CHECK (currency = 'USD'),
    declaration_date             date,
    record_date                  date,
    pay_date                     date,
    frequency                    integer,
    historical_adjustment_factor numeric,
    source_id                    text        NOT NULL UNIQUE,
    loaded_at                    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (symbol, ex_dividend_date, distribution_type)
);
COMMENT ON TABLE market.dividends IS
    'Validated cash dividends as the vendor reports them (amounts not split-adjusted); '
    'market.bars_adjusted(adjust => ''total_return'') applies them when read.';

-- One company across its tickers (the vendor's composite FIGI): each row is the company's ticker
-- from valid_from until its next row.
CREATE TABLE market.ticker_history (
    composite_figi text        NOT NULL,
    valid_from     date        NOT NULL,
    ticker         text        NOT NULL,
    name           text,
    loaded_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (composite_figi, valid_from)
);
CREATE INDEX ticker_history_ticker ON market.ticker_history (ticker, valid_from);

-- Reference records the checks refused: never applied, kept with the reason. A fetch replaces the
-- rows of what it covered (kind, requested symbol, window).
CREATE TABLE market.reference_quarantine (
    id          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind        text        NOT NULL CHECK (kind IN ('split', 'dividend', 'ticker_change')),
    requested   text        NOT NULL,  -- the symbol whose fetch found it
    symbol      text        NOT NULL,  -- the record's own ticker
    day         date,                  -- execution, ex-dividend or change date; NULL when unreadable
    reason      text        NOT NULL,
    source_id   text,
    raw         jsonb       NOT NULL,
    quarantined_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX reference_quarantine_requested ON market.reference_quarantine (kind, requested, day);

-- What was fetched and when: one row per kind, symbol and window (a re-fetch of a window replaces it).
CREATE TABLE market.reference_ledger (
    kind        text        NOT NULL CHECK (kind IN ('split', 'dividend', 'ticker_change')),
    symbol      text        NOT NULL,
    window_from date        NOT NULL,  -- -infinity: the whole history
    window_to   date        NOT NULL,  -- infinity: open-ended
    accepted    integer     NOT NULL,
    rejected    integer     NOT NULL,
    duplicates  integer     NOT NULL,  -- exact repeats collapsed
    requests    integer     NOT NULL,
    request_ids text[]      NOT NULL,
    run_id      text,
    fetched_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (kind, symbol, window_from, window_to)
);
CREATE INDEX reference_ledger_fetched ON market.reference_ledger (kind, symbol, fetched_at);

-- Backtests record the adjustment they read with and the actions it applied.
ALTER TABLE market.backtest_runs DROP CONSTRAINT backtest_runs_prices_check;
UPDATE market.backtest_runs SET prices = 'splits';  -- earlier runs split-adjusted whenever market.splits had any
ALTER TABLE market.backtest_runs RENAME COLUMN prices TO adjustment;
ALTER TABLE market.backtest_runs ADD CHECK (adjustment IN ('none', 'splits', 'total_return'));
ALTER TABLE market.backtest_runs RENAME COLUMN splits TO actions;
UPDATE market.backtest_runs
    SET actions = jsonb_build_object('applied', actions, 'quarantined', '[]'::jsonb, 'renames', '[]'::jsonb);
ALTER TABLE market.backtest_runs ADD COLUMN follow_renames boolean NOT NULL DEFAULT false;

-- The tickers a requested symbol's bars come from: itself over all time, or with follow_renames every
-- ticker of its company (the composite FIGI whose ticker it was most recently), each over the dates
-- it was the company's ticker (the first one from -infinity).
CREATE FUNCTION market.ticker_spans(symbols text[], follow_renames boolean)
RETURNS TABLE (requested text, ticker text, span_from date, span_to date)
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    WITH company AS (
        SELECT DISTINCT ON (s) s AS requested, h.composite_figi
        FROM unnest(symbols) AS s
        JOIN market.ticker_history h ON h.ticker = s
        WHERE follow_renames
        ORDER BY s, h.valid_from DESC
    ), spans AS (
        SELECT c.requested, h.ticker, h.valid_from,
               row_number() OVER company_history AS position,
               lead(h.valid_from) OVER company_history AS next_from
        FROM company c JOIN market.ticker_history h ON h.composite_figi = c.composite_figi
        WINDOW company_history AS (PARTITION BY c.requested ORDER BY h.valid_from)
    )
    SELECT requested, ticker,
           CASE WHEN position = 1 THEN '-infinity'::date ELSE valid_from END,
           coalesce(next_from, 'infinity'::date)
    FROM spans
    UNION ALL
    SELECT s, s, '-infinity'::date, 'infinity'::date
    FROM unnest(symbols) AS s
    WHERE NOT EXISTS (SELECT 1 FROM company c WHERE c.requested = s)
$$;

-- Every action that adjusts a requested symbol's prices, executed by today (New York), one row each:
-- adjust 'splits' (splits), 'total_return' (splits and dividends) or 'dividends' (dividends only, for
-- comparing with the vendor's dividend factors). A split's factor is split_from / split_to on prices
-- and on volume (which is divided by it). A dividend's is 1 - cash_amount / the close of the last
-- session before the ex-date (its daily bar, else its last minute bar before 16:00), on prices only;
-- a dividend with no such close in the 14 days before, or not below it, adjusts nothing (its
-- previous_close says which).
CREATE FUNCTION market.applied_actions(symbols text[], adjust text, follow_renames boolean)
RETURNS TABLE (requested text, ticker text, kind text, day date, source_id text,
               price_factor numeric, volume_factor numeric, previous_close double precision)
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    WITH spans AS (
        SELECT * FROM market.ticker_spans(symbols, follow_renames)
    )
    SELECT sp.requested, s.symbol, 'split', s.execution_date, s.source_id,
           s.split_from / s.split_to, s.split_from / s.split_to, NULL::double precision
    FROM spans sp JOIN market.splits s
      ON s.symbol = sp.ticker AND s.execution_date >= sp.span_from AND s.execution_date < sp.span_to
    WHERE adjust IN ('splits', 'total_return')
      AND s.execution_date <= (now() AT TIME ZONE 'America/New_York')::date
    UNION ALL
    SELECT sp.requested, d.symbol, 'dividend', d.ex_dividend_date, d.source_id,
           CASE WHEN p.close > d.cash_amount THEN 1 - d.cash_amount / p.close::numeric END, 1, p.close
    FROM spans sp JOIN market.dividends d
      ON d.symbol = sp.ticker AND d.ex_dividend_date >= sp.span_from AND d.ex_dividend_date < sp.span_to
    LEFT JOIN LATERAL (
        SELECT b.close FROM market.historical_bars b
        WHERE b.symbol = d.symbol AND b.timeframe IN ('1d', '1m')
          AND b.ts < (d.ex_dividend_date::timestamp AT TIME ZONE 'America/New_York')
          AND b.ts >= ((d.ex_dividend_date - 14)::timestamp AT TIME ZONE 'America/New_York')
          AND (b.timeframe = '1d' OR (b.ts AT TIME ZONE 'America/New_York')::time < '16:00')
        ORDER BY (b.ts AT TIME ZONE 'America/New_York')::date DESC, b.timeframe = '1d' DESC, b.ts DESC
        LIMIT 1
    ) p ON true
    WHERE adjust IN ('total_return', 'dividends')
      AND d.ex_dividend_date <= (now() AT TIME ZONE 'America/New_York')::date
$$;

-- A requested symbol's cumulative factors over time: each row covers [from_ts, to_ts) (New York
-- midnights of action days); a bar in it is multiplied by price_factor and its volume divided by
-- volume_factor: the product of the factors of every action on or after to_ts's day. Bars from the
-- last action's day on are unadjusted (no row).
CREATE FUNCTION market.adjustment_segments(symbols text[], adjust text, follow_renames boolean)
RETURNS TABLE (requested text, from_ts timestamptz, to_ts timestamptz, price_factor double precision,
               volume_factor double precision)
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    WITH by_day AS (  -- several actions on one day multiply
        SELECT requested, day, exp(sum(ln(price_factor))) AS price, exp(sum(ln(volume_factor))) AS volume
        FROM market.applied_actions(symbols, adjust, follow_renames)
        WHERE price_factor IS NOT NULL
        GROUP BY requested, day
    )
    SELECT requested,
           coalesce(lag(day) OVER by_date, '-infinity'::date)::timestamp AT TIME ZONE 'America/New_York',
           day::timestamp AT TIME ZONE 'America/New_York',
           exp(sum(ln(price)) OVER later)::double precision,
           exp(sum(ln(volume)) OVER later)::double precision
    FROM by_day
    WINDOW by_date AS (PARTITION BY requested ORDER BY day),
           later AS (PARTITION BY requested ORDER BY day DESC ROWS UNBOUNDED PRECEDING)
$$;

-- bars_adjusted's adjust, or an error that names the choices.
CREATE FUNCTION market.checked_adjustment(adjust text) RETURNS text
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
BEGIN
    IF adjust IS NULL OR adjust NOT IN ('none', 'splits', 'total_return') THEN
        RAISE EXCEPTION 'adjust must be none, splits or total_return, not %', coalesce(adjust, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    RETURN adjust;
END
$$;

-- The contract's adjusted read: bars of the symbols with start_ts <= ts < end_ts, labelled with the
-- requested symbol. adjust: 'none', 'splits' or 'total_return'. Raw rows never change.
-- Each requested symbol's time line is cut into pieces of constant factors (the segments, then
-- factor 1 from its last action on), intersected with its tickers' spans; each piece is one range
-- scan of the primary key, its bars multiplied by constants (no per-bar lookup of a factor).
CREATE FUNCTION market.bars_adjusted(
    symbols text[], timeframe text, start_ts timestamptz, end_ts timestamptz,
    adjust text DEFAULT 'splits', follow_renames boolean DEFAULT false)
RETURNS TABLE (symbol text, timeframe text, ts timestamptz, open double precision, high double precision,
               low double precision, close double precision, volume double precision,
               vwap double precision, trades bigint, source text)
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    WITH segments AS (
        SELECT * FROM market.adjustment_segments(
            bars_adjusted.symbols, market.checked_adjustment(bars_adjusted.adjust), bars_adjusted.follow_renames)
    ), pieces AS (
        SELECT requested, from_ts, to_ts, price_factor, volume_factor FROM segments
        UNION ALL
        SELECT s, coalesce(max(g.to_ts), '-infinity'), 'infinity', 1, 1
        FROM unnest(bars_adjusted.symbols) AS s LEFT JOIN segments g ON g.requested = s
        GROUP BY s
    ), spans AS (
        SELECT requested, ticker, span_from::timestamp AT TIME ZONE 'America/New_York' AS from_ts,
               span_to::timestamp AT TIME ZONE 'America/New_York' AS to_ts
        FROM market.ticker_spans(bars_adjusted.symbols, bars_adjusted.follow_renames)
    )
    SELECT sp.requested, b.timeframe, b.ts,
           b.open * p.price_factor, b.high * p.price_factor, b.low * p.price_factor, b.close * p.price_factor,
           b.volume / p.volume_factor, b.vwap * p.price_factor, b.trades, b.source
    FROM spans sp
    JOIN pieces p ON p.requested = sp.requested AND p.from_ts < sp.to_ts AND p.to_ts > sp.from_ts
    JOIN market.historical_bars b
      ON b.symbol = sp.ticker AND b.timeframe = bars_adjusted.timeframe
     AND b.ts >= greatest(bars_adjusted.start_ts, sp.from_ts, p.from_ts)
     AND b.ts < least(bars_adjusted.end_ts, sp.to_ts, p.to_ts)
$$;

-- Our cumulative factor at each stored split (splits only) and dividend (dividends only) of the
-- symbols, beside the vendor's historical_adjustment_factor; factor NULL: the action adjusts nothing
-- (a dividend without a previous close in the warehouse) or is still to come.
CREATE FUNCTION market.adjustment_factor_check(symbols text[])
RETURNS TABLE (kind text, symbol text, day date, source_id text, factor double precision,
               vendor_factor double precision)
LANGUAGE sql STABLE AS $$
    WITH ours AS (
        SELECT g.requested, g.to_ts, g.price_factor, 'split' AS kind
        FROM market.adjustment_segments(symbols, 'splits', false) g
        UNION ALL
        SELECT g.requested, g.to_ts, g.price_factor, 'dividend'
        FROM market.adjustment_segments(symbols, 'dividends', false) g
    ), records AS (
        SELECT 'split' AS kind, symbol, execution_date AS day, source_id, historical_adjustment_factor
        FROM market.splits WHERE symbol = ANY(symbols)
        UNION ALL
        SELECT 'dividend', symbol, ex_dividend_date, source_id, historical_adjustment_factor
        FROM market.dividends WHERE symbol = ANY(symbols)
    )
    SELECT r.kind, r.symbol, r.day, r.source_id, o.price_factor, r.historical_adjustment_factor::double precision
    FROM records r
    LEFT JOIN ours o ON o.kind = r.kind AND o.requested = r.symbol
                    AND o.to_ts = r.day::timestamp AT TIME ZONE 'America/New_York'
$$;
