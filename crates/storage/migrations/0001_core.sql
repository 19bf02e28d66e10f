-- Core schema: usage events, the identity ledger, dead letters, settings.
--
-- Repeated text values (model, provider, endpoint, credential, ...) are stored once in
-- `dims` and referenced by integer id from `usage_events`. That keeps a stored event
-- small (well under 0.5 KB with its indexes) and makes grouping by a dimension an
-- integer comparison.

CREATE TABLE cpa_sources (
    id INTEGER PRIMARY KEY,
    base_url TEXT NOT NULL UNIQUE,
    created_at_ms INTEGER NOT NULL
);

CREATE TABLE dims (
    id INTEGER PRIMARY KEY,
    kind INTEGER NOT NULL,
    value TEXT NOT NULL,
    UNIQUE (kind, value)
);

CREATE TABLE usage_events (
    id INTEGER PRIMARY KEY,
    -- Raw 32-byte SHA-256 of the dedupe pre-hash string (hex on the wire).
    event_hash BLOB NOT NULL,
    -- The CPA connection the event was collected from (NULL for imports).
    cpa_source_id INTEGER REFERENCES cpa_sources (id),
    request_id TEXT,
    timestamp_ms INTEGER NOT NULL,
    -- Only set when the RFC 3339 text carries more precision than timestamp_ms
    -- (CPA sends up to nanoseconds); otherwise it is derived from timestamp_ms.
    timestamp_text TEXT,
    provider_id INTEGER,
    executor_type_id INTEGER,
    model_id INTEGER NOT NULL,
    requested_model_id INTEGER,
    resolved_model_id INTEGER,
    endpoint_id INTEGER,
    method_id INTEGER,
    path_id INTEGER,
    client_ip_id INTEGER,
    x_forwarded_for_id INTEGER,
    user_agent_id INTEGER,
    auth_type_id INTEGER,
    auth_index_id INTEGER,
    source_id INTEGER,
    source_hash_id INTEGER,
    api_key_hash_id INTEGER,
    account_snapshot_id INTEGER,
    auth_label_snapshot_id INTEGER,
    auth_file_snapshot_id INTEGER,
    auth_provider_snapshot_id INTEGER,
    auth_project_id_snapshot_id INTEGER,
    auth_snapshot_at_ms INTEGER,
    reasoning_effort_id INTEGER,
    service_tier_id INTEGER,
    request_service_tier_id INTEGER,
    response_service_tier_id INTEGER,
    -- 0 = included_in_input, 1 = separate_from_input, NULL = unknown.
    cache_input_mode INTEGER,
    input_tokens INTEGER NOT NULL DEFAULT 0,
    output_tokens INTEGER NOT NULL DEFAULT 0,
    reasoning_tokens INTEGER NOT NULL DEFAULT 0,
    cached_tokens INTEGER NOT NULL DEFAULT 0,
    cache_tokens INTEGER NOT NULL DEFAULT 0,
    cache_read_tokens INTEGER NOT NULL DEFAULT 0,
    cache_creation_tokens INTEGER NOT NULL DEFAULT 0,
    total_tokens INTEGER NOT NULL DEFAULT 0,
    normalized_uncached_input_tokens INTEGER,
    normalized_total_input_tokens INTEGER,
    normalized_cache_read_tokens INTEGER,
    normalized_cache_creation_tokens INTEGER,
    latency_ms INTEGER,
    ttft_ms INTEGER,
    failed INTEGER NOT NULL DEFAULT 0,
    fail_status_code INTEGER,
    fail_summary TEXT,
    response_metadata_json TEXT,
    header_quota_recover_at_ms INTEGER,
    header_quota_used_percent REAL,
    header_quota_plan_type_id INTEGER,
    header_error_kind_id INTEGER,
    header_error_code_id INTEGER,
    header_trace_id TEXT,
    created_at_ms INTEGER NOT NULL
);

-- Event pages and time ranges walk (timestamp_ms, id).
CREATE INDEX idx_usage_events_timestamp ON usage_events (timestamp_ms, id);

-- The dedupe authority: a hash seen once is never stored again, even if its event
-- row is later removed.
CREATE TABLE usage_event_identity_ledger (
    event_hash BLOB PRIMARY KEY,
    event_id INTEGER,
    first_seen_at_ms INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE dead_letter_events (
    id INTEGER PRIMARY KEY,
    payload TEXT NOT NULL,
    error TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL
);

CREATE TABLE settings (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL,
    updated_at_ms INTEGER NOT NULL
);

-- Row counts kept in the same transaction as the rows, so /status never scans.
CREATE TABLE counters (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;

INSERT INTO counters (name, value) VALUES ('usage_events', 0), ('dead_letter_events', 0);
