-- The event indexes named `id` as their last column, but every entry of an
-- index on a rowid table ends with the row id already: the id was stored twice
-- per entry. The same indexes without it keep the same order, (…, timestamp_ms,
-- id), so they answer the same queries with the same plans (`ORDER BY
-- timestamp_ms, id` still needs no sort).
DROP INDEX idx_usage_events_timestamp;
CREATE INDEX idx_usage_events_timestamp ON usage_events (timestamp_ms);

DROP INDEX idx_usage_events_model_time;
CREATE INDEX idx_usage_events_model_time
    ON usage_events (coalesce(requested_model_id, model_id), timestamp_ms);

DROP INDEX idx_usage_events_failed_time;
CREATE INDEX idx_usage_events_failed_time ON usage_events (timestamp_ms) WHERE failed = 1;
