-- A day's latency and TTFT samples are exactly those of its 24 hours (ingest
-- writes every value to both), so day blocks no longer keep their own copy:
-- readers take a day's samples from its hour blocks
-- (`crates/storage/src/analytics.rs`), which fall into the same local bucket.
DROP TABLE usage_rollup_latency_d;
