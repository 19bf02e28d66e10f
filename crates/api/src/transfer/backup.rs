//! Online backups: a backup directory with a consistent copy of the database,
//! the data key and a manifest, taken while the server keeps collecting.
//!
//! Layout of a backup directory (0700, files 0600):
//! - `usage.sqlite`: one consistent snapshot (`VACUUM INTO`), checked with
//!   `PRAGMA integrity_check`; a single file, no `-wal`/`-shm`.
//! - `data.key`: the key that decrypts the saved CPA Management Key, when it is
//!   a file (a key given through `CPA_MANAGER_DATA_KEY`/`_FILE` is managed
//!   outside the data directory and must be backed up where it lives).
//! - `manifest.json`: what the backup holds, with SHA-256 of every file.
//!
//! The admin key is never in a backup in plain text: the database keeps only
//! its argon2id hash, and the CPA Management Key only sealed with the data key.

use std::path::{Path, PathBuf};

use cpamp_domain::ports::DatabaseBackup;
use serde::{Deserialize, Serialize};
use sha2::Digest;

use super::sessions::{create_private_file, write_atomically};

/// File names inside a backup directory.
pub const DATABASE_FILE: &str = "usage.sqlite";
/// The data key's copy (only when it is a file).
pub const DATA_KEY_FILE: &str = "data.key";
/// The manifest (`Manifest`).
pub const MANIFEST_FILE: &str = "manifest.json";
/// The manifest's `format`.
pub const FORMAT: &str = "cpamp-backup";

/// Where the data key lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DataKeySource {
    /// A key file (`data.key`) that goes into every backup.
    File(PathBuf),
    /// Given through the environment; not copied.
    External,
}

/// One file of a backup.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct BackupFile {
    /// The file name inside the backup directory.
    pub name: String,
    /// Its size.
    pub bytes: u64,
    /// Its SHA-256, hex.
    pub sha256: String,
}

/// `manifest.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Manifest {
    /// Always `cpamp-backup`.
    pub format: String,
    /// The manifest format's version.
    pub version: u32,
    /// The backup directory's name.
    pub name: String,
    /// Unix ms when the backup was made.
    pub created_at_ms: i64,
    /// The cpamp version that wrote the backup.
    pub cpamp_version: String,
    /// The newest schema migration of the copied database.
    pub schema_version: i64,
    /// Usage events in the copy.
    pub events: i64,
    /// `included`, `external` (see [`DataKeySource`]) or `none` (no key file existed).
    pub data_key: String,
    /// Every file of the backup with its size and checksum.
    pub files: Vec<BackupFile>,
}

/// Why a backup failed.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// A file could not be read or written.
    #[error("{0}")]
    Io(String),
    /// The database copy failed.
    #[error(transparent)]
    Store(#[from] cpamp_domain::StoreError),
    /// The backup directory or its manifest is not a usable backup.
    #[error("{0}")]
    Invalid(String),
}

fn io(context: String) -> impl FnOnce(std::io::Error) -> BackupError {
    move |error| BackupError::Io(format!("{context}: {error}"))
}

/// A directory name for a backup taken at `now_ms`: `cpamp-backup-YYYYMMDD-HHMMSS`.
pub fn backup_name(now_ms: i64) -> String {
    let stamp = jiff::Timestamp::from_millisecond(now_ms)
        .map(|at| at.strftime("%Y%m%d-%H%M%S").to_string())
        .unwrap_or_else(|_| now_ms.to_string());
    format!("cpamp-backup-{stamp}")
}

/// True for names [`backup_name`] makes (possibly with a `-N` suffix): the
/// only names the API accepts, so a request can never reach outside the
/// backups directory.
pub fn is_backup_name(name: &str) -> bool {
    name.strip_prefix("cpamp-backup-").is_some_and(|rest| {
        !rest.is_empty()
            && rest.len() <= 40
            && rest
                .bytes()
                .all(|byte| byte.is_ascii_digit() || byte == b'-')
    })
}

/// Writes a backup into `dir`, which must not exist yet (it is created 0700).
pub async fn create_backup<S: DatabaseBackup>(
    store: &S,
    dir: &Path,
    data_key: &DataKeySource,
    now_ms: i64,
) -> Result<Manifest, BackupError> {
    create_private_dir(dir)?;
    let result = fill(store, dir, data_key, now_ms).await;
    if result.is_err() {
        let _ = std::fs::remove_dir_all(dir);
    }
    result
}

async fn fill<S: DatabaseBackup>(
    store: &S,
    dir: &Path,
    data_key: &DataKeySource,
    now_ms: i64,
) -> Result<Manifest, BackupError> {
    let database = dir.join(DATABASE_FILE);
    let facts = store.backup_into(&database).await?;
    let mut files = vec![describe(&database)?];
    let data_key_state = match data_key {
        // No key file yet (the server never started): nothing is sealed with one.
        DataKeySource::File(path) if !path.exists() => "none",
        DataKeySource::File(path) => {
            let bytes = std::fs::read(path).map_err(io(format!(
                "read the data key {} (it decrypts the saved CPA Management Key)",
                path.display()
            )))?;
            let target = dir.join(DATA_KEY_FILE);
            let mut file =
                create_private_file(&target).map_err(io(format!("create {}", target.display())))?;
            std::io::Write::write_all(&mut file, &bytes)
                .and_then(|()| file.sync_all())
                .map_err(io(format!("write {}", target.display())))?;
            files.push(describe(&target)?);
            "included"
        }
        DataKeySource::External => "external",
    };
    let manifest = Manifest {
        format: FORMAT.to_string(),
        version: 1,
        name: dir
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_default(),
        created_at_ms: now_ms,
        cpamp_version: env!("CARGO_PKG_VERSION").to_string(),
        schema_version: facts.schema_version,
        events: facts.events,
        data_key: data_key_state.to_string(),
        files,
    };
    let mut text = serde_json::to_vec_pretty(&manifest)
        .map_err(|error| BackupError::Io(format!("encode manifest: {error}")))?;
    text.push(b'\n');
    write_atomically(&dir.join(MANIFEST_FILE), &text)
        .map_err(io(format!("write {}", dir.join(MANIFEST_FILE).display())))?;
    Ok(manifest)
}

fn create_private_dir(dir: &Path) -> Result<(), BackupError> {
    if let Some(parent) = dir.parent()
        && !parent.exists()
    {
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::DirBuilderExt;
            builder.mode(0o700);
        }
        builder
            .create(parent)
            .map_err(io(format!("create {}", parent.display())))?;
    }
    let mut builder = std::fs::DirBuilder::new();
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    match builder.create(dir) {
        Ok(()) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {
            let empty = std::fs::read_dir(dir)
                .map(|mut entries| entries.next().is_none())
                .unwrap_or(false);
            if empty {
                Ok(())
            } else {
                Err(BackupError::Invalid(format!(
                    "{} already exists and is not empty; choose a new directory",
                    dir.display()
                )))
            }
        }
        Err(error) => Err(BackupError::Io(format!(
            "create {}: {error}",
            dir.display()
        ))),
    }
}

/// Size and SHA-256 of a file.
pub fn describe(path: &Path) -> Result<BackupFile, BackupError> {
    let mut file = std::fs::File::open(path).map_err(io(format!("open {}", path.display())))?;
    let mut hasher = sha2::Sha256::new();
    let mut buffer = vec![0u8; 1024 * 1024];
    let mut bytes = 0u64;
    loop {
        let read = std::io::Read::read(&mut file, &mut buffer)
            .map_err(io(format!("read {}", path.display())))?;
        if read == 0 {
            break;
        }
        hasher.update(&buffer[..read]);
        bytes += read as u64;
    }
    Ok(BackupFile {
        name: path
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_default(),
        bytes,
        sha256: hex::encode(hasher.finalize()),
    })
}

/// Reads a backup's manifest and checks every file against it (size and SHA-256).
pub fn verify(dir: &Path) -> Result<Manifest, BackupError> {
    let text = std::fs::read(dir.join(MANIFEST_FILE)).map_err(io(format!(
        "read {} (is {} a cpamp backup directory?)",
        dir.join(MANIFEST_FILE).display(),
        dir.display()
    )))?;
    let manifest: Manifest = serde_json::from_slice(&text)
        .map_err(|error| BackupError::Invalid(format!("{}: {error}", MANIFEST_FILE)))?;
    if manifest.format != FORMAT {
        return Err(BackupError::Invalid(format!(
            "{} is not a cpamp backup manifest (format {:?})",
            dir.join(MANIFEST_FILE).display(),
            manifest.format
        )));
    }
    for file in &manifest.files {
        if file.name.contains(['/', '\\']) || file.name.starts_with('.') {
            return Err(BackupError::Invalid(format!(
                "invalid file name {:?} in the manifest",
                file.name
            )));
        }
        let actual = describe(&dir.join(&file.name))?;
        if actual.bytes != file.bytes || actual.sha256 != file.sha256 {
            return Err(BackupError::Invalid(format!(
                "{} does not match the manifest (size or SHA-256 differ): the backup is damaged",
                dir.join(&file.name).display()
            )));
        }
    }
    if !manifest.files.iter().any(|file| file.name == DATABASE_FILE) {
        return Err(BackupError::Invalid(
            "the manifest lists no usage.sqlite".to_string(),
        ));
    }
    Ok(manifest)
}

/// The manifests of the backups in `dir`, newest first (unreadable ones skipped).
pub fn list(dir: &Path) -> Vec<Manifest> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut manifests: Vec<Manifest> = entries
        .filter_map(Result::ok)
        .filter(|entry| is_backup_name(&entry.file_name().to_string_lossy()))
        .filter_map(|entry| std::fs::read(entry.path().join(MANIFEST_FILE)).ok())
        .filter_map(|bytes| serde_json::from_slice::<Manifest>(&bytes).ok())
        .collect();
    manifests.sort_by(|left, right| {
        right
            .created_at_ms
            .cmp(&left.created_at_ms)
            .then(right.name.cmp(&left.name))
    });
    manifests
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]
mod tests {
    use super::*;

    #[test]
    fn names_are_timestamps_and_nothing_else_passes() {
        assert_eq!(
            backup_name(1_767_225_600_000),
            "cpamp-backup-20260101-000000"
        );
        assert!(is_backup_name("cpamp-backup-20260101-000000"));
        assert!(is_backup_name("cpamp-backup-20260101-000000-2"));
        for bad in [
            "cpamp-backup-",
            "../x",
            "cpamp-backup-../../etc",
            "cpamp-backup-1/2",
            "other",
        ] {
            assert!(!is_backup_name(bad), "{bad}");
        }
    }
}
