//! The dictionary of repeated text values (`dims`).
//!
//! Events reference models, providers, endpoints, credentials and the like by
//! integer id. The writer keeps a cache of known ids; ids created inside a
//! transaction are staged and only enter the cache once that transaction commits,
//! so a rolled-back batch can never leave a dangling id in the cache.

use std::collections::HashMap;
use std::sync::Mutex;

use sqlx::SqliteConnection;

/// What a dictionary value is. The numbers are stored in `dims.kind`; never renumber.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum DimKind {
    Provider = 1,
    ExecutorType = 2,
    Model = 3,
    Endpoint = 4,
    Method = 5,
    Path = 6,
    ClientIp = 7,
    XForwardedFor = 8,
    UserAgent = 9,
    AuthType = 10,
    AuthIndex = 11,
    Source = 12,
    SourceHash = 13,
    ApiKeyHash = 14,
    Account = 15,
    AuthLabel = 16,
    AuthFile = 17,
    AuthProvider = 18,
    AuthProject = 19,
    ReasoningEffort = 20,
    ServiceTier = 21,
    QuotaPlanType = 22,
    ErrorKind = 23,
    ErrorCode = 24,
}

/// Process-wide cache of (kind, value) -> id.
#[derive(Default)]
pub(crate) struct DimCache {
    known: Mutex<HashMap<(u8, String), i64>>,
}

/// Ids resolved during one transaction; merged into the cache after commit.
#[derive(Default)]
pub(crate) struct DimStage {
    staged: HashMap<(u8, String), i64>,
}

impl DimCache {
    fn lookup(&self, kind: DimKind, value: &str) -> Option<i64> {
        // A poisoned lock only means another thread panicked mid-insert of a
        // plain map entry; the map itself is still consistent.
        let known = self
            .known
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        known.get(&(kind as u8, value.to_owned())).copied()
    }

    pub(crate) fn commit(&self, stage: DimStage) {
        if stage.staged.is_empty() {
            return;
        }
        let mut known = self
            .known
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        known.extend(stage.staged);
    }
}

impl DimStage {
    /// The id of `value` under `kind`, creating it if needed. `None` stays `None`.
    pub(crate) async fn resolve(
        &mut self,
        cache: &DimCache,
        connection: &mut SqliteConnection,
        kind: DimKind,
        value: Option<&str>,
    ) -> Result<Option<i64>, sqlx::Error> {
        let Some(value) = value.filter(|value| !value.is_empty()) else {
            return Ok(None);
        };
        if let Some(id) = cache.lookup(kind, value) {
            return Ok(Some(id));
        }
        let key = (kind as u8, value.to_owned());
        if let Some(id) = self.staged.get(&key) {
            return Ok(Some(*id));
        }
        let existing: Option<i64> =
            sqlx::query_scalar("SELECT id FROM dims WHERE kind = ? AND value = ?")
                .bind(kind as u8)
                .bind(value)
                .fetch_optional(&mut *connection)
                .await?;
        let id = match existing {
            Some(id) => id,
            None => {
                sqlx::query_scalar("INSERT INTO dims (kind, value) VALUES (?, ?) RETURNING id")
                    .bind(kind as u8)
                    .bind(value)
                    .fetch_one(&mut *connection)
                    .await?
            }
        };
        self.staged.insert(key, id);
        Ok(Some(id))
    }
}
