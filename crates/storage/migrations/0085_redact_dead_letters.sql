-- Dead letters written before their payloads were redacted may hold raw client API
-- keys, tokens or cookies. The redaction is Rust code (the same as for failure
-- summaries), so this leaves a step for the store to run once at open
-- (`crates/storage/src/rollup.rs`, `backfill`, step `redact_dead_letters`).
INSERT INTO usage_rollup_backfill (name)
    SELECT 'redact_dead_letters' WHERE EXISTS (SELECT 1 FROM dead_letter_events);
