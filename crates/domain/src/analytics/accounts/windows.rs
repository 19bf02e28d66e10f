//! `POST /v0/management/monitoring/account-window-usage`: usage per credential
//! inside provider quota windows, optionally limited to a model scope.

use std::collections::HashMap;
use std::sync::Arc;

use serde::Serialize;

use super::target::AccountTarget;
use super::{AccountTotals, success_rate};
use crate::analytics::query::{AnalyticsStore, GroupRequest, GroupRow, Scope};
use crate::analytics::{AnalyticsError, QueryError, analytics_model};

fn is_empty_str(value: &str) -> bool {
    value.is_empty()
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

/// Most windows of one window-usage request.
pub const MAX_WINDOWS: usize = 400;

/// Which cycle of a quota window a row asks about (`period`). The server does not
/// compute the range from it: the caller sends `from_ms`/`to_ms`, and the period is
/// echoed so the panel can tell its rows apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Period {
    /// `current` (the default): the cycle running now.
    Current,
    /// `previous`: the whole cycle before it.
    Previous,
    /// `previous_equal_range`: the previous cycle cut to the length of the current one
    /// so far, for a like-for-like comparison.
    PreviousEqualRange,
}

impl Period {
    /// Reads `period`; blank means `current`.
    ///
    /// # Errors
    ///
    /// [`AnalyticsError::Invalid`] naming the accepted values for anything else.
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

/// `model_scope.kind`: what part of the account's usage a quota window counts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScopeKind {
    /// Every model (the default).
    All,
    /// A model family named by the key: `codex_main` (every Codex model but Spark),
    /// `claude_gpt` or `gemini`.
    Family,
    /// The listed models only.
    Models,
    /// A provider product; usage cannot be attributed to it, so nothing matches.
    Product,
    /// A provider feature (e.g. code review); usage cannot be attributed to it, so
    /// nothing matches.
    Feature,
}

/// Which models of a window count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelScope {
    /// The kind of scope.
    pub kind: ScopeKind,
    /// The family, product or feature name (`model_scope.key`); empty when none.
    pub key: String,
    /// Lowercase analytics models.
    pub models: Vec<String>,
    /// The scope is fully known (`model_scope.complete`, default true for `all`,
    /// `family` and `models`); an incomplete scope matches nothing and the row reports
    /// `scope_match_status: unmatched`.
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

    /// Reads `model_scope` from its parts: kind (blank is `all`), key, models
    /// (normalised to distinct lowercase analytics models) and `complete`.
    ///
    /// # Errors
    ///
    /// [`AnalyticsError::Invalid`] when the kind is not one of the five.
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

/// One `windows[]` item of a window-usage request, validated.
#[derive(Debug, Clone)]
pub struct UsageWindow {
    /// The caller's key for this answer row; defaults to row key, window id, scope key
    /// and period joined by NUL.
    pub request_key: String,
    /// The caller's key for the account row the window belongs to.
    pub row_key: String,
    /// The caller's key for the window; empty when not sent.
    pub window_key: String,
    /// The provider's name for the quota window (`five-hour`, `weekly`, …).
    pub provider_window_id: String,
    /// Which cycle of the window the range is.
    pub period: Period,
    /// Start of the range (inclusive), Unix milliseconds.
    pub from_ms: i64,
    /// End of the range (exclusive), Unix milliseconds.
    pub to_ms: i64,
    /// Which models count toward the window.
    pub scope: ModelScope,
    /// The credential whose usage is counted.
    pub target: AccountTarget,
}

/// One `items[]` row of the window usage: a credential's usage inside one window
/// range.
#[derive(Debug, Clone, Serialize)]
pub struct WindowItem {
    /// The request's `request_key`.
    pub request_key: String,
    /// The request's `row_key`.
    pub row_key: String,
    /// The request's `window_key`; left out when empty.
    #[serde(skip_serializing_if = "is_empty_str")]
    pub window_key: String,
    /// The request's `provider_window_id`.
    pub provider_window_id: String,
    /// `current`, `previous` or `previous_equal_range`, as requested.
    pub period: &'static str,
    /// Start of the range, Unix milliseconds.
    pub from_ms: i64,
    /// End of the range (exclusive), Unix milliseconds.
    pub to_ms: i64,
    /// At least one request of the scope fell in the range.
    pub matched: bool,
    /// Calls in the range that the scope counts.
    pub total_requests: i64,
    /// Of those, calls that succeeded.
    pub success_calls: i64,
    /// Of those, calls that failed.
    pub failure_calls: i64,
    /// Total tokens of those calls.
    pub total_tokens: i64,
    /// `null` when a matching request's model has no price (unknown, never 0).
    pub total_cost: Option<f64>,
    /// `success_calls / total_requests`, 0–1; `null` without requests.
    pub success_rate: Option<f64>,
    /// Time of the newest counted call, Unix milliseconds; `null` without calls.
    pub last_seen_ms: Option<i64>,
    /// `ready` when calls were counted, else `empty`.
    pub sync_status: &'static str,
    /// `complete` (every call of the credential fits the scope), `partial` (some calls
    /// are of other models) or `unmatched` (the scope is incomplete, nothing counted).
    pub scope_match_status: &'static str,
    /// Calls of the credential in the range that the scope left out.
    pub unmatched_requests: i64,
}

/// The body of `POST /monitoring/account-window-usage`.
#[derive(Debug, Clone, Serialize)]
pub struct WindowUsage {
    /// The server clock when the answer was built, Unix milliseconds.
    pub generated_at_ms: i64,
    /// One row per requested window, in request order.
    pub items: Vec<WindowItem>,
    /// Models without a price behind a `null` total_cost (absent when none).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unpriced_models: Vec<String>,
}

/// Usage per window, matched on the account key and `[from_ms, to_ms)`.
/// Windows are validated.
///
/// # Errors
///
/// [`QueryError`] when a store read fails.
pub async fn account_window_usage<S: AnalyticsStore>(
    store: &S,
    now_ms: i64,
    windows: &[UsageWindow],
) -> Result<WindowUsage, QueryError> {
    let book = store.price_book().await?;
    // Windows of many rows share their ranges; each range is read once.
    let mut ranges: HashMap<(i64, i64), Vec<(String, GroupRow)>> = HashMap::new();
    let mut items = Vec::with_capacity(windows.len());
    let mut unpriced = std::collections::BTreeSet::new();
    for window in windows {
        let range = (window.from_ms, window.to_ms);
        if let std::collections::hash_map::Entry::Vacant(slot) = ranges.entry(range) {
            slot.insert(keyed_rows(store, window.from_ms, window.to_ms).await?);
        }
        let key = window.target.key();
        let mut totals = AccountTotals::default();
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
        unpriced.append(&mut totals.unpriced);
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
            matched: totals.calls() > 0,
            total_requests: totals.calls(),
            success_calls: totals.calls().saturating_sub(totals.failures()),
            failure_calls: totals.failures(),
            total_tokens: totals.tokens(),
            total_cost: totals.cost(),
            success_rate: success_rate(totals.calls(), totals.failures()),
            last_seen_ms: totals.last_seen(),
            sync_status: if totals.calls() > 0 { "ready" } else { "empty" },
            scope_match_status,
            unmatched_requests: unmatched,
        });
    }
    Ok(WindowUsage {
        generated_at_ms: now_ms,
        items,
        unpriced_models: unpriced.into_iter().collect(),
    })
}
