//! Exports: the selected events written as export lines straight from SQLite rows.
//!
//! An export reads from one snapshot, like an event stream, but never builds a
//! [`RawEvent`](cpamp_domain::analytics::query::RawEvent): a thread of its own
//! steps one statement over the `(timestamp_ms, id)` index on a read-only
//! connection (rusqlite, whose rows lend their values instead of copying them),
//! fills an [`ExportRecord`] that borrows the row's texts and the dictionary
//! cache, and writes it into a chunk of about [`CHUNK_BYTES`]. Chunks travel over
//! a channel of [`CHUNKS_AHEAD`], so memory stays flat at any size and a slow
//! client slows the reader down. The bytes are exactly those of the page stream
//! written with `ExportFormat::write_event` (a test compares both).
//!
//! The snapshot opens before the dictionary cache is refreshed, so every text id
//! the snapshot holds is in the cache (dictionary rows are never removed).
//! Dropping the export (a client that went away) ends the thread at its next
//! chunk, which ends the snapshot.

use cpamp_domain::StoreError;
use cpamp_domain::event::{TokenCounts, write_timestamp_ms};
use cpamp_domain::ports::{EventSelection, ExportChunks, StreamOrder};
use cpamp_domain::transfer::export::{ExportFormat, ExportRecord};
use rusqlite::types::ValueRef;
use tokio::sync::mpsc;

use crate::SqliteStore;
use crate::analytics::{CacheState, lock_read};

/// A chunk is sent once it holds this many bytes.
const CHUNK_BYTES: usize = 256 * 1024;
/// Chunks written ahead of the reader.
const CHUNKS_AHEAD: usize = 2;

/// What the export thread sends.
enum Message {
    Chunk(String),
    Failed(StoreError),
    Done,
}

/// A running export (see the module documentation).
pub struct SqliteExport {
    total: u64,
    /// The preamble of an export without rows (nothing to read).
    pending: Option<String>,
    receiver: Option<mpsc::Receiver<Message>>,
}

impl std::fmt::Debug for SqliteExport {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("SqliteExport")
            .field("total", &self.total)
            .finish()
    }
}

impl ExportChunks for SqliteExport {
    fn total(&self) -> u64 {
        self.total
    }

    async fn next_chunk(&mut self) -> Result<Option<String>, StoreError> {
        if let Some(pending) = self.pending.take() {
            return Ok(Some(pending));
        }
        let Some(receiver) = self.receiver.as_mut() else {
            return Ok(None);
        };
        match receiver.recv().await {
            Some(Message::Chunk(chunk)) => Ok(Some(chunk)),
            Some(Message::Done) => {
                self.receiver = None;
                Ok(None)
            }
            Some(Message::Failed(error)) => {
                self.receiver = None;
                Err(error)
            }
            None => {
                self.receiver = None;
                Err(StoreError::Unavailable {
                    message: "the export stopped before its end".to_string(),
                    source: None,
                })
            }
        }
    }
}

fn sqlite(context: &'static str) -> impl Fn(rusqlite::Error) -> StoreError {
    move |error| StoreError::unavailable(format!("{context}: {error}"), error)
}

fn joined(context: &'static str) -> impl Fn(tokio::task::JoinError) -> StoreError {
    move |error| StoreError::unavailable(format!("{context}: {error}"), error)
}

/// The columns an export line needs, in the order [`write_row`] reads them.
const EXPORT_COLUMNS: &str = "event_hash, request_key, timestamp_ms, timestamp_text, provider_id, \
    executor_type_id, model_id, requested_model_id, resolved_model_id, endpoint_id, method_id, path_id, \
    auth_type_id, auth_index_id, source_id, source_hash_id, api_key_hash_id, account_snapshot_id, \
    auth_label_snapshot_id, auth_file_snapshot_id, auth_provider_snapshot_id, auth_project_id_snapshot_id, \
    auth_snapshot_at_ms, reasoning_effort_id, service_tier_id, request_service_tier_id, \
    response_service_tier_id, cache_input_mode, input_tokens, output_tokens, reasoning_tokens, \
    cached_tokens, cache_tokens, cache_read_tokens, cache_creation_tokens, total_tokens, latency_ms, \
    ttft_ms, failed, fail_status_code, fail_summary, response_metadata_json, header_quota_recover_at_ms, \
    header_quota_used_percent, header_quota_plan_type_id, header_error_kind_id, header_error_code_id, \
    header_trace, created_at_ms, timestamp_sub_ms, metadata_template_id, metadata_values";

/// What to read: conditions, the keyset start, and how many events.
struct Plan {
    filter: String,
    order: StreamOrder,
    start: (i64, i64),
    total: u64,
}

impl SqliteStore {
    pub(crate) async fn open_export_stream(
        &self,
        selection: EventSelection,
        format: ExportFormat,
    ) -> Result<SqliteExport, StoreError> {
        let path = self.path().to_path_buf();
        let busy = self.busy_timeout();
        // The snapshot starts with the first read after BEGIN.
        let connection = tokio::task::spawn_blocking(move || {
            let connection = rusqlite::Connection::open_with_flags(
                &path,
                rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY
                    | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )
            .map_err(sqlite("open export connection"))?;
            connection
                .busy_timeout(busy)
                .map_err(sqlite("open export connection"))?;
            connection
                .execute_batch("PRAGMA cache_size = -2048; BEGIN")
                .map_err(sqlite("begin export snapshot"))?;
            connection
                .query_row("SELECT count(*) FROM dims", [], |row| row.get::<_, i64>(0))
                .map_err(sqlite("begin export snapshot"))?;
            Ok::<_, StoreError>(connection)
        })
        .await
        .map_err(joined("open export"))??;
        let filter = {
            let mut reader = self
                .reader()
                .acquire()
                .await
                .map_err(|error| crate::error::map(error, "open export"))?;
            self.refresh(&mut reader).await?;
            self.filter_sql(&mut reader, &selection).await?
        };
        let empty = || SqliteExport {
            total: 0,
            pending: Some(format.preamble()).filter(|text| !text.is_empty()),
            receiver: None,
        };
        let Some(filter) = filter else {
            return Ok(empty());
        };
        let (connection, plan) = tokio::task::spawn_blocking(move || {
            let plan = plan(&connection, filter, &selection)?;
            Ok::<_, StoreError>((connection, plan))
        })
        .await
        .map_err(joined("count export"))??;
        if plan.total == 0 {
            return Ok(empty());
        }
        let total = plan.total;
        let (sender, receiver) = mpsc::channel(CHUNKS_AHEAD);
        let store = self.clone();
        std::thread::Builder::new()
            .name("usage-export".to_string())
            .spawn(move || {
                let message = match write_all(&store, &connection, &plan, format, &sender) {
                    Ok(()) => Message::Done,
                    Err(error) => Message::Failed(error),
                };
                let _ = sender.blocking_send(message);
            })
            .map_err(|error| StoreError::unavailable("start the export thread", error))?;
        Ok(SqliteExport {
            total,
            pending: None,
            receiver: Some(receiver),
        })
    }
}

/// Counts the selection in the snapshot and finds where its rows start.
fn plan(
    connection: &rusqlite::Connection,
    filter: crate::stream::Filter,
    selection: &EventSelection,
) -> Result<Plan, StoreError> {
    let (from_ms, to_ms) = (filter.from_ms, filter.to_ms);
    let whole = filter.conditions.join(" AND ");
    let count: i64 = connection
        .query_row(
            &format!("SELECT count(*) FROM usage_events WHERE {whole}"),
            [],
            |row| row.get(0),
        )
        .map_err(sqlite("count events"))?;
    let mut total = u64::try_from(count).unwrap_or(0);
    // As in the page stream: the time bound in the scan's direction is the keyset's.
    let mut conditions = filter.conditions;
    let (mut start, bound) = match selection.order {
        StreamOrder::OldestFirst => ((from_ms, i64::MIN), format!("timestamp_ms < {to_ms}")),
        StreamOrder::NewestFirst => (
            (to_ms.saturating_sub(1), i64::MAX),
            format!("timestamp_ms >= {from_ms}"),
        ),
    };
    conditions[0] = bound;
    let mut filter = conditions.join(" AND ");
    if let Some(newest) = selection.newest
        && newest < total
    {
        total = newest;
        if newest > 0 {
            let cutoff: (i64, i64) = connection
                .query_row(
                    &format!(
                        "SELECT timestamp_ms, id FROM usage_events WHERE {whole} \
                         ORDER BY timestamp_ms DESC, id DESC LIMIT 1 OFFSET ?1"
                    ),
                    [i64::try_from(newest - 1).unwrap_or(i64::MAX)],
                    |row| Ok((row.get(0)?, row.get(1)?)),
                )
                .map_err(sqlite("find the newest events"))?;
            match selection.order {
                StreamOrder::OldestFirst => start = (cutoff.0, cutoff.1.saturating_sub(1)),
                StreamOrder::NewestFirst => filter.push_str(&format!(
                    " AND (timestamp_ms > {0} OR (timestamp_ms = {0} AND id >= {1}))",
                    cutoff.0, cutoff.1
                )),
            }
        }
    }
    Ok(Plan {
        filter,
        order: selection.order,
        start,
        total,
    })
}

/// Steps the plan's rows and sends them as chunks; stops early (without error)
/// when the receiver is gone.
fn write_all(
    store: &SqliteStore,
    connection: &rusqlite::Connection,
    plan: &Plan,
    format: ExportFormat,
    sender: &mpsc::Sender<Message>,
) -> Result<(), StoreError> {
    let (keyset, order) = match plan.order {
        StreamOrder::OldestFirst => (
            "timestamp_ms >= ?1 AND (timestamp_ms > ?1 OR id > ?2)",
            "timestamp_ms, id",
        ),
        StreamOrder::NewestFirst => (
            "timestamp_ms <= ?1 AND (timestamp_ms < ?1 OR id < ?2)",
            "timestamp_ms DESC, id DESC",
        ),
    };
    // One scan of the time index in order: no sort, so no memory that grows
    // with the selection, whatever other index a filter could use.
    let sql = format!(
        "SELECT {EXPORT_COLUMNS} FROM usage_events INDEXED BY idx_usage_events_timestamp \
         WHERE {} AND {keyset} ORDER BY {order} LIMIT {}",
        plan.filter,
        i64::try_from(plan.total).unwrap_or(i64::MAX)
    );
    let mut statement = connection.prepare(&sql).map_err(sqlite("read events"))?;
    let mut rows = statement
        .query([plan.start.0, plan.start.1])
        .map_err(sqlite("read events"))?;
    let mut scratch = Scratch::default();
    let mut out = String::with_capacity(CHUNK_BYTES + 64 * 1024);
    out.push_str(&format.preamble());
    loop {
        let mut finished = false;
        {
            let state = lock_read(store.read_cache());
            while out.len() < CHUNK_BYTES {
                match rows.next().map_err(sqlite("read events"))? {
                    Some(row) => write_row(&state, row, format, &mut scratch, &mut out),
                    None => {
                        finished = true;
                        break;
                    }
                }
            }
        }
        if !out.is_empty() {
            let chunk = std::mem::replace(&mut out, String::with_capacity(CHUNK_BYTES + 64 * 1024));
            if sender.blocking_send(Message::Chunk(chunk)).is_err() {
                return Ok(());
            }
        }
        if finished {
            return Ok(());
        }
    }
}

/// Buffers reused from row to row.
#[derive(Default)]
struct Scratch {
    hash: String,
    timestamp: String,
    metadata: String,
    request: String,
    trace: String,
}

fn int(row: &rusqlite::Row<'_>, index: usize) -> Option<i64> {
    match row.get_ref(index) {
        Ok(ValueRef::Integer(value)) => Some(value),
        _ => None,
    }
}

fn text<'r>(row: &'r rusqlite::Row<'_>, index: usize) -> Option<&'r str> {
    match row.get_ref(index) {
        Ok(ValueRef::Text(bytes)) => std::str::from_utf8(bytes).ok(),
        _ => None,
    }
}

/// A stored request id or trace id as its text ([`crate::compact::stored_key`]).
fn key<'r>(row: &'r rusqlite::Row<'_>, index: usize, out: &'r mut String) -> Option<&'r str> {
    crate::compact::stored_key(row.get_ref(index).ok()?, out)
}

fn push_hex(out: &mut String, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for byte in bytes {
        out.push(char::from(DIGITS[usize::from(byte >> 4)]));
        out.push(char::from(DIGITS[usize::from(byte & 0x0f)]));
    }
}

/// Writes one row of [`EXPORT_COLUMNS`] as an export line: the values
/// `SqliteStore::event_from_row` would read, through [`ExportRecord`].
fn write_row(
    state: &CacheState,
    row: &rusqlite::Row<'_>,
    format: ExportFormat,
    scratch: &mut Scratch,
    out: &mut String,
) {
    let dim = |index: usize| state.text_ref(int(row, index));
    let number = |index: usize| int(row, index).unwrap_or(0);
    scratch.hash.clear();
    if let Ok(ValueRef::Blob(bytes) | ValueRef::Text(bytes)) = row.get_ref(0) {
        push_hex(&mut scratch.hash, bytes);
    }
    let request = key(row, 1, &mut scratch.request);
    let trace = key(row, 47, &mut scratch.trace);
    let timestamp_ms = number(2);
    let timestamp = match (text(row, 3), int(row, 49)) {
        (Some(stored), _) => stored,
        (None, Some(sub_ms)) => {
            scratch.timestamp =
                crate::compact::stored_timestamp(None, Some(sub_ms), timestamp_ms).into_owned();
            scratch.timestamp.as_str()
        }
        (None, None) => {
            scratch.timestamp.clear();
            write_timestamp_ms(&mut scratch.timestamp, timestamp_ms);
            scratch.timestamp.as_str()
        }
    };
    let metadata = match (text(row, 41), int(row, 50)) {
        (Some(stored), _) => stored,
        (None, Some(template)) => {
            let values = match row.get_ref(51) {
                Ok(ValueRef::Blob(bytes)) => bytes,
                _ => &[],
            };
            scratch.metadata = crate::compact::stored_metadata(
                None,
                Some(state.text_ref(Some(template))),
                Some(values),
                timestamp_ms,
                trace,
            )
            .map(std::borrow::Cow::into_owned)
            .unwrap_or_default();
            scratch.metadata.as_str()
        }
        (None, None) => "",
    };
    let (model_id, requested_id) = (int(row, 6), int(row, 7));
    let record = ExportRecord {
        request_id: request.unwrap_or(""),
        event_hash: &scratch.hash,
        timestamp_ms,
        timestamp,
        provider: dim(4),
        executor_type: dim(5),
        model: state.text_ref(model_id),
        analytics_model: state.analytics_model_ref(model_id, requested_id),
        requested_model: state.text_ref(requested_id),
        resolved_model: dim(8),
        endpoint: dim(9),
        method: dim(10),
        path: dim(11),
        auth_type: dim(12),
        auth_index: dim(13),
        source: dim(14),
        source_hash: dim(15),
        api_key_hash: dim(16),
        account: dim(17),
        auth_label: dim(18),
        auth_file: dim(19),
        auth_provider: dim(20),
        auth_project: dim(21),
        auth_snapshot_at_ms: int(row, 22),
        reasoning_effort: dim(23),
        service_tier: dim(24),
        request_service_tier: dim(25),
        response_service_tier: dim(26),
        cache_input_mode: match int(row, 27) {
            Some(0) => "included_in_input",
            Some(1) => "separate_from_input",
            _ => "",
        },
        tokens: TokenCounts {
            input: number(28),
            output: number(29),
            reasoning: number(30),
            cached: number(31),
            cache: number(32),
            cache_read: number(33),
            cache_creation: number(34),
            total: number(35),
        },
        latency_ms: int(row, 36),
        ttft_ms: int(row, 37),
        failed: number(38) != 0,
        fail_status_code: int(row, 39),
        fail_summary: text(row, 40).unwrap_or(""),
        response_metadata_json: metadata,
        header_quota_recover_at_ms: int(row, 42),
        header_quota_used_percent: match row.get_ref(43) {
            Ok(ValueRef::Real(value)) => Some(value),
            Ok(ValueRef::Integer(value)) => Some(value as f64),
            _ => None,
        },
        header_quota_plan_type: dim(44),
        header_error_kind: dim(45),
        header_error_code: dim(46),
        header_trace_id: trace.unwrap_or(""),
        created_at_ms: number(48),
    };
    format.write_record(out, &record);
}
