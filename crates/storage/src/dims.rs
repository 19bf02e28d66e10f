//! The dictionary of repeated text values (`dims`).
//!
//! Events reference models, providers, endpoints, credentials and the like by
//! integer id. The writer keeps a cache of known ids; ids created inside a
//! transaction are staged and only enter the cache once that transaction commits,
//! so a rolled-back batch can never leave a dangling id in the cache.

use std::sync::Mutex;

use crate::fasthash::FastMap;

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
    /// A response-metadata template (`crate::compact`).
    ResponseMetadata = 25,
}

/// Process-wide cache of (kind, value) -> id, and of the other small id tables the
/// ingest transaction consults (rows of those tables are never deleted, so a
/// cached id stays valid).
#[derive(Default)]
pub(crate) struct DimCache {
    known: Mutex<Ids>,
    others: Mutex<IdMaps>,
}

/// Value -> id, one map per [`DimKind`] (indexed by its number), so a lookup
/// borrows the value instead of building a key.
type Ids = [FastMap<String, i64>; KINDS];
/// One past the largest [`DimKind`] number.
const KINDS: usize = 26;

/// Ids resolved during one transaction; merged into the cache after commit.
#[derive(Default)]
pub(crate) struct DimStage {
    staged: Ids,
    pub(crate) others: IdMaps,
}

/// Ids of `cpa_sources`, `usage_model_analytics` and `usage_identities` rows.
#[derive(Default)]
pub(crate) struct IdMaps {
    pub(crate) origins: FastMap<String, i64>,
    pub(crate) analytics: FastMap<i64, i64>,
    pub(crate) identities: FastMap<[i64; 11], i64>,
}

impl IdMaps {
    fn is_empty(&self) -> bool {
        self.origins.is_empty() && self.analytics.is_empty() && self.identities.is_empty()
    }
}

impl DimCache {
    fn known(&self) -> std::sync::MutexGuard<'_, Ids> {
        // A poisoned lock only means another thread panicked mid-insert of a
        // plain map entry; the map itself is still consistent.
        self.known
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn lookup(&self, kind: DimKind, value: &str) -> Option<i64> {
        self.known()[kind as usize].get(value).copied()
    }

    /// The ids of `values` known to the cache or staged in `stage`, under one
    /// lock; `None` where a value is empty or not known yet.
    pub(crate) fn lookup_all<const N: usize>(
        &self,
        stage: &DimStage,
        values: &[(DimKind, Option<&str>); N],
    ) -> [Option<i64>; N] {
        let known = self.known();
        values.map(|(kind, value)| {
            let value = value.filter(|value| !value.is_empty())?;
            known[kind as usize]
                .get(value)
                .or_else(|| stage.staged[kind as usize].get(value))
                .copied()
        })
    }

    pub(crate) fn commit(&self, stage: DimStage) {
        if stage.staged.iter().any(|ids| !ids.is_empty()) {
            let mut known = self.known();
            for (known, staged) in known.iter_mut().zip(stage.staged) {
                known.extend(staged);
            }
        }
        if !stage.others.is_empty() {
            let mut others = self
                .others
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            others.origins.extend(stage.others.origins);
            others.analytics.extend(stage.others.analytics);
            others.identities.extend(stage.others.identities);
        }
    }

    pub(crate) fn origin(&self, base_url: &str) -> Option<i64> {
        let others = self
            .others
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        others.origins.get(base_url).copied()
    }

    pub(crate) fn analytics(&self, effective_model: i64) -> Option<i64> {
        let others = self
            .others
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        others.analytics.get(&effective_model).copied()
    }

    pub(crate) fn identity(&self, key: &[i64; 11]) -> Option<i64> {
        let others = self
            .others
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        others.identities.get(key).copied()
    }
}

impl DimStage {
    /// The id of `value` under `kind`, creating it if needed. `None` stays `None`.
    pub(crate) fn resolve(
        &mut self,
        cache: &DimCache,
        connection: &rusqlite::Connection,
        kind: DimKind,
        value: Option<&str>,
    ) -> rusqlite::Result<Option<i64>> {
        use rusqlite::OptionalExtension;
        let Some(value) = value.filter(|value| !value.is_empty()) else {
            return Ok(None);
        };
        if let Some(id) = cache.lookup(kind, value) {
            return Ok(Some(id));
        }
        if let Some(id) = self.staged[kind as usize].get(value) {
            return Ok(Some(*id));
        }
        let existing: Option<i64> = connection
            .prepare_cached("SELECT id FROM dims WHERE kind = ?1 AND value = ?2")?
            .query_row((kind as u8, value), |row| row.get(0))
            .optional()?;
        let id = match existing {
            Some(id) => id,
            None => connection
                .prepare_cached("INSERT INTO dims (kind, value) VALUES (?1, ?2) RETURNING id")?
                .query_row((kind as u8, value), |row| row.get(0))?,
        };
        self.staged[kind as usize].insert(value.to_owned(), id);
        Ok(Some(id))
    }
}
