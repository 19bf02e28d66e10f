//! `POST /v0/management/monitoring/account-history`: all-time totals and recent
//! requests per credential.

use std::collections::HashMap;
use std::sync::Arc;

use serde::Serialize;

use super::target::AccountTarget;
use super::{AccountTotals, success_rate};
use crate::analytics::QueryError;
use crate::analytics::query::{AnalyticsStore, Cursor, GroupRequest, RawEvent, Scope};
use crate::analytics::time::{DAY_MS, Granularity, HOUR_MS, Zone};

fn is_empty_str(value: &str) -> bool {
    value.is_empty()
}

/// Most targets of one account-history request.
pub const MAX_HISTORY_TARGETS: usize = 200;
/// Recent requests listed per file-backed target.
const RECENT_REQUESTS: usize = 10;

/// One `accounts[]` item of an account-history request.
#[derive(Debug, Clone)]
pub struct HistoryTarget {
    /// The caller's key for the row (unique in the request), echoed on the answer.
    pub row_key: String,
    /// The credential the row asks about.
    pub target: AccountTarget,
}

/// `checkpoint` of the account history. Totals are read from rollups written in the
/// ingest transaction, so they are never behind: `pending` is always false and both
/// ids are the newest stored event id (the Go server's catch-up fields, kept for the
/// panel).
#[derive(Debug, Clone, Serialize)]
pub struct Checkpoint {
    /// Event id the totals include up to (the newest stored id).
    pub last_event_id: i64,
    /// The newest stored event id.
    pub latest_id: i64,
    /// Always false: no event is waiting to be counted.
    pub pending: bool,
    /// Always 0: no catch-up work was done for this request.
    pub processed: i64,
}

/// One request of a credential, as `latest_request` and `recent_requests` list it;
/// optional keys are left out when empty.
#[derive(Debug, Clone, Serialize)]
pub struct HistoryRequestItem {
    /// Request start, Unix milliseconds.
    pub timestamp_ms: i64,
    /// The attempt failed.
    pub failed: bool,
    /// Upstream HTTP status of a failure.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fail_status_code: Option<i64>,
    /// Redacted failure text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fail_summary: Option<String>,
    /// Upstream error kind from the response headers.
    #[serde(skip_serializing_if = "is_empty_str")]
    pub header_error_kind: String,
    /// Upstream error code from the response headers.
    #[serde(skip_serializing_if = "is_empty_str")]
    pub header_error_code: String,
    /// Upstream trace id from the response headers.
    #[serde(skip_serializing_if = "is_empty_str")]
    pub header_trace_id: String,
}

/// One `items[]` row of the account history: a credential's all-time totals.
#[derive(Debug, Clone, Serialize)]
pub struct HistoryItem {
    /// The request's `row_key`.
    pub row_key: String,
    /// The opaque account key the target resolved to
    /// (`usage-account-history:2:<kind>:…`).
    pub account_key: String,
    /// At least one stored request belongs to the credential.
    pub matched: bool,
    /// All-time calls of the credential.
    pub total_requests: i64,
    /// Calls that succeeded.
    pub success_calls: i64,
    /// Calls that failed.
    pub failure_calls: i64,
    /// All-time total tokens.
    pub total_tokens: i64,
    /// `null` when a matching request's model has no price (unknown, never 0).
    pub total_cost: Option<f64>,
    /// `success_calls / total_requests`, 0–1; `null` without requests.
    pub success_rate: Option<f64>,
    /// Time of the credential's first request, Unix milliseconds; `null` without
    /// requests.
    pub first_seen_ms: Option<i64>,
    /// Time of the credential's newest request, Unix milliseconds; `null` without
    /// requests.
    pub last_seen_ms: Option<i64>,
    /// The newest request; only for file-backed targets (an auth file, or a source that
    /// differs from the account and label).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latest_request: Option<HistoryRequestItem>,
    /// Up to ten newest requests, newest first; only for file-backed targets, and absent
    /// when there are none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recent_requests: Option<Vec<HistoryRequestItem>>,
    /// `ready` when the credential has requests, else `empty`.
    pub sync_status: &'static str,
}

/// The body of `POST /monitoring/account-history`.
#[derive(Debug, Clone, Serialize)]
pub struct AccountHistory {
    /// The server clock when the answer was built, Unix milliseconds.
    pub generated_at_ms: i64,
    /// How far the totals reach (always fully current).
    pub checkpoint: Checkpoint,
    /// One row per requested target, in request order.
    pub items: Vec<HistoryItem>,
    /// Models without a price behind a `null` total_cost (absent when none).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unpriced_models: Vec<String>,
}

fn request_item(event: &RawEvent) -> HistoryRequestItem {
    HistoryRequestItem {
        timestamp_ms: event.timestamp_ms,
        failed: event.failed,
        fail_status_code: event.fail_status_code,
        fail_summary: event.fail_summary.clone().filter(|text| !text.is_empty()),
        header_error_kind: event.header_error_kind.to_string(),
        header_error_code: event.header_error_code.to_string(),
        header_trace_id: event.header_trace_id.clone().unwrap_or_default(),
    }
}

/// All-time totals and recent requests per target. Targets are validated.
///
/// # Errors
///
/// [`QueryError`] when a store read fails.
pub async fn account_history<S: AnalyticsStore>(
    store: &S,
    now_ms: i64,
    targets: &[HistoryTarget],
) -> Result<AccountHistory, QueryError> {
    let latest_id = store.latest_event_id().await?;
    let book = store.price_book().await?;
    let keys: Vec<String> = targets.iter().map(|t| t.target.key()).collect();
    let mut totals: HashMap<&str, AccountTotals> = keys
        .iter()
        .map(|k| (k.as_str(), AccountTotals::default()))
        .collect();
    let to_ms = now_ms.max(latest_timestamp_bound(now_ms));
    // Day blocks: all-time totals from the daily rollups (a row per identity and
    // day, not per hour); the first day is then narrowed to its hour, then to the
    // exact first call.
    let rows = store
        .groups(GroupRequest {
            scope: Scope::time_only(1, to_ms),
            identity: true,
            timeline: Some((Zone::utc(), Granularity::Day)),
        })
        .await?;
    let mut row_keys: HashMap<usize, String> = HashMap::new();
    for row in &rows {
        let Some(identity) = &row.identity else {
            continue;
        };
        let key = row_keys
            .entry(Arc::as_ptr(identity) as usize)
            .or_insert_with(|| AccountTarget::of_identity(identity).key());
        if let Some(total) = totals.get_mut(key.as_str()) {
            total.add(&book, row);
        }
    }
    drop(rows);
    let mut items = Vec::with_capacity(targets.len());
    let mut unpriced = std::collections::BTreeSet::new();
    for (target, key) in targets.iter().zip(&keys) {
        let mut total = totals.remove(key.as_str()).unwrap_or_default();
        unpriced.append(&mut total.unpriced);
        let first_seen_ms = match total.first_block {
            Some(day) => match first_hour(store, key, day).await? {
                Some(hour) => first_call(store, key, hour).await?,
                None => None,
            },
            None => None,
        };
        let mut recent = None;
        if total.calls() > 0 && !target.target.file().is_empty() {
            recent = Some(recent_requests(store, &target.target, key, to_ms).await?);
        }
        let latest_request = recent
            .as_ref()
            .and_then(|list: &Vec<HistoryRequestItem>| list.first().cloned());
        items.push(HistoryItem {
            row_key: target.row_key.clone(),
            account_key: key.clone(),
            matched: total.calls() > 0,
            total_requests: total.calls(),
            success_calls: total.calls().saturating_sub(total.failures()),
            failure_calls: total.failures(),
            total_tokens: total.tokens(),
            total_cost: total.cost(),
            success_rate: success_rate(total.calls(), total.failures()),
            first_seen_ms,
            last_seen_ms: total.last_seen(),
            latest_request,
            recent_requests: recent.filter(|list| !list.is_empty()),
            sync_status: if total.calls() > 0 { "ready" } else { "empty" },
        });
    }
    Ok(AccountHistory {
        generated_at_ms: now_ms,
        checkpoint: Checkpoint {
            last_event_id: latest_id,
            latest_id,
            pending: false,
            processed: 0,
        },
        items,
        unpriced_models: unpriced.into_iter().collect(),
    })
}

/// Events may carry timestamps slightly ahead of the server clock; a day of slack
/// keeps them in the all-time range.
fn latest_timestamp_bound(now_ms: i64) -> i64 {
    now_ms.saturating_add(DAY_MS)
}

/// The hour block holding an account's earliest row inside the UTC day holding
/// `block` (its earliest day row).
async fn first_hour<S: AnalyticsStore>(
    store: &S,
    key: &str,
    block: i64,
) -> Result<Option<i64>, QueryError> {
    let day = block.div_euclid(DAY_MS) * DAY_MS;
    let rows = store
        .groups(GroupRequest {
            scope: Scope::time_only(day.max(1), day.saturating_add(DAY_MS)),
            identity: true,
            timeline: Some((Zone::utc(), Granularity::Hour)),
        })
        .await?;
    Ok(rows
        .iter()
        .filter(|row| {
            row.identity
                .as_ref()
                .is_some_and(|identity| AccountTarget::of_identity(identity).key() == key)
        })
        .map(|row| row.bucket_ms)
        .min())
}

/// The exact first call of an account inside the block holding its earliest row.
async fn first_call<S: AnalyticsStore>(
    store: &S,
    key: &str,
    block: i64,
) -> Result<Option<i64>, QueryError> {
    let block = block.div_euclid(HOUR_MS) * HOUR_MS;
    let events = store
        .raw_events(Scope::time_only(block, block + HOUR_MS), 1_000_000)
        .await?;
    Ok(events
        .iter()
        .filter(|event| AccountTarget::of_identity(&event.identity).key() == key)
        .map(|event| event.timestamp_ms)
        .min())
}

/// The newest calls of a file-backed account, newest first.
async fn recent_requests<S: AnalyticsStore>(
    store: &S,
    target: &AccountTarget,
    key: &str,
    to_ms: i64,
) -> Result<Vec<HistoryRequestItem>, QueryError> {
    let mut scope = Scope::time_only(1, to_ms);
    if !target.auth_file_snapshot.trim().is_empty() {
        scope.filters.auth_files = vec![target.auth_file_snapshot.trim().to_string()];
    } else {
        scope.filters.accounts = vec![target.source.trim().to_lowercase()];
    }
    if !target.auth_index.trim().is_empty() {
        scope.filters.auth_indices = vec![target.auth_index.trim().to_string()];
    }
    let mut out = Vec::new();
    let mut cursor = Cursor::default();
    // The filter above is a superset of the account; keep reading until ten
    // events of this exact account key are found or the events run out.
    loop {
        let page = store.events_page(scope.clone(), cursor, 50).await?;
        for event in &page.items {
            if AccountTarget::of_identity(&event.identity).key() == key {
                out.push(request_item(event));
                if out.len() >= RECENT_REQUESTS {
                    return Ok(out);
                }
            }
        }
        match page.items.last() {
            Some(last) if page.has_more => {
                cursor = Cursor {
                    before_ms: last.timestamp_ms,
                    before_id: last.id,
                }
            }
            _ => return Ok(out),
        }
    }
}
