-- An event row is created moments after the event happened (or, for imports
-- and backfills, some days later), so its creation time is stored as the
-- milliseconds after `timestamp_ms` (a few bytes instead of six) in the
-- renamed column `created_at_delta`. A pair too far apart for that arithmetic
-- keeps the time as the text '=' followed by its digits. The column of the old
-- name, now virtual, gives the time back. `crates/storage/src/events.rs`
-- (`created_at_delta`) stores it the same way.
ALTER TABLE usage_events RENAME COLUMN created_at_ms TO created_at_delta;

ALTER TABLE usage_events ADD COLUMN created_at_ms INTEGER
    GENERATED ALWAYS AS (CASE WHEN typeof(created_at_delta) = 'integer'
        THEN timestamp_ms + created_at_delta
        ELSE CAST(substr(created_at_delta, 2) AS INTEGER) END) VIRTUAL;

UPDATE usage_events SET created_at_delta = CASE
        WHEN typeof(created_at_delta) = 'integer'
            AND created_at_delta BETWEEN -4000000000000000000 AND 4000000000000000000
            AND timestamp_ms BETWEEN -4000000000000000000 AND 4000000000000000000
        THEN created_at_delta - timestamp_ms
        ELSE '=' || created_at_delta
    END;
