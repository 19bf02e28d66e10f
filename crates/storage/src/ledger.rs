//! The identity ledger: every event hash ever stored, so none is stored twice.
//!
//! The whole 32-byte hash of a stored event is kept once, in its event row
//! (`usage_events.event_hash`). The ledger (`usage_event_ledger`) is keyed by
//! the hash's first eight bytes as an integer (its rowid) and names the event
//! row that holds the rest; only a hash without an event row (one the Go
//! server remembered for an event it no longer stored) keeps its whole hash in
//! the ledger. Two different hashes with the same first eight bytes are
//! possible, if unlikely: the later one is kept whole in
//! `usage_event_ledger_overflow`, keyed by the whole hash.
//!
//! A claim is one `INSERT OR IGNORE` of the prefix row; only when that prefix
//! is taken already is the whole hash compared (a duplicate, almost always).
//!
//! A row naming an event row that was first seen when that row was created
//! stores `SEEN_AT_CREATION` (0) as its `first_seen_at_ms` rather than repeat
//! the row's `created_at_ms` (migration 0097).

use rusqlite::{Connection, OptionalExtension};

/// The first eight bytes of a hash, big-endian, as the ledger's key.
pub(crate) fn prefix(hash: &[u8; 32]) -> i64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(&hash[..8]);
    i64::from_be_bytes(word)
}

/// The `first_seen_at_ms` of a ledger row naming an event row first seen when
/// that row was created: the time is the row's `created_at_ms`.
pub(crate) const SEEN_AT_CREATION: i64 = 0;

/// Records `hash` as seen, for the event row `event_id` (whose `event_hash`
/// column holds the same hash) or for no row (`None`: the hash is kept whole).
/// `false` when the hash was recorded already (a duplicate).
pub(crate) fn claim(
    connection: &Connection,
    hash: &[u8; 32],
    event_id: Option<i64>,
    first_seen_at_ms: i64,
) -> rusqlite::Result<bool> {
    let key = prefix(hash);
    let whole = event_id.is_none().then_some(&hash[..]);
    let inserted = connection
        .prepare_cached(
            "INSERT OR IGNORE INTO usage_event_ledger (prefix, event_id, event_hash, first_seen_at_ms) \
             VALUES (?1, ?2, ?3, ?4)",
        )?
        .execute((key, event_id, whole, first_seen_at_ms))?;
    if inserted == 1 {
        return Ok(true);
    }
    // The prefix is taken: by this hash (a duplicate), or by another one.
    let holder: Option<(Option<i64>, Option<Vec<u8>>)> = connection
        .prepare_cached("SELECT event_id, event_hash FROM usage_event_ledger WHERE prefix = ?1")?
        .query_row([key], |row| Ok((row.get(0)?, row.get(1)?)))
        .optional()?;
    let held = match holder {
        Some((_, Some(whole))) => Some(whole),
        Some((Some(id), None)) => connection
            .prepare_cached("SELECT event_hash FROM usage_events WHERE id = ?1")?
            .query_row([id], |row| row.get::<_, Vec<u8>>(0))
            .optional()?,
        _ => None,
    };
    if held.as_deref() == Some(&hash[..]) {
        return Ok(false);
    }
    let inserted = connection
        .prepare_cached(
            "INSERT OR IGNORE INTO usage_event_ledger_overflow (event_hash, event_id, first_seen_at_ms) \
             VALUES (?1, ?2, ?3)",
        )?
        .execute((&hash[..], event_id, first_seen_at_ms))?;
    Ok(inserted == 1)
}

/// The event id recorded for `hash` (`None` when it was never stored, or was
/// stored without an event row).
pub(crate) const EVENT_ID_BY_HASH: &str = "SELECT id FROM usage_events \
    WHERE event_hash = ?2 AND id IN (SELECT event_id FROM usage_event_ledger WHERE prefix = ?1 \
    UNION ALL SELECT event_id FROM usage_event_ledger_overflow WHERE event_hash = ?2)";

/// Moves the rows of the ledger written before `0031_event_ledger`
/// (`usage_event_identity_ledger`, whole hashes) into the ledger and drops it,
/// in one transaction. Runs at open, before anything is ingested; does nothing
/// once that table is gone.
pub(crate) fn convert_stored(connection: &mut Connection) -> rusqlite::Result<()> {
    let transaction =
        connection.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let old: Option<i64> = transaction
        .query_row(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'usage_event_identity_ledger'",
            [],
            |row| row.get(0),
        )
        .optional()?;
    if old.is_none() {
        return Ok(());
    }
    {
        let mut select = transaction.prepare(
            "SELECT event_hash, event_id, first_seen_at_ms FROM usage_event_identity_ledger \
             WHERE event_hash > ?1 ORDER BY event_hash LIMIT 5000",
        )?;
        let mut after: Vec<u8> = Vec::new();
        loop {
            let rows: Vec<(Vec<u8>, Option<i64>, i64)> = select
                .query_map([&after], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))?
                .collect::<rusqlite::Result<_>>()?;
            let Some(last) = rows.last() else {
                break;
            };
            after = last.0.clone();
            for (whole, event_id, first_seen_at_ms) in rows {
                let Ok(hash) = <[u8; 32]>::try_from(whole.as_slice()) else {
                    continue;
                };
                // An event id whose row holds another hash (never written so)
                // keeps the whole hash.
                let created: Option<i64> = match event_id {
                    Some(id) => transaction
                        .prepare_cached(
                            "SELECT created_at_ms FROM usage_events WHERE id = ?1 AND event_hash = ?2",
                        )?
                        .query_row((id, &whole), |row| row.get(0))
                        .optional()?,
                    None => None,
                };
                let event_id = created.and(event_id);
                let first_seen_at_ms = if created == Some(first_seen_at_ms) {
                    SEEN_AT_CREATION
                } else {
                    first_seen_at_ms
                };
                claim(&transaction, &hash, event_id, first_seen_at_ms)?;
            }
        }
    }
    transaction.execute_batch("DROP TABLE usage_event_identity_ledger")?;
    transaction.commit()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn database() -> Connection {
        let connection = Connection::open_in_memory().expect("memory");
        connection
            .execute_batch(
                "CREATE TABLE usage_events (id INTEGER PRIMARY KEY, event_hash BLOB NOT NULL);
                 CREATE TABLE usage_event_ledger (prefix INTEGER PRIMARY KEY, event_id INTEGER,
                     event_hash BLOB, first_seen_at_ms INTEGER NOT NULL);
                 CREATE TABLE usage_event_ledger_overflow (event_hash BLOB PRIMARY KEY,
                     event_id INTEGER, first_seen_at_ms INTEGER NOT NULL) WITHOUT ROWID;",
            )
            .expect("schema");
        connection
    }

    fn store(connection: &Connection, id: i64, hash: &[u8; 32]) -> bool {
        let claimed = claim(connection, hash, Some(id), 1).expect("claim");
        if claimed {
            connection
                .execute(
                    "INSERT INTO usage_events (id, event_hash) VALUES (?1, ?2)",
                    (id, &hash[..]),
                )
                .expect("event row");
        }
        claimed
    }

    #[test]
    fn a_hash_is_claimed_once_even_when_its_prefix_is_shared() {
        let connection = database();
        let first = [7u8; 32];
        let mut same_prefix = first;
        same_prefix[31] = 8;
        let mut other = first;
        other[0] = 0x80;
        assert!(store(&connection, 1, &first));
        assert!(!store(&connection, 2, &first));
        assert!(store(&connection, 3, &same_prefix));
        assert!(!store(&connection, 4, &same_prefix));
        assert!(store(&connection, 5, &other));
        assert!(!store(&connection, 6, &other));
        // A hash without an event row keeps deduping, whole.
        let remembered = [9u8; 32];
        assert!(claim(&connection, &remembered, None, 1).expect("claim"));
        assert!(!store(&connection, 7, &remembered));
        let mut near = remembered;
        near[20] = 0;
        assert!(store(&connection, 8, &near));
        for (hash, expected) in [
            (first, Some(1)),
            (same_prefix, Some(3)),
            (other, Some(5)),
            (near, Some(8)),
            (remembered, None),
        ] {
            let id: Option<i64> = connection
                .query_row(EVENT_ID_BY_HASH, (prefix(&hash), &hash[..]), |row| {
                    row.get(0)
                })
                .optional()
                .expect("lookup");
            assert_eq!(id, expected);
        }
        let overflow: i64 = connection
            .query_row(
                "SELECT count(*) FROM usage_event_ledger_overflow",
                [],
                |row| row.get(0),
            )
            .expect("count");
        assert_eq!(overflow, 2);
    }

    #[test]
    fn prefixes_order_like_the_hashes_sign_aside() {
        assert_eq!(prefix(&[0u8; 32]), 0);
        assert_eq!(prefix(&[0xffu8; 32]), -1);
        let mut hash = [0u8; 32];
        hash[7] = 1;
        assert_eq!(prefix(&hash), 1);
    }
}
