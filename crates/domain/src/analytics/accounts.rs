//! Per-credential monitoring views: the latest header snapshot per credential
//! (`GET /v0/management/monitoring/header-snapshots`), all-time account history
//! (`POST .../account-history`) and usage inside provider quota windows
//! (`POST .../account-window-usage`).
//!
//! Totals come from the identity rollups, which are written in the ingest
//! transaction: they are never behind the event table, so the Go server's
//! "pending" catch-up state cannot occur and `catch_up` has nothing to do.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;

use serde::Serialize;
use serde_json::value::RawValue;

use super::cost::PriceBook;
use super::query::{AnalyticsStore, Cursor, GroupRequest, GroupRow, Identity, RawEvent, Scope};
use super::report::{QueryError, response_metadata, row_cost_pub};
use super::time::{DAY_MS, HOUR_MS};
use super::{AnalyticsError, analytics_model};

fn is_empty_str(value: &str) -> bool {
    value.is_empty()
}

fn non_empty(text: &str) -> String {
    text.to_string()
}

// ---------------------------------------------------------------------------
// Header snapshots
// ---------------------------------------------------------------------------

/// Default and largest `days` of the header-snapshot window.
pub const SNAPSHOT_DAYS: (i64, i64) = (30, 365);
/// Default and largest `limit` of header snapshots.
pub const SNAPSHOT_LIMIT: (i64, i64) = (1000, 5000);

/// One credential's latest header metadata.
#[derive(Debug, Clone, Serialize)]
pub struct HeaderSnapshot {
    pub event_hash: String,
    pub timestamp_ms: i64,
    #[serde(skip_serializing_if = "is_empty_str")]
    pub model: String,
    #[serde(skip_serializing_if = "is_empty_str")]
    pub analytics_model: String,
    #[serde(skip_serializing_if = "is_empty_str")]
    pub requested_model: String,
    #[serde(skip_serializing_if = "is_empty_str")]
    pub resolved_model: String,
    #[serde(skip_serializing_if = "is_empty_str")]
    pub auth_file_snapshot: String,
    #[serde(skip_serializing_if = "is_empty_str")]
    pub auth_index: String,
    #[serde(skip_serializing_if = "is_empty_str")]
    pub account_snapshot: String,
    #[serde(skip_serializing_if = "is_empty_str")]
    pub auth_label_snapshot: String,
    #[serde(skip_serializing_if = "is_empty_str")]
    pub auth_provider_snapshot: String,
    #[serde(skip_serializing_if = "is_empty_str")]
    pub auth_project_id_snapshot: String,
    #[serde(skip_serializing_if = "is_empty_str")]
    pub source: String,
    #[serde(skip_serializing_if = "is_empty_str")]
    pub source_hash: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response_metadata: Option<Box<RawValue>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub header_quota_recover_at_ms: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub header_quota_used_percent: Option<f64>,
    #[serde(skip_serializing_if = "is_empty_str")]
    pub header_quota_plan_type: String,
    #[serde(skip_serializing_if = "is_empty_str")]
    pub header_error_kind: String,
    #[serde(skip_serializing_if = "is_empty_str")]
    pub header_error_code: String,
    #[serde(skip_serializing_if = "is_empty_str")]
    pub header_trace_id: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct HeaderSnapshots {
    pub generated_at_ms: i64,
    pub from_ms: i64,
    pub to_ms: i64,
    pub items: Vec<HeaderSnapshot>,
}

/// The credential a snapshot belongs to: `file::index`, `file::<file>`,
/// `auth::<index>`, `account::<lowercase account>`, `source::<hash>`, else
/// `event::<hash>` (an event with no identity at all stands for itself).
pub fn snapshot_key(event: &RawEvent) -> String {
    let identity = &event.identity;
    let file = identity.auth_file.trim();
    let index = identity.auth_index.trim();
    let account = identity.account.trim();
    let source_hash = identity.source_hash.trim();
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
        format!("event::{}", event.event_hash)
    }
}

fn has_header_metadata(event: &RawEvent) -> bool {
    response_metadata(event.response_metadata_json.as_deref()).is_some()
        || event.header_quota_recover_at_ms.is_some()
        || event.header_quota_used_percent.is_some()
        || !event.header_quota_plan_type.is_empty()
        || !event.header_error_kind.is_empty()
        || !event.header_error_code.is_empty()
        || event
            .header_trace_id
            .as_deref()
            .is_some_and(|t| !t.is_empty())
}

fn snapshot_item(event: &RawEvent) -> HeaderSnapshot {
    let identity = &event.identity;
    HeaderSnapshot {
        event_hash: event.event_hash.clone(),
        timestamp_ms: event.timestamp_ms,
        model: non_empty(&event.model),
        analytics_model: non_empty(&event.analytics_model),
        requested_model: non_empty(event.effective_requested()),
        resolved_model: non_empty(&event.resolved_model),
        auth_file_snapshot: non_empty(&identity.auth_file),
        auth_index: non_empty(&identity.auth_index),
        account_snapshot: non_empty(&identity.account),
        auth_label_snapshot: non_empty(&identity.auth_label),
        auth_provider_snapshot: non_empty(identity.effective_provider()),
        auth_project_id_snapshot: non_empty(&identity.auth_project),
        source: non_empty(&identity.source),
        source_hash: non_empty(&identity.source_hash),
        response_metadata: response_metadata(event.response_metadata_json.as_deref()),
        header_quota_recover_at_ms: event.header_quota_recover_at_ms,
        header_quota_used_percent: event.header_quota_used_percent,
        header_quota_plan_type: non_empty(&event.header_quota_plan_type),
        header_error_kind: non_empty(&event.header_error_kind),
        header_error_code: non_empty(&event.header_error_code),
        header_trace_id: event.header_trace_id.clone().unwrap_or_default(),
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
    let mut seen: HashMap<String, ()> = HashMap::new();
    let mut items = Vec::new();
    // Events arrive newest first, so the first event of each key is its latest
    // and the first `limit` distinct keys are exactly the answer.
    store
        .header_events(from_ms, now_ms.saturating_add(1), |event| {
            if items.len() >= limit {
                return false;
            }
            if has_header_metadata(event) && seen.insert(snapshot_key(event), ()).is_none() {
                items.push(snapshot_item(event));
            }
            items.len() < limit
        })
        .await?;
    Ok(HeaderSnapshots {
        generated_at_ms: now_ms,
        from_ms,
        to_ms: now_ms,
        items,
    })
}

// ---------------------------------------------------------------------------
// Account keys
// ---------------------------------------------------------------------------

/// The credential fields a client names an account by.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccountTarget {
    pub account_key: String,
    pub account_snapshot: String,
    pub auth_label_snapshot: String,
    pub auth_file_snapshot: String,
    pub auth_provider_snapshot: String,
    pub auth_project_id_snapshot: String,
    pub auth_index: String,
    pub source: String,
}

impl AccountTarget {
    /// The target of a stored identity (snapshot provider, else event provider).
    pub fn of_identity(identity: &Identity) -> AccountTarget {
        AccountTarget {
            account_key: String::new(),
            account_snapshot: identity.account.to_string(),
            auth_label_snapshot: identity.auth_label.to_string(),
            auth_file_snapshot: identity.auth_file.to_string(),
            auth_provider_snapshot: identity.effective_provider().to_string(),
            auth_project_id_snapshot: identity.auth_project.to_string(),
            auth_index: identity.auth_index.to_string(),
            source: identity.source.to_string(),
        }
    }

    /// Some credential field is set.
    pub fn has_identity(&self) -> bool {
        [
            &self.account_snapshot,
            &self.auth_label_snapshot,
            &self.auth_file_snapshot,
            &self.auth_provider_snapshot,
            &self.auth_project_id_snapshot,
            &self.auth_index,
            &self.source,
        ]
        .iter()
        .any(|value| !value.trim().is_empty())
    }

    /// The file that backs the credential: the auth file, else a source that is
    /// neither the account nor the label (a file name CPA reports as source).
    pub fn file(&self) -> &str {
        let file = self.auth_file_snapshot.trim();
        if !file.is_empty() {
            return file;
        }
        let source = self.source.trim();
        if !source.is_empty()
            && source != self.account_snapshot.trim()
            && source != self.auth_label_snapshot.trim()
        {
            source
        } else {
            ""
        }
    }

    /// Checks what the key rules need: some credential field, and a provider
    /// when the credential is file-backed.
    pub fn validate(&self, what: &str) -> Result<(), AnalyticsError> {
        if !self.has_identity() && self.account_key.trim().is_empty() {
            return Err(AnalyticsError::Invalid(format!(
                "{what}: set at least one of account_snapshot, auth_label_snapshot, auth_file_snapshot, auth_provider_snapshot, auth_project_id_snapshot, auth_index or source"
            )));
        }
        if !self.file().is_empty() && self.auth_provider_snapshot.trim().is_empty() {
            return Err(AnalyticsError::Invalid(format!(
                "{what}: auth_provider_snapshot is required for a file-backed credential"
            )));
        }
        Ok(())
    }

    /// The opaque account key (format v2), or the given `account_key` when no
    /// rule applies.
    pub fn key(&self) -> String {
        let file = self.file();
        let provider = normalize_provider(&self.auth_provider_snapshot);
        let project = self.auth_project_id_snapshot.trim();
        let account = self.account_snapshot.trim();
        let label = self.auth_label_snapshot.trim();
        let index = self.auth_index.trim();
        let set = |value: &str| !value.is_empty();
        let p = provider.as_str();
        let (kind, values): (&str, Vec<&str>) = if set(file) && set(index) {
            ("file-index", vec![file, index])
        } else if set(file) && set(p) && set(project) {
            ("file-project", vec![file, p, project])
        } else if set(file) && set(p) && set(account) {
            ("file-account", vec![file, p, account])
        } else if set(file) && set(p) && set(label) {
            ("file-label", vec![file, p, label])
        } else if set(file) && set(p) {
            ("file", vec![file, p])
        } else if set(p) && set(index) {
            ("auth-index", vec![p, index])
        } else if set(p) && set(project) {
            ("project", vec![p, project])
        } else if set(p) && set(account) {
            ("account", vec![p, account])
        } else if set(p) && set(label) {
            ("label", vec![p, label])
        } else {
            return self.account_key.trim().to_string();
        };
        let mut key = format!("usage-account-history:2:{kind}");
        for value in values {
            key.push(':');
            for byte in value.as_bytes() {
                let _ = write!(key, "{byte:02X}");
            }
        }
        key
    }
}

/// Lowercase, `_` → `-`, and the xAI aliases folded into `xai`.
pub fn normalize_provider(provider: &str) -> String {
    let provider = provider.trim().to_lowercase().replace('_', "-");
    match provider.as_str() {
        "x-ai" | "grok" => "xai".to_string(),
        _ => provider,
    }
}

/// Identity rows of `[from_ms, to_ms)` with their account key, cost and row.
async fn keyed_rows<S: AnalyticsStore>(
    store: &S,
    from_ms: i64,
    to_ms: i64,
) -> Result<Vec<(String, GroupRow)>, QueryError> {
    let rows = store
        .groups(GroupRequest {
            scope: Scope::time_only(from_ms, to_ms),
            identity: true,
            timeline: None,
        })
        .await?;
    let mut keys: HashMap<usize, String> = HashMap::new();
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        let key = match &row.identity {
            Some(identity) => keys
                .entry(Arc::as_ptr(identity) as usize)
                .or_insert_with(|| AccountTarget::of_identity(identity).key())
                .clone(),
            None => String::new(),
        };
        out.push((key, row));
    }
    Ok(out)
}

fn success_rate(calls: i64, failures: i64) -> Option<f64> {
    (calls > 0).then(|| (calls - failures) as f64 / calls as f64)
}

// ---------------------------------------------------------------------------
// Account history
// ---------------------------------------------------------------------------

/// Most targets of one account-history request.
pub const MAX_HISTORY_TARGETS: usize = 200;
/// Recent requests listed per file-backed target.
const RECENT_REQUESTS: usize = 10;

#[derive(Debug, Clone)]
pub struct HistoryTarget {
    pub row_key: String,
    pub target: AccountTarget,
}

#[derive(Debug, Clone, Serialize)]
pub struct Checkpoint {
    pub last_event_id: i64,
    pub latest_id: i64,
    pub pending: bool,
    pub processed: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct HistoryRequestItem {
    pub timestamp_ms: i64,
    pub failed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fail_status_code: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fail_summary: Option<String>,
    #[serde(skip_serializing_if = "is_empty_str")]
    pub header_error_kind: String,
    #[serde(skip_serializing_if = "is_empty_str")]
    pub header_error_code: String,
    #[serde(skip_serializing_if = "is_empty_str")]
    pub header_trace_id: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct HistoryItem {
    pub row_key: String,
    pub account_key: String,
    pub matched: bool,
    pub total_requests: i64,
    pub success_calls: i64,
    pub failure_calls: i64,
    pub total_tokens: i64,
    /// `null` when a matching request's model has no price (unknown, never 0).
    pub total_cost: Option<f64>,
    pub success_rate: Option<f64>,
    pub first_seen_ms: Option<i64>,
    pub last_seen_ms: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latest_request: Option<HistoryRequestItem>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recent_requests: Option<Vec<HistoryRequestItem>>,
    pub sync_status: &'static str,
}

#[derive(Debug, Clone, Serialize)]
pub struct AccountHistory {
    pub generated_at_ms: i64,
    pub checkpoint: Checkpoint,
    pub items: Vec<HistoryItem>,
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

struct Totals {
    calls: i64,
    failures: i64,
    tokens: i64,
    /// `None` once any row had no price: the sum is then unknown.
    cost: Option<f64>,
    first_block: Option<i64>,
    last_seen: Option<i64>,
}

impl Default for Totals {
    fn default() -> Totals {
        Totals {
            calls: 0,
            failures: 0,
            tokens: 0,
            cost: Some(0.0),
            first_block: None,
            last_seen: None,
        }
    }
}

impl Totals {
    fn add(&mut self, book: &PriceBook, row: &GroupRow) {
        self.calls += row.metrics.calls;
        self.failures += row.metrics.failures;
        self.tokens += row.metrics.total;
        self.cost = match (self.cost, row_cost_pub(book, row)) {
            (Some(sum), Some(cost)) => Some(sum + cost),
            _ => None,
        };
        self.first_block = Some(
            self.first_block
                .map_or(row.bucket_ms, |b| b.min(row.bucket_ms)),
        );
        self.last_seen = Some(
            self.last_seen
                .map_or(row.last_seen_ms, |s| s.max(row.last_seen_ms)),
        );
    }
}

/// All-time totals and recent requests per target. Targets are validated.
pub async fn account_history<S: AnalyticsStore>(
    store: &S,
    now_ms: i64,
    targets: &[HistoryTarget],
) -> Result<AccountHistory, QueryError> {
    let latest_id = store.latest_event_id().await?;
    let book = store.price_book().await?;
    let keys: Vec<String> = targets.iter().map(|t| t.target.key()).collect();
    let mut totals: HashMap<&str, Totals> = keys
        .iter()
        .map(|k| (k.as_str(), Totals::default()))
        .collect();
    let to_ms = now_ms.max(latest_timestamp_bound(now_ms));
    // Hour blocks make the first block small enough to find the exact first call.
    let rows = store
        .groups(GroupRequest {
            scope: Scope::time_only(1, to_ms),
            identity: true,
            timeline: Some((super::time::Zone::utc(), super::time::Granularity::Hour)),
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
    for (target, key) in targets.iter().zip(&keys) {
        let total = totals.remove(key.as_str()).unwrap_or_default();
        let first_seen_ms = match total.first_block {
            Some(block) => first_call(store, key, block).await?,
            None => None,
        };
        let mut recent = None;
        if total.calls > 0 && !target.target.file().is_empty() {
            recent = Some(recent_requests(store, &target.target, key, to_ms).await?);
        }
        let latest_request = recent
            .as_ref()
            .and_then(|list: &Vec<HistoryRequestItem>| list.first().cloned());
        items.push(HistoryItem {
            row_key: target.row_key.clone(),
            account_key: key.clone(),
            matched: total.calls > 0,
            total_requests: total.calls,
            success_calls: total.calls - total.failures,
            failure_calls: total.failures,
            total_tokens: total.tokens,
            total_cost: total.cost,
            success_rate: success_rate(total.calls, total.failures),
            first_seen_ms,
            last_seen_ms: total.last_seen,
            latest_request,
            recent_requests: recent.filter(|list| !list.is_empty()),
            sync_status: if total.calls > 0 { "ready" } else { "empty" },
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
    })
}

/// Events may carry timestamps slightly ahead of the server clock; a day of slack
/// keeps them in the all-time range.
fn latest_timestamp_bound(now_ms: i64) -> i64 {
    now_ms.saturating_add(DAY_MS)
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

// ---------------------------------------------------------------------------
// Account window usage
// ---------------------------------------------------------------------------

/// Most windows of one window-usage request.
pub const MAX_WINDOWS: usize = 400;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Period {
    Current,
    Previous,
    PreviousEqualRange,
}

impl Period {
    pub fn parse(text: &str) -> Result<Period, AnalyticsError> {
        match text.trim() {
            "" | "current" => Ok(Period::Current),
            "previous" => Ok(Period::Previous),
            "previous_equal_range" => Ok(Period::PreviousEqualRange),
            other => Err(AnalyticsError::Invalid(format!(
                "invalid period {other:?}: use current, previous or previous_equal_range"
            ))),
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Period::Current => "current",
            Period::Previous => "previous",
            Period::PreviousEqualRange => "previous_equal_range",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScopeKind {
    All,
    Family,
    Models,
    Product,
    Feature,
}

/// Which models of a window count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelScope {
    pub kind: ScopeKind,
    pub key: String,
    /// Lowercase analytics models.
    pub models: Vec<String>,
    pub complete: bool,
}

impl ModelScope {
    /// Omitted scope: everything, complete.
    pub fn all() -> ModelScope {
        ModelScope {
            kind: ScopeKind::All,
            key: String::new(),
            models: Vec::new(),
            complete: true,
        }
    }

    pub fn parse(
        kind: &str,
        key: &str,
        models: &[String],
        complete: Option<bool>,
    ) -> Result<ModelScope, AnalyticsError> {
        let kind = match kind.trim().to_ascii_lowercase().as_str() {
            "" | "all" => ScopeKind::All,
            "family" => ScopeKind::Family,
            "models" => ScopeKind::Models,
            "product" => ScopeKind::Product,
            "feature" => ScopeKind::Feature,
            other => {
                return Err(AnalyticsError::Invalid(format!(
                    "invalid model_scope.kind {other:?}: use all, family, models, product or feature"
                )));
            }
        };
        let default_complete =
            matches!(kind, ScopeKind::All | ScopeKind::Family | ScopeKind::Models);
        let mut normalized: Vec<String> = Vec::new();
        for model in models {
            let model = analytics_model(model.trim()).to_lowercase();
            if !model.is_empty() && !normalized.contains(&model) {
                normalized.push(model);
            }
        }
        Ok(ModelScope {
            kind,
            key: key.trim().to_string(),
            models: normalized,
            complete: complete.unwrap_or(default_complete),
        })
    }

    /// `Some(true)` matched, `Some(false)` unmatched, `None` neither.
    fn classify(&self, row: &GroupRow) -> Option<bool> {
        let model = if row.billing_model.is_empty() || &*row.billing_model == "-" {
            &*row.model
        } else {
            &*row.billing_model
        };
        let model = if model == "-" { "" } else { model };
        match self.kind {
            ScopeKind::All => Some(true),
            ScopeKind::Product | ScopeKind::Feature => None,
            ScopeKind::Family if self.key == "codex_main" => {
                Some(!model.is_empty() && !model.eq_ignore_ascii_case("gpt-5.3-codex-spark"))
            }
            ScopeKind::Models => {
                if model.is_empty() {
                    return Some(false);
                }
                let normalized = analytics_model(model).to_lowercase();
                Some(self.models.contains(&normalized))
            }
            ScopeKind::Family => {
                let lower = model.to_lowercase();
                let class = if ["claude", "gpt", "o1", "o3", "o4"]
                    .iter()
                    .any(|m| lower.contains(m))
                {
                    "claude_gpt"
                } else if lower.contains("gemini") {
                    "gemini"
                } else {
                    "unknown"
                };
                Some(class != "unknown" && class == self.key)
            }
        }
    }
}

#[derive(Debug, Clone)]
pub struct UsageWindow {
    pub request_key: String,
    pub row_key: String,
    pub window_key: String,
    pub provider_window_id: String,
    pub period: Period,
    pub from_ms: i64,
    pub to_ms: i64,
    pub scope: ModelScope,
    pub target: AccountTarget,
}

#[derive(Debug, Clone, Serialize)]
pub struct WindowItem {
    pub request_key: String,
    pub row_key: String,
    #[serde(skip_serializing_if = "is_empty_str")]
    pub window_key: String,
    pub provider_window_id: String,
    pub period: &'static str,
    pub from_ms: i64,
    pub to_ms: i64,
    pub matched: bool,
    pub total_requests: i64,
    pub success_calls: i64,
    pub failure_calls: i64,
    pub total_tokens: i64,
    /// `null` when a matching request's model has no price (unknown, never 0).
    pub total_cost: Option<f64>,
    pub success_rate: Option<f64>,
    pub last_seen_ms: Option<i64>,
    pub sync_status: &'static str,
    pub scope_match_status: &'static str,
    pub unmatched_requests: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct WindowUsage {
    pub generated_at_ms: i64,
    pub items: Vec<WindowItem>,
}

/// Usage per window, matched on the account key and `[from_ms, to_ms)`.
/// Windows are validated.
pub async fn account_window_usage<S: AnalyticsStore>(
    store: &S,
    now_ms: i64,
    windows: &[UsageWindow],
) -> Result<WindowUsage, QueryError> {
    let book = store.price_book().await?;
    // Windows of many rows share their ranges; each range is read once.
    let mut ranges: HashMap<(i64, i64), Vec<(String, GroupRow)>> = HashMap::new();
    let mut items = Vec::with_capacity(windows.len());
    for window in windows {
        let range = (window.from_ms, window.to_ms);
        if let std::collections::hash_map::Entry::Vacant(slot) = ranges.entry(range) {
            slot.insert(keyed_rows(store, window.from_ms, window.to_ms).await?);
        }
        let key = window.target.key();
        let mut totals = Totals::default();
        let mut unmatched = 0;
        if window.scope.complete {
            for (row_key, row) in ranges.get(&range).map(Vec::as_slice).unwrap_or_default() {
                if *row_key != key {
                    continue;
                }
                match window.scope.classify(row) {
                    Some(true) => totals.add(&book, row),
                    Some(false) => unmatched += row.metrics.calls,
                    None => {}
                }
            }
        }
        let scope_match_status = if !window.scope.complete {
            "unmatched"
        } else if unmatched > 0 {
            "partial"
        } else {
            "complete"
        };
        items.push(WindowItem {
            request_key: window.request_key.clone(),
            row_key: window.row_key.clone(),
            window_key: window.window_key.clone(),
            provider_window_id: window.provider_window_id.clone(),
            period: window.period.as_str(),
            from_ms: window.from_ms,
            to_ms: window.to_ms,
            matched: totals.calls > 0,
            total_requests: totals.calls,
            success_calls: totals.calls - totals.failures,
            failure_calls: totals.failures,
            total_tokens: totals.tokens,
            total_cost: totals.cost,
            success_rate: success_rate(totals.calls, totals.failures),
            last_seen_ms: totals.last_seen,
            sync_status: if totals.calls > 0 { "ready" } else { "empty" },
            scope_match_status,
            unmatched_requests: unmatched,
        });
    }
    Ok(WindowUsage {
        generated_at_ms: now_ms,
        items,
    })
}
