//! `GET /v0/management/monitoring/header-snapshots`: the latest header metadata
//! per credential.

use std::collections::HashSet;

use serde::Serialize;

use crate::analytics::QueryError;
use crate::analytics::headers::HeaderFields;
use crate::analytics::identity::{IdentityFields, SnapshotKeys};
use crate::analytics::query::{AnalyticsStore, RawEvent};
use crate::analytics::time::DAY_MS;

fn is_empty_str(value: &str) -> bool {
    value.is_empty()
}

/// Default and largest `days` of the header-snapshot window.
pub const SNAPSHOT_DAYS: (i64, i64) = (30, 365);
/// Default and largest `limit` of header snapshots.
pub const SNAPSHOT_LIMIT: (i64, i64) = (1000, 5000);

/// One credential's latest header metadata.
/// Model keys are left out of the JSON when empty.
#[derive(Debug, Clone, Serialize)]
pub struct HeaderSnapshot {
    /// Dedupe hash of the event the headers came from (lowercase hex).
    pub event_hash: String,
    /// Request start of that event, Unix milliseconds.
    pub timestamp_ms: i64,
    /// Display model of the event.
    #[serde(skip_serializing_if = "is_empty_str")]
    pub model: String,
    /// The requested model without its reasoning suffix.
    #[serde(skip_serializing_if = "is_empty_str")]
    pub analytics_model: String,
    /// The model the client asked for (else the display model).
    #[serde(skip_serializing_if = "is_empty_str")]
    pub requested_model: String,
    /// The model CPA sent upstream.
    #[serde(skip_serializing_if = "is_empty_str")]
    pub resolved_model: String,
    /// The credential the snapshot belongs to (auth file, index, account, …).
    #[serde(flatten)]
    pub identity: IdentityFields<SnapshotKeys>,
    /// The header metadata itself: quota, rate limits, error kind and code, trace id.
    #[serde(flatten)]
    pub headers: HeaderFields,
}

/// The body of `GET /monitoring/header-snapshots`.
#[derive(Debug, Clone, Serialize)]
pub struct HeaderSnapshots {
    /// The server clock when the answer was built, Unix milliseconds.
    pub generated_at_ms: i64,
    /// Start of the window searched (`now − days`), Unix milliseconds.
    pub from_ms: i64,
    /// End of the window searched (now, inclusive), Unix milliseconds.
    pub to_ms: i64,
    /// One snapshot per credential, newest first, at most `limit`.
    pub items: Vec<HeaderSnapshot>,
}

/// The credential a snapshot belongs to: `file::index`, `file::<file>`,
/// `auth::<index>`, `account::<lowercase account>`, `source::<hash>`, else
/// `event::<hash>` (an event with no identity at all stands for itself).
pub fn snapshot_key(event: &RawEvent) -> String {
    let identity = &event.identity;
    credential_key(
        &identity.auth_file,
        &identity.auth_index,
        &identity.account,
        &identity.source_hash,
        &event.event_hash,
    )
}

/// [`snapshot_key`] from the raw field values (storage keys its table of latest
/// header events by it at ingest).
pub fn credential_key(
    auth_file: &str,
    auth_index: &str,
    account: &str,
    source_hash: &str,
    event_hash: &str,
) -> String {
    let file = auth_file.trim();
    let index = auth_index.trim();
    let account = account.trim();
    let source_hash = source_hash.trim();
    if !file.is_empty() && !index.is_empty() {
        format!("{file}::{index}")
    } else if !file.is_empty() {
        format!("file::{file}")
    } else if !index.is_empty() {
        format!("auth::{index}")
    } else if !account.is_empty() {
        format!("account::{}", account.to_lowercase())
    } else if !source_hash.is_empty() {
        format!("source::{source_hash}")
    } else {
        format!("event::{event_hash}")
    }
}

fn snapshot_item(event: &RawEvent, headers: HeaderFields) -> HeaderSnapshot {
    HeaderSnapshot {
        event_hash: event.event_hash.clone(),
        timestamp_ms: event.timestamp_ms,
        model: event.model.to_string(),
        analytics_model: event.analytics_model.to_string(),
        requested_model: event.effective_requested().to_string(),
        resolved_model: event.resolved_model.to_string(),
        identity: IdentityFields::of(&event.identity),
        headers,
    }
}

/// The latest header snapshot per credential over `[now − days, now]`, newest
/// first, at most `limit` items. `days` and `limit` are already validated.
pub async fn header_snapshots<S: AnalyticsStore>(
    store: &S,
    now_ms: i64,
    days: i64,
    limit: usize,
) -> Result<HeaderSnapshots, QueryError> {
    let from_ms = now_ms - days * DAY_MS;
    let events = store
        .latest_header_events(from_ms, now_ms.saturating_add(1), limit)
        .await?;
    let mut seen: HashSet<String> = HashSet::new();
    let mut items = Vec::new();
    for event in &events {
        let headers = HeaderFields::of(event);
        if items.len() < limit && headers.is_set() && seen.insert(snapshot_key(event)) {
            items.push(snapshot_item(event, headers));
        }
    }
    Ok(HeaderSnapshots {
        generated_at_ms: now_ms,
        from_ms,
        to_ms: now_ms,
        items,
    })
}
