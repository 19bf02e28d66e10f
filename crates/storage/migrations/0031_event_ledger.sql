-- The identity ledger without a second copy of every hash (see
-- `crates/storage/src/ledger.rs`). A stored event's whole hash stays in its
-- row (`usage_events.event_hash`); the ledger is keyed by the hash's first
-- eight bytes (big-endian, as a signed integer) and names that row.
CREATE TABLE usage_event_ledger (
    prefix INTEGER PRIMARY KEY,
    -- The event row holding the whole hash; NULL for a hash without a row.
    event_id INTEGER,
    -- The whole hash, only when no event row holds it.
    event_hash BLOB,
    first_seen_at_ms INTEGER NOT NULL
);

-- Hashes whose first eight bytes another stored hash has already.
CREATE TABLE usage_event_ledger_overflow (
    event_hash BLOB PRIMARY KEY,
    event_id INTEGER,
    first_seen_at_ms INTEGER NOT NULL
) WITHOUT ROWID;

-- `usage_event_identity_ledger` is moved into these tables and dropped once, at
-- the next open (`ledger::convert_stored`: the prefix is computed in Rust).
