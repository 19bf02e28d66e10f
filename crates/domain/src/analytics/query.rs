//! What an analytics request asks for (scope and filters), the rows storage answers
//! with, and the storage port.

use std::future::Future;
use std::sync::Arc;

use super::cost::{PriceBook, context_band};
use super::heat::HeatParts;
use super::percentile::{PercentileAsk, Percentiles};
use super::time::{Granularity, Zone};
use super::{Metrics, analytics_model};
use crate::event::TokenCounts;
use crate::ports::StoreError;

/// Interned text from storage; `""` stands for "not set".
pub type Text = Arc<str>;

/// `cache_status` filter values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheStatus {
    /// `hit`: events that used the cache in any way (cached, cache-read or
    /// cache-creation tokens above zero).
    Hit,
    /// `miss`: events with no cache tokens at all.
    Miss,
    /// `read`: events that read input from the cache.
    Read,
    /// `creation`: events that wrote input to the cache.
    Creation,
}

impl CacheStatus {
    /// Trimmed, case-insensitive; any other value means "no cache filter".
    pub fn parse(text: &str) -> Option<CacheStatus> {
        match text.trim().to_ascii_lowercase().as_str() {
            "hit" => Some(CacheStatus::Hit),
            "miss" => Some(CacheStatus::Miss),
            "read" => Some(CacheStatus::Read),
            "creation" => Some(CacheStatus::Creation),
            _ => None,
        }
    }
}

/// The filters of a monitoring request. Lists are trimmed, deduplicated and free of
/// empty values (see [`Filters::normalize_list`]); an empty list means no filter.
/// Each field is the same-named key of the request's `filters` object; a list matches
/// an event when any of its values does, and all set filters must match.
#[derive(Debug, Clone, PartialEq)]
pub struct Filters {
    /// Analytics models (already suffix-normalized).
    pub models: Vec<String>,
    /// Providers, lowercased; an event matches by its provider or its auth-file
    /// provider, case-insensitively.
    pub providers: Vec<String>,
    /// Accounts, lowercased; an event matches by its account, label, source or auth
    /// index, case-insensitively.
    pub accounts: Vec<String>,
    /// Credential ids as [`Identity::credential_id`] forms them (auth file, else auth
    /// index, source hash, source, else `-`); exact match.
    pub credential_ids: Vec<String>,
    /// CPA auth file names (the event's auth-file snapshot); exact match.
    pub auth_files: Vec<String>,
    /// CPA auth indexes; exact match.
    pub auth_indices: Vec<String>,
    /// Hex SHA-256 hashes of client API keys; exact match.
    pub api_key_hashes: Vec<String>,
    /// Hex SHA-256 hashes of the unmasked credential source; exact match.
    pub source_hashes: Vec<String>,
    /// Credential project ids (Gemini); exact match.
    pub project_ids: Vec<String>,
    /// CPA executor types (`CodexExecutor`, …); exact match.
    pub request_types: Vec<String>,
    /// Upstream error kinds from the response headers; exact match.
    pub header_error_kinds: Vec<String>,
    /// Upstream error codes from the response headers; exact match.
    pub header_error_codes: Vec<String>,
    /// Account plans from the response headers (`plus`, `pro`, …); exact match.
    pub header_quota_plans: Vec<String>,
    /// Upstream trace ids from the response headers; exact match.
    pub header_trace_ids: Vec<String>,
    /// Failed events count (default `true`); `false` keeps successes only.
    pub include_failed: bool,
    /// Only failed events count (default `false`).
    pub failed_only: bool,
    /// Only events with a latency of at least this many milliseconds; 0 (the default)
    /// is no filter, and events without a latency never match a positive value.
    pub min_latency_ms: i64,
    /// Cache usage filter; `None` (absent or unknown text) is no filter.
    pub cache_status: Option<CacheStatus>,
}

impl Default for Filters {
    fn default() -> Filters {
        Filters {
            models: Vec::new(),
            providers: Vec::new(),
            accounts: Vec::new(),
            credential_ids: Vec::new(),
            auth_files: Vec::new(),
            auth_indices: Vec::new(),
            api_key_hashes: Vec::new(),
            source_hashes: Vec::new(),
            project_ids: Vec::new(),
            request_types: Vec::new(),
            header_error_kinds: Vec::new(),
            header_error_codes: Vec::new(),
            header_quota_plans: Vec::new(),
            header_trace_ids: Vec::new(),
            include_failed: true,
            failed_only: false,
            min_latency_ms: 0,
            cache_status: None,
        }
    }
}

impl Filters {
    /// Trims, drops empties and duplicates (keeping first-seen order).
    pub fn normalize_list(
        values: impl IntoIterator<Item = String>,
        map: impl Fn(&str) -> String,
    ) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for value in values {
            let value = map(value.trim());
            if !value.is_empty() && !out.contains(&value) {
                out.push(value);
            }
        }
        out
    }

    /// Filters that only rollups keyed by identity can serve are set.
    fn has_identity_filters(&self) -> bool {
        !(self.providers.is_empty()
            && self.accounts.is_empty()
            && self.credential_ids.is_empty()
            && self.auth_files.is_empty()
            && self.auth_indices.is_empty()
            && self.api_key_hashes.is_empty()
            && self.source_hashes.is_empty()
            && self.project_ids.is_empty()
            && self.request_types.is_empty())
    }

    /// Filters that need every event looked at are set.
    fn has_raw_filters(&self) -> bool {
        !(self.header_error_kinds.is_empty()
            && self.header_error_codes.is_empty()
            && self.header_quota_plans.is_empty()
            && self.header_trace_ids.is_empty())
            || self.min_latency_ms > 0
            || self.cache_status.is_some()
    }

    /// Whether an event with this failed flag passes `include_failed` and `failed_only`.
    pub fn matches_failed(&self, failed: bool) -> bool {
        (self.include_failed || !failed) && (!self.failed_only || failed)
    }

    /// Whether an event of this analytics model passes the `models` filter.
    pub fn matches_model(&self, model: &str) -> bool {
        self.models.is_empty() || self.models.iter().any(|wanted| wanted == model)
    }

    /// Whether an identity passes every identity filter. Providers match the event's
    /// provider or its auth-file provider; accounts match the account, label, source
    /// or auth index, case-insensitively.
    pub fn matches_identity(&self, identity: &Identity) -> bool {
        fn any_eq(values: &[String], value: &str) -> bool {
            values.is_empty() || values.iter().any(|wanted| wanted == value)
        }
        fn any_lower(values: &[String], candidates: &[&str]) -> bool {
            values.is_empty()
                || candidates.iter().any(|candidate| {
                    !candidate.is_empty()
                        && values
                            .iter()
                            .any(|wanted| wanted.eq_ignore_ascii_case(candidate))
                })
        }
        any_lower(
            &self.providers,
            &[&identity.provider, &identity.auth_provider],
        ) && any_lower(
            &self.accounts,
            &[
                &identity.account,
                &identity.auth_label,
                &identity.source,
                &identity.auth_index,
            ],
        ) && any_eq(&self.credential_ids, identity.credential_id())
            && any_eq(&self.auth_files, &identity.auth_file)
            && any_eq(&self.auth_indices, &identity.auth_index)
            && any_eq(&self.api_key_hashes, &identity.api_key_hash)
            && any_eq(&self.source_hashes, &identity.source_hash)
            && any_eq(&self.project_ids, &identity.auth_project)
            && any_eq(&self.request_types, &identity.executor_type)
    }

    /// Checks the per-event filters (headers, latency, cache status).
    fn matches_event_details(&self, event: &RawEvent) -> bool {
        fn any_eq(values: &[String], value: &str) -> bool {
            values.is_empty() || values.iter().any(|wanted| wanted == value)
        }
        if self.min_latency_ms > 0
            && event
                .latency_ms
                .is_none_or(|latency| latency < self.min_latency_ms)
        {
            return false;
        }
        let tokens = &event.tokens;
        let cache_ok = match self.cache_status {
            None => true,
            Some(CacheStatus::Hit) => {
                tokens.cached > 0
                    || tokens.cache > 0
                    || tokens.cache_read > 0
                    || tokens.cache_creation > 0
            }
            Some(CacheStatus::Miss) => {
                !(tokens.cached > 0
                    || tokens.cache > 0
                    || tokens.cache_read > 0
                    || tokens.cache_creation > 0)
            }
            Some(CacheStatus::Read) => tokens.cache_read > 0,
            Some(CacheStatus::Creation) => tokens.cache_creation > 0,
        };
        cache_ok
            && any_eq(&self.header_error_kinds, &event.header_error_kind)
            && any_eq(&self.header_error_codes, &event.header_error_code)
            && any_eq(&self.header_quota_plans, &event.header_quota_plan_type)
            && any_eq(
                &self.header_trace_ids,
                event.header_trace_id.as_deref().unwrap_or(""),
            )
    }
}

/// Time range `[from_ms, to_ms)`, filters and search: the set of events a section covers.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Scope {
    /// Start of the range (inclusive), Unix milliseconds.
    pub from_ms: i64,
    /// End of the range (exclusive), Unix milliseconds.
    pub to_ms: i64,
    /// The request's `filters`.
    pub filters: Filters,
    /// Trimmed and lowercased; empty = no search.
    pub search_query: String,
    /// Trimmed and lowercased; empty = none.
    pub search_api_key_hash: String,
}

/// Which pre-aggregated level can answer a scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Rollups keyed by (model band, failed): time, model and status filters only.
    Aggregate,
    /// Rollups keyed by identity and model band: every identity filter too.
    Identity,
    /// Raw events: search, header, latency and cache filters.
    Raw,
}

impl Scope {
    /// Every event in `[from_ms, to_ms)`, with no filter or search.
    pub fn time_only(from_ms: i64, to_ms: i64) -> Scope {
        Scope {
            from_ms,
            to_ms,
            ..Scope::default()
        }
    }

    /// The cheapest level that can answer this scope exactly.
    pub fn level(&self) -> Level {
        if !self.search_query.is_empty() || self.filters.has_raw_filters() {
            Level::Raw
        } else if self.filters.has_identity_filters() || !self.search_api_key_hash.is_empty() {
            Level::Identity
        } else {
            Level::Aggregate
        }
    }

    /// The same scope with every dimension, status, latency and cache filter cleared.
    pub fn base(&self) -> Scope {
        Scope {
            from_ms: self.from_ms,
            to_ms: self.to_ms,
            filters: Filters::default(),
            search_query: self.search_query.clone(),
            search_api_key_hash: self.search_api_key_hash.clone(),
        }
    }

    /// The same filters and search over another range (a comparison period, a
    /// drill-down).
    pub fn with_range(&self, from_ms: i64, to_ms: i64) -> Scope {
        Scope {
            from_ms,
            to_ms,
            ..self.clone()
        }
    }

    /// Whether a group of this analytics model and failed flag passes the model and
    /// status filters (what aggregate rollups can check).
    pub fn matches_group(&self, model: &str, failed: bool) -> bool {
        self.filters.matches_failed(failed) && self.filters.matches_model(model)
    }

    /// The identity part of the scope (identity filters and the API-key search
    /// when it is an AND condition).
    pub fn matches_identity(&self, identity: &Identity) -> bool {
        if !self.search_api_key_hash.is_empty()
            && self.search_query.is_empty()
            && !identity
                .api_key_hash
                .eq_ignore_ascii_case(&self.search_api_key_hash)
        {
            return false;
        }
        self.filters.matches_identity(identity)
    }

    /// Every condition of the scope, for one raw event.
    pub fn matches_event(&self, event: &RawEvent) -> bool {
        event.timestamp_ms >= self.from_ms
            && event.timestamp_ms < self.to_ms
            && self.matches_group(&event.analytics_model, event.failed)
            && self.matches_identity(&event.identity)
            && self.filters.matches_event_details(event)
            && self.matches_search(event)
    }

    fn matches_search(&self, event: &RawEvent) -> bool {
        if self.search_query.is_empty() {
            return true;
        }
        let needle = self.search_query.as_str();
        let identity = &event.identity;
        let hash_hit = !self.search_api_key_hash.is_empty()
            && identity
                .api_key_hash
                .eq_ignore_ascii_case(&self.search_api_key_hash);
        if hash_hit {
            return true;
        }
        // A plain case-insensitive substring test. Unlike the Go server, `%` and `_`
        // typed by the user are literal characters, not wildcards.
        let fields: [&str; 29] = [
            event.request_id.as_deref().unwrap_or(""),
            &event.event_hash,
            &event.model,
            &event.requested_model,
            &event.analytics_model,
            &event.resolved_model,
            &event.endpoint,
            &event.method,
            &event.path,
            &event.client_ip,
            &event.x_forwarded_for,
            &event.user_agent,
            &identity.source,
            &identity.source_hash,
            &identity.api_key_hash,
            &identity.auth_index,
            &identity.account,
            &identity.auth_label,
            &identity.auth_file,
            &identity.auth_provider,
            &identity.auth_project,
            &event.reasoning_effort,
            &event.service_tier,
            &identity.executor_type,
            event.fail_summary.as_deref().unwrap_or(""),
            &event.header_quota_plan_type,
            &event.header_error_kind,
            &event.header_error_code,
            event.header_trace_id.as_deref().unwrap_or(""),
        ];
        fields.iter().any(|field| contains_lowercase(field, needle))
    }
}

/// Whether a searched text matches a search query (trimmed and lowercased, as in
/// [`Scope::search_query`]): a case-insensitive substring test, exactly the one
/// [`Scope::matches_event`] applies to each searched field.
pub fn search_matches(haystack: &str, needle: &str) -> bool {
    contains_lowercase(haystack, needle)
}

/// `haystack.to_lowercase().contains(needle)` without allocating for ASCII text.
fn contains_lowercase(haystack: &str, needle: &str) -> bool {
    if needle.len() > haystack.len() {
        return false;
    }
    if haystack.is_ascii() && needle.is_ascii() {
        let hay = haystack.as_bytes();
        let pin = needle.as_bytes();
        return hay
            .windows(pin.len())
            .any(|window| window.eq_ignore_ascii_case(pin));
    }
    haystack.to_lowercase().contains(needle)
}

/// Who made a call and through which credential: every identity dimension of an
/// event. `""` means "not set".
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Identity {
    /// The upstream provider the event names (`codex`, `claude`, …).
    pub provider: Text,
    /// CPA's executor that made the attempt (`CodexExecutor`, …).
    pub executor_type: Text,
    /// CPA's index of the credential used.
    pub auth_index: Text,
    /// Masked credential identity (never the raw key or full e-mail).
    pub source: Text,
    /// Hex SHA-256 of the unmasked source.
    pub source_hash: Text,
    /// Hex SHA-256 of the client's API key.
    pub api_key_hash: Text,
    /// The credential's account (usually an e-mail) when the event was stored.
    pub account: Text,
    /// The credential's label in CPA when the event was stored.
    pub auth_label: Text,
    /// The credential's auth file name when the event was stored.
    pub auth_file: Text,
    /// The credential's provider per CPA's auth-file listing.
    pub auth_provider: Text,
    /// The credential's project id (Gemini).
    pub auth_project: Text,
}

impl Identity {
    /// The first non-empty of auth file, auth index, source hash, source, else `-`.
    pub fn credential_id(&self) -> &str {
        [
            &self.auth_file,
            &self.auth_index,
            &self.source_hash,
            &self.source,
        ]
        .into_iter()
        .find(|value| !value.is_empty())
        .map(|value| &**value)
        .unwrap_or("-")
    }

    /// Snapshot provider, else the event provider.
    pub fn effective_provider(&self) -> &str {
        if self.auth_provider.is_empty() {
            &self.provider
        } else {
            &self.auth_provider
        }
    }
}

/// A group of events with one key, as stored in a rollup (or one raw event).
#[derive(Debug, Clone)]
pub struct GroupRow {
    /// Start of the stored block (a UTC quarter hour, hour or day) or the event
    /// time for raw rows. Only meaningful when a timeline was requested.
    pub bucket_ms: i64,
    /// Set when the request asked for identities.
    pub identity: Option<Arc<Identity>>,
    /// Analytics model (the requested model without its reasoning suffix).
    pub model: Text,
    /// The model the cost is priced as: the resolved model, else the analytics model.
    pub billing_model: Text,
    /// Effective service tier (`priority`, `flex`, …); `""` for the default tier.
    pub service_tier: Text,
    /// Input-size band of the group's events (see [`context_band`]), which picks the
    /// price tier.
    pub context_band: u8,
    /// Whether the group's events failed.
    pub failed: bool,
    /// Token sums and counts of the group.
    pub metrics: Metrics,
    /// Time of the group's newest event, Unix milliseconds.
    pub last_seen_ms: i64,
}

impl GroupRow {
    /// The one-event group of a raw event; with `identity` false the identity is left
    /// out, as for aggregate rollups.
    pub fn from_event(event: &RawEvent, identity: bool) -> GroupRow {
        GroupRow {
            bucket_ms: event.timestamp_ms,
            identity: identity.then(|| event.identity.clone()),
            model: event.analytics_model.clone(),
            billing_model: if event.resolved_model.is_empty() {
                event.analytics_model.clone()
            } else {
                event.resolved_model.clone()
            },
            service_tier: event.service_tier.clone(),
            context_band: context_band(event.normalized_input()),
            failed: event.failed,
            metrics: event.metrics(),
            last_seen_ms: event.timestamp_ms,
        }
    }
}

/// One stored event with every dimension resolved to text.
/// Fields mean what they mean on [`UsageEvent`](crate::UsageEvent); `""` and `None`
/// mean "not recorded". Times are Unix milliseconds (UTC).
#[derive(Debug, Clone, Default)]
pub struct RawEvent {
    /// Store row id; with the timestamp it orders event pages.
    pub id: i64,
    /// Lowercase hex.
    pub event_hash: String,
    /// CPA's request id; several attempts of one request share it.
    pub request_id: Option<String>,
    /// Request start.
    pub timestamp_ms: i64,
    /// Request start as stored RFC 3339 UTC text.
    pub timestamp: String,
    /// Display model (requested, else resolved model).
    pub model: Text,
    /// The model the client asked for, reasoning suffix included.
    pub requested_model: Text,
    /// The model CPA sent upstream.
    pub resolved_model: Text,
    /// The requested model without its reasoning suffix, as analytics groups by it.
    pub analytics_model: Text,
    /// CPA's endpoint, `METHOD /path`.
    pub endpoint: Text,
    /// The client's HTTP method.
    pub method: Text,
    /// The client's request path.
    pub path: Text,
    /// The client's address as CPA saw it.
    pub client_ip: Text,
    /// The client's `X-Forwarded-For`, sanitised.
    pub x_forwarded_for: Text,
    /// The client's `User-Agent`, sanitised.
    pub user_agent: Text,
    /// How the credential authenticates upstream (`oauth`, `apikey`).
    pub auth_type: Text,
    /// Who made the call and through which credential.
    pub identity: Arc<Identity>,
    /// When the auth-file listing the snapshots come from was taken.
    pub auth_snapshot_at_ms: Option<i64>,
    /// The reasoning effort the client asked for.
    pub reasoning_effort: Text,
    /// Effective service tier.
    pub service_tier: Text,
    /// The service tier the client asked for.
    pub request_service_tier: Text,
    /// The service tier the upstream reported.
    pub response_service_tier: Text,
    /// `included_in_input` or `separate_from_input`; `None` when not recorded.
    pub cache_input_mode: Option<&'static str>,
    /// Token counters as reported.
    pub tokens: TokenCounts,
    /// All input, cache buckets included; `None` for events stored without it.
    pub normalized_total_input: Option<i64>,
    /// Time to the complete answer, ms.
    pub latency_ms: Option<i64>,
    /// Time to the first token, ms (streaming only).
    pub ttft_ms: Option<i64>,
    /// The attempt failed.
    pub failed: bool,
    /// Upstream HTTP status of a failed attempt.
    pub fail_status_code: Option<i64>,
    /// Redacted, size-capped failure text.
    pub fail_summary: Option<String>,
    /// Facts parsed from the upstream's response headers, as JSON.
    pub response_metadata_json: Option<String>,
    /// When an exhausted quota resets, from the response headers.
    pub header_quota_recover_at_ms: Option<i64>,
    /// Quota used, percent (0–100), from the response headers.
    pub header_quota_used_percent: Option<f64>,
    /// The account's plan from the response headers.
    pub header_quota_plan_type: Text,
    /// The upstream's error kind header.
    pub header_error_kind: Text,
    /// The upstream's error code header.
    pub header_error_code: Text,
    /// The upstream's request or trace id.
    pub header_trace_id: Option<String>,
    /// When the event was stored.
    pub created_at_ms: i64,
}

impl RawEvent {
    /// I: normalized total input, else raw input.
    pub fn normalized_input(&self) -> i64 {
        self.normalized_total_input.unwrap_or(self.tokens.input)
    }

    /// C: cached beyond the explicit read/creation buckets, never negative.
    pub fn compat_cached(&self) -> i64 {
        let tokens = &self.tokens;
        (tokens.cached.max(tokens.cache) - tokens.cache_read.max(0) - tokens.cache_creation.max(0))
            .max(0)
    }

    /// The effective requested model (requested, else display model).
    pub fn effective_requested(&self) -> &str {
        if self.requested_model.is_empty() {
            &self.model
        } else {
            &self.requested_model
        }
    }

    /// The event's contribution to group sums (one call).
    pub fn metrics(&self) -> Metrics {
        metrics_of(
            self.failed,
            self.normalized_input(),
            &self.tokens,
            self.compat_cached(),
            self.latency_ms,
        )
    }
}

/// The metrics of one event.
pub fn metrics_of(
    failed: bool,
    input: i64,
    tokens: &TokenCounts,
    cached: i64,
    latency_ms: Option<i64>,
) -> Metrics {
    let latency = latency_ms.filter(|latency| *latency > 0);
    Metrics {
        calls: 1,
        failures: i64::from(failed),
        input,
        output: tokens.output,
        reasoning: tokens.reasoning,
        cached,
        cache_read: tokens.cache_read,
        cache_creation: tokens.cache_creation,
        total: tokens.total,
        latency_sum: latency.unwrap_or(0),
        latency_samples: i64::from(latency.is_some()),
        zero_token_calls: i64::from(tokens.total == 0 && !failed),
    }
}

/// The analytics model of a raw model pair, as storage precomputes it.
pub fn analytics_of(model: &str, requested: &str) -> String {
    analytics_model(if requested.is_empty() {
        model
    } else {
        requested
    })
    .to_string()
}

/// How fine the group rows must be.
#[derive(Debug, Clone)]
pub struct GroupRequest {
    /// The events to cover.
    pub scope: Scope,
    /// Whether rows must carry their identity.
    pub identity: bool,
    /// When set, every row's block must fall into one local bucket of this zone and
    /// granularity, so rows can be mapped to timeline buckets.
    pub timeline: Option<(Zone, Granularity)>,
}

/// Where a page of events starts (exclusive keyset cursor).
/// Both parts come from the request's `events_page`; 0 (or less) means "from the
/// newest event".
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cursor {
    /// Only events strictly older than this time (Unix milliseconds), or at this time
    /// with a smaller id.
    pub before_ms: i64,
    /// Id of the last event of the previous page; 0 compares by time only.
    pub before_id: i64,
}

impl Cursor {
    /// Whether an event at (ts, id) comes after the cursor in newest-first order.
    pub fn admits(&self, timestamp_ms: i64, id: i64) -> bool {
        if self.before_ms <= 0 {
            true
        } else if self.before_id <= 0 {
            timestamp_ms < self.before_ms
        } else {
            timestamp_ms < self.before_ms || (timestamp_ms == self.before_ms && id < self.before_id)
        }
    }
}

/// Events of a scope, newest first by (timestamp_ms, id).
#[derive(Debug, Clone, Default)]
pub struct EventPage {
    /// The page, newest first.
    pub items: Vec<RawEvent>,
    /// More events match after the last item.
    pub has_more: bool,
}

/// Per-5-minute call and token counts, for the dashboard health strip.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FineBlock {
    /// Start of the UTC 5-minute block, or the event time for a raw event at the range
    /// edges, Unix milliseconds.
    pub bucket_ms: i64,
    /// Whether the counted calls failed (a block has one row per status).
    pub failed: bool,
    /// Calls in the block.
    pub calls: i64,
    /// Total tokens in the block.
    pub tokens: i64,
}

/// Distinct, non-empty header values of a scope, each list sorted ascending.
/// They feed the header filter options of `filter_options`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeaderValues {
    /// Upstream error kinds.
    pub error_kinds: Vec<String>,
    /// Upstream error codes.
    pub error_codes: Vec<String>,
    /// Account plans.
    pub quota_plans: Vec<String>,
    /// Upstream trace ids.
    pub trace_ids: Vec<String>,
}

/// Read side of the event store for analytics. Every method is a read; none blocks
/// the writer (WAL readers).
pub trait AnalyticsStore: Clone + Send + Sync + 'static {
    /// Group rows covering exactly the events of `request.scope`.
    fn groups(
        &self,
        request: GroupRequest,
    ) -> impl Future<Output = Result<Vec<GroupRow>, StoreError>> + Send;

    /// The heatmap's sums of `scope` in `zone` (see [`HeatParts`]): the rows of
    /// [`Self::groups`] with identities and a `(zone, Hour)` timeline, summed per
    /// local weekday hour and heat key across dates.
    fn heat_parts(
        &self,
        scope: Scope,
        zone: Zone,
    ) -> impl Future<Output = Result<HeatParts, StoreError>> + Send;

    /// Every distinct (identity, analytics model) pair of the events of `scope`,
    /// without sums: what filter selectors are made of.
    fn identity_models(
        &self,
        scope: Scope,
    ) -> impl Future<Output = Result<Vec<(Arc<Identity>, Text)>, StoreError>> + Send;

    /// Exact nearest-rank latency and TTFT percentiles of the events of
    /// `request.scope` (identity is ignored), over the scope and per bucket of
    /// `request.timeline` (see [`super::percentile`]).
    fn percentiles(
        &self,
        request: GroupRequest,
        ask: PercentileAsk,
    ) -> impl Future<Output = Result<Percentiles, StoreError>> + Send;

    /// One page of events, newest first, strictly after `cursor`; at most `limit`
    /// items, `has_more` when at least one more matched.
    fn events_page(
        &self,
        scope: Scope,
        cursor: Cursor,
        limit: usize,
    ) -> impl Future<Output = Result<EventPage, StoreError>> + Send;

    /// Every event of the scope (for sections that need each event, like task
    /// buckets), newest first, stopping after `cap` events.
    fn raw_events(
        &self,
        scope: Scope,
        cap: usize,
    ) -> impl Future<Output = Result<Vec<RawEvent>, StoreError>> + Send;

    /// One point per event in `[from_ms, to_ms)` (any bounds): its own instant as
    /// `bucket_ms`, one call, its status and total tokens. For the parts of a range no
    /// whole 5-minute block covers, without reading whole events.
    fn event_points(
        &self,
        from_ms: i64,
        to_ms: i64,
    ) -> impl Future<Output = Result<Vec<FineBlock>, StoreError>> + Send;

    /// Calls and tokens per UTC 5-minute block and status in `[from_ms, to_ms)`;
    /// both bounds must be multiples of 5 minutes.
    fn fine_blocks(
        &self,
        from_ms: i64,
        to_ms: i64,
    ) -> impl Future<Output = Result<Vec<FineBlock>, StoreError>> + Send;

    /// The stored 5-minute block starting at `block_ms` (a multiple of 5 minutes),
    /// as [`Self::fine_blocks`] gives it, when no event at or after `to_ms` falls in
    /// it, so that it holds exactly the events of `[block_ms, to_ms)`; `None` when one
    /// does. Probe and read see one snapshot. A range that ends after its newest
    /// event (every "until now") thus reads its last partial block whole, however
    /// busy its last minutes.
    fn fine_tail(
        &self,
        block_ms: i64,
        to_ms: i64,
    ) -> impl Future<Output = Result<Option<Vec<FineBlock>>, StoreError>> + Send;

    /// The current prices.
    fn price_book(&self) -> impl Future<Output = Result<PriceBook, StoreError>> + Send;

    /// The newest event carrying header metadata (metadata JSON, quota recover
    /// time or used percent, plan type, error kind or code, trace id) of each
    /// credential, keyed by `accounts::snapshot_key`, whose time is in
    /// `[from_ms, to_ms)`: newest first, at most `limit` credentials. Kept current
    /// at ingest, so the cost does not depend on how many events the range holds.
    /// A credential whose newest header event is dated at or after `to_ms` is left
    /// out (it reappears once that time has passed).
    fn latest_header_events(
        &self,
        from_ms: i64,
        to_ms: i64,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<RawEvent>, StoreError>> + Send;

    /// The distinct header values of the events of `scope`.
    fn header_values(
        &self,
        scope: Scope,
    ) -> impl Future<Output = Result<HeaderValues, StoreError>> + Send;

    /// The highest stored event id (0 when there is none).
    fn latest_event_id(&self) -> impl Future<Output = Result<i64, StoreError>> + Send;

    /// The newest `limit` events (for the CPA-compatible usage payload), newest first.
    fn newest_events(
        &self,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<RawEvent>, StoreError>> + Send;
}
