-- Server inspection: runs (one at a time per database, held by a lease), their
-- per-account results and logs, and which disables inspection owns.

CREATE TABLE codex_inspection_runs (
    id INTEGER PRIMARY KEY,
    trigger_type TEXT NOT NULL,
    -- Scheduled runs only: one run per interval bucket or time point.
    trigger_key TEXT NOT NULL DEFAULT '',
    -- running | cancelling | completed | failed | cancelled | interrupted
    status TEXT NOT NULL,
    started_at_ms INTEGER NOT NULL,
    finished_at_ms INTEGER,
    total_files INTEGER NOT NULL DEFAULT 0,
    probe_set_count INTEGER NOT NULL DEFAULT 0,
    sampled_count INTEGER NOT NULL DEFAULT 0,
    disabled_count INTEGER NOT NULL DEFAULT 0,
    enabled_count INTEGER NOT NULL DEFAULT 0,
    delete_count INTEGER NOT NULL DEFAULT 0,
    disable_count INTEGER NOT NULL DEFAULT 0,
    enable_count INTEGER NOT NULL DEFAULT 0,
    reauth_count INTEGER NOT NULL DEFAULT 0,
    keep_count INTEGER NOT NULL DEFAULT 0,
    error TEXT NOT NULL DEFAULT '',
    settings_json TEXT NOT NULL DEFAULT '{}',
    owner_id TEXT NOT NULL DEFAULT '',
    created_at_ms INTEGER NOT NULL,
    updated_at_ms INTEGER NOT NULL
);

CREATE UNIQUE INDEX idx_codex_inspection_runs_trigger ON codex_inspection_runs (trigger_key) WHERE trigger_key <> '';
CREATE INDEX idx_codex_inspection_runs_started ON codex_inspection_runs (started_at_ms, id);

-- The single lease: which run is active and until when its owner keeps it.
CREATE TABLE codex_inspection_leases (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    run_id INTEGER NOT NULL,
    owner_id TEXT NOT NULL,
    heartbeat_at_ms INTEGER NOT NULL,
    lease_expires_at_ms INTEGER NOT NULL
);

CREATE TABLE codex_inspection_results (
    id INTEGER PRIMARY KEY,
    run_id INTEGER NOT NULL REFERENCES codex_inspection_runs (id) ON DELETE CASCADE,
    account_key TEXT NOT NULL,
    file_name TEXT NOT NULL,
    display_account TEXT NOT NULL DEFAULT '',
    account_snapshot TEXT NOT NULL DEFAULT '',
    auth_index TEXT NOT NULL DEFAULT '',
    account_id TEXT NOT NULL DEFAULT '',
    provider TEXT NOT NULL DEFAULT '',
    disabled INTEGER NOT NULL DEFAULT 0,
    status TEXT NOT NULL DEFAULT '',
    state TEXT NOT NULL DEFAULT '',
    action TEXT NOT NULL,
    action_reason TEXT NOT NULL DEFAULT '',
    action_status TEXT NOT NULL DEFAULT '',
    executed_action TEXT NOT NULL DEFAULT '',
    action_error TEXT NOT NULL DEFAULT '',
    status_code INTEGER,
    used_percent REAL,
    is_quota INTEGER NOT NULL DEFAULT 0,
    auto_recover_eligible INTEGER NOT NULL DEFAULT 0,
    error TEXT NOT NULL DEFAULT '',
    plan_type TEXT NOT NULL DEFAULT '',
    quota_windows_json TEXT NOT NULL DEFAULT '',
    quota_inventory_observed INTEGER NOT NULL DEFAULT 0,
    error_kind TEXT NOT NULL DEFAULT '',
    error_detail TEXT NOT NULL DEFAULT '',
    created_at_ms INTEGER NOT NULL,
    UNIQUE (run_id, account_key)
);

CREATE TABLE codex_inspection_logs (
    id INTEGER PRIMARY KEY,
    run_id INTEGER NOT NULL REFERENCES codex_inspection_runs (id) ON DELETE CASCADE,
    level TEXT NOT NULL,
    message TEXT NOT NULL,
    detail TEXT NOT NULL DEFAULT '',
    created_at_ms INTEGER NOT NULL
);

CREATE INDEX idx_codex_inspection_logs_run ON codex_inspection_logs (run_id, created_at_ms, id);

-- Credentials an automatic inspection disable owns: only those may be re-enabled by
-- inspection's auto recovery. A manual change through the panel removes the row.
CREATE TABLE codex_inspection_disable_ownership (
    auth_file_name TEXT NOT NULL,
    provider TEXT NOT NULL DEFAULT '',
    auth_index TEXT NOT NULL DEFAULT '',
    account_id TEXT NOT NULL DEFAULT '',
    account_snapshot TEXT NOT NULL DEFAULT '',
    run_id INTEGER NOT NULL,
    created_at_ms INTEGER NOT NULL,
    PRIMARY KEY (auth_file_name, provider, auth_index, account_id, account_snapshot)
);
