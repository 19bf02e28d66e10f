-- Latency and TTFT samples are kept per band of values (eight bands per octave),
-- with each band's count in a small column of its own, so a percentile read sums
-- the counts and decodes only the bands that hold a selected rank
-- (`crates/storage/src/rollup.rs`, `encode_banded`). Only minute and quarter
-- blocks keep samples: hours and days read those of their quarters, which hold
-- the same values.
--
-- Stored runs are rewritten in Rust at open (`rollup::convert_samples`), which
-- then drops the old tables, the hours' copy included.
CREATE TABLE usage_rollup_samples_m (
    bucket_ms INTEGER NOT NULL,
    run INTEGER NOT NULL,
    bands BLOB NOT NULL,
    entries BLOB NOT NULL,
    PRIMARY KEY (bucket_ms, run)
);

CREATE TABLE usage_rollup_samples_q (
    bucket_ms INTEGER NOT NULL,
    run INTEGER NOT NULL,
    bands BLOB NOT NULL,
    entries BLOB NOT NULL,
    PRIMARY KEY (bucket_ms, run)
);

INSERT OR IGNORE INTO usage_rollup_backfill (name) VALUES ('sample_bands');
