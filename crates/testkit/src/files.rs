//! [`ReadOnlyFiles`]: make database files read-only for a test, even for root.

use std::path::PathBuf;
use std::process::Command;

/// Marks files immutable (`chattr +i`) until dropped. Writes then fail for every
/// user, root included, as on a read-only mount, which a permission change cannot
/// do for a test running as root.
pub struct ReadOnlyFiles(Vec<PathBuf>);

impl ReadOnlyFiles {
    /// Panics with the fix named when the flag cannot be set (no `chattr`, or a
    /// filesystem without the immutable flag): a test that needs it must not pass
    /// without it.
    pub fn set(paths: Vec<PathBuf>) -> ReadOnlyFiles {
        let mut guard = ReadOnlyFiles(Vec::with_capacity(paths.len()));
        for path in paths {
            let status = Command::new("chattr").arg("+i").arg(&path).status();
            assert!(
                status.is_ok_and(|status| status.success()),
                "`chattr +i {}` failed: this test needs e2fsprogs' chattr on a filesystem with the immutable flag",
                path.display()
            );
            guard.0.push(path);
        }
        guard
    }
}

impl Drop for ReadOnlyFiles {
    fn drop(&mut self) {
        for path in &self.0 {
            let _ = Command::new("chattr").arg("-i").arg(path).status();
        }
    }
}
