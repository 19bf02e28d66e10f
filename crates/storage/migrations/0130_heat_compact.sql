-- Heat blobs keep only what the heatmap reads: each hour lists its identities
-- and price bands once, and each entry names them by index and holds calls and
-- the six token sums (`crates/storage/src/rollup.rs`, `encode_heat`). Stored
-- blobs are rewritten in Rust at open, keeping the order of their entries.
-- A database that still has to fill its heat rollup (`heat_h`, 0022) writes
-- the new layout directly.
INSERT INTO usage_rollup_backfill (name)
    SELECT 'heat_h_compact' WHERE EXISTS (SELECT 1 FROM usage_rollup_heat_h)
        AND NOT EXISTS (SELECT 1 FROM usage_rollup_backfill WHERE name = 'heat_h');
