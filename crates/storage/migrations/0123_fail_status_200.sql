-- CPA reports status 200 for almost every call that did not fail, so that code
-- is stored as NULL (no bytes) and an absent code as 0 (no bytes either; a
-- stored code is positive, so 0 is free), in the renamed column
-- `fail_status_stored`; an earlier stored 0 becomes the real 0.5, which no
-- code can be. The column of the old name, now virtual, gives the codes back.
-- `crates/storage/src/events.rs` stores codes the same way.
ALTER TABLE usage_events RENAME COLUMN fail_status_code TO fail_status_stored;

ALTER TABLE usage_events ADD COLUMN fail_status_code INTEGER
    GENERATED ALWAYS AS (CASE
        WHEN fail_status_stored IS NULL THEN 200
        WHEN fail_status_stored = 0 THEN NULL
        WHEN fail_status_stored = 0.5 THEN 0
        ELSE fail_status_stored
    END) VIRTUAL;

UPDATE usage_events SET fail_status_stored = CASE
        WHEN fail_status_stored IS NULL THEN 0
        WHEN fail_status_stored = 0 THEN 0.5
        ELSE NULL
    END
    WHERE fail_status_stored IS NULL OR fail_status_stored IN (0, 200);
