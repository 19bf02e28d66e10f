-- Latency and TTFT samples become append-only runs, so a batch costs the same
-- however many events its quarter hour, hour or day already holds.
--
-- A block (UTC quarter hour, hour, day) keeps its samples in one or more rows,
-- `run` 0, 1, 2, ... Each row is a blob in the sample layout of
-- `crates/storage/src/rollup.rs`; the samples of the block are the union of its
-- runs (the same group may appear in several), so readers decode every run of a
-- block and P95 stays exact. Ingest appends to the newest run of the block while
-- that run is smaller than a fixed size and starts the next run once it is full,
-- so no batch reads or writes more than one bounded run per block and level.
-- Rows written before this migration become run 0 of their block.

CREATE TABLE usage_rollup_latency_q_runs (
    bucket_ms INTEGER NOT NULL,
    run INTEGER NOT NULL,
    entries BLOB NOT NULL,
    PRIMARY KEY (bucket_ms, run)
);
INSERT INTO usage_rollup_latency_q_runs (bucket_ms, run, entries)
    SELECT bucket_ms, 0, entries FROM usage_rollup_latency_q;
DROP TABLE usage_rollup_latency_q;
ALTER TABLE usage_rollup_latency_q_runs RENAME TO usage_rollup_latency_q;

CREATE TABLE usage_rollup_latency_h_runs (
    bucket_ms INTEGER NOT NULL,
    run INTEGER NOT NULL,
    entries BLOB NOT NULL,
    PRIMARY KEY (bucket_ms, run)
);
INSERT INTO usage_rollup_latency_h_runs (bucket_ms, run, entries)
    SELECT bucket_ms, 0, entries FROM usage_rollup_latency_h;
DROP TABLE usage_rollup_latency_h;
ALTER TABLE usage_rollup_latency_h_runs RENAME TO usage_rollup_latency_h;

CREATE TABLE usage_rollup_latency_d_runs (
    bucket_ms INTEGER NOT NULL,
    run INTEGER NOT NULL,
    entries BLOB NOT NULL,
    PRIMARY KEY (bucket_ms, run)
);
INSERT INTO usage_rollup_latency_d_runs (bucket_ms, run, entries)
    SELECT bucket_ms, 0, entries FROM usage_rollup_latency_d;
DROP TABLE usage_rollup_latency_d;
ALTER TABLE usage_rollup_latency_d_runs RENAME TO usage_rollup_latency_d;
