-- Minute rollups for the recent past, so a range that starts or ends inside a
-- busy quarter hour ("the last 30 minutes" of a live server) reads at most a
-- minute of raw events at either edge instead of up to a quarter hour.
--
-- The tables have the layout of the quarter-hour ones (`0002`, `0021`). Ingest
-- writes them only for events stamped within the last few hours of the server's
-- clock and deletes older rows as it goes (`crates/storage/src/rollup.rs`,
-- `MINUTE_KEEP_MS`), so they stay small whatever the event count. Readers use a
-- minute row only inside the window ingest keeps, and never before
-- `usage_rollup_minute_start`: events stored before this migration (or stamped
-- after the instant it ran, by a clock ahead of this one) have no minute rows.

CREATE TABLE usage_rollup_agg_m (
    bucket_ms INTEGER PRIMARY KEY,
    entries BLOB NOT NULL
);

CREATE TABLE usage_rollup_ident_m (
    bucket_ms INTEGER PRIMARY KEY,
    entries BLOB NOT NULL
);

CREATE TABLE usage_rollup_latency_m (
    bucket_ms INTEGER NOT NULL,
    run INTEGER NOT NULL,
    entries BLOB NOT NULL,
    PRIMARY KEY (bucket_ms, run)
);

-- The first instant (Unix ms) from which every stored event is in the minute
-- rollups. A database without events has them all from the start (0); one that
-- already holds events has them only after its newest event and after the
-- moment this ran.
CREATE TABLE usage_rollup_minute_start (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    start_ms INTEGER NOT NULL
);
INSERT INTO usage_rollup_minute_start (id, start_ms)
    SELECT 1, CASE WHEN NOT EXISTS (SELECT 1 FROM usage_events) THEN 0 ELSE max(
        (SELECT max(timestamp_ms) + 1 FROM usage_events),
        CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER) + 1
    ) END;
