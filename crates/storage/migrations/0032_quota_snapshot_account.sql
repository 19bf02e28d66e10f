-- A quota snapshot row names its logical window (`window_id`), whose row holds
-- the account key; readers take it from there. Snapshot rows no longer repeat
-- it (empty text), which was the largest part of a Codex event's quota rows.
-- The quota tables come from a later migration (0062), so the rows stored
-- before are cleared by a step the store runs at open
-- (`crates/storage/src/rollup.rs`, `backfill`, step `quota_snapshot_account`).
INSERT INTO usage_rollup_backfill (name) VALUES ('quota_snapshot_account');
