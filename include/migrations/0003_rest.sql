-- 0003: the REST side: a per-session ledger, quarantine rows from REST, and a rate limiter shared by
-- every worker through this database.

-- One row per (symbol, timeframe, session) the REST API was asked for. status: 'loaded' (bars
-- written), 'empty' (no bars for a trading session: a gap, not complete), 'flatfile' (a flat file
-- already holds the session; flat files are canonical, so nothing was written), 'patched' (gap
-- repair: REST bars written only at the minutes the flat-file session lacks).
CREATE TABLE market.rest_ledger (
    symbol           text        NOT NULL,
    timeframe        text        NOT NULL,
    session_date     date        NOT NULL,
    status           text        NOT NULL CHECK (status IN ('loaded', 'empty', 'flatfile', 'patched')),
    rows_loaded      bigint      NOT NULL,
    rows_quarantined bigint      NOT NULL,
    requests         integer     NOT NULL,  -- HTTP requests for the symbol's range, retries included
    request_ids      text[],
    run_id           text,
    fetched_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (symbol, timeframe, session_date)
);

-- Quarantined rows can come from REST too: they have no S3 key or line, but a request id.
ALTER TABLE market.quarantine
    ALTER COLUMN s3_key DROP NOT NULL,
    ALTER COLUMN etag DROP NOT NULL,
    ADD COLUMN source text NOT NULL DEFAULT 'flatfile' CHECK (source IN ('flatfile', 'rest')),
    ADD COLUMN request_id text;

-- Rate limiting for an API, shared by every worker: each request reserves the next free slot,
-- slots are p_interval apart and never inside a pause (HTTP 429 Retry-After), and the caller sleeps
-- until its slot (the returned seconds). The row lock of the UPDATE hands out slots one at a time;
-- the database clock is the only clock. p_interval 0 (no limit) still waits out pauses.
CREATE TABLE market.api_rate_state (
    api          text        PRIMARY KEY,
    next_slot    timestamptz NOT NULL,
    paused_until timestamptz NOT NULL DEFAULT '-infinity'
);

CREATE FUNCTION market.reserve_api_slot(p_api text, p_interval interval) RETURNS double precision
LANGUAGE plpgsql AS $$
DECLARE
    slot timestamptz;
BEGIN
    INSERT INTO market.api_rate_state (api, next_slot) VALUES (p_api, clock_timestamp())
    ON CONFLICT (api) DO NOTHING;
    UPDATE market.api_rate_state
    SET next_slot = greatest(next_slot, clock_timestamp(), paused_until) + p_interval
    WHERE api = p_api
    RETURNING next_slot - p_interval INTO slot;
    RETURN greatest(0, extract(epoch FROM slot - clock_timestamp()));
END
$$;

-- Seconds until the API's pause ends: a request whose slot came up during a pause waits it out.
CREATE FUNCTION market.api_pause_left(p_api text) RETURNS double precision
LANGUAGE sql STABLE AS $$
    SELECT coalesce(
        (SELECT extract(epoch FROM greatest(paused_until, now_) - now_)
         FROM market.api_rate_state, clock_timestamp() AS now_ WHERE api = p_api),
        0);
$$;

-- The server asked us to wait (HTTP 429 Retry-After): no worker sends before then.
CREATE FUNCTION market.pause_api(p_api text, p_seconds double precision) RETURNS void
LANGUAGE sql AS $$
    INSERT INTO market.api_rate_state (api, next_slot, paused_until)
    VALUES (p_api, clock_timestamp(), clock_timestamp() + make_interval(secs => p_seconds))
    ON CONFLICT (api) DO UPDATE
    SET paused_until = greatest(market.api_rate_state.paused_until, EXCLUDED.paused_until);
$$;

-- The history the daily backfill gives a symbol new to the watchlist: planned (completed_at NULL)
-- until every piece of it has loaded, so a run that fails part-way is retried by the next one.
CREATE TABLE market.watchlist_history (
    symbol        text        PRIMARY KEY,
    first_session date        NOT NULL,
    last_session  date        NOT NULL,
    planned_at    timestamptz NOT NULL DEFAULT now(),
    completed_at  timestamptz
);
