-- Smaller event rows (see `crates/storage/src/compact.rs`).
--
-- `timestamp_sub_ms`: the fraction digits CPA sends beyond the millisecond, as
-- `10^n` plus the `n` digits, in place of the whole RFC 3339 text; the text is
-- kept in `timestamp_text` only when it is not `timestamp_ms`'s canonical text
-- with more digits (another offset, another layout).
--
-- `metadata_template_id` and `metadata_values`: the response metadata as a
-- template shared by many events (a `dims` text) and the event's own literals;
-- `response_metadata_json` keeps only a text the template form cannot rebuild
-- byte for byte.
ALTER TABLE usage_events ADD COLUMN timestamp_sub_ms INTEGER;
ALTER TABLE usage_events ADD COLUMN metadata_template_id INTEGER;
ALTER TABLE usage_events ADD COLUMN metadata_values BLOB;

-- Rows stored before take the compact form once, at the next open
-- (`crates/storage/src/rollup.rs`, `backfill`, step `compact_events`).
INSERT INTO usage_rollup_backfill (name)
    SELECT 'compact_events' WHERE EXISTS (
        SELECT 1 FROM usage_events
        WHERE timestamp_text IS NOT NULL OR response_metadata_json IS NOT NULL
    );
