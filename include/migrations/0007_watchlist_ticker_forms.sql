-- 0007: a watchlist symbol must be in its asset class's ticker form, whole: the same patterns as
-- marketbars.market.symbols.TICKER_PATTERNS (a test keeps them equal). \A and \Z anchor the whole
-- string, so a symbol with a trailing newline or space is refused.
ALTER TABLE market.watchlist ADD CONSTRAINT watchlist_symbol_form CHECK (
    (asset_class = 'stocks' AND symbol ~ '\A[A-Z][A-Za-z0-9.]{0,11}\Z') OR
    (asset_class = 'indices' AND symbol ~ '\AI:[A-Z0-9][A-Za-z0-9._^-]{0,23}\Z') OR
    (asset_class = 'options' AND symbol ~ '\AO:[A-Z][A-Z0-9.]{0,5}\d{6}[CP]\d{8}\Z')
) NOT VALID;

-- Existing rows are checked too, unless a warehouse already holds one that breaks the form: then the
-- constraint guards new and changed rows, and the migration says which to fix.
DO $$
BEGIN
    ALTER TABLE market.watchlist VALIDATE CONSTRAINT watchlist_symbol_form;
EXCEPTION WHEN check_violation THEN
    RAISE WARNING 'market.watchlist holds symbols not in their ticker form (%): fix or delete them',
        (SELECT string_agg(quote_literal(symbol), ', ') FROM market.watchlist
         WHERE NOT (
                 (asset_class = 'stocks' AND symbol ~ '\A[A-Z][A-Za-z0-9.]{0,11}\Z') OR
                 (asset_class = 'indices' AND symbol ~ '\AI:[A-Z0-9][A-Za-z0-9._^-]{0,23}\Z') OR
                 (asset_class = 'options' AND symbol ~ '\AO:[A-Z][A-Z0-9.]{0,5}\d{6}[CP]\d{8}\Z')
         ));
END $$;
