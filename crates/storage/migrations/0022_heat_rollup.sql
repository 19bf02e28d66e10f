-- Hourly rollup for the heatmap and hourly distribution, keyed like the identity
-- rollup but by a reduced identity: the effective provider (snapshot provider,
-- else event provider) in `provider_id` and the API-key hash, every other
-- dimension 0. Those are the only identity fields the heatmap reads, so an hour
-- holds a few entries per client key and provider instead of one per full
-- identity. The reduced identities are ordinary `usage_identities` rows.
CREATE TABLE usage_rollup_heat_h (
    bucket_ms INTEGER PRIMARY KEY,
    entries BLOB NOT NULL
);

-- Steps a migration leaves to Rust because they decode packed rollup blobs. The
-- store runs each at open, before ingesting, and removes its row in the same
-- transaction as its writes (`crates/storage/src/rollup.rs`, `backfill`).
CREATE TABLE usage_rollup_backfill (
    name TEXT PRIMARY KEY
) WITHOUT ROWID;

-- Existing hourly identity rollups become heat rollups.
INSERT INTO usage_rollup_backfill (name)
    SELECT 'heat_h' WHERE EXISTS (SELECT 1 FROM usage_rollup_ident_h);
