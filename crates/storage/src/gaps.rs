//! The `collection_gaps` and `collector_heartbeat` tables behind [`GapStore`].

use cpamp_domain::StoreError;
use cpamp_domain::ports::{CollectionGap, GapCause, GapStore};

use crate::{SqliteStore, error};

/// Longest `detail` kept per gap; it is a diagnostic sentence, not a log.
const DETAIL_LIMIT: usize = 512;
/// Most gap rows kept in memory. Panels and `/status` ask for gaps every few seconds;
/// with at most this many rows in the table every answer is filtered from the copy and
/// no read connection is taken. A larger table is read with SQL each time.
const CACHED_GAPS: usize = 1_000;

/// A copy of every gap row (newest first) while the table is small, replaced after any
/// gap write. The gap tracker is the table's only writer while the store is open.
#[derive(Default)]
pub(crate) struct GapCache {
    state: std::sync::Mutex<GapCacheState>,
}

#[derive(Default)]
struct GapCacheState {
    /// Bumped after every gap write; a copy read meanwhile is not kept.
    generation: u64,
    /// Every row of the table, newest first; `None` until read or after a write.
    rows: Option<std::sync::Arc<Vec<CollectionGap>>>,
}

impl GapCache {
    fn state(&self) -> std::sync::MutexGuard<'_, GapCacheState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn written(&self) {
        let mut state = self.state();
        state.generation += 1;
        state.rows = None;
    }
}

/// The rows of `rows` (newest first) that [`GapStore::gaps`] answers for the range.
fn overlapping(rows: &[CollectionGap], from_ms: i64, to_ms: i64, limit: u32) -> Vec<CollectionGap> {
    rows.iter()
        .filter(|gap| gap.start_ms <= to_ms && gap.end_ms.is_none_or(|end| end >= from_ms))
        .take(limit as usize)
        .cloned()
        .collect()
}

impl GapStore for SqliteStore {
    async fn open_gap(
        &self,
        start_ms: i64,
        cause: GapCause,
        detail: &str,
    ) -> Result<i64, StoreError> {
        let detail = truncate(detail, DETAIL_LIMIT);
        // Single autocommit statements, no explicit transaction: gaps are opened
        // exactly when writes are failing, and a statement that fails is rolled back
        // by SQLite itself, leaving nothing open on the shared writer connection.
        // Only the gap tracker opens gaps, so nothing else can interleave.
        //
        // The statement runs to completion (`execute`, no `RETURNING` read with
        // `fetch_*`): an autocommit statement commits when it completes, and a reader
        // that stops at its first row leaves the commit to the statement's reset, whose
        // error (a full disk: the WAL frames are written at commit) nobody sees, so
        // the gap would count as recorded while SQLite rolled it back.
        let inserted = sqlx::query(
            "INSERT INTO collection_gaps (start_ms, end_ms, cause, detail) \
             SELECT ?, NULL, ?, ? WHERE NOT EXISTS (SELECT 1 FROM collection_gaps WHERE end_ms IS NULL)",
        )
        .bind(start_ms)
        .bind(cause.as_str())
        .bind(detail)
        .execute(self.writer())
        .await;
        self.gap_cache().written();
        let inserted = inserted.map_err(|error| error::map(error, "open gap"))?;
        if inserted.rows_affected() == 1 {
            return Ok(inserted.last_insert_rowid());
        }
        sqlx::query_scalar("SELECT id FROM collection_gaps WHERE end_ms IS NULL")
            .fetch_one(self.writer())
            .await
            .map_err(|error| error::map(error, "read open gap"))
    }

    async fn close_open_gaps(&self, end_ms: i64) -> Result<(), StoreError> {
        let closed = sqlx::query(
            "UPDATE collection_gaps SET end_ms = MAX(start_ms, ?) WHERE end_ms IS NULL",
        )
        .bind(end_ms)
        .execute(self.writer())
        .await;
        self.gap_cache().written();
        closed
            .map(|_| ())
            .map_err(|error| error::map(error, "close gap"))
    }

    async fn gaps(
        &self,
        from_ms: i64,
        to_ms: i64,
        limit: u32,
    ) -> Result<Vec<CollectionGap>, StoreError> {
        let generation = {
            let state = self.gap_cache().state();
            if let Some(rows) = &state.rows {
                return Ok(overlapping(rows, from_ms, to_ms, limit));
            }
            state.generation
        };
        // One more row than is kept tells whether the table fits the copy.
        let newest = read_gaps(self, i64::MIN, i64::MAX, CACHED_GAPS as u32 + 1).await?;
        if newest.len() > CACHED_GAPS {
            return read_gaps(self, from_ms, to_ms, limit).await;
        }
        let answer = overlapping(&newest, from_ms, to_ms, limit);
        let mut state = self.gap_cache().state();
        if state.generation == generation {
            state.rows = Some(std::sync::Arc::new(newest));
        }
        Ok(answer)
    }

    async fn heartbeat(&self, at_ms: i64) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO collector_heartbeat (id, at_ms) VALUES (1, ?) \
             ON CONFLICT (id) DO UPDATE SET at_ms = MAX(at_ms, excluded.at_ms)",
        )
        .bind(at_ms)
        .execute(self.writer())
        .await
        .map(|_| ())
        .map_err(|error| error::map(error, "write heartbeat"))
    }

    async fn last_heartbeat(&self) -> Result<Option<i64>, StoreError> {
        sqlx::query_scalar("SELECT at_ms FROM collector_heartbeat WHERE id = 1")
            .fetch_optional(self.reader())
            .await
            .map_err(|error| error::map(error, "read heartbeat"))
    }
}

/// Gaps overlapping `[from_ms, to_ms]`, newest first, at most `limit`, read with SQL.
async fn read_gaps(
    store: &SqliteStore,
    from_ms: i64,
    to_ms: i64,
    limit: u32,
) -> Result<Vec<CollectionGap>, StoreError> {
    let rows: Vec<(i64, i64, Option<i64>, String, String)> = sqlx::query_as(
        "SELECT id, start_ms, end_ms, cause, detail FROM collection_gaps \
         WHERE start_ms <= ? AND (end_ms IS NULL OR end_ms >= ?) \
         ORDER BY start_ms DESC, id DESC LIMIT ?",
    )
    .bind(to_ms)
    .bind(from_ms)
    .bind(i64::from(limit))
    .fetch_all(store.reader())
    .await
    .map_err(|error| error::map(error, "read gaps"))?;
    Ok(rows
        .into_iter()
        .map(|(id, start_ms, end_ms, cause, detail)| CollectionGap {
            id,
            start_ms,
            end_ms,
            cause: GapCause::parse(&cause),
            detail,
        })
        .collect())
}

fn truncate(text: &str, limit: usize) -> &str {
    if text.len() <= limit {
        return text;
    }
    let mut end = limit;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}
