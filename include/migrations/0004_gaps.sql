-- 0004: the gap ledger: every (symbol, timeframe, session) the completeness check found short, and
-- what became of it.
CREATE TABLE market.backfill_gaps (
    symbol        text        NOT NULL,
    timeframe     text        NOT NULL,
    session_date  date        NOT NULL,
    status        text        NOT NULL CHECK (status IN ('open', 'filled', 'unfillable')),
    kind          text        NOT NULL CHECK (kind IN ('missing', 'partial', 'replaced_file')),
    expected      integer     NOT NULL,  -- bars the cell should hold (see marketbars.gaps)
    found         integer     NOT NULL,  -- bars it held when last checked
    attempts      integer     NOT NULL DEFAULT 0,
    last_error    text,
    first_seen    timestamptz NOT NULL DEFAULT now(),
    next_retry_at timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (symbol, timeframe, session_date)
);
CREATE INDEX backfill_gaps_open_idx ON market.backfill_gaps (next_retry_at) WHERE status = 'open';
COMMENT ON TABLE market.backfill_gaps IS
    'open: to retry (next_retry_at); filled: complete now; unfillable: explained in last_error';
