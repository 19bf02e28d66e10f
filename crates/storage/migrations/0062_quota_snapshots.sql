-- Quota snapshots: observations of an account's quota windows, the logical windows they
-- describe, and one row per reported window.

CREATE TABLE account_quota_observations (
    id INTEGER PRIMARY KEY,
    observation_hash TEXT NOT NULL UNIQUE,
    account_key TEXT NOT NULL,
    provider TEXT NOT NULL,
    source TEXT NOT NULL,
    source_observation_id TEXT NOT NULL DEFAULT '',
    inventory_scope_key TEXT NOT NULL,
    inventory_mode TEXT NOT NULL,
    observed_at_ms INTEGER NOT NULL,
    window_count INTEGER NOT NULL DEFAULT 0,
    -- 1 when the observation moved the logical windows (it was the newest).
    lifecycle_applied INTEGER NOT NULL DEFAULT 0,
    created_at_ms INTEGER NOT NULL
);

CREATE INDEX idx_account_quota_observations_scope ON account_quota_observations (
    account_key, provider, inventory_scope_key, lifecycle_applied, observed_at_ms
);

CREATE TABLE account_quota_windows (
    id INTEGER PRIMARY KEY,
    account_key TEXT NOT NULL,
    provider TEXT NOT NULL,
    provider_window_id TEXT NOT NULL,
    scope_fingerprint TEXT NOT NULL,
    inventory_scope_key TEXT NOT NULL,
    -- active | pending_absent | inactive
    availability TEXT NOT NULL DEFAULT 'active',
    generation INTEGER NOT NULL DEFAULT 1,
    first_seen_at_ms INTEGER NOT NULL,
    last_seen_at_ms INTEGER NOT NULL,
    missing_since_ms INTEGER,
    deactivated_at_ms INTEGER,
    last_observation_id INTEGER,
    UNIQUE (account_key, provider, provider_window_id, scope_fingerprint)
);

CREATE TABLE account_quota_snapshots (
    id INTEGER PRIMARY KEY,
    observation_id INTEGER NOT NULL REFERENCES account_quota_observations (id) ON DELETE CASCADE,
    window_id INTEGER NOT NULL REFERENCES account_quota_windows (id) ON DELETE CASCADE,
    account_key TEXT NOT NULL,
    provider TEXT NOT NULL,
    provider_window_id TEXT NOT NULL,
    provider_window_aliases_json TEXT NOT NULL DEFAULT '',
    window_kind TEXT NOT NULL DEFAULT '',
    window_mode TEXT NOT NULL,
    model_scope_kind TEXT NOT NULL,
    model_scope_key TEXT NOT NULL DEFAULT '',
    model_ids_json TEXT NOT NULL DEFAULT '',
    source TEXT NOT NULL,
    source_observation_id TEXT NOT NULL DEFAULT '',
    observed_at_ms INTEGER NOT NULL,
    boundary_accuracy TEXT NOT NULL,
    cycle_start_ms INTEGER,
    cycle_end_ms INTEGER,
    duration_seconds INTEGER,
    used_percent REAL,
    remaining_percent REAL,
    used_value REAL,
    limit_value REAL,
    quota_unit TEXT NOT NULL DEFAULT '',
    reset_credits_available REAL,
    reset_credits_json TEXT NOT NULL DEFAULT '',
    plan_type TEXT NOT NULL DEFAULT '',
    relationship_kind TEXT NOT NULL DEFAULT '',
    container_provider_window_id TEXT NOT NULL DEFAULT ''
);

CREATE INDEX idx_account_quota_snapshots_window ON account_quota_snapshots (window_id, observed_at_ms, id);
