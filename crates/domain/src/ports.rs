//! Ports: the traits storage implements and the collector and API program against.
//!
//! Methods return `impl Future + Send` so callers can spawn them; consumers are
//! generic over the concrete store, which only the binary names.

#![warn(missing_docs)]

use std::future::Future;

use crate::event::{DeadLetter, UsageEvent};

/// Why a store operation failed, phrased by what the caller can do about it.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The thing asked for does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// The write conflicts with stored data (for example a duplicate key).
    #[error("conflict: {0}")]
    Conflict(String),
    /// The request itself is invalid (bad filter, impossible range).
    #[error("{0}")]
    Invalid(String),
    /// The database cannot be used right now (locked, read-only, disk full, IO error).
    /// The operation may succeed when retried later.
    #[error("database unavailable: {message}")]
    Unavailable {
        /// What failed, without secrets.
        message: String,
        /// The underlying error, when there is one.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
}

impl StoreError {
    /// An `Unavailable` error with `message` and its cause.
    pub fn unavailable(
        message: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> StoreError {
        StoreError::Unavailable {
            message: message.into(),
            source: Some(Box::new(source)),
        }
    }
}

/// Where the events of a batch come from.
///
/// Only [`BatchOrigin::Collector`] batches are news: automation (quota cooldowns,
/// account actions) reacts to their newly stored events and to nothing else, so an
/// import of old history or the adoption of a Go database never disables an account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchOrigin {
    /// Collected live from CPA at this normalised base URL.
    Collector(String),
    /// Read from an export file (API, import session or `cpamp-server import`).
    Import,
    /// Copied from a Go server database being adopted.
    Adoption,
}

impl BatchOrigin {
    /// The CPA base URL of a collected batch.
    pub fn cpa_base_url(&self) -> Option<&str> {
        match self {
            BatchOrigin::Collector(base_url) if !base_url.is_empty() => Some(base_url),
            _ => None,
        }
    }

    /// True for events collected live from CPA (the only ones automation acts on).
    pub fn is_collected(&self) -> bool {
        matches!(self, BatchOrigin::Collector(_))
    }
}

/// One batch of events to store, with the items that could not be decoded.
/// Both are written in one transaction, so a batch is either stored whole or not at all.
#[derive(Debug, Clone)]
pub struct IngestBatch {
    /// Where the batch comes from (only collected batches may trigger automation).
    pub origin: BatchOrigin,
    /// Decoded events, in queue order.
    pub events: Vec<UsageEvent>,
    /// Items that could not be decoded, kept with their reason.
    pub dead_letters: Vec<DeadLetter>,
}

/// What storing a batch did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BatchOutcome {
    /// Events stored for the first time.
    pub inserted: u64,
    /// Events already known (same event hash); not stored again.
    pub skipped: u64,
    /// Dead letters stored.
    pub dead_lettered: u64,
    /// Positions in the batch's `events` of the events stored for the first time, in
    /// batch order. Work that must happen once per event (account automation) follows it.
    pub fresh: Vec<usize>,
}

/// Appends usage events. Idempotent: an event whose hash is known is skipped.
pub trait EventSink: Clone + Send + Sync + 'static {
    /// Stores the whole batch in one transaction, or nothing of it.
    fn store_batch(
        &self,
        batch: IngestBatch,
    ) -> impl Future<Output = Result<BatchOutcome, StoreError>> + Send;
}

/// Small key-value settings (JSON documents) kept beside the events.
pub trait SettingsStore: Clone + Send + Sync + 'static {
    /// The JSON document stored under `key`, if any.
    fn get_setting(
        &self,
        key: &str,
    ) -> impl Future<Output = Result<Option<String>, StoreError>> + Send;

    /// Stores `value` under `key`, replacing what was there.
    fn put_setting(
        &self,
        key: &str,
        value: &str,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// Counts that are cheap to read at any table size.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreCounts {
    /// Stored usage events.
    pub events: i64,
    /// Stored dead letters.
    pub dead_letters: i64,
}

/// Cheap health figures of the store, for `/status` and `/metrics`.
pub trait StoreStats: Clone + Send + Sync + 'static {
    /// Stored events and dead letters.
    fn counts(&self) -> impl Future<Output = Result<StoreCounts, StoreError>> + Send;
}

/// Facts about keys seen in events, used to explain a failed login without
/// revealing anything stored.
pub trait KeyHints: Clone + Send + Sync + 'static {
    /// True when events were recorded with a CPA client API key whose SHA-256
    /// (lowercase hex) is `api_key_hash`.
    fn is_known_api_key_hash(
        &self,
        api_key_hash: &str,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;
}

/// Sizes and the last WAL checkpoint of the database files (`/status.database`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DatabaseReport {
    /// Size of the main database file.
    pub database_bytes: u64,
    /// Size of the write-ahead log.
    pub wal_bytes: u64,
    /// Size of the shared-memory index file.
    pub shm_bytes: u64,
    /// The WAL size SQLite truncates the log to after a checkpoint.
    pub journal_size_limit_bytes: u64,
    /// The last WAL checkpoint.
    pub checkpoint: CheckpointReport,
}

impl DatabaseReport {
    /// The three files together.
    pub fn total_bytes(&self) -> u64 {
        self.database_bytes
            .saturating_add(self.wal_bytes)
            .saturating_add(self.shm_bytes)
    }
}

/// The outcome of the last WAL maintenance run.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CheckpointReport {
    /// `pending` before the first run, then `passive` or `truncate`.
    pub mode: String,
    /// SQLite's busy flag of the last checkpoint (1: readers kept it from finishing).
    pub busy: i64,
    /// Frames in the WAL at the last checkpoint.
    pub log_frames: i64,
    /// Frames copied into the database by it.
    pub checkpointed_frames: i64,
    /// Unix ms of the last checkpoint.
    pub executed_at_ms: i64,
    /// How long it took.
    pub duration_ms: i64,
    /// Unix ms of the last attempt to truncate the WAL.
    pub last_truncate_attempt_at_ms: Option<i64>,
    /// Why the last maintenance run failed, if it did.
    pub error: Option<String>,
}

/// Cheap health figures of the database files.
pub trait DatabaseStats: Clone + Send + Sync + 'static {
    /// Current file sizes with the last checkpoint outcome. Reads file metadata only.
    fn database_report(&self) -> impl Future<Output = Result<DatabaseReport, StoreError>> + Send;
}

/// Why the collector was not receiving during a gap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GapCause {
    /// The server itself was not running (from the last heartbeat to the next start).
    ServerDown,
    /// CPA could not be reached (connection refused, DNS, timeout).
    CpaUnreachable,
    /// CPA refused the management key.
    AuthRejected,
    /// Events were received but could not be stored.
    StoreFailed,
    /// Any other collector error.
    CollectorError,
}

impl GapCause {
    /// The cause as stored and reported.
    pub fn as_str(self) -> &'static str {
        match self {
            GapCause::ServerDown => "server_down",
            GapCause::CpaUnreachable => "cpa_unreachable",
            GapCause::AuthRejected => "auth_rejected",
            GapCause::StoreFailed => "store_failed",
            GapCause::CollectorError => "collector_error",
        }
    }

    /// The stored name back to a cause; anything unknown is `CollectorError`.
    pub fn parse(text: &str) -> GapCause {
        match text {
            "server_down" => GapCause::ServerDown,
            "cpa_unreachable" => GapCause::CpaUnreachable,
            "auth_rejected" => GapCause::AuthRejected,
            "store_failed" => GapCause::StoreFailed,
            _ => GapCause::CollectorError,
        }
    }
}

/// A period during which the collector was not receiving events from CPA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CollectionGap {
    /// The gap's row id.
    pub id: i64,
    /// Unix ms when receiving stopped.
    pub start_ms: i64,
    /// `None` while the gap is still open.
    pub end_ms: Option<i64>,
    /// Why receiving stopped (server down, CPA unreachable, key rejected, store
    /// failing, other collector error).
    pub cause: GapCause,
    /// What was observed (for example the collector's last error), without secrets.
    pub detail: String,
}

/// The record of collection gaps and the heartbeat that reveals server downtime.
pub trait GapStore: Clone + Send + Sync + 'static {
    /// Opens a gap unless one is open already; returns the open gap's id either way.
    fn open_gap(
        &self,
        start_ms: i64,
        cause: GapCause,
        detail: &str,
    ) -> impl Future<Output = Result<i64, StoreError>> + Send;

    /// Closes every open gap at `end_ms` (never before its start).
    fn close_open_gaps(&self, end_ms: i64) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Gaps overlapping `[from_ms, to_ms]`, newest first, at most `limit`.
    fn gaps(
        &self,
        from_ms: i64,
        to_ms: i64,
        limit: u32,
    ) -> impl Future<Output = Result<Vec<CollectionGap>, StoreError>> + Send;

    /// Records that the collector was receiving at `at_ms`.
    fn heartbeat(&self, at_ms: i64) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The last recorded heartbeat, if any.
    fn last_heartbeat(&self) -> impl Future<Output = Result<Option<i64>, StoreError>> + Send;
}

/// The order of an event stream, by `(timestamp_ms, id)`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum StreamOrder {
    /// By time, oldest first (export order).
    #[default]
    OldestFirst,
    /// By time, newest first.
    NewestFirst,
}

/// Which events an [`EventStream`] reads. Every filter left empty matches all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventSelection {
    /// Inclusive lower bound on `timestamp_ms`.
    pub from_ms: Option<i64>,
    /// Exclusive upper bound on `timestamp_ms`.
    pub to_ms: Option<i64>,
    /// Analytics models (reasoning suffix removed), exact.
    pub models: Vec<String>,
    /// Lowercase hex SHA-256 of client API keys.
    pub api_key_hashes: Vec<String>,
    /// Only the newest `n` events of the selection (still delivered in `order`).
    pub newest: Option<u64>,
    /// Oldest or newest first.
    pub order: StreamOrder,
}

/// A stream of events being read from one database snapshot.
pub trait EventPages: Send + 'static {
    /// How many events the stream delivers in all (counted in the same snapshot).
    fn total(&self) -> u64;

    /// The next page of events in order; an empty page once the stream is done.
    fn next_page(
        &mut self,
    ) -> impl Future<Output = Result<Vec<crate::analytics::query::RawEvent>, StoreError>> + Send;
}

/// A running export: the selected events as the bytes of an export file, in
/// chunks of bounded size, produced ahead of the reader by at most a few chunks.
pub trait ExportChunks: Send + 'static {
    /// How many events the export holds (counted in its snapshot).
    fn total(&self) -> u64;

    /// The next piece of the file (the CSV header first, then whole lines);
    /// `None` once the export is complete.
    fn next_chunk(&mut self) -> impl Future<Output = Result<Option<String>, StoreError>> + Send;
}

/// Reads any number of events with constant memory, from one consistent
/// snapshot: the stream sees exactly the events committed before it opened,
/// however long it is read and whatever is stored meanwhile.
pub trait EventStream: Clone + Send + Sync + 'static {
    /// The stream this store hands out.
    type Pages: EventPages;

    /// The export this store hands out.
    type Export: ExportChunks;

    /// Opens a stream of the events `selection` picks, from one read snapshot.
    fn open_event_stream(
        &self,
        selection: EventSelection,
    ) -> impl Future<Output = Result<Self::Pages, StoreError>> + Send;

    /// Opens an export of the events `selection` picks, from one read snapshot,
    /// written in `format`: the bytes are those of [`EventPages`] pages written
    /// line by line with [`ExportFormat::write_event`] after the format's preamble.
    ///
    /// [`ExportFormat::write_event`]: crate::transfer::export::ExportFormat::write_event
    fn open_export(
        &self,
        selection: EventSelection,
        format: crate::transfer::export::ExportFormat,
    ) -> impl Future<Output = Result<Self::Export, StoreError>> + Send;

    /// The newest `limit` events in the order CPA's usage payload nests them:
    /// by endpoint, then by analytics model (each keyed by
    /// [`crate::analytics::usage_payload_key`], ascending), newest first within a
    /// group; with their tallies, known before the first page. Memory stays flat
    /// at any `limit` apart from a few words per event for the order.
    fn open_usage_groups(
        &self,
        limit: u64,
    ) -> impl Future<Output = Result<(Self::Pages, StreamTallies), StoreError>> + Send;
}

/// What a stream of events adds up to, counted in its snapshot.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StreamTallies {
    /// Events the stream delivers.
    pub events: u64,
    /// Of those, the failed ones.
    pub failed: u64,
    /// Their total tokens (saturating).
    pub total_tokens: i64,
}

/// What a finished database backup holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupFacts {
    /// Size of the copied database file.
    pub bytes: u64,
    /// Usage events in the copy.
    pub events: i64,
    /// The newest schema migration of the copy.
    pub schema_version: i64,
}

/// Consistent copies of the live database, taken while it keeps taking writes.
pub trait DatabaseBackup: Clone + Send + Sync + 'static {
    /// Writes a consistent copy of the database to `path` (a new file, created
    /// with owner-only permissions) and checks it with `PRAGMA integrity_check`.
    fn backup_into(
        &self,
        path: &std::path::Path,
    ) -> impl Future<Output = Result<BackupFacts, StoreError>> + Send;
}
