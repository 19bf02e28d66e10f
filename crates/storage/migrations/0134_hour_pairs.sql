-- Which (identity, analytics model) pairs occur in each UTC hour, one packed row
-- per hour, as `usage_rollup_pairs_d` keeps them per day (`0003`). Filter
-- selectors read the whole hours at the edges of a range from these blobs: two
-- varints per pair instead of an identity rollup's entry per billing model, tier,
-- context band and status.
--
-- Maintained in the ingest transaction like the other rollups. Every hour (and
-- any day) that has an identity rollup but no pair row gets one built from that
-- rollup by the backfill step below, at open, before anything is ingested
-- (`crates/storage/src/rollup.rs`, `backfill_pairs`).
CREATE TABLE usage_rollup_pairs_h (
    bucket_ms INTEGER PRIMARY KEY,
    entries BLOB NOT NULL
);

INSERT INTO usage_rollup_backfill (name)
    SELECT 'pairs_h' WHERE EXISTS (SELECT 1 FROM usage_rollup_ident_h);
