//! WAL maintenance and the database file report (`/status.database`).
//!
//! Every 30 s the WAL is checkpointed passively (never waiting for readers), and SQLite
//! truncates the log back to `journal_size_limit` afterwards. A WAL that still grew past
//! the limit (a long reader held it) is truncated once the passive checkpoint caught up,
//! at most every five minutes. Failures are recorded in the report, never fatal.
//! Each run then builds the search index of the hours that ended since
//! (`search_index.rs`); a failure there is logged and retried at the next run.

use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use cpamp_domain::StoreError;
use cpamp_domain::ports::{CheckpointReport, DatabaseReport, DatabaseStats};

use crate::settings::now_ms;
use crate::{SqliteStore, error};

/// The WAL size SQLite keeps after a checkpoint (256 MiB, as the Go server set it).
pub const JOURNAL_SIZE_LIMIT_BYTES: u64 = 268_435_456;
/// Pause between maintenance runs.
pub const MAINTENANCE_INTERVAL: Duration = Duration::from_secs(30);
/// Least time between two truncating checkpoints.
const TRUNCATE_SPACING: Duration = Duration::from_secs(300);

/// The last run's outcome, shared by the maintenance task and the report readers.
#[derive(Debug)]
pub(crate) struct MaintenanceState {
    checkpoint: Mutex<CheckpointReport>,
    last_truncate_attempt: Mutex<Option<Instant>>,
}

impl Default for MaintenanceState {
    fn default() -> MaintenanceState {
        MaintenanceState {
            checkpoint: Mutex::new(CheckpointReport {
                mode: "pending".to_string(),
                ..CheckpointReport::default()
            }),
            last_truncate_attempt: Mutex::new(None),
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).map(|meta| meta.len()).unwrap_or(0)
}

fn sibling(path: &Path, suffix: &str) -> std::path::PathBuf {
    let mut text = path.as_os_str().to_owned();
    text.push(suffix);
    text.into()
}

impl SqliteStore {
    /// Runs one maintenance pass and records its outcome.
    pub async fn run_wal_maintenance(&self) -> CheckpointReport {
        let started = Instant::now();
        let executed_at_ms = now_ms();
        let mut report = CheckpointReport {
            mode: "passive".to_string(),
            executed_at_ms,
            ..CheckpointReport::default()
        };
        let outcome = self.checkpoint(false).await;
        match outcome {
            Ok((busy, log_frames, checkpointed)) => {
                report.busy = busy;
                report.log_frames = log_frames;
                report.checkpointed_frames = checkpointed;
                let wal_bytes = file_len(&sibling(self.path(), "-wal"));
                let caught_up = busy == 0 && checkpointed == log_frames;
                let spaced = lock(&self.maintenance().last_truncate_attempt)
                    .is_none_or(|last| last.elapsed() >= TRUNCATE_SPACING);
                if wal_bytes > JOURNAL_SIZE_LIMIT_BYTES && caught_up && spaced {
                    *lock(&self.maintenance().last_truncate_attempt) = Some(Instant::now());
                    report.mode = "truncate".to_string();
                    report.last_truncate_attempt_at_ms = Some(now_ms());
                    match self.checkpoint(true).await {
                        Ok((0, log_frames, checkpointed)) => {
                            report.busy = 0;
                            report.log_frames = log_frames;
                            report.checkpointed_frames = checkpointed;
                        }
                        Ok((busy, _, _)) => {
                            report.busy = busy;
                            report.error = Some(format!(
                                "truncating checkpoint was blocked by readers (busy {busy})"
                            ));
                        }
                        Err(error) => report.error = Some(error.to_string()),
                    }
                }
            }
            Err(error) => report.error = Some(error.to_string()),
        }
        report.duration_ms = i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX);
        if report.last_truncate_attempt_at_ms.is_none() {
            report.last_truncate_attempt_at_ms =
                lock(&self.maintenance().checkpoint).last_truncate_attempt_at_ms;
        }
        if let Some(error) = &report.error {
            tracing::warn!(%error, "WAL maintenance failed");
        }
        *lock(&self.maintenance().checkpoint) = report.clone();
        report
    }

    /// Runs maintenance (and the search index pass) now and then every
    /// [`MAINTENANCE_INTERVAL`] until the store closes.
    pub fn spawn_wal_maintenance(&self) -> tokio::task::JoinHandle<()> {
        let store = self.clone();
        tokio::spawn(async move {
            loop {
                if store.writer().is_closed() {
                    return;
                }
                store.run_wal_maintenance().await;
                if let Err(error) = store.seal_search_hours(now_ms()).await {
                    tracing::warn!(%error, "search index maintenance failed");
                }
                tokio::time::sleep(MAINTENANCE_INTERVAL).await;
            }
        })
    }

    async fn checkpoint(&self, truncate: bool) -> Result<(i64, i64, i64), StoreError> {
        // The limit is per connection; setting it before each checkpoint keeps it in force
        // even if the writer connection was replaced. (The literal matches
        // JOURNAL_SIZE_LIMIT_BYTES.)
        sqlx::query("PRAGMA journal_size_limit = 268435456")
            .execute(self.writer())
            .await
            .map_err(|error| error::map(error, "set journal_size_limit"))?;
        let statement = if truncate {
            "PRAGMA wal_checkpoint(TRUNCATE)"
        } else {
            "PRAGMA wal_checkpoint(PASSIVE)"
        };
        sqlx::query_as::<_, (i64, i64, i64)>(statement)
            .fetch_one(self.writer())
            .await
            .map_err(|error| error::map(error, "checkpoint"))
    }
}

impl DatabaseStats for SqliteStore {
    async fn database_report(&self) -> Result<DatabaseReport, StoreError> {
        let path = self.path();
        Ok(DatabaseReport {
            database_bytes: file_len(path),
            wal_bytes: file_len(&sibling(path, "-wal")),
            shm_bytes: file_len(&sibling(path, "-shm")),
            journal_size_limit_bytes: JOURNAL_SIZE_LIMIT_BYTES,
            checkpoint: lock(&self.maintenance().checkpoint).clone(),
        })
    }
}
