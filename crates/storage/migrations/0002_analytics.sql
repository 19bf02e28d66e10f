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

-- Aggregate rollups: no identity, for unfiltered, model- and status-filtered views.
CREATE TABLE usage_rollup_agg_q (
    bucket_ms INTEGER NOT NULL,
    model_id INTEGER NOT NULL,
    billing_model_id INTEGER NOT NULL,
    service_tier_id INTEGER NOT NULL,
    context_band INTEGER NOT NULL,
    failed INTEGER NOT NULL,
    calls INTEGER NOT NULL,
    input_tokens INTEGER NOT NULL,
    output_tokens INTEGER NOT NULL,
    reasoning_tokens INTEGER NOT NULL,
    cached_tokens INTEGER NOT NULL,
    cache_read_tokens INTEGER NOT NULL,
    cache_creation_tokens INTEGER NOT NULL,
    total_tokens INTEGER NOT NULL,
    latency_sum_ms INTEGER NOT NULL,
    latency_samples INTEGER NOT NULL,
    zero_token_calls INTEGER NOT NULL,
    last_seen_ms INTEGER NOT NULL,
    PRIMARY KEY (bucket_ms, model_id, billing_model_id, service_tier_id, context_band, failed)
) WITHOUT ROWID;

CREATE TABLE usage_rollup_agg_h (
    bucket_ms INTEGER NOT NULL,
    model_id INTEGER NOT NULL,
    billing_model_id INTEGER NOT NULL,
    service_tier_id INTEGER NOT NULL,
    context_band INTEGER NOT NULL,
    failed INTEGER NOT NULL,
    calls INTEGER NOT NULL,
    input_tokens INTEGER NOT NULL,
    output_tokens INTEGER NOT NULL,
    reasoning_tokens INTEGER NOT NULL,
    cached_tokens INTEGER NOT NULL,
    cache_read_tokens INTEGER NOT NULL,
    cache_creation_tokens INTEGER NOT NULL,
    total_tokens INTEGER NOT NULL,
    latency_sum_ms INTEGER NOT NULL,
    latency_samples INTEGER NOT NULL,
    zero_token_calls INTEGER NOT NULL,
    last_seen_ms INTEGER NOT NULL,
    PRIMARY KEY (bucket_ms, model_id, billing_model_id, service_tier_id, context_band, failed)
) WITHOUT ROWID;

CREATE TABLE usage_rollup_agg_d (
    bucket_ms INTEGER NOT NULL,
    model_id INTEGER NOT NULL,
    billing_model_id INTEGER NOT NULL,
    service_tier_id INTEGER NOT NULL,
    context_band INTEGER NOT NULL,
    failed INTEGER NOT NULL,
    calls INTEGER NOT NULL,
    input_tokens INTEGER NOT NULL,
    output_tokens INTEGER NOT NULL,
    reasoning_tokens INTEGER NOT NULL,
    cached_tokens INTEGER NOT NULL,
    cache_read_tokens INTEGER NOT NULL,
    cache_creation_tokens INTEGER NOT NULL,
    total_tokens INTEGER NOT NULL,
    latency_sum_ms INTEGER NOT NULL,
    latency_samples INTEGER NOT NULL,
    zero_token_calls INTEGER NOT NULL,
    last_seen_ms INTEGER NOT NULL,
    PRIMARY KEY (bucket_ms, model_id, billing_model_id, service_tier_id, context_band, failed)
) WITHOUT ROWID;

-- Identity rollups: per credential/API-key identity, for channel, account,
-- credential and API-key views and identity filters.
CREATE TABLE usage_rollup_ident_q (
    bucket_ms INTEGER NOT NULL,
    identity_id INTEGER NOT NULL,
    model_id INTEGER NOT NULL,
    billing_model_id INTEGER NOT NULL,
    service_tier_id INTEGER NOT NULL,
    context_band INTEGER NOT NULL,
    failed INTEGER NOT NULL,
    calls INTEGER NOT NULL,
    input_tokens INTEGER NOT NULL,
    output_tokens INTEGER NOT NULL,
    reasoning_tokens INTEGER NOT NULL,
    cached_tokens INTEGER NOT NULL,
    cache_read_tokens INTEGER NOT NULL,
    cache_creation_tokens INTEGER NOT NULL,
    total_tokens INTEGER NOT NULL,
    latency_sum_ms INTEGER NOT NULL,
    latency_samples INTEGER NOT NULL,
    zero_token_calls INTEGER NOT NULL,
    last_seen_ms INTEGER NOT NULL,
    PRIMARY KEY (bucket_ms, identity_id, model_id, billing_model_id, service_tier_id, context_band, failed)
) WITHOUT ROWID;

CREATE TABLE usage_rollup_ident_h (
    bucket_ms INTEGER NOT NULL,
    identity_id INTEGER NOT NULL,
    model_id INTEGER NOT NULL,
    billing_model_id INTEGER NOT NULL,
    service_tier_id INTEGER NOT NULL,
    context_band INTEGER NOT NULL,
    failed INTEGER NOT NULL,
    calls INTEGER NOT NULL,
    input_tokens INTEGER NOT NULL,
    output_tokens INTEGER NOT NULL,
    reasoning_tokens INTEGER NOT NULL,
    cached_tokens INTEGER NOT NULL,
    cache_read_tokens INTEGER NOT NULL,
    cache_creation_tokens INTEGER NOT NULL,
    total_tokens INTEGER NOT NULL,
    latency_sum_ms INTEGER NOT NULL,
    latency_samples INTEGER NOT NULL,
    zero_token_calls INTEGER NOT NULL,
    last_seen_ms INTEGER NOT NULL,
    PRIMARY KEY (bucket_ms, identity_id, model_id, billing_model_id, service_tier_id, context_band, failed)
) WITHOUT ROWID;

CREATE TABLE usage_rollup_ident_d (
    bucket_ms INTEGER NOT NULL,
    identity_id INTEGER NOT NULL,
    model_id INTEGER NOT NULL,
    billing_model_id INTEGER NOT NULL,
    service_tier_id INTEGER NOT NULL,
    context_band INTEGER NOT NULL,
    failed INTEGER NOT NULL,
    calls INTEGER NOT NULL,
    input_tokens INTEGER NOT NULL,
    output_tokens INTEGER NOT NULL,
    reasoning_tokens INTEGER NOT NULL,
    cached_tokens INTEGER NOT NULL,
    cache_read_tokens INTEGER NOT NULL,
    cache_creation_tokens INTEGER NOT NULL,
    total_tokens INTEGER NOT NULL,
    latency_sum_ms INTEGER NOT NULL,
    latency_samples INTEGER NOT NULL,
    zero_token_calls INTEGER NOT NULL,
    last_seen_ms INTEGER NOT NULL,
    PRIMARY KEY (bucket_ms, identity_id, model_id, billing_model_id, service_tier_id, context_band, failed)
) WITHOUT ROWID;

-- Calls and tokens per UTC 5-minute block: the dashboard's 10-minute health strip
-- starts at any local midnight (every real offset is a multiple of 15 minutes).
CREATE TABLE usage_rollup_fine (
    bucket_ms INTEGER NOT NULL,
    failed INTEGER NOT NULL,
    calls INTEGER NOT NULL,
    total_tokens INTEGER NOT NULL,
    PRIMARY KEY (bucket_ms, failed)
) WITHOUT ROWID;

-- Positive latency and TTFT values per UTC quarter hour, analytics model and
-- status, as LEB128 varints: exact nearest-rank percentiles without a raw scan.
CREATE TABLE usage_rollup_latency (
    bucket_ms INTEGER NOT NULL,
    model_id INTEGER NOT NULL,
    failed INTEGER NOT NULL,
    latencies BLOB NOT NULL,
    ttfts BLOB NOT NULL,
    PRIMARY KEY (bucket_ms, model_id, failed)
) WITHOUT ROWID;

-- Model-filtered event pages walk one (effective model, time) range per raw model.
CREATE INDEX idx_usage_events_model_time
    ON usage_events (coalesce(requested_model_id, model_id), timestamp_ms, id);

-- Recent failures and failed-only pages.
CREATE INDEX idx_usage_events_failed_time ON usage_events (timestamp_ms, id) WHERE failed = 1;
