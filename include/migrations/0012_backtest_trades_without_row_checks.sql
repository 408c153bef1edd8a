-- A universe backtest writes millions of trades, and a foreign key checks its parent once per
-- inserted row: about half of each batch's COPY. The writer now checks the run once per batch (under
-- the same key-share lock, in the same transaction), and deleting a run still deletes its trades, by
-- one statement-level trigger instead of a cascade per row.
ALTER TABLE market.backtest_trades DROP CONSTRAINT backtest_trades_run_id_fkey;

CREATE FUNCTION market.delete_backtest_trades() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM market.backtest_trades t USING deleted_runs d WHERE t.run_id = d.run_id;
    RETURN NULL;
END
$$;

CREATE TRIGGER backtest_runs_delete_trades AFTER DELETE ON market.backtest_runs
    REFERENCING OLD TABLE AS deleted_runs
    FOR EACH STATEMENT EXECUTE FUNCTION market.delete_backtest_trades();

COMMENT ON TABLE market.backtest_trades IS
    'Every trade of a backtest run; a run''s trades are deleted with it (trigger backtest_runs_delete_trades)';
