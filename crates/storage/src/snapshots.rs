//! The newest event carrying response-header metadata per credential
//! (`usage_header_latest`): written in the ingest transaction, read by header
//! snapshots, so those read one row per credential whatever the window holds.

use std::collections::{HashMap, HashSet};

use cpamp_domain::StoreError;
use cpamp_domain::analytics::accounts::{credential_key, snapshot_key};
use cpamp_domain::analytics::headers::{HeaderFields, response_metadata};
use cpamp_domain::analytics::query::RawEvent;
use cpamp_domain::event::UsageEvent;

use crate::analytics::{EVENT_COLUMNS, lock_read};
use crate::events::NewEvent;
use crate::{SqliteStore, error};

/// Whether the stored event will carry header metadata (the same test the
/// snapshot reader applies to the stored row).
fn carries_headers(event: &UsageEvent) -> bool {
    let text = |value: &Option<String>| value.as_deref().is_some_and(|text| !text.is_empty());
    response_metadata(event.response_metadata_json.as_deref()).is_some()
        || event
            .header_quota_recover_at_ms
            .is_some_and(|value| value > 0)
        || event.header_quota_used_percent.is_some()
        || text(&event.header_quota_plan_type)
        || text(&event.header_error_kind)
        || text(&event.header_error_code)
        || text(&event.header_trace_id)
}

/// Records the batch's newest header event per credential. Runs inside the batch
/// transaction; one statement per credential the batch touches.
pub(crate) fn note_latest(
    connection: &rusqlite::Connection,
    fresh: &[NewEvent<'_>],
) -> rusqlite::Result<()> {
    let mut newest: HashMap<String, (i64, i64)> = HashMap::new();
    for new in fresh {
        let event = new.event;
        if !carries_headers(event) {
            continue;
        }
        let field = |value: &Option<String>| value.clone().unwrap_or_default();
        let key = credential_key(
            &field(&event.auth_file_snapshot),
            &field(&event.auth_index),
            &field(&event.account_snapshot),
            &field(&event.source_hash),
            &event.event_hash,
        );
        let candidate = (event.timestamp_ms, new.id);
        newest
            .entry(key)
            .and_modify(|current| *current = (*current).max(candidate))
            .or_insert(candidate);
    }
    if newest.is_empty() {
        return Ok(());
    }
    let mut upsert = connection.prepare_cached(
        "INSERT INTO usage_header_latest (key, timestamp_ms, event_id) VALUES (?1, ?2, ?3) \
             ON CONFLICT (key) DO UPDATE SET timestamp_ms = excluded.timestamp_ms, event_id = excluded.event_id \
             WHERE (excluded.timestamp_ms, excluded.event_id) > (usage_header_latest.timestamp_ms, usage_header_latest.event_id)",
    )?;
    for (key, (timestamp_ms, event_id)) in newest {
        upsert.execute((key, timestamp_ms, event_id))?;
    }
    Ok(())
}

impl SqliteStore {
    /// See `AnalyticsStore::latest_header_events`.
    pub(crate) async fn latest_header_events_inner(
        &self,
        from_ms: i64,
        to_ms: i64,
        limit: usize,
    ) -> Result<Vec<RawEvent>, StoreError> {
        const CHUNK: usize = 500;
        let db = |context: &'static str| move |source| error::map(source, context);
        let mut connection = self.reader_connection().await?;
        let mut out: Vec<RawEvent> = Vec::new();
        let mut seen: HashSet<String> = HashSet::new();
        // Newest first; rows whose events share a credential key (possible for
        // rows written by the backfill migration) are folded by that key.
        let mut before = (to_ms, i64::MIN);
        while out.len() < limit {
            let rows: Vec<(i64, i64)> = sqlx::query_as(
                "SELECT timestamp_ms, event_id FROM usage_header_latest WHERE timestamp_ms >= ?1 \
                 AND (timestamp_ms < ?2 OR (timestamp_ms = ?2 AND event_id < ?3)) \
                 ORDER BY timestamp_ms DESC, event_id DESC LIMIT ?4",
            )
            .bind(from_ms)
            .bind(before.0)
            .bind(before.1)
            .bind(CHUNK as i64)
            .fetch_all(&mut *connection)
            .await
            .map_err(db("read latest header events"))?;
            let Some(last) = rows.last().copied() else {
                break;
            };
            before = last;
            let ids: Vec<String> = rows.iter().map(|(_, id)| id.to_string()).collect();
            // Ids are integers read from the table, never input.
            let sql = format!(
                "SELECT {EVENT_COLUMNS} FROM usage_events WHERE id IN ({}) ORDER BY timestamp_ms DESC, id DESC",
                ids.join(",")
            );
            let found = sqlx::query(sqlx::AssertSqlSafe(sql))
                .fetch_all(&mut *connection)
                .await
                .map_err(db("read header events"))?;
            let state = lock_read(self.read_cache());
            for row in &found {
                let event = self.event_from_row(&state, row);
                if out.len() < limit
                    && HeaderFields::of(&event).is_set()
                    && seen.insert(snapshot_key(&event))
                {
                    out.push(event);
                }
            }
            if rows.len() < CHUNK {
                break;
            }
        }
        Ok(out)
    }
}
