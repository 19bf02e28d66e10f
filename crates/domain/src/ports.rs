//! Ports: the traits storage implements and the collector and API program against.
//!
//! Methods return `impl Future + Send` so callers can spawn them; consumers are
//! generic over the concrete store, which only the binary names.

use std::future::Future;

use crate::event::{DeadLetter, UsageEvent};

/// Why a store operation failed, phrased by what the caller can do about it.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The thing asked for does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// The write conflicts with stored data (for example a duplicate key).
    #[error("conflict: {0}")]
    Conflict(String),
    /// The request itself is invalid (bad filter, impossible range).
    #[error("{0}")]
    Invalid(String),
    /// The database cannot be used right now (locked, read-only, disk full, IO error).
    /// The operation may succeed when retried later.
    #[error("database unavailable: {message}")]
    Unavailable {
        message: String,
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
}

impl StoreError {
    pub fn unavailable(
        message: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> StoreError {
        StoreError::Unavailable {
            message: message.into(),
            source: Some(Box::new(source)),
        }
    }
}

/// One batch taken from CPA: the events to store and the items that could not be decoded.
/// Both are written in one transaction, so a batch is either stored whole or not at all.
#[derive(Debug, Clone, Default)]
pub struct IngestBatch {
    /// Which CPA connection the batch came from (its normalised base URL).
    pub origin: String,
    pub events: Vec<UsageEvent>,
    pub dead_letters: Vec<DeadLetter>,
}

/// What storing a batch did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BatchOutcome {
    /// Events stored for the first time.
    pub inserted: u64,
    /// Events already known (same event hash); not stored again.
    pub skipped: u64,
    pub dead_lettered: u64,
}

/// Appends usage events. Idempotent: an event whose hash is known is skipped.
pub trait EventSink: Clone + Send + Sync + 'static {
    fn store_batch(
        &self,
        batch: IngestBatch,
    ) -> impl Future<Output = Result<BatchOutcome, StoreError>> + Send;
}

/// Small key-value settings (JSON documents) kept beside the events.
pub trait SettingsStore: Clone + Send + Sync + 'static {
    fn get_setting(
        &self,
        key: &str,
    ) -> impl Future<Output = Result<Option<String>, StoreError>> + Send;

    fn put_setting(
        &self,
        key: &str,
        value: &str,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// Counts that are cheap to read at any table size.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreCounts {
    pub events: i64,
    pub dead_letters: i64,
}

/// Cheap health figures of the store, for `/status` and `/metrics`.
pub trait StoreStats: Clone + Send + Sync + 'static {
    fn counts(&self) -> impl Future<Output = Result<StoreCounts, StoreError>> + Send;
}

/// Facts about keys seen in events, used to explain a failed login without
/// revealing anything stored.
pub trait KeyHints: Clone + Send + Sync + 'static {
    /// True when events were recorded with a CPA client API key whose SHA-256
    /// (lowercase hex) is `api_key_hash`.
    fn is_known_api_key_hash(
        &self,
        api_key_hash: &str,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;
}
