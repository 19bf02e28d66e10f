-- An observation is found by the first 8 bytes of its content hash (an index
-- about half the size of one over the whole hash); the lookup then compares the
-- whole hash, which the row keeps. Writes are serialised, so the check before
-- each insert keeps hashes unique.
CREATE TABLE account_quota_observations_keyed (
    id INTEGER PRIMARY KEY,
    -- SHA-256 of the observation's content (`Observation::hash`), 32 raw bytes.
    observation_hash BLOB NOT NULL,
    observer_id INTEGER NOT NULL REFERENCES account_quota_observers (id),
    source_observation_id TEXT NOT NULL DEFAULT '',
    observed_at_ms INTEGER NOT NULL,
    window_count INTEGER NOT NULL DEFAULT 0,
    -- 1 when the observation moved the logical windows (it was the newest).
    lifecycle_applied INTEGER NOT NULL DEFAULT 0,
    created_at_ms INTEGER NOT NULL
);

INSERT INTO account_quota_observations_keyed (id, observation_hash, observer_id,
    source_observation_id, observed_at_ms, window_count, lifecycle_applied, created_at_ms)
    SELECT id, observation_hash, observer_id, source_observation_id, observed_at_ms,
        window_count, lifecycle_applied, created_at_ms
    FROM account_quota_observations ORDER BY id;
DROP TABLE account_quota_observations;
ALTER TABLE account_quota_observations_keyed RENAME TO account_quota_observations;

CREATE INDEX idx_account_quota_observations_hash
    ON account_quota_observations (substr(observation_hash, 1, 8));
