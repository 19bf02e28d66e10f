-- Analytics read model: rollups maintained in the ingest transaction, plus the
-- indexes that event pages need.
--
-- Every rollup row is keyed by a price band (analytics model, billing model,
-- service tier, context band) and the failed flag, so cost is computed at read
-- time from token sums and the current prices. Rollups exist at three
-- resolutions (UTC quarter hour, hour and day) so a range is answered from a few
-- hundred or thousand rows whatever the history length: whole days from the day
-- table, the hours around them from the hour table, quarter hours at the edges
-- and raw events only for the sub-quarter-hour remainder. Quarter hours also make
-- local buckets exact in zones with +05:30 or +05:45 offsets.
--
-- Ids are `dims` ids; 0 means "not set".

-- The analytics model (reasoning suffix removed) of each effective requested model.
-- `seq` only grows, so readers can pick up new rows incrementally.
CREATE TABLE usage_model_analytics (
    seq INTEGER PRIMARY KEY,
    model_dim_id INTEGER NOT NULL UNIQUE,
    analytics_dim_id INTEGER NOT NULL
);

-- Every distinct combination of identity dimensions seen in an event.
CREATE TABLE usage_identities (
    id INTEGER PRIMARY KEY,
    provider_id INTEGER NOT NULL,
    executor_type_id INTEGER NOT NULL,
    auth_index_id INTEGER NOT NULL,
    source_id INTEGER NOT NULL,
    source_hash_id INTEGER NOT NULL,
    api_key_hash_id INTEGER NOT NULL,
    account_id INTEGER NOT NULL,
    auth_label_id INTEGER NOT NULL,
    auth_file_id INTEGER NOT NULL,
    auth_provider_id INTEGER NOT NULL,
    auth_project_id INTEGER NOT NULL,
    UNIQUE (provider_id, executor_type_id, auth_index_id, source_id, source_hash_id, api_key_hash_id,
            account_id, auth_label_id, auth_file_id, auth_provider_id, auth_project_id)
);

-- Rollups are packed: one row per UTC block holds every group of that block as
-- a blob of varint entries (see `crates/storage/src/rollup.rs` for the layout).
-- A 30-day query then reads a few dozen rows whatever the traffic volume, and
-- decoding a few thousand entries in memory is cheaper than stepping through as
-- many SQLite rows.
--
-- `agg`: entries keyed by (analytics model, billing model, service tier, context
-- band, failed): time, model and status scopes.
-- `ident`: the same keyed by identity as well: identity filters and breakdowns.
-- `latency`: positive latency and TTFT values per (analytics model, failed), for
-- exact nearest-rank percentiles without a raw scan.

CREATE TABLE usage_rollup_agg_q (
    bucket_ms INTEGER PRIMARY KEY,
    entries BLOB NOT NULL
);

CREATE TABLE usage_rollup_agg_h (
    bucket_ms INTEGER PRIMARY KEY,
    entries BLOB NOT NULL
);

CREATE TABLE usage_rollup_agg_d (
    bucket_ms INTEGER PRIMARY KEY,
    entries BLOB NOT NULL
);

CREATE TABLE usage_rollup_ident_q (
    bucket_ms INTEGER PRIMARY KEY,
    entries BLOB NOT NULL
);

CREATE TABLE usage_rollup_ident_h (
    bucket_ms INTEGER PRIMARY KEY,
    entries BLOB NOT NULL
);

CREATE TABLE usage_rollup_ident_d (
    bucket_ms INTEGER PRIMARY KEY,
    entries BLOB NOT NULL
);

CREATE TABLE usage_rollup_latency_q (
    bucket_ms INTEGER PRIMARY KEY,
    entries BLOB NOT NULL
);

CREATE TABLE usage_rollup_latency_h (
    bucket_ms INTEGER PRIMARY KEY,
    entries BLOB NOT NULL
);

CREATE TABLE usage_rollup_latency_d (
    bucket_ms INTEGER PRIMARY KEY,
    entries BLOB NOT NULL
);

-- Calls and tokens per UTC 5-minute block: the dashboard's 10-minute health strip
-- starts at any local midnight (every real offset is a multiple of 15 minutes).
CREATE TABLE usage_rollup_fine (
    bucket_ms INTEGER NOT NULL,
    failed INTEGER NOT NULL,
    calls INTEGER NOT NULL,
    total_tokens INTEGER NOT NULL,
    PRIMARY KEY (bucket_ms, failed)
) WITHOUT ROWID;

-- Model-filtered event pages walk one (effective model, time) range per raw model.
CREATE INDEX idx_usage_events_model_time
    ON usage_events (coalesce(requested_model_id, model_id), timestamp_ms, id);

-- Recent failures and failed-only pages.
CREATE INDEX idx_usage_events_failed_time ON usage_events (timestamp_ms, id) WHERE failed = 1;
