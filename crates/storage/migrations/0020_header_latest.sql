-- The newest event carrying response-header metadata per credential, kept
-- current at ingest so header snapshots read one row per credential instead of
-- scanning every event of the window.
--
-- `key` is the credential key of the snapshot rules (`file::index`,
-- `file::<file>`, `auth::<index>`, `account::<lowercase account>`,
-- `source::<hash>`, else `event::<hash>`). Ingest computes it in Rust; the
-- backfill below computes it in SQL, whose `trim` and `lower` are narrower than
-- Rust's, so a few credentials may get more than one row. Readers recompute the
-- key of each row's event and keep the newest, so the answer is the same.

CREATE TABLE usage_header_latest (
    key TEXT PRIMARY KEY,
    timestamp_ms INTEGER NOT NULL,
    event_id INTEGER NOT NULL
) WITHOUT ROWID;

CREATE INDEX idx_usage_header_latest_time ON usage_header_latest (timestamp_ms, event_id);

WITH header_events AS (
    SELECT e.id, e.timestamp_ms,
        trim(coalesce(file.value, '')) AS file,
        trim(coalesce(idx.value, '')) AS idx,
        trim(coalesce(account.value, '')) AS account,
        trim(coalesce(hash.value, '')) AS source_hash,
        lower(hex(e.event_hash)) AS event_hash
    FROM usage_events e
    LEFT JOIN dims file ON file.id = e.auth_file_snapshot_id
    LEFT JOIN dims idx ON idx.id = e.auth_index_id
    LEFT JOIN dims account ON account.id = e.account_snapshot_id
    LEFT JOIN dims hash ON hash.id = e.source_hash_id
    WHERE coalesce(e.response_metadata_json, '') <> ''
        OR e.header_quota_recover_at_ms IS NOT NULL
        OR e.header_quota_used_percent IS NOT NULL
        OR e.header_quota_plan_type_id IS NOT NULL
        OR e.header_error_kind_id IS NOT NULL
        OR e.header_error_code_id IS NOT NULL
        OR coalesce(e.header_trace_id, '') <> ''
),
keyed AS (
    SELECT id, timestamp_ms,
        CASE
            WHEN file <> '' AND idx <> '' THEN file || '::' || idx
            WHEN file <> '' THEN 'file::' || file
            WHEN idx <> '' THEN 'auth::' || idx
            WHEN account <> '' THEN 'account::' || lower(account)
            WHEN source_hash <> '' THEN 'source::' || source_hash
            ELSE 'event::' || event_hash
        END AS key,
        row_number() OVER (
            PARTITION BY CASE
                WHEN file <> '' AND idx <> '' THEN file || '::' || idx
                WHEN file <> '' THEN 'file::' || file
                WHEN idx <> '' THEN 'auth::' || idx
                WHEN account <> '' THEN 'account::' || lower(account)
                WHEN source_hash <> '' THEN 'source::' || source_hash
                ELSE 'event::' || event_hash
            END
            ORDER BY timestamp_ms DESC, id DESC
        ) AS rank
    FROM header_events
)
INSERT INTO usage_header_latest (key, timestamp_ms, event_id)
SELECT key, timestamp_ms, id FROM keyed WHERE rank = 1;
