//! The OS process lock: one server (or offline command) per database file.
//!
//! The lock file `<canonical db path>.manager.lock` is never deleted; the lock is an
//! exclusive `flock` held for the life of the process, so it is released even when
//! the process is killed.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

/// A held lock. Dropping it releases the lock.
#[derive(Debug)]
pub struct ProcessLock {
    _file: File,
    pub db_path: PathBuf,
}

/// Canonicalises `db_path` (creating its directory) and takes the lock.
pub fn acquire(db_path: &Path) -> anyhow::Result<ProcessLock> {
    let db_path = canonical_db_path(db_path)?;
    let lock_path = PathBuf::from(format!("{}.manager.lock", db_path.display()));
    let mut options = OpenOptions::new();
    options.create(true).truncate(false).read(true).write(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let file = options
        .open(&lock_path)
        .with_context(|| format!("open lock file {}", lock_path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(ProcessLock {
            _file: file,
            db_path,
        }),
        Err(std::fs::TryLockError::WouldBlock) => bail!(
            "manager database process lock is already held for {} (another cpamp-server or offline command is using this database; stop it first)",
            db_path.display()
        ),
        Err(std::fs::TryLockError::Error(error)) => {
            Err(error).with_context(|| format!("lock {}", lock_path.display()))
        }
    }
}

/// True when `acquire` failed because another process holds the lock (a running
/// server), as opposed to a path or permission problem.
pub fn held_elsewhere(error: &anyhow::Error) -> bool {
    format!("{error:#}").contains("process lock is already held")
}

/// Absolute, cleaned database path with symlinks in its directory resolved.
pub fn canonical_db_path(db_path: &Path) -> anyhow::Result<PathBuf> {
    let absolute = if db_path.is_absolute() {
        db_path.to_path_buf()
    } else {
        std::env::current_dir()
            .context("read current directory")?
            .join(db_path)
    };
    let parent = absolute
        .parent()
        .context("database path has no directory")?;
    std::fs::create_dir_all(parent)
        .with_context(|| format!("create data directory {}", parent.display()))?;
    let parent = parent
        .canonicalize()
        .with_context(|| format!("resolve {}", parent.display()))?;
    let file_name = absolute
        .file_name()
        .context("database path has no file name")?;
    let mut path = parent.join(file_name);
    if let Ok(metadata) = std::fs::symlink_metadata(&path) {
        if metadata.file_type().is_symlink() {
            path = path
                .canonicalize()
                .with_context(|| format!("{} is a dangling symbolic link", path.display()))?;
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt;
            let metadata = std::fs::metadata(&path)?;
            if metadata.is_file() && metadata.nlink() > 1 {
                bail!(
                    "manager database has multiple hard links for {}; replace hard-link aliases with one canonical database path",
                    path.display()
                );
            }
        }
    }
    Ok(path)
}
