//! Online backups: `VACUUM INTO` on a read-only connection of its own.
//!
//! `VACUUM INTO` writes a compact, self-contained copy of one read snapshot:
//! every transaction committed before it started is in the copy, nothing that
//! commits while it runs is, and the writer never waits for it (WAL readers do
//! not block writers). The copy has no `-wal` or `-shm` companion; it is a
//! single file. It is checked with `PRAGMA integrity_check` before it counts.

use std::path::Path;

use cpamp_domain::StoreError;
use cpamp_domain::ports::{BackupFacts, DatabaseBackup};
use sqlx::{ConnectOptions, Connection};

use crate::{SqliteStore, error};

impl DatabaseBackup for SqliteStore {
    async fn backup_into(&self, path: &Path) -> Result<BackupFacts, StoreError> {
        create_private_file(path)?;
        let result = self.copy_and_check(path).await;
        if result.is_err() {
            let _ = std::fs::remove_file(path);
        }
        result
    }
}

impl SqliteStore {
    async fn copy_and_check(&self, path: &Path) -> Result<BackupFacts, StoreError> {
        let target = path.to_str().ok_or_else(|| {
            StoreError::Invalid(format!(
                "backup path {} is not valid UTF-8; choose another directory",
                path.display()
            ))
        })?;
        let mut connection = self.dedicated_reader().await?;
        let copied = sqlx::query("VACUUM INTO ?")
            .bind(target)
            .execute(&mut connection)
            .await
            .map_err(|source| error::map(source, "copy database"));
        let _ = connection.close().await;
        copied?;
        check_copy(path).await
    }
}

/// Creates `path` empty with owner-only permissions (`VACUUM INTO` accepts an
/// empty file), refusing to overwrite anything.
fn create_private_file(path: &Path) -> Result<(), StoreError> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path).map(drop).map_err(|source| {
        StoreError::unavailable(format!("create backup file {}", path.display()), source)
    })
}

/// Opens a database copy read-only and checks it: `PRAGMA integrity_check`
/// must answer `ok`. Returns its size, event count and schema version.
pub async fn check_copy(path: &Path) -> Result<BackupFacts, StoreError> {
    let mut connection = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(path)
        .read_only(true)
        .connect()
        .await
        .map_err(|source| error::map(source, "open backup"))?;
    let result = facts(&mut connection).await;
    let _ = connection.close().await;
    let (integrity, events, schema_version) = result?;
    if integrity != "ok" {
        return Err(StoreError::Invalid(format!(
            "{} fails PRAGMA integrity_check: {integrity}",
            path.display()
        )));
    }
    let bytes = std::fs::metadata(path)
        .map_err(|source| StoreError::unavailable(format!("read {}", path.display()), source))?
        .len();
    Ok(BackupFacts {
        bytes,
        events,
        schema_version,
    })
}

async fn facts(connection: &mut sqlx::SqliteConnection) -> Result<(String, i64, i64), StoreError> {
    let problems: Vec<String> = sqlx::query_scalar("PRAGMA integrity_check")
        .fetch_all(&mut *connection)
        .await
        .map_err(|source| error::map(source, "check backup"))?;
    let integrity = problems.join("; ");
    let events: i64 = sqlx::query_scalar("SELECT count(*) FROM usage_events")
        .fetch_one(&mut *connection)
        .await
        .map_err(|source| error::map(source, "count backup events"))?;
    let schema_version: i64 =
        sqlx::query_scalar("SELECT coalesce(max(version), 0) FROM _sqlx_migrations WHERE success")
            .fetch_one(&mut *connection)
            .await
            .map_err(|source| error::map(source, "read backup schema version"))?;
    Ok((integrity, events, schema_version))
}
