//! The mutation coordinator (automation spec §0.6): account status changes, deletes and
//! writes against CPA are serialised per physical auth file, whoever makes them (quota
//! cooldowns, the account-action queue, inspection, the panel through the proxy).
//!
//! Keys are file names, trimmed and lower-cased. Several files are locked together in
//! sorted order, so two callers never deadlock. [`MutationCoordinator::lock_all`] waits
//! for every holder and keeps new ones out while it waits (clearing all auth files).
//! The coordinator is process-local; the database's process lock keeps a second server
//! away from the same data.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use tokio::sync::{
    Mutex as AsyncMutex, OwnedMutexGuard, OwnedRwLockReadGuard, OwnedRwLockWriteGuard, RwLock,
};

/// Serialises auth-file mutations. Cheap to clone.
#[derive(Clone, Default)]
pub struct MutationCoordinator {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    global: Arc<RwLock<()>>,
    files: Mutex<HashMap<String, Weak<AsyncMutex<()>>>>,
}

/// Held while a mutation runs; dropping it lets the next one in.
pub struct MutationGuard {
    _files: Vec<OwnedMutexGuard<()>>,
    _global: GlobalGuard,
}

/// Held only to be dropped: the shared or exclusive hold on the global lock.
#[allow(dead_code, reason = "the guards are held for their drop")]
enum GlobalGuard {
    Shared(OwnedRwLockReadGuard<()>),
    Exclusive(OwnedRwLockWriteGuard<()>),
}

/// The coordinator's key for a file name.
pub fn file_key(name: &str) -> String {
    name.trim().to_lowercase()
}

impl MutationCoordinator {
    fn entry(&self, key: &str) -> Arc<AsyncMutex<()>> {
        let mut files = self
            .inner
            .files
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(existing) = files.get(key).and_then(Weak::upgrade) {
            return existing;
        }
        files.retain(|_, weak| weak.strong_count() > 0);
        let mutex = Arc::new(AsyncMutex::new(()));
        files.insert(key.to_string(), Arc::downgrade(&mutex));
        mutex
    }

    /// Locks the named files (empty names ignored), waiting for their current holders.
    pub async fn lock_files<'a>(&self, names: impl IntoIterator<Item = &'a str>) -> MutationGuard {
        let global = self.inner.global.clone().read_owned().await;
        let mut keys: Vec<String> = names
            .into_iter()
            .map(file_key)
            .filter(|key| !key.is_empty())
            .collect();
        keys.sort();
        keys.dedup();
        let mut guards = Vec::with_capacity(keys.len());
        for key in keys {
            guards.push(self.entry(&key).lock_owned().await);
        }
        MutationGuard {
            _files: guards,
            _global: GlobalGuard::Shared(global),
        }
    }

    /// Locks every file: waits for all holders, and no new one starts meanwhile.
    pub async fn lock_all(&self) -> MutationGuard {
        MutationGuard {
            _files: Vec::new(),
            _global: GlobalGuard::Exclusive(self.inner.global.clone().write_owned().await),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn one_file_at_a_time_case_insensitively() {
        let coordinator = MutationCoordinator::default();
        let first = coordinator.lock_files(["Codex-A.json"]).await;
        let second = coordinator.clone();
        let waiting = tokio::spawn(async move {
            let _guard = second.lock_files([" codex-a.json "]).await;
        });
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert!(!waiting.is_finished(), "the same file waits");
        // Another file does not wait.
        let other = tokio::time::timeout(
            Duration::from_millis(200),
            coordinator.lock_files(["codex-b.json"]),
        )
        .await;
        assert!(other.is_ok());
        drop(other);
        drop(first);
        tokio::time::timeout(Duration::from_secs(1), waiting)
            .await
            .expect("released")
            .expect("task");
    }

    #[tokio::test]
    async fn lock_all_waits_for_holders_and_blocks_newcomers() {
        let coordinator = MutationCoordinator::default();
        let holder = coordinator.lock_files(["a.json", "b.json"]).await;
        let all = coordinator.clone();
        let clearing = tokio::spawn(async move {
            let _guard = all.lock_all().await;
            tokio::time::sleep(Duration::from_millis(50)).await;
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!clearing.is_finished());
        let newcomer = coordinator.clone();
        let late = tokio::spawn(async move {
            let _guard = newcomer.lock_files(["c.json"]).await;
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(
            !late.is_finished(),
            "a queued lock_all keeps new holders out"
        );
        drop(holder);
        clearing.await.expect("clearing");
        late.await.expect("late");
    }
}
