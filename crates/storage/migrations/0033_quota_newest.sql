-- The newest lifecycle-applied observation time per (account, provider,
-- inventory scope): what decides whether a new observation moves the logical
-- windows. It replaces the index `idx_account_quota_observations_scope`, which
-- repeated every observation's account key to answer the same question.
CREATE TABLE account_quota_newest (
    account_key TEXT NOT NULL,
    provider TEXT NOT NULL,
    inventory_scope_key TEXT NOT NULL,
    observed_at_ms INTEGER NOT NULL,
    PRIMARY KEY (account_key, provider, inventory_scope_key)
) WITHOUT ROWID;

-- The quota tables come from a later migration (0062), so the table is filled
-- and the index dropped by a step the store runs at open
-- (`crates/storage/src/rollup.rs`, `backfill`, step `quota_newest`).
INSERT INTO usage_rollup_backfill (name) VALUES ('quota_newest');
