-- 0005: derived bars (5m, 15m, 1h, 4h) are rebuilt after every 1m write; the flat-file ledger
-- records when a load's rollups were rebuilt, so an interrupted rebuild is redone, not forgotten.
-- the REST ledger likewise; the gap DAG rebuilds what is still pending.
ALTER TABLE market.ingest_ledger ADD COLUMN rollups_at timestamptz;
COMMENT ON COLUMN market.ingest_ledger.rollups_at IS
    'When the selection''s derived bars of the session were last rebuilt from this load (1m only); NULL: pending';
ALTER TABLE market.rest_ledger ADD COLUMN rollups_at timestamptz;
COMMENT ON COLUMN market.rest_ledger.rollups_at IS
    'When the symbol''s derived bars of the session were last rebuilt after this fill (1m only); NULL: pending';
