//! cpamp persistence: SQLite through sqlx.
//!
//! [`SqliteStore`] owns two pools on one database file: a single writer
//! connection (all writes are serialised through it, so there is never a
//! write-write conflict) and a small pool of read-only connections for queries.
//! Event batches are written through a connection of their own (rusqlite, with
//! its prepared statements kept) while the writer connection is held, so they
//! too wait their turn behind every other write.
//! The database runs in WAL mode with `synchronous=FULL`, so a committed batch
//! survives a power cut and readers never block the writer.
//!
//! Layout:
//! - `migrations/`: embedded, append-only schema migrations.
//! - `events`: the ingest transaction (identity ledger, events, dead letters, counters).
//! - `dims`: the dictionary of repeated text values referenced by events.
//! - `settings`: the key-value settings table.
//! - `rollup`: rollups maintained inside the ingest transaction.
//! - `analytics`: the analytics query side (rollups, raw edges, event pages).
//! - `snapshots`: the newest header event per credential, kept at ingest.
//! - `gaps`: collection gaps and the collector heartbeat.
//! - `maintenance`: WAL checkpoints and the database file report.
//! - `stream`: event streams from one read snapshot (export, compatible usage payload).
//! - `backup`: consistent online copies of the database (`VACUUM INTO`).
//! - `automation`: quota cooldowns, account-action candidates and the automation audit log.
//! - `inspection`: server inspection runs, results, logs, the run lease and ownership.
//! - `quota`: quota snapshot observations, logical windows and reported windows.
//! - `prices`: model prices, API key aliases and the cached price book.
//!
//! Architecture invariant: this is the only crate that contains SQL.
//!
//! # Example: store a decoded CPA payload and read it back
//!
//! [`SqliteStore`] implements the domain's ports (`EventSink`, `StoreStats`,
//! `SettingsStore`, `AnalyticsStore`, …), so an embedding program hands it to the
//! collector as its sink and reads through the same ports. A batch is stored whole or not
//! at all, and storing the same event twice keeps one copy.
//!
//! ```
//! use cpamp_domain::event::Decoded;
//! use cpamp_domain::ports::{BatchOrigin, EventSink, IngestBatch, StoreStats};
//! use cpamp_storage::{Options, SqliteStore};
//!
//! #[tokio::main]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     let dir = tempfile::tempdir()?;
//!     let store = SqliteStore::open(Options::new(dir.path().join("usage.sqlite"))).await?;
//!
//!     let payload = br#"{"timestamp":"2026-08-22T14:00:31Z","model":"gpt-5.5",
//!         "request_id":"r-1","tokens":{"input_tokens":900,"output_tokens":100}}"#;
//!     let Decoded::Event(event) = cpamp_domain::decode::decode(payload, 1_787_407_231_000)
//!     else {
//!         panic!("a usage payload decodes to an event");
//!     };
//!     let batch = |event| IngestBatch {
//!         origin: BatchOrigin::Collector("http://127.0.0.1:8317".to_string()),
//!         events: vec![event],
//!         dead_letters: Vec::new(),
//!     };
//!     let first = store.store_batch(batch((*event).clone())).await?;
//!     assert_eq!(first.inserted, 1);
//!     // CPA can hand the same event out twice (a retried pop): it is stored once.
//!     let again = store.store_batch(batch(*event)).await?;
//!     assert_eq!((again.inserted, again.skipped), (0, 1));
//!
//!     assert_eq!(store.counts().await?.events, 1);
//!     store.close().await;
//!     Ok(())
//! }
//! ```

#![warn(missing_docs)]

mod analytics;
mod automation;
mod backup;
mod compact;
mod dims;
mod error;
mod events;
mod export;
mod fasthash;
mod gaps;
mod hints;
mod inspection;
mod ledger;
mod legacy;
mod maintenance;
mod prices;
mod quota;
mod rollup;
mod search;
mod search_index;
mod settings;
mod snapshots;
mod stream;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use cpamp_domain::StoreError;
use cpamp_domain::ports::{StoreCounts, StoreStats};
use sqlx::sqlite::{
    SqliteAutoVacuum, SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteSynchronous,
};

pub use backup::check_copy;
pub use error::is_unavailable;
pub use export::SqliteExport;
pub use legacy::AdoptionStep;
pub use maintenance::{JOURNAL_SIZE_LIMIT_BYTES, MAINTENANCE_INTERVAL};
pub use stream::SqliteEventPages;

/// How to open the store.
#[derive(Debug, Clone)]
pub struct Options {
    /// The SQLite database file; created (with its parent directory) if missing.
    pub path: PathBuf,
    /// Read-only connections for queries.
    pub read_connections: u32,
    /// How long a statement waits for a lock before failing with "database is locked".
    pub busy_timeout: Duration,
    /// SQLite's soft heap limit in bytes (`PRAGMA soft_heap_limit`), or `None` to leave
    /// it as it is. The limit is one for the whole process, across every connection
    /// of every database: above it, SQLite reuses the least recently used pages of all
    /// page caches (they share one pool) before it allocates more, so the caches of
    /// many connections cannot add up to many times what one read needs.
    pub sqlite_soft_heap_limit: Option<u64>,
}

impl Options {
    /// Options for the database file at `path`: five read connections and a 5 s busy
    /// timeout.
    pub fn new(path: impl Into<PathBuf>) -> Options {
        Options {
            path: path.into(),
            // Five readers, one writer. The server runs at most two analytics
            // computations at once (one per core), and a computation holds at most
            // two readers at once (its row sums, and beside them its percentiles or
            // heat sums), so `/status`, `/health` and the other reads always find a
            // connection. Every reader keeps its own page cache (2 MiB, within the
            // process's soft heap limit), so more readers cost resident memory.
            read_connections: 5,
            busy_timeout: Duration::from_secs(5),
            sqlite_soft_heap_limit: Some(DEFAULT_SOFT_HEAP_LIMIT),
        }
    }
}

/// The default of [`Options::sqlite_soft_heap_limit`]: 8 MiB for all of SQLite's
/// memory (page caches, schemas, prepared statements). A reader's 2 MiB cache and the
/// writer's hold the pages one request or batch touches; pages read again beyond that
/// come from the operating system's file cache.
pub const DEFAULT_SOFT_HEAP_LIMIT: u64 = 8 * 1024 * 1024;

/// The SQLite-backed store. Cheap to clone: all clones share the pools.
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    writer: SqlitePool,
    reader: SqlitePool,
    /// Options of a read-only connection, for long reads outside the pool.
    read_options: SqliteConnectOptions,
    busy_timeout: Duration,
    /// The connection event batches are written through (opened on first use,
    /// dropped after a failed batch); used only while the writer is held.
    batch_writer: std::sync::Mutex<Option<rusqlite::Connection>>,
    /// Idle read-only connections for reads that step many rows on a blocking
    /// thread (searches folded in SQL), kept for the next such read.
    row_readers: std::sync::Mutex<Vec<rusqlite::Connection>>,
    dims: dims::DimCache,
    read_cache: analytics::ReadCache,
    /// Every hour before this instant that holds events has its search index row
    /// of this version ([`search_index`]): the last indexing pass found them all,
    /// and no batch has added to them since. `i64::MIN` until a pass ran.
    search_indexed_before: std::sync::atomic::AtomicI64,
    maintenance: maintenance::MaintenanceState,
    prices: prices::PriceCache,
    /// The row counters as of the last committed batch, so `/status` reads no SQL.
    counts: std::sync::Mutex<CountsCache>,
    gaps: gaps::GapCache,
    /// The ids of quota observer and shape rows (`quota.rs`).
    quota_text_ids: quota::QuotaTextIds,
}

/// The `counters` row values once read, kept current by every committed batch (the
/// only writer of the counters while the store is open).
#[derive(Default)]
struct CountsCache {
    /// Bumped by every committed batch; a value read from SQL is kept only if no
    /// batch committed while it was read.
    generation: u64,
    value: Option<StoreCounts>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("SqliteStore")
            .field("path", &self.inner.path)
            .finish()
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the database and runs pending migrations.
    pub async fn open(options: Options) -> Result<SqliteStore, StoreError> {
        if let Some(parent) = options
            .path
            .parent()
            .filter(|parent| !parent.as_os_str().is_empty())
        {
            std::fs::create_dir_all(parent).map_err(|error| {
                StoreError::unavailable(
                    format!("cannot create data directory {}", parent.display()),
                    error,
                )
            })?;
        }
        let base = SqliteConnectOptions::new()
            .filename(&options.path)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(options.busy_timeout)
            .foreign_keys(true)
            .pragma("journal_size_limit", "268435456")
            .pragma("temp_store", "memory");
        let base = match options.sqlite_soft_heap_limit {
            Some(limit) => base.pragma("soft_heap_limit", limit.to_string()),
            None => base,
        };
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(
                base.clone()
                    .create_if_missing(true)
                    .auto_vacuum(SqliteAutoVacuum::Incremental),
            )
            .await
            .map_err(|error| error::map(error, "open database"))?;
        let adopting_go_database = legacy::prepare(&writer).await?;
        MIGRATOR.run(&writer).await.map_err(|error| {
            StoreError::unavailable(format!("migrate {}", options.path.display()), error)
        })?;
        if adopting_go_database {
            legacy::copy_small_tables(&writer).await?;
            let mut connection = writer
                .acquire()
                .await
                .map_err(|error| error::map(error, "adopt Go automation tables"))?;
            automation::adopt_go_tables(&mut connection)
                .await
                .map_err(|error| error::map(error, "adopt Go automation tables"))?;
            drop(connection);
            let mut transaction = writer
                .begin()
                .await
                .map_err(|error| error::map(error, "adopt Go quota snapshots"))?;
            quota::adopt_go_snapshots(&mut transaction, settings::now_ms())
                .await
                .map_err(|error| error::map(error, "adopt Go quota snapshots"))?;
            transaction
                .commit()
                .await
                .map_err(|error| error::map(error, "adopt Go quota snapshots"))?;
        }
        legacy::adopt_prices_and_aliases(&writer).await?;
        {
            let (path, busy_timeout) = (options.path.clone(), options.busy_timeout);
            tokio::task::spawn_blocking(move || {
                let mut connection = open_batch_connection(&path, busy_timeout)?;
                ledger::convert_stored(&mut connection)?;
                compact::convert_stored(&mut connection)?;
                rollup::convert_samples(&mut connection)
            })
            .await
            .map_err(|error| {
                StoreError::unavailable(format!("convert stored events: {error}"), error)
            })?
            .map_err(error::sqlite("convert stored events"))?;
        }
        rollup::backfill(&writer)
            .await
            .map_err(|error| error::map(error, "fill new rollups"))?;
        // 2 MiB of page cache per reader: rollup reads touch a few MiB at most
        // and re-read pages come from the OS page cache, so a larger cache
        // per connection mostly adds to the process's resident memory.
        let read_options = base
            .read_only(true)
            .pragma("cache_size", "-2048")
            .thread_name(|id| format!("{READER_THREAD_PREFIX}{id}"));
        let reader = SqlitePoolOptions::new()
            .max_connections(options.read_connections.max(1))
            .min_connections(0)
            // A read that cannot get a connection soon fails as unavailable instead
            // of waiting 30 s while its client has long gone.
            .acquire_timeout(Duration::from_secs(5))
            .idle_timeout(Some(Duration::from_secs(300)))
            .connect_with(read_options.clone())
            .await
            .map_err(|error| error::map(error, "open read pool"))?;
        Ok(SqliteStore {
            inner: Arc::new(Inner {
                path: options.path,
                writer,
                reader,
                read_options,
                busy_timeout: options.busy_timeout,
                batch_writer: std::sync::Mutex::new(None),
                row_readers: std::sync::Mutex::new(Vec::new()),
                dims: dims::DimCache::default(),
                read_cache: analytics::ReadCache::default(),
                search_indexed_before: std::sync::atomic::AtomicI64::new(i64::MIN),
                maintenance: maintenance::MaintenanceState::default(),
                prices: prices::PriceCache::default(),
                counts: std::sync::Mutex::new(CountsCache::default()),
                gaps: gaps::GapCache::default(),
                quota_text_ids: quota::QuotaTextIds::default(),
            }),
        })
    }

    /// The database file this store was opened on.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// The journal mode the database reports (`wal` once open).
    pub async fn journal_mode(&self) -> Result<String, StoreError> {
        sqlx::query_scalar::<_, String>("PRAGMA journal_mode")
            .fetch_one(&self.inner.writer)
            .await
            .map_err(|error| error::map(error, "read journal mode"))
    }

    /// Closes both pools, checkpointing the WAL. Further use fails.
    pub async fn close(&self) {
        self.inner.reader.close().await;
        // Wait for a batch in progress (it holds the writer), then close its connection.
        if let Ok(lease) = self.inner.writer.acquire().await {
            self.batch_writer().take();
            drop(lease);
        }
        let _ = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
            .execute(&self.inner.writer)
            .await;
        self.inner.writer.close().await;
    }

    pub(crate) fn writer(&self) -> &SqlitePool {
        &self.inner.writer
    }

    fn batch_writer(&self) -> std::sync::MutexGuard<'_, Option<rusqlite::Connection>> {
        // A poisoned lock means a batch panicked; its transaction rolled back
        // when its `Transaction` was dropped, so the connection is still usable.
        self.inner
            .batch_writer
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Runs `work` on the batch connection, opening it first if needed. Blocking:
    /// call it on a blocking thread, while holding the writer.
    ///
    /// After an error the connection is closed and the next batch opens a fresh
    /// one: a failed COMMIT (IO error, disk full, read-only file) can leave
    /// SQLite's transaction open, and reusing that connection would silently nest
    /// every later batch inside a transaction that never commits.
    pub(crate) fn with_batch_connection<T>(
        &self,
        work: impl FnOnce(&mut rusqlite::Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut slot = self.batch_writer();
        let connection = match &mut *slot {
            Some(connection) => connection,
            empty => empty.insert(
                open_batch_connection(&self.inner.path, self.inner.busy_timeout)
                    .map_err(error::sqlite("open the batch connection"))?,
            ),
        };
        let result = work(connection);
        if result.is_err() {
            *slot = None;
        }
        result
    }

    /// Runs `work` on the batch connection on a blocking thread while holding the
    /// writer lease, so no other write of this store runs meanwhile. The lease
    /// moves into the blocking task: a caller that stops waiting (a dropped
    /// future) cannot let another write start before this one ends. `begin`
    /// names a failure to take the lease, `task` a failure of the thread.
    pub(crate) async fn with_batch_writer<T: Send + 'static>(
        &self,
        (begin, task): (&'static str, &'static str),
        work: impl FnOnce(&SqliteStore, &mut rusqlite::Connection) -> Result<T, StoreError>
        + Send
        + 'static,
    ) -> Result<T, StoreError> {
        let lease = self
            .writer()
            .acquire()
            .await
            .map_err(|error| error::map(error, begin))?;
        let store = self.clone();
        let (lease, outcome) = tokio::task::spawn_blocking(move || {
            let outcome = store.with_batch_connection(|connection| work(&store, connection));
            (lease, outcome)
        })
        .await
        .map_err(|error| StoreError::unavailable(format!("{task}: {error}"), error))?;
        drop(lease);
        outcome
    }

    /// Runs `work` on an idle read-only rusqlite connection, opening one if none
    /// is idle; the connection is kept for the next call unless `work` failed.
    /// Blocking: call it on a blocking thread.
    pub(crate) fn with_row_reader<T>(
        &self,
        work: impl FnOnce(&rusqlite::Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        /// Idle connections kept; more readers at once open their own. Three: a
        /// searched monitoring answer reads its page beside two halves of its sums.
        const KEPT: usize = 3;
        let idle = self
            .inner
            .row_readers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .pop();
        let connection = match idle {
            Some(connection) => connection,
            None => open_row_reader(&self.inner.path, self.inner.busy_timeout)
                .map_err(error::sqlite("open a read connection"))?,
        };
        let result = work(&connection);
        if result.is_ok() {
            let mut idle = self
                .inner
                .row_readers
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            if idle.len() < KEPT {
                idle.push(connection);
            }
        }
        result
    }

    pub(crate) fn reader(&self) -> &SqlitePool {
        &self.inner.reader
    }

    /// A read-only connection of its own, for reads that hold a snapshot for long
    /// (streams, backups) without taking a slot of the query pool.
    pub(crate) async fn dedicated_reader(&self) -> Result<sqlx::SqliteConnection, StoreError> {
        use sqlx::ConnectOptions;
        self.inner
            .read_options
            .connect()
            .await
            .map_err(|error| error::map(error, "open read connection"))
    }

    pub(crate) fn busy_timeout(&self) -> Duration {
        self.inner.busy_timeout
    }

    pub(crate) fn quota_text_ids(&self) -> &quota::QuotaTextIds {
        &self.inner.quota_text_ids
    }

    pub(crate) fn dims(&self) -> &dims::DimCache {
        &self.inner.dims
    }

    pub(crate) fn read_cache(&self) -> &analytics::ReadCache {
        &self.inner.read_cache
    }

    pub(crate) fn maintenance(&self) -> &maintenance::MaintenanceState {
        &self.inner.maintenance
    }

    pub(crate) fn gap_cache(&self) -> &gaps::GapCache {
        &self.inner.gaps
    }

    fn counts_cache(&self) -> std::sync::MutexGuard<'_, CountsCache> {
        self.inner
            .counts
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Adds a committed batch's rows to the kept counters.
    pub(crate) fn counted(&self, events: u64, dead_letters: u64) {
        let mut cache = self.counts_cache();
        cache.generation += 1;
        if let Some(value) = cache.value.as_mut() {
            value.events += i64::try_from(events).unwrap_or(i64::MAX);
            value.dead_letters += i64::try_from(dead_letters).unwrap_or(i64::MAX);
        }
    }
}

/// Opens the connection event batches are written through, with the writer's
/// settings (the database is in WAL mode already).
fn open_batch_connection(
    path: &Path,
    busy_timeout: Duration,
) -> rusqlite::Result<rusqlite::Connection> {
    let connection = rusqlite::Connection::open_with_flags(
        path,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    connection.busy_timeout(busy_timeout)?;
    connection.execute_batch(
        "PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON; \
         PRAGMA journal_size_limit = 268435456; PRAGMA temp_store = memory",
    )?;
    // The ingest path's statements (the rollup tables' included) all stay prepared.
    connection.set_prepared_statement_cache_capacity(64);
    Ok(connection)
}

/// Opens a read-only connection with the read pool's page cache size.
fn open_row_reader(path: &Path, busy_timeout: Duration) -> rusqlite::Result<rusqlite::Connection> {
    let connection = rusqlite::Connection::open_with_flags(
        path,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    connection.busy_timeout(busy_timeout)?;
    connection.execute_batch("PRAGMA cache_size = -2048")?;
    // `rarray(?)`: the search index's candidate ids, bound as one value.
    rusqlite::vtab::array::load_module(&connection)?;
    connection.set_prepared_statement_cache_capacity(32);
    Ok(connection)
}

/// How the threads running read-only connections (analytics, streams) are named: this
/// prefix and a number. The server lowers their scheduling priority by this name.
pub const READER_THREAD_PREFIX: &str = "sqlite-reader-";

/// The embedded schema migrations.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

impl StoreStats for SqliteStore {
    /// Read from SQL once, then kept current by each committed batch: `/status` and
    /// `/metrics` never wait for a read connection behind analytics.
    async fn counts(&self) -> Result<StoreCounts, StoreError> {
        let generation = {
            let cache = self.counts_cache();
            if let Some(value) = cache.value {
                return Ok(value);
            }
            cache.generation
        };
        let rows: Vec<(String, i64)> = sqlx::query_as("SELECT name, value FROM counters")
            .fetch_all(self.reader())
            .await
            .map_err(|error| error::map(error, "read counters"))?;
        let mut counts = StoreCounts::default();
        for (name, value) in rows {
            match name.as_str() {
                "usage_events" => counts.events = value,
                "dead_letter_events" => counts.dead_letters = value,
                _ => {}
            }
        }
        let mut cache = self.counts_cache();
        if cache.generation == generation {
            cache.value = Some(counts);
        }
        Ok(counts)
    }
}

/// True when the SQLite file at `path` holds a Manager Server database (cpamp's or
/// the Go server's): it has both a `settings` and a `usage_events` table. Opens the
/// file read-only and changes nothing, so offline tools can check before they write.
pub async fn has_manager_tables(path: &Path) -> Result<bool, StoreError> {
    use sqlx::ConnectOptions;
    let mut connection = SqliteConnectOptions::new()
        .filename(path)
        .read_only(true)
        .connect()
        .await
        .map_err(|error| error::map(error, "open database"))?;
    let tables: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name IN ('settings', 'usage_events')",
    )
    .fetch_one(&mut connection)
    .await
    .map_err(|error| error::map(error, "inspect schema"))?;
    let _ = sqlx::Connection::close(connection).await;
    Ok(tables == 2)
}
