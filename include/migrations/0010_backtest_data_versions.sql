-- Results tied to the data they read: each backtest run records a digest of the state of what its
-- bars came from over its window (warm-up included), and market.backtest_freshness says which
-- results a later load has made stale.
ALTER TABLE market.backtest_runs
    ADD COLUMN data_from date,       -- the first session read (the longest warm-up)
    ADD COLUMN data_version text;    -- market.bars_data_version(...) when the run planned

-- A digest (md5) of everything a read of these bars depends on over first_day..last_day: the flat
-- files loaded (dataset, session, selection, ETag, when), the REST answers written (symbol, session,
-- status, when) of the source timeframe (1d for daily bars, 1m for the rest, which are rolled up
-- from it), and, as the adjustment uses them, the splits, dividends and ticker history of the
-- symbols' tickers. Loads of other symbols' selections count too: conservative, never blind.
CREATE FUNCTION market.bars_data_version(
    symbols text[], datasets text[], timeframe text, first_day date, last_day date, adjust text,
    follow_renames boolean)
RETURNS text
LANGUAGE sql STABLE AS $$
    WITH tickers AS (
        SELECT array_agg(DISTINCT ticker) AS names FROM market.ticker_spans(symbols, follow_renames)
    ), source AS (
        SELECT CASE WHEN timeframe = '1d' THEN '1d' ELSE '1m' END AS timeframe
    ), lines AS (
        SELECT format('file %s %s %s %s %s %s', l.dataset, l.timeframe, l.session_date, l.selection_key,
                      l.etag, l.loaded_at) AS line
        FROM market.ingest_ledger l, source, tickers
        WHERE l.dataset = ANY(datasets) AND l.timeframe = source.timeframe
          AND l.session_date BETWEEN first_day AND last_day
          AND (l.symbols IS NULL OR l.symbols && tickers.names)
        UNION ALL
        SELECT format('rest %s %s %s %s %s', r.symbol, r.timeframe, r.session_date, r.status, r.fetched_at)
        FROM market.rest_ledger r, source, tickers
        WHERE r.timeframe = source.timeframe AND r.session_date BETWEEN first_day AND last_day
          AND r.symbol = ANY(tickers.names)
        UNION ALL
        SELECT format('split %s %s %s %s', s.symbol, s.execution_date, s.split_from, s.split_to)
        FROM market.splits s, tickers
        WHERE adjust IN ('splits', 'total_return') AND s.symbol = ANY(tickers.names)
        UNION ALL
        SELECT format('dividend %s %s %s %s', d.symbol, d.ex_dividend_date, d.distribution_type, d.cash_amount)
        FROM market.dividends d, tickers
        WHERE adjust = 'total_return' AND d.symbol = ANY(tickers.names)
        UNION ALL
        SELECT format('ticker %s %s %s', h.composite_figi, h.valid_from, h.ticker)
        FROM market.ticker_history h, tickers
        WHERE follow_renames AND h.ticker = ANY(tickers.names)
    )
    SELECT md5(coalesce(string_agg(line, E'\n' ORDER BY line), '')) FROM lines
$$;

-- Every run's recorded data version beside the one its window has now: stale when they differ (a
-- later load, repair or corporate action changed what the run would read).
CREATE VIEW market.backtest_freshness AS
SELECT r.run_id, r.status, r.data_from, r.end_date, r.data_version AS read_version, now_version.version AS current_version,
       r.data_version IS DISTINCT FROM now_version.version AS stale
FROM market.backtest_runs r
CROSS JOIN LATERAL (
    SELECT market.bars_data_version(
        r.symbols,
        ARRAY(SELECT DISTINCT value FROM jsonb_each_text(r.detector_params -> 'asset_classes')),
        r.timeframe, r.data_from, r.end_date, r.adjustment, r.follow_renames) AS version
) now_version
WHERE r.data_version IS NOT NULL;
