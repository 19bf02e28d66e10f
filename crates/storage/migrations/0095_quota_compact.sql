-- Smaller quota rows. A Codex event with quota headers writes one observation
-- and two snapshot rows, so their size is paid per event.
--
-- `account_quota_observers`: the texts every observation of one origin repeats
-- (account key, provider, source, inventory scope and mode), once each.
-- `account_quota_shapes`: the texts a snapshot row repeats from the window's
-- earlier reports (window id, aliases, kind, mode, scope, model ids, accuracy,
-- unit, reset credits, plan, relationship), once each.
-- `account_quota_observations` keeps its ids (windows name their last one) and
-- holds the content hash as its 32 raw bytes; `account_quota_snapshots` is keyed
-- by (window, observation time, observation), the order its readers walk, so it
-- needs no separate index; its source and source observation id are those of
-- its observation.

CREATE TABLE account_quota_observers (
    id INTEGER PRIMARY KEY,
    account_key TEXT NOT NULL,
    provider TEXT NOT NULL,
    source TEXT NOT NULL,
    inventory_scope_key TEXT NOT NULL,
    inventory_mode TEXT NOT NULL,
    UNIQUE (account_key, provider, source, inventory_scope_key, inventory_mode)
);

CREATE TABLE account_quota_shapes (
    id INTEGER PRIMARY KEY,
    provider_window_id TEXT NOT NULL,
    provider_window_aliases_json TEXT NOT NULL,
    window_kind TEXT NOT NULL,
    window_mode TEXT NOT NULL,
    model_scope_kind TEXT NOT NULL,
    model_scope_key TEXT NOT NULL,
    model_ids_json TEXT NOT NULL,
    boundary_accuracy TEXT NOT NULL,
    quota_unit TEXT NOT NULL,
    reset_credits_json TEXT NOT NULL,
    plan_type TEXT NOT NULL,
    relationship_kind TEXT NOT NULL,
    container_provider_window_id TEXT NOT NULL,
    UNIQUE (provider_window_id, provider_window_aliases_json, window_kind, window_mode,
        model_scope_kind, model_scope_key, model_ids_json, boundary_accuracy, quota_unit,
        reset_credits_json, plan_type, relationship_kind, container_provider_window_id)
);

CREATE TABLE account_quota_observations_compact (
    id INTEGER PRIMARY KEY,
    -- SHA-256 of the observation's content (`Observation::hash`), 32 raw bytes.
    observation_hash BLOB NOT NULL UNIQUE,
    observer_id INTEGER NOT NULL REFERENCES account_quota_observers (id),
    source_observation_id TEXT NOT NULL DEFAULT '',
    observed_at_ms INTEGER NOT NULL,
    window_count INTEGER NOT NULL DEFAULT 0,
    -- 1 when the observation moved the logical windows (it was the newest).
    lifecycle_applied INTEGER NOT NULL DEFAULT 0,
    created_at_ms INTEGER NOT NULL
);

CREATE TABLE account_quota_snapshots_compact (
    window_id INTEGER NOT NULL,
    observed_at_ms INTEGER NOT NULL,
    observation_id INTEGER NOT NULL,
    shape_id INTEGER NOT NULL,
    cycle_start_ms INTEGER,
    cycle_end_ms INTEGER,
    duration_seconds INTEGER,
    used_percent REAL,
    remaining_percent REAL,
    used_value REAL,
    limit_value REAL,
    reset_credits_available REAL,
    PRIMARY KEY (window_id, observed_at_ms, observation_id)
) WITHOUT ROWID;

-- What the steps of 0032 and 0033 do at open, done here on the rows stored so
-- far (those steps would not find the columns they read any more).
INSERT OR REPLACE INTO account_quota_newest
    (account_key, provider, inventory_scope_key, observed_at_ms)
    SELECT account_key, provider, inventory_scope_key, max(observed_at_ms)
    FROM account_quota_observations WHERE lifecycle_applied = 1
    GROUP BY account_key, provider, inventory_scope_key;
DELETE FROM usage_rollup_backfill WHERE name IN ('quota_newest', 'quota_snapshot_account');
DROP INDEX IF EXISTS idx_account_quota_observations_scope;
DROP INDEX IF EXISTS idx_account_quota_snapshots_window;

INSERT INTO account_quota_observers
    (account_key, provider, source, inventory_scope_key, inventory_mode)
    SELECT DISTINCT account_key, provider, source, inventory_scope_key, inventory_mode
    FROM account_quota_observations;

INSERT INTO account_quota_observations_compact (id, observation_hash, observer_id,
    source_observation_id, observed_at_ms, window_count, lifecycle_applied, created_at_ms)
    SELECT o.id, unhex(o.observation_hash), r.id, o.source_observation_id, o.observed_at_ms,
        o.window_count, o.lifecycle_applied, o.created_at_ms
    FROM account_quota_observations o JOIN account_quota_observers r
        ON r.account_key = o.account_key AND r.provider = o.provider AND r.source = o.source
        AND r.inventory_scope_key = o.inventory_scope_key AND r.inventory_mode = o.inventory_mode
    ORDER BY o.id;

INSERT INTO account_quota_shapes (provider_window_id, provider_window_aliases_json, window_kind,
    window_mode, model_scope_kind, model_scope_key, model_ids_json, boundary_accuracy, quota_unit,
    reset_credits_json, plan_type, relationship_kind, container_provider_window_id)
    SELECT DISTINCT provider_window_id, provider_window_aliases_json, window_kind, window_mode,
        model_scope_kind, model_scope_key, model_ids_json, boundary_accuracy, quota_unit,
        reset_credits_json, plan_type, relationship_kind, container_provider_window_id
    FROM account_quota_snapshots;

-- A window reported twice in one observation (possible only in replayed Go
-- snapshots) keeps its later report, the one readers chose before.
INSERT OR REPLACE INTO account_quota_snapshots_compact (window_id, observed_at_ms, observation_id,
    shape_id, cycle_start_ms, cycle_end_ms, duration_seconds, used_percent, remaining_percent,
    used_value, limit_value, reset_credits_available)
    SELECT s.window_id, s.observed_at_ms, s.observation_id, h.id, s.cycle_start_ms, s.cycle_end_ms,
        s.duration_seconds, s.used_percent, s.remaining_percent, s.used_value, s.limit_value,
        s.reset_credits_available
    FROM account_quota_snapshots s JOIN account_quota_shapes h
        ON h.provider_window_id = s.provider_window_id
        AND h.provider_window_aliases_json = s.provider_window_aliases_json
        AND h.window_kind = s.window_kind AND h.window_mode = s.window_mode
        AND h.model_scope_kind = s.model_scope_kind AND h.model_scope_key = s.model_scope_key
        AND h.model_ids_json = s.model_ids_json AND h.boundary_accuracy = s.boundary_accuracy
        AND h.quota_unit = s.quota_unit AND h.reset_credits_json = s.reset_credits_json
        AND h.plan_type = s.plan_type AND h.relationship_kind = s.relationship_kind
        AND h.container_provider_window_id = s.container_provider_window_id
    ORDER BY s.id;

DROP TABLE account_quota_snapshots;
DROP TABLE account_quota_observations;
ALTER TABLE account_quota_observations_compact RENAME TO account_quota_observations;
ALTER TABLE account_quota_snapshots_compact RENAME TO account_quota_snapshots;
