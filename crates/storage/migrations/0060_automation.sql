-- Account automation: quota cooldowns, the account-action queue and the audit log of
-- automatic account changes. Column names follow the Go server's tables so that its
-- databases can be adopted row by row.

-- Credentials disabled in CPA until their quota resets. `owner` says which automation
-- disabled it; only that owner restores it, and only while the row is active.
CREATE TABLE quota_cooldowns (
    id INTEGER PRIMARY KEY,
    auth_file_name TEXT NOT NULL,
    auth_index TEXT NOT NULL DEFAULT '',
    account_snapshot TEXT NOT NULL DEFAULT '',
    provider TEXT NOT NULL DEFAULT '',
    reason_code TEXT NOT NULL DEFAULT '',
    window_kind TEXT NOT NULL DEFAULT '',
    evidence_json TEXT NOT NULL DEFAULT '',
    recover_at_ms INTEGER NOT NULL,
    owner TEXT NOT NULL,
    event_hash TEXT NOT NULL DEFAULT '',
    -- active | recovered | skipped | released (a manual status change ended the claim)
    status TEXT NOT NULL DEFAULT 'active',
    disabled_at_ms INTEGER NOT NULL,
    recovered_at_ms INTEGER,
    last_error TEXT NOT NULL DEFAULT '',
    created_at_ms INTEGER NOT NULL,
    updated_at_ms INTEGER NOT NULL
);

-- One active cooldown per file, owner and credential (auth index, else provider + account).
CREATE UNIQUE INDEX idx_quota_cooldowns_active_identity ON quota_cooldowns (
    auth_file_name,
    owner,
    (CASE WHEN auth_index <> '' THEN 'i:' || auth_index ELSE 'p:' || provider || ':' || account_snapshot END)
) WHERE status = 'active';

CREATE INDEX idx_quota_cooldowns_due ON quota_cooldowns (status, recover_at_ms, id);

-- Credentials whose failures need an operator: delete, reauthorise or review.
CREATE TABLE account_action_candidates (
    id INTEGER PRIMARY KEY,
    action_type TEXT NOT NULL,
    -- pending | ignored | resolved | deleted
    status TEXT NOT NULL DEFAULT 'pending',
    provider TEXT NOT NULL DEFAULT '',
    auth_file_name TEXT NOT NULL,
    auth_index TEXT NOT NULL DEFAULT '',
    account_snapshot TEXT NOT NULL DEFAULT '',
    account_id_snapshot TEXT NOT NULL DEFAULT '',
    auth_label TEXT NOT NULL DEFAULT '',
    reason_code TEXT NOT NULL DEFAULT '',
    reason TEXT NOT NULL DEFAULT '',
    auto_disable_eligible INTEGER NOT NULL DEFAULT 0,
    auto_disabled_at_ms INTEGER,
    evidence_json TEXT NOT NULL DEFAULT '',
    last_error TEXT NOT NULL DEFAULT '',
    first_seen_at_ms INTEGER NOT NULL,
    last_seen_at_ms INTEGER NOT NULL,
    hit_count INTEGER NOT NULL DEFAULT 1,
    created_at_ms INTEGER NOT NULL,
    updated_at_ms INTEGER NOT NULL
);

-- One pending candidate per file, action, reason and credential.
CREATE UNIQUE INDEX idx_account_action_candidates_pending ON account_action_candidates (
    auth_file_name,
    action_type,
    reason_code,
    (CASE
        WHEN auth_index <> '' THEN 'i:' || auth_index
        WHEN account_id_snapshot <> '' THEN 'a:' || provider || ':' || account_id_snapshot
        ELSE 'p:' || provider || ':' || account_snapshot
    END)
) WHERE status = 'pending';

CREATE INDEX idx_account_action_candidates_status ON account_action_candidates (status, last_seen_at_ms);

-- Every automatic account change (and every decision not to change), with CPA's answer.
CREATE TABLE automation_audit (
    id INTEGER PRIMARY KEY,
    at_ms INTEGER NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    auth_file_name TEXT NOT NULL DEFAULT '',
    auth_index TEXT NOT NULL DEFAULT '',
    provider TEXT NOT NULL DEFAULT '',
    account TEXT NOT NULL DEFAULT '',
    reason TEXT NOT NULL DEFAULT '',
    outcome TEXT NOT NULL,
    detail TEXT NOT NULL DEFAULT ''
);

CREATE INDEX idx_automation_audit_at ON automation_audit (at_ms);
