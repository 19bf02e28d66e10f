//! Usage export/import and backups beyond the HTTP handlers: running an import
//! into the store, resumable import sessions on disk, and backup directories.
//! The routes are in `routes/transfer.rs`; the binary's CLI reuses all of it.

pub mod backup;
pub mod import;
pub mod sessions;

use std::path::PathBuf;

/// Shared state of the transfer routes (registered as `web::Data<Transfer>`).
pub struct Transfer {
    /// The resumable import sessions.
    pub sessions: sessions::ImportSessions,
    /// `<data dir>/backups`.
    pub backups_dir: PathBuf,
    /// Where the data key lives, for backups.
    pub data_key: backup::DataKeySource,
    /// One backup at a time.
    pub backup_lock: tokio::sync::Mutex<()>,
}
