-- Which (identity, analytics model) pairs occur in each UTC day, one packed row
-- per day. Filter selectors only need to know which identities and models
-- exist in a range, not their sums; reading this blob instead of the day's
-- identity rollup decodes two varints per pair rather than eighteen per entry,
-- and pairs are not repeated per billing model, tier, context band or status.
-- Maintained in the ingest transaction like the other rollups. Days written
-- before this table existed have no row; readers fall back to the day's
-- identity rollup for them.
CREATE TABLE usage_rollup_pairs_d (
    bucket_ms INTEGER PRIMARY KEY,
    entries BLOB NOT NULL
);
