-- Bars per (symbol, source timeframe, session): what completeness is judged on, kept as bars are
-- written, so the Market data view reads a year of minute coverage from 25,000 rows instead of
-- counting 5 million bars. The writers keep it in the transaction that writes the bars (flat-file
-- loads from the rows they copy, REST writes and the gap DAG by recounting, retention by forgetting);
-- see marketbars.warehouse.bar_counts.
--
-- A cell without a row is not known: readers count its bars. Hand edits that delete or move bars
-- make their cells unknown through the statement triggers below, so a stored count never claims
-- bars that are gone. An INSERT has no trigger: aggregating every loaded row would cost each flat-file
-- load about half its time again; a bar inserted by hand shows once the gap DAG recounts its window.
CREATE TABLE market.bar_counts (
    symbol       text        NOT NULL,
    timeframe    text        NOT NULL,
    session_date date        NOT NULL,
    regular      integer     NOT NULL CHECK (regular >= 0),  -- inside the regular session (1d: the bar)
    total        integer     NOT NULL CHECK (total >= regular),  -- all of the session's New York day
    counted_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (symbol, timeframe, session_date)
);
COMMENT ON TABLE market.bar_counts IS
    'Bars per (symbol, source timeframe, session), kept by the writers; a missing row means not known';

CREATE FUNCTION market.forget_bar_counts() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM market.bar_counts c
    USING (SELECT DISTINCT symbol, timeframe, (ts AT TIME ZONE 'America/New_York')::date AS day
           FROM old_bars) o
    WHERE c.symbol = o.symbol AND c.timeframe = o.timeframe AND c.session_date = o.day;
    IF TG_OP = 'UPDATE' THEN  -- a bar moved to another cell makes that one unknown too
        DELETE FROM market.bar_counts c
        USING (SELECT DISTINCT symbol, timeframe, (ts AT TIME ZONE 'America/New_York')::date AS day
               FROM new_bars) n
        WHERE c.symbol = n.symbol AND c.timeframe = n.timeframe AND c.session_date = n.day;
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER historical_bars_forget_deleted_counts AFTER DELETE ON market.historical_bars
    REFERENCING OLD TABLE AS old_bars
    FOR EACH STATEMENT EXECUTE FUNCTION market.forget_bar_counts();
CREATE TRIGGER historical_bars_forget_updated_counts AFTER UPDATE ON market.historical_bars
    REFERENCING OLD TABLE AS old_bars NEW TABLE AS new_bars
    FOR EACH STATEMENT EXECUTE FUNCTION market.forget_bar_counts();

CREATE FUNCTION market.forget_all_bar_counts() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    TRUNCATE market.bar_counts;
    RETURN NULL;
END
$$;

CREATE TRIGGER historical_bars_forget_truncated_counts AFTER TRUNCATE ON market.historical_bars
    FOR EACH STATEMENT EXECUTE FUNCTION market.forget_all_bar_counts();
