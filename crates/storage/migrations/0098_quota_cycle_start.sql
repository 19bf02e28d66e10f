-- A snapshot row whose cycle start is its cycle end less its duration (what
-- validation makes of every full boundary) stores NULL for it (no bytes); a
-- start that is really absent while end and duration are known is stored as
-- the real 0.5, which no start can be. Readers take the start back with
-- `cycle_start!` in `crates/storage/src/quota.rs`; the bounds keep its
-- arithmetic exact.
UPDATE account_quota_snapshots
    SET cycle_start_ms = CASE WHEN cycle_start_ms IS NULL THEN 0.5 ELSE NULL END
    WHERE cycle_end_ms IS NOT NULL AND duration_seconds IS NOT NULL
    AND (cycle_start_ms IS NULL OR (
        cycle_end_ms BETWEEN -3999999999999999999 AND 3999999999999999999
        AND duration_seconds BETWEEN -3999999999999999 AND 3999999999999999
        AND cycle_start_ms = cycle_end_ms - duration_seconds * 1000));
