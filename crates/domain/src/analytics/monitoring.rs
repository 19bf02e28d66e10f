//! `POST /monitoring/analytics`: the include matrix and every section it can ask for.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use serde::Serialize;

use super::cost::{PriceBook, add_cost};
use super::query::{
    AnalyticsStore, Cursor, GroupRequest, GroupRow, Identity, RawEvent, SampleBlock, Scope, Text,
};
use super::report::{
    QueryError, RecentFailure, recent_failure_item, response_metadata, row_cost_pub as row_cost,
};
use super::time::{DAY_MS, Granularity, HOUR_MS, MINUTE_MS, Zone};
use super::{Metrics, nearest_rank, nearest_rank_in, ratio};

fn is_empty_str(value: &str) -> bool {
    value.is_empty()
}

/// Which sections to compute.
#[derive(Debug, Clone, Default)]
pub struct Include {
    pub summary: bool,
    pub compact: bool,
    pub percentiles: bool,
    pub summary_comparison: bool,
    pub timeline: bool,
    pub anomaly_points: bool,
    pub hourly_distribution: bool,
    pub heatmap: bool,
    pub model_share: bool,
    pub model_stats: bool,
    pub channel_share: bool,
    pub failure_sources: bool,
    pub account_stats: bool,
    pub credential_stats: bool,
    pub credential_timeline: bool,
    pub api_key_timeline: bool,
    pub api_key_stats: bool,
    pub filter_options: bool,
    pub filter_selectors: bool,
    pub task_buckets: bool,
    pub recent_failures: usize,
    pub events_page: Option<PageRequest>,
    pub drilldown_preview: Option<(i64, i64, usize)>,
}

#[derive(Debug, Clone, Copy)]
pub struct PageRequest {
    pub limit: usize,
    pub cursor: Cursor,
}

/// A validated monitoring request.
#[derive(Debug, Clone)]
pub struct MonitoringRequest {
    pub scope: Scope,
    pub now_ms: i64,
    pub zone: Zone,
    pub granularity: Granularity,
    pub include: Include,
    pub generated_at_ms: i64,
}

#[derive(Debug, Serialize, Default)]
pub struct MonitoringResponse {
    pub generated_at_ms: i64,
    pub granularity: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub summary: Option<Summary>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub summary_comparison: Option<Comparison>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub timeline: Vec<TimelinePoint>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub hourly_distribution: Vec<HourPoint>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub heatmap: Vec<HeatCell>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub anomaly_points: Vec<Anomaly>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub model_share: Vec<ModelShare>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub model_stats: Vec<ModelStat>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub channel_share: Vec<ChannelShare>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub failure_sources: Vec<FailureSource>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub account_stats: Vec<GroupStat>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub credential_stats: Vec<GroupStat>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub credential_timeline: Vec<GroupTimelinePoint>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub api_key_timeline: Vec<GroupTimelinePoint>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub api_key_stats: Vec<GroupStat>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub filter_options: Option<FilterOptions>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub task_buckets: Vec<TaskBucket>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub recent_failures: Vec<RecentFailure>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub events: Option<EventsSection>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drilldown_preview: Option<EventsSection>,
}

#[derive(Debug, Serialize)]
pub struct Summary {
    pub total_calls: i64,
    pub success_calls: i64,
    pub failure_calls: i64,
    pub success_rate: f64,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cached_tokens: i64,
    pub cache_read_tokens: i64,
    pub cache_creation_tokens: i64,
    pub cache_hit_rate: f64,
    pub reasoning_tokens: i64,
    pub total_tokens: i64,
    pub total_cost: Option<f64>,
    pub average_cost_per_call: Option<f64>,
    pub average_latency_ms: Option<f64>,
    pub p95_latency_ms: Option<i64>,
    pub p95_ttft_ms: Option<i64>,
    pub p50_latency_ms: Option<i64>,
    pub p99_latency_ms: Option<i64>,
    pub zero_token_calls: i64,
    pub rpm_30m: f64,
    pub tpm_30m: f64,
    pub avg_daily_requests: f64,
    pub avg_daily_tokens: f64,
    pub approx_tasks: i64,
    pub approx_task_failures: i64,
    pub approx_task_success_rate: f64,
    pub zero_token_models: Option<Vec<String>>,
}

#[derive(Debug, Serialize)]
pub struct Comparison {
    pub from_ms: i64,
    pub to_ms: i64,
    pub total_calls: i64,
    pub success_calls: i64,
    pub failure_calls: i64,
    pub success_rate: f64,
    pub total_tokens: i64,
    pub total_cost: Option<f64>,
}

#[derive(Debug, Serialize, Clone)]
pub struct TimelinePoint {
    pub bucket_ms: i64,
    pub label: String,
    pub calls: i64,
    pub tokens: i64,
    pub success: i64,
    pub failure: i64,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cached_tokens: i64,
    pub cache_read_tokens: i64,
    pub cache_creation_tokens: i64,
    pub cache_hit_rate: f64,
    pub reasoning_tokens: i64,
    pub total_tokens: i64,
    pub cost: Option<f64>,
    pub average_latency_ms: Option<f64>,
    pub p95_latency_ms: Option<i64>,
    pub p95_ttft_ms: Option<i64>,
    pub success_rate: f64,
    pub failure_rate: f64,
}

#[derive(Debug, Serialize)]
pub struct HourPoint {
    pub hour: i64,
    pub calls: i64,
    pub tokens: i64,
}

#[derive(Debug, Serialize)]
pub struct HeatCell {
    pub weekday: i64,
    pub hour: i64,
    pub calls: i64,
    pub success: i64,
    pub failure: i64,
    pub tokens: i64,
    pub cost: Option<f64>,
    pub failure_rate: f64,
    pub model_contributors: Vec<Contributor>,
    pub api_key_contributors: Vec<Contributor>,
    pub provider_contributors: Vec<Contributor>,
}

#[derive(Debug, Serialize)]
pub struct Contributor {
    pub key: String,
    pub calls: i64,
    pub success: i64,
    pub failure: i64,
    pub tokens: i64,
    pub cost: Option<f64>,
    pub failure_rate: f64,
    pub share: f64,
}

#[derive(Debug, Serialize)]
pub struct Anomaly {
    pub bucket_ms: i64,
    pub bucket_end_ms: i64,
    pub label: String,
    pub severity: &'static str,
    pub metric_keys: Vec<&'static str>,
    pub calls: i64,
    pub total_tokens: i64,
    pub cost: Option<f64>,
    pub failure_rate: f64,
    pub request_change: f64,
    pub cost_change: f64,
    pub tokens_per_request_change: f64,
    pub cache_hit_rate_change: f64,
    pub failure_rate_change: f64,
    pub latency_p95_change: f64,
}

#[derive(Debug, Serialize)]
pub struct ModelShare {
    pub model: String,
    pub calls: i64,
    pub tokens: i64,
    pub cost: Option<f64>,
}

#[derive(Debug, Serialize, Clone)]
pub struct ModelStat {
    pub model: String,
    pub calls: i64,
    pub success_calls: i64,
    pub failure_calls: i64,
    pub success_rate: f64,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cached_tokens: i64,
    pub cache_read_tokens: i64,
    pub cache_creation_tokens: i64,
    pub cache_hit_tokens: i64,
    pub cache_hit_input_tokens: i64,
    pub cache_hit_rate: f64,
    pub total_tokens: i64,
    pub cost: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_seen_ms: Option<i64>,
}

#[derive(Debug, Serialize, Clone)]
pub struct ChannelShare {
    pub auth_index: String,
    #[serde(skip_serializing_if = "is_empty_str")]
    pub source: String,
    #[serde(skip_serializing_if = "is_empty_str")]
    pub account_snapshot: String,
    #[serde(skip_serializing_if = "is_empty_str")]
    pub auth_label_snapshot: String,
    #[serde(skip_serializing_if = "is_empty_str")]
    pub auth_provider_snapshot: String,
    pub calls: i64,
    pub success: i64,
    pub failure: i64,
    pub tokens: i64,
    pub cost: Option<f64>,
    pub average_latency_ms: Option<f64>,
}

#[derive(Debug, Serialize)]
pub struct FailureSource {
    #[serde(skip_serializing_if = "is_empty_str")]
    pub source: String,
    pub source_hash: String,
    pub auth_index: String,
    #[serde(skip_serializing_if = "is_empty_str")]
    pub account_snapshot: String,
    #[serde(skip_serializing_if = "is_empty_str")]
    pub auth_label_snapshot: String,
    #[serde(skip_serializing_if = "is_empty_str")]
    pub auth_provider_snapshot: String,
    pub calls: i64,
    pub failure: i64,
    pub last_seen_ms: i64,
    pub average_latency_ms: Option<f64>,
}

/// An account, credential or API-key row (the optional keys differ per kind and
/// are left out when empty).
#[derive(Debug, Serialize, Clone, Default)]
pub struct GroupStat {
    pub id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_key_hash: Option<String>,
    #[serde(skip_serializing_if = "is_empty_str")]
    pub auth_file_snapshot: String,
    #[serde(skip_serializing_if = "is_empty_str")]
    pub auth_index: String,
    #[serde(skip_serializing_if = "is_empty_str")]
    pub source: String,
    #[serde(skip_serializing_if = "is_empty_str")]
    pub source_hash: String,
    #[serde(skip_serializing_if = "is_empty_str")]
    pub account_snapshot: String,
    #[serde(skip_serializing_if = "is_empty_str")]
    pub auth_label_snapshot: String,
    #[serde(skip_serializing_if = "is_empty_str")]
    pub auth_provider_snapshot: String,
    #[serde(skip_serializing_if = "is_empty_str")]
    pub auth_project_id_snapshot: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth_indices: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sources: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_hashes: Option<Vec<String>>,
    pub calls: i64,
    pub success_calls: i64,
    pub failure_calls: i64,
    pub success_rate: f64,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cached_tokens: i64,
    pub cache_read_tokens: i64,
    pub cache_creation_tokens: i64,
    pub total_tokens: i64,
    pub cost: Option<f64>,
    pub average_latency_ms: Option<f64>,
    pub last_seen_ms: i64,
    pub models: Vec<ModelStat>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub contexts: Option<Vec<ApiKeyContext>>,
}

#[derive(Debug, Serialize, Clone)]
pub struct ApiKeyContext {
    pub id: String,
    #[serde(skip_serializing_if = "is_empty_str")]
    pub account_snapshot: String,
    #[serde(skip_serializing_if = "is_empty_str")]
    pub auth_label_snapshot: String,
    #[serde(skip_serializing_if = "is_empty_str")]
    pub auth_provider_snapshot: String,
    #[serde(skip_serializing_if = "is_empty_str")]
    pub auth_index: String,
    #[serde(skip_serializing_if = "is_empty_str")]
    pub source: String,
    #[serde(skip_serializing_if = "is_empty_str")]
    pub source_hash: String,
    pub calls: i64,
    pub success_calls: i64,
    pub failure_calls: i64,
    pub success_rate: f64,
    pub failure_rate: f64,
    pub total_tokens: i64,
    pub cost: Option<f64>,
    pub average_latency_ms: Option<f64>,
    pub last_seen_ms: i64,
}

#[derive(Debug, Serialize, Clone)]
pub struct GroupTimelinePoint {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_key_hash: Option<String>,
    #[serde(skip_serializing_if = "is_empty_str")]
    pub auth_file_snapshot: String,
    #[serde(skip_serializing_if = "is_empty_str")]
    pub auth_index: String,
    #[serde(skip_serializing_if = "is_empty_str")]
    pub source: String,
    #[serde(skip_serializing_if = "is_empty_str")]
    pub source_hash: String,
    #[serde(skip_serializing_if = "is_empty_str")]
    pub account_snapshot: String,
    #[serde(skip_serializing_if = "is_empty_str")]
    pub auth_label_snapshot: String,
    #[serde(skip_serializing_if = "is_empty_str")]
    pub auth_provider_snapshot: String,
    #[serde(skip_serializing_if = "is_empty_str")]
    pub auth_project_id_snapshot: String,
    pub bucket_ms: i64,
    pub bucket_label: String,
    pub calls: i64,
    pub tokens: i64,
    pub success: i64,
    pub failure: i64,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cached_tokens: i64,
    pub cache_read_tokens: i64,
    pub cache_creation_tokens: i64,
    pub reasoning_tokens: i64,
    pub total_tokens: i64,
    pub cost: Option<f64>,
    pub average_latency_ms: Option<f64>,
    pub success_rate: f64,
    pub failure_rate: f64,
}

#[derive(Debug, Serialize, Default)]
pub struct FilterOptions {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub models: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_key_hashes: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub account_stats: Vec<GroupStat>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub api_key_stats: Vec<GroupStat>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub channel_share: Vec<ChannelShare>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub model_stats: Vec<ModelStat>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub providers: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub auth_files: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accounts: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub project_ids: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub request_types: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub header_error_kinds: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub header_error_codes: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub header_quota_plans: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub header_trace_ids: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub account_count: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_key_count: Option<i64>,
}

#[derive(Debug, Serialize)]
pub struct TaskBucket {
    pub bucket_key: String,
    pub total: i64,
    pub success: i64,
    pub failure: i64,
    pub first_ms: i64,
    pub last_ms: i64,
    pub source: String,
    pub source_hash: String,
    pub auth_index: String,
    pub models: Vec<String>,
    pub endpoints: Vec<String>,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cached_tokens: i64,
    pub cache_read_tokens: i64,
    pub cache_creation_tokens: i64,
    pub total_tokens: i64,
    pub average_latency_ms: Option<f64>,
    pub max_latency_ms: Option<i64>,
}

#[derive(Debug, Serialize)]
pub struct EventsSection {
    pub items: Vec<EventItem>,
    pub next_before_ms: i64,
    pub next_before_id: i64,
    pub has_more: bool,
    pub total_count: i64,
}

/// One event in a page. Client IP, forwarded-for and user agent appear here and
/// nowhere else; the failure shows only its redacted summary.
#[derive(Debug, Serialize)]
pub struct EventItem {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    pub event_hash: String,
    pub timestamp_ms: i64,
    pub model: String,
    #[serde(skip_serializing_if = "is_empty_str")]
    pub analytics_model: String,
    #[serde(skip_serializing_if = "is_empty_str")]
    pub requested_model: String,
    #[serde(skip_serializing_if = "is_empty_str")]
    pub resolved_model: String,
    pub endpoint: String,
    pub method: String,
    pub path: String,
    #[serde(skip_serializing_if = "is_empty_str")]
    pub client_ip: String,
    #[serde(skip_serializing_if = "is_empty_str")]
    pub x_forwarded_for: String,
    #[serde(skip_serializing_if = "is_empty_str")]
    pub user_agent: String,
    pub auth_index: String,
    pub source: String,
    pub source_hash: String,
    pub api_key_hash: String,
    pub account_snapshot: String,
    pub auth_label_snapshot: String,
    #[serde(skip_serializing_if = "is_empty_str")]
    pub auth_file_snapshot: String,
    pub auth_provider_snapshot: String,
    #[serde(skip_serializing_if = "is_empty_str")]
    pub auth_project_id_snapshot: String,
    #[serde(skip_serializing_if = "is_empty_str")]
    pub reasoning_effort: String,
    #[serde(skip_serializing_if = "is_empty_str")]
    pub service_tier: String,
    #[serde(skip_serializing_if = "is_empty_str")]
    pub executor_type: String,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cached_tokens: i64,
    pub cache_read_tokens: i64,
    pub cache_creation_tokens: i64,
    pub reasoning_tokens: i64,
    pub total_tokens: i64,
    pub latency_ms: Option<i64>,
    pub ttft_ms: Option<i64>,
    pub failed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fail_status_code: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fail_summary: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response_metadata: Option<Box<serde_json::value::RawValue>>,
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

pub fn event_item(event: &RawEvent) -> EventItem {
    let identity = &event.identity;
    EventItem {
        request_id: event.request_id.clone().filter(|id| !id.is_empty()),
        event_hash: event.event_hash.clone(),
        timestamp_ms: event.timestamp_ms,
        model: event.model.to_string(),
        analytics_model: event.analytics_model.to_string(),
        requested_model: event.effective_requested().to_string(),
        resolved_model: event.resolved_model.to_string(),
        endpoint: event.endpoint.to_string(),
        method: event.method.to_string(),
        path: event.path.to_string(),
        client_ip: event.client_ip.to_string(),
        x_forwarded_for: event.x_forwarded_for.to_string(),
        user_agent: event.user_agent.to_string(),
        auth_index: identity.auth_index.to_string(),
        source: identity.source.to_string(),
        source_hash: identity.source_hash.to_string(),
        api_key_hash: identity.api_key_hash.to_string(),
        account_snapshot: identity.account.to_string(),
        auth_label_snapshot: identity.auth_label.to_string(),
        auth_file_snapshot: identity.auth_file.to_string(),
        auth_provider_snapshot: identity.effective_provider().to_string(),
        auth_project_id_snapshot: identity.auth_project.to_string(),
        reasoning_effort: event.reasoning_effort.to_string(),
        service_tier: event.service_tier.to_string(),
        executor_type: identity.executor_type.to_string(),
        input_tokens: event.normalized_input(),
        output_tokens: event.tokens.output,
        cached_tokens: event.compat_cached(),
        cache_read_tokens: event.tokens.cache_read,
        cache_creation_tokens: event.tokens.cache_creation,
        reasoning_tokens: event.tokens.reasoning,
        total_tokens: event.tokens.total,
        latency_ms: event.latency_ms,
        ttft_ms: event.ttft_ms,
        failed: event.failed,
        fail_status_code: event.fail_status_code,
        fail_summary: event.fail_summary.clone().filter(|text| !text.is_empty()),
        response_metadata: response_metadata(event.response_metadata_json.as_deref()),
        header_quota_recover_at_ms: event.header_quota_recover_at_ms,
        header_quota_used_percent: event.header_quota_used_percent,
        header_quota_plan_type: event.header_quota_plan_type.to_string(),
        header_error_kind: event.header_error_kind.to_string(),
        header_error_code: event.header_error_code.to_string(),
        header_trace_id: event.header_trace_id.clone().unwrap_or_default(),
    }
}

#[derive(Default, Clone)]
struct Acc {
    metrics: Metrics,
    cost: Option<f64>,
    last_seen_ms: i64,
    started: bool,
}

impl Acc {
    fn add(&mut self, row: &GroupRow, cost: Option<f64>) {
        if !self.started {
            self.cost = Some(0.0);
            self.started = true;
        }
        self.metrics.add(&row.metrics);
        self.cost = add_cost(self.cost, cost);
        self.last_seen_ms = self.last_seen_ms.max(row.last_seen_ms);
    }
}

fn model_stat(model: &str, acc: &Acc, with_last_seen: bool) -> ModelStat {
    let m = &acc.metrics;
    ModelStat {
        model: if model.is_empty() {
            "-".to_string()
        } else {
            model.to_string()
        },
        calls: m.calls,
        success_calls: m.success(),
        failure_calls: m.failures,
        success_rate: m.success_rate(),
        input_tokens: m.input,
        output_tokens: m.output,
        cached_tokens: m.cached,
        cache_read_tokens: m.cache_read,
        cache_creation_tokens: m.cache_creation,
        cache_hit_tokens: m.cache_hit_tokens(),
        cache_hit_input_tokens: m.input,
        cache_hit_rate: m.cache_hit_rate(),
        total_tokens: m.total,
        cost: acc.cost,
        last_seen_ms: with_last_seen.then_some(acc.last_seen_ms),
    }
}

fn cost_key(cost: Option<f64>) -> f64 {
    cost.unwrap_or(-1.0)
}

fn model_stats(book: &PriceBook, rows: &[GroupRow]) -> Vec<ModelStat> {
    let mut by_model: BTreeMap<&str, Acc> = BTreeMap::new();
    for row in rows {
        by_model
            .entry(&row.model)
            .or_default()
            .add(row, row_cost(book, row));
    }
    let mut out: Vec<ModelStat> = by_model
        .iter()
        .map(|(model, acc)| model_stat(model, acc, false))
        .collect();
    out.sort_by(|a, b| b.calls.cmp(&a.calls).then_with(|| a.model.cmp(&b.model)));
    out
}

fn nested_models(models: &BTreeMap<String, Acc>) -> Vec<ModelStat> {
    let mut out: Vec<ModelStat> = models
        .iter()
        .map(|(model, acc)| model_stat(model, acc, true))
        .collect();
    out.sort_by(|a, b| {
        cost_key(b.cost)
            .total_cmp(&cost_key(a.cost))
            .then_with(|| b.calls.cmp(&a.calls))
            .then_with(|| b.last_seen_ms.cmp(&a.last_seen_ms))
            .then_with(|| a.model.cmp(&b.model))
    });
    out
}

/// Accumulates one account/credential/API-key group.
#[derive(Default)]
struct GroupAcc {
    acc: Acc,
    first: Option<Arc<Identity>>,
    account: String,
    label: String,
    provider: String,
    auth_indices: BTreeSet<String>,
    sources: BTreeSet<String>,
    source_hashes: BTreeSet<String>,
    models: BTreeMap<String, Acc>,
    contexts: BTreeMap<String, (Acc, Arc<Identity>)>,
}

impl GroupAcc {
    fn add(&mut self, row: &GroupRow, identity: &Arc<Identity>, cost: Option<f64>, contexts: bool) {
        self.acc.add(row, cost);
        if self.first.is_none() {
            self.first = Some(identity.clone());
        }
        fill(&mut self.account, &identity.account);
        fill(&mut self.label, &identity.auth_label);
        fill(&mut self.provider, identity.effective_provider());
        for (set, value) in [
            (&mut self.auth_indices, &identity.auth_index),
            (&mut self.sources, &identity.source),
            (&mut self.source_hashes, &identity.source_hash),
        ] {
            if !value.is_empty() {
                set.insert(value.to_string());
            }
        }
        self.models
            .entry(row.model.to_string())
            .or_default()
            .add(row, cost);
        if contexts {
            let part = |value: &str| {
                if value.trim().is_empty() {
                    "-".to_string()
                } else {
                    value.trim().to_string()
                }
            };
            let key = [
                part(identity.effective_provider()),
                part(&identity.account),
                part(&identity.auth_label),
                part(&identity.auth_index),
                part(&identity.source_hash),
                part(&identity.source),
            ]
            .join(":");
            let entry = self
                .contexts
                .entry(key)
                .or_insert_with(|| (Acc::default(), identity.clone()));
            entry.0.add(row, cost);
        }
    }

    fn stat(&self, id: String) -> GroupStat {
        let m = &self.acc.metrics;
        GroupStat {
            id,
            account_snapshot: self.account.clone(),
            auth_label_snapshot: self.label.clone(),
            auth_provider_snapshot: self.provider.clone(),
            auth_indices: Some(self.auth_indices.iter().cloned().collect()),
            sources: Some(self.sources.iter().cloned().collect()),
            source_hashes: Some(self.source_hashes.iter().cloned().collect()),
            calls: m.calls,
            success_calls: m.success(),
            failure_calls: m.failures,
            success_rate: m.success_rate(),
            input_tokens: m.input,
            output_tokens: m.output,
            cached_tokens: m.cached,
            cache_read_tokens: m.cache_read,
            cache_creation_tokens: m.cache_creation,
            total_tokens: m.total,
            cost: self.acc.cost,
            average_latency_ms: m.average_latency(),
            last_seen_ms: self.acc.last_seen_ms,
            models: nested_models(&self.models),
            ..GroupStat::default()
        }
    }
}

fn fill(slot: &mut String, value: &str) {
    if slot.is_empty() && !value.is_empty() {
        *slot = value.to_string();
    }
}

fn first_non_blank<'a>(values: &[&'a str]) -> Option<&'a str> {
    values
        .iter()
        .copied()
        .find(|value| !value.trim().is_empty())
}

fn account_id(identity: &Identity) -> String {
    first_non_blank(&[
        &identity.account,
        &identity.auth_label,
        &identity.source,
        &identity.auth_index,
    ])
    .unwrap_or("-")
    .to_string()
}

fn api_key_id(identity: &Identity) -> String {
    if !identity.api_key_hash.trim().is_empty() {
        return identity.api_key_hash.to_lowercase();
    }
    let part = |value: &str| {
        if value.trim().is_empty() {
            "-".to_string()
        } else {
            value.to_string()
        }
    };
    format!(
        "unknown-client-api-key:{}:{}:{}:{}",
        part(&identity.source_hash),
        part(&identity.auth_index),
        part(&identity.source),
        part(&identity.provider)
    )
}

fn grouped(
    book: &PriceBook,
    rows: &[GroupRow],
    key: impl Fn(&Identity) -> String,
    contexts: bool,
) -> BTreeMap<String, GroupAcc> {
    let mut out: BTreeMap<String, GroupAcc> = BTreeMap::new();
    for row in rows {
        let Some(identity) = &row.identity else {
            continue;
        };
        out.entry(key(identity))
            .or_default()
            .add(row, identity, row_cost(book, row), contexts);
    }
    out
}

fn account_stats(book: &PriceBook, rows: &[GroupRow]) -> Vec<GroupStat> {
    let mut out: Vec<GroupStat> = grouped(book, rows, account_id, false)
        .into_iter()
        .map(|(id, group)| group.stat(id))
        .collect();
    out.sort_by(|a, b| {
        b.last_seen_ms
            .cmp(&a.last_seen_ms)
            .then_with(|| b.calls.cmp(&a.calls))
            .then_with(|| cost_key(b.cost).total_cmp(&cost_key(a.cost)))
            .then_with(|| a.id.cmp(&b.id))
    });
    out
}

fn credential_stats(book: &PriceBook, rows: &[GroupRow]) -> Vec<GroupStat> {
    let mut out: Vec<GroupStat> = grouped(
        book,
        rows,
        |identity| identity.credential_id().to_string(),
        false,
    )
    .into_iter()
    .map(|(id, group)| {
        let first = group.first.clone().unwrap_or_default();
        let mut stat = group.stat(id);
        stat.auth_file_snapshot = first.auth_file.to_string();
        stat.auth_index = first.auth_index.to_string();
        stat.source = first.source.to_string();
        stat.source_hash = first.source_hash.to_string();
        stat.auth_project_id_snapshot = first.auth_project.to_string();
        stat.auth_indices = None;
        stat.sources = None;
        stat.source_hashes = None;
        stat
    })
    .collect();
    out.sort_by(|a, b| {
        cost_key(b.cost)
            .total_cmp(&cost_key(a.cost))
            .then_with(|| b.calls.cmp(&a.calls))
            .then_with(|| b.last_seen_ms.cmp(&a.last_seen_ms))
            .then_with(|| a.id.cmp(&b.id))
    });
    out
}

fn api_key_stats(book: &PriceBook, rows: &[GroupRow]) -> Vec<GroupStat> {
    let mut out: Vec<GroupStat> = grouped(book, rows, api_key_id, true)
        .into_iter()
        .map(|(id, group)| {
            let first = group.first.clone().unwrap_or_default();
            let mut contexts: Vec<ApiKeyContext> = group
                .contexts
                .iter()
                .map(|(key, (acc, identity))| ApiKeyContext {
                    id: key.clone(),
                    account_snapshot: identity.account.to_string(),
                    auth_label_snapshot: identity.auth_label.to_string(),
                    auth_provider_snapshot: identity.effective_provider().to_string(),
                    auth_index: identity.auth_index.to_string(),
                    source: identity.source.to_string(),
                    source_hash: identity.source_hash.to_string(),
                    calls: acc.metrics.calls,
                    success_calls: acc.metrics.success(),
                    failure_calls: acc.metrics.failures,
                    success_rate: acc.metrics.success_rate(),
                    failure_rate: acc.metrics.failure_rate(),
                    total_tokens: acc.metrics.total,
                    cost: acc.cost,
                    average_latency_ms: acc.metrics.average_latency(),
                    last_seen_ms: acc.last_seen_ms,
                })
                .collect();
            contexts.sort_by(|a, b| {
                cost_key(b.cost)
                    .total_cmp(&cost_key(a.cost))
                    .then_with(|| b.calls.cmp(&a.calls))
                    .then_with(|| b.last_seen_ms.cmp(&a.last_seen_ms))
                    .then_with(|| a.id.cmp(&b.id))
            });
            let mut stat = group.stat(id);
            stat.api_key_hash = Some(first.api_key_hash.to_string());
            stat.contexts = Some(contexts);
            stat
        })
        .collect();
    out.sort_by(|a, b| {
        b.last_seen_ms
            .cmp(&a.last_seen_ms)
            .then_with(|| b.calls.cmp(&a.calls))
            .then_with(|| cost_key(b.cost).total_cmp(&cost_key(a.cost)))
            .then_with(|| a.id.cmp(&b.id))
    });
    out
}

fn channel_share(book: &PriceBook, rows: &[GroupRow]) -> Vec<ChannelShare> {
    let groups = grouped(
        book,
        rows,
        |identity| {
            if identity.auth_index.is_empty() {
                "-".to_string()
            } else {
                identity.auth_index.to_string()
            }
        },
        false,
    );
    let mut out: Vec<ChannelShare> = groups
        .into_iter()
        .map(|(auth_index, group)| {
            let first = group.first.clone().unwrap_or_default();
            let m = &group.acc.metrics;
            ChannelShare {
                auth_index,
                source: first.source.to_string(),
                account_snapshot: group.account.clone(),
                auth_label_snapshot: group.label.clone(),
                auth_provider_snapshot: group.provider.clone(),
                calls: m.calls,
                success: m.success(),
                failure: m.failures,
                tokens: m.total,
                cost: group.acc.cost,
                average_latency_ms: m.average_latency(),
            }
        })
        .collect();
    // Go returns map order here; a stable order is calls desc, then auth index.
    out.sort_by(|a, b| {
        b.calls
            .cmp(&a.calls)
            .then_with(|| a.auth_index.cmp(&b.auth_index))
    });
    out
}

fn failure_sources(book: &PriceBook, rows: &[GroupRow]) -> Vec<FailureSource> {
    let mut groups: BTreeMap<(String, String), GroupAcc> = BTreeMap::new();
    for row in rows {
        let Some(identity) = &row.identity else {
            continue;
        };
        groups
            .entry((
                identity.source_hash.to_string(),
                identity.auth_index.to_string(),
            ))
            .or_default()
            .add(row, identity, row_cost(book, row), false);
    }
    let mut out: Vec<FailureSource> = groups
        .into_iter()
        .filter(|(_, group)| group.acc.metrics.failures > 0)
        .map(|((source_hash, auth_index), group)| {
            let first = group.first.clone().unwrap_or_default();
            FailureSource {
                source: first.source.to_string(),
                source_hash,
                auth_index,
                account_snapshot: group.account.clone(),
                auth_label_snapshot: group.label.clone(),
                auth_provider_snapshot: group.provider.clone(),
                calls: group.acc.metrics.calls,
                failure: group.acc.metrics.failures,
                last_seen_ms: group.acc.last_seen_ms,
                average_latency_ms: group.acc.metrics.average_latency(),
            }
        })
        .collect();
    out.sort_by(|a, b| {
        b.failure
            .cmp(&a.failure)
            .then_with(|| b.last_seen_ms.cmp(&a.last_seen_ms))
            .then_with(|| a.source_hash.cmp(&b.source_hash))
            .then_with(|| a.auth_index.cmp(&b.auth_index))
    });
    out
}

fn timeline_points(
    book: &PriceBook,
    rows: &[GroupRow],
    samples: &[SampleBlock],
    zone: &Zone,
    granularity: Granularity,
) -> Vec<TimelinePoint> {
    let mut buckets: BTreeMap<i64, Acc> = BTreeMap::new();
    for row in rows {
        buckets
            .entry(row.bucket_ms)
            .or_default()
            .add(row, row_cost(book, row));
    }
    let mut p95: HashMap<i64, (Option<i64>, Option<i64>)> = HashMap::new();
    let mut scratch: Vec<u32> = Vec::new();
    for block in samples {
        // One scratch buffer, so percentiles never double the samples in memory.
        scratch.clear();
        scratch.extend_from_slice(&block.latencies);
        let latency = nearest_rank(&mut scratch, 0.95);
        scratch.clear();
        scratch.extend_from_slice(&block.ttfts);
        p95.insert(block.bucket_ms, (latency, nearest_rank(&mut scratch, 0.95)));
    }
    buckets
        .into_iter()
        .filter(|(_, acc)| acc.metrics.calls > 0)
        .map(|(bucket_ms, acc)| {
            let m = acc.metrics;
            let (p95_latency_ms, p95_ttft_ms) =
                p95.get(&bucket_ms).copied().unwrap_or((None, None));
            TimelinePoint {
                bucket_ms,
                label: zone.label(granularity, bucket_ms),
                calls: m.calls,
                tokens: m.total,
                success: m.success(),
                failure: m.failures,
                input_tokens: m.input,
                output_tokens: m.output,
                cached_tokens: m.cached,
                cache_read_tokens: m.cache_read,
                cache_creation_tokens: m.cache_creation,
                cache_hit_rate: m.cache_hit_rate(),
                reasoning_tokens: m.reasoning,
                total_tokens: m.total,
                cost: acc.cost,
                average_latency_ms: m.average_latency(),
                p95_latency_ms,
                p95_ttft_ms,
                success_rate: m.success_rate(),
                failure_rate: m.failure_rate(),
            }
        })
        .collect()
}

fn anomalies(points: &[TimelinePoint], granularity: Granularity) -> Vec<Anomaly> {
    let pct = |current: f64, previous: f64| {
        if previous <= 0.0 {
            if current > 0.0 { 1.0 } else { 0.0 }
        } else {
            (current - previous) / previous
        }
    };
    let mut out: Vec<(f64, Anomaly)> = Vec::new();
    for pair in points.windows(2) {
        let (previous, current) = (&pair[0], &pair[1]);
        let request_change = pct(current.calls as f64, previous.calls as f64);
        let cost_change = pct(current.cost.unwrap_or(0.0), previous.cost.unwrap_or(0.0));
        let tokens_per_request_change = pct(
            ratio(current.total_tokens as f64, current.calls as f64),
            ratio(previous.total_tokens as f64, previous.calls as f64),
        );
        let cache_hit_rate_change = current.cache_hit_rate - previous.cache_hit_rate;
        let failure_rate_change = current.failure_rate - previous.failure_rate;
        let latency_p95_change = pct(
            current.p95_latency_ms.unwrap_or(0) as f64,
            previous.p95_latency_ms.unwrap_or(0) as f64,
        );
        let mut keys = Vec::new();
        if request_change > 1.0 {
            keys.push("request_spike");
        }
        if cost_change > 1.0 {
            keys.push("cost_spike");
        }
        if tokens_per_request_change > 0.5 {
            keys.push("tokens_per_request_spike");
        }
        if cache_hit_rate_change < -0.2 {
            keys.push("cache_hit_drop");
        }
        if failure_rate_change > 0.2 {
            keys.push("failure_rate_spike");
        }
        if latency_p95_change > 0.5 {
            keys.push("latency_spike");
        }
        if keys.is_empty() {
            continue;
        }
        let score = 10.0 * keys.len() as f64
            + [
                request_change,
                cost_change,
                tokens_per_request_change,
                -cache_hit_rate_change,
                failure_rate_change,
                latency_p95_change,
            ]
            .iter()
            .map(|value| value.max(0.0))
            .sum::<f64>();
        let step = match granularity {
            Granularity::Hour => HOUR_MS,
            Granularity::Day => DAY_MS,
        };
        out.push((
            score,
            Anomaly {
                bucket_ms: current.bucket_ms,
                bucket_end_ms: current.bucket_ms + step,
                label: current.label.clone(),
                severity: match keys.len() {
                    0 | 1 => "low",
                    2 => "medium",
                    _ => "high",
                },
                metric_keys: keys,
                calls: current.calls,
                total_tokens: current.total_tokens,
                cost: current.cost,
                failure_rate: current.failure_rate,
                request_change,
                cost_change,
                tokens_per_request_change,
                cache_hit_rate_change,
                failure_rate_change,
                latency_p95_change,
            },
        ));
    }
    out.sort_by(|a, b| {
        b.0.total_cmp(&a.0)
            .then_with(|| b.1.bucket_ms.cmp(&a.1.bucket_ms))
    });
    out.into_iter()
        .take(50)
        .map(|(_, anomaly)| anomaly)
        .collect()
}

fn sorted_distinct<'a>(values: impl Iterator<Item = &'a str>) -> Vec<String> {
    values
        .filter(|value| !value.is_empty())
        .map(str::to_string)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect()
}

fn selectors(pairs: &[(Arc<Identity>, Text)]) -> FilterOptions {
    let identities = || pairs.iter().map(|(identity, _)| &**identity);
    let models = sorted_distinct(pairs.iter().map(|(_, model)| &**model));
    let api_key_hashes: Vec<String> = identities()
        .map(|identity| identity.api_key_hash.to_lowercase())
        .filter(|hash| !hash.is_empty())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let mut accounts: BTreeMap<String, GroupAcc> = BTreeMap::new();
    let mut api_key_ids: BTreeSet<String> = BTreeSet::new();
    for (identity, _) in pairs {
        let entry = accounts.entry(account_id(identity)).or_default();
        // Identity only: no counts.
        if entry.first.is_none() {
            entry.first = Some(identity.clone());
        }
        fill(&mut entry.account, &identity.account);
        fill(&mut entry.label, &identity.auth_label);
        fill(&mut entry.provider, identity.effective_provider());
        for (set, value) in [
            (&mut entry.auth_indices, &identity.auth_index),
            (&mut entry.sources, &identity.source),
            (&mut entry.source_hashes, &identity.source_hash),
        ] {
            if !value.is_empty() {
                set.insert(value.to_string());
            }
        }
        api_key_ids.insert(api_key_id(identity));
    }
    let account_stats: Vec<GroupStat> = accounts
        .into_iter()
        .filter(|(id, group)| !(id == "-" && group.source_hashes.is_empty()))
        .map(|(id, group)| {
            let mut stat = group.stat(id);
            stat.success_rate = 1.0;
            stat.models = Vec::new();
            stat
        })
        .collect();
    FilterOptions {
        models: Some(models),
        api_key_hashes: Some(api_key_hashes),
        providers: sorted_distinct(identities().map(Identity::effective_provider)),
        auth_files: sorted_distinct(identities().map(|identity| &*identity.auth_file)),
        accounts: Some(sorted_distinct(
            identities().map(|identity| &*identity.account),
        )),
        account_count: Some(account_stats.len() as i64),
        api_key_count: Some(api_key_ids.len() as i64),
        account_stats,
        ..FilterOptions::default()
    }
}

fn options(book: &PriceBook, rows: &[GroupRow]) -> FilterOptions {
    let identities = || rows.iter().filter_map(|row| row.identity.as_deref());
    FilterOptions {
        account_stats: account_stats(book, rows),
        api_key_stats: api_key_stats(book, rows),
        channel_share: channel_share(book, rows),
        model_stats: model_stats(book, rows),
        providers: sorted_distinct(identities().map(Identity::effective_provider)),
        auth_files: sorted_distinct(identities().map(|identity| &*identity.auth_file)),
        project_ids: sorted_distinct(identities().map(|identity| &*identity.auth_project)),
        request_types: sorted_distinct(identities().map(|identity| &*identity.executor_type)),
        ..FilterOptions::default()
    }
}

fn group_timeline(
    book: &PriceBook,
    rows: &[GroupRow],
    zone: &Zone,
    granularity: Granularity,
    key: impl Fn(&Identity) -> Option<String>,
    api_keys: bool,
) -> Vec<GroupTimelinePoint> {
    let mut cells: BTreeMap<(i64, String), (Acc, Arc<Identity>)> = BTreeMap::new();
    let mut first_seen: HashMap<String, i64> = HashMap::new();
    for row in rows {
        let Some(identity) = &row.identity else {
            continue;
        };
        let Some(group) = key(identity) else { continue };
        let seen = first_seen.entry(group.clone()).or_insert(i64::MAX);
        *seen = (*seen).min(row.bucket_ms);
        let entry = cells
            .entry((row.bucket_ms, group))
            .or_insert_with(|| (Acc::default(), identity.clone()));
        entry.0.add(row, row_cost(book, row));
    }
    let mut out: Vec<(i64, i64, String, GroupTimelinePoint)> = cells
        .into_iter()
        .map(|((bucket_ms, group), (acc, identity))| {
            let m = acc.metrics;
            let label = first_non_blank(&[
                &identity.auth_label,
                &identity.account,
                &identity.auth_file,
                &identity.source,
                &identity.auth_index,
                &group,
            ])
            .unwrap_or("")
            .to_string();
            // API-key timelines carry no credential details.
            let identity_text = |value: &str| {
                if api_keys {
                    String::new()
                } else {
                    value.to_string()
                }
            };
            let point = GroupTimelinePoint {
                id: (!api_keys).then(|| group.clone()),
                label: (!api_keys).then_some(label),
                api_key_hash: api_keys.then(|| group.clone()),
                auth_file_snapshot: identity_text(&identity.auth_file),
                auth_index: identity_text(&identity.auth_index),
                source: identity_text(&identity.source),
                source_hash: identity_text(&identity.source_hash),
                account_snapshot: identity_text(&identity.account),
                auth_label_snapshot: identity_text(&identity.auth_label),
                auth_provider_snapshot: identity_text(identity.effective_provider()),
                auth_project_id_snapshot: identity_text(&identity.auth_project),
                bucket_ms,
                bucket_label: zone.label(granularity, bucket_ms),
                calls: m.calls,
                tokens: m.total,
                success: m.success(),
                failure: m.failures,
                input_tokens: m.input,
                output_tokens: m.output,
                cached_tokens: m.cached,
                cache_read_tokens: m.cache_read,
                cache_creation_tokens: m.cache_creation,
                reasoning_tokens: m.reasoning,
                total_tokens: m.total,
                cost: acc.cost,
                average_latency_ms: m.average_latency(),
                success_rate: m.success_rate(),
                failure_rate: m.failure_rate(),
            };
            (
                bucket_ms,
                first_seen.get(&group).copied().unwrap_or(0),
                group,
                point,
            )
        })
        .collect();
    out.sort_by(|a, b| {
        a.0.cmp(&b.0)
            .then_with(|| a.1.cmp(&b.1))
            .then_with(|| a.2.cmp(&b.2))
    });
    out.into_iter().map(|(_, _, _, point)| point).collect()
}

fn heatmap(book: &PriceBook, rows: &[GroupRow], zone: &Zone) -> Vec<HeatCell> {
    #[derive(Default)]
    struct Cell {
        acc: Acc,
        models: BTreeMap<String, Acc>,
        keys: BTreeMap<String, Acc>,
        providers: BTreeMap<String, Acc>,
    }
    let mut cells: BTreeMap<(i64, i64), Cell> = BTreeMap::new();
    for row in rows {
        let cost = row_cost(book, row);
        let cell = cells.entry(zone.weekday_hour(row.bucket_ms)).or_default();
        cell.acc.add(row, cost);
        let model = if row.model.trim().is_empty() {
            "Unknown".to_string()
        } else {
            row.model.to_string()
        };
        cell.models.entry(model).or_default().add(row, cost);
        if let Some(identity) = &row.identity {
            if !identity.api_key_hash.trim().is_empty() {
                cell.keys
                    .entry(identity.api_key_hash.to_string())
                    .or_default()
                    .add(row, cost);
            }
            let provider = identity.effective_provider();
            let provider = if provider.trim().is_empty() {
                "Unknown"
            } else {
                provider
            };
            cell.providers
                .entry(provider.to_string())
                .or_default()
                .add(row, cost);
        }
    }
    let top = |map: &BTreeMap<String, Acc>, cell_calls: i64| -> Vec<Contributor> {
        let mut list: Vec<Contributor> = map
            .iter()
            .map(|(key, acc)| Contributor {
                key: key.clone(),
                calls: acc.metrics.calls,
                success: acc.metrics.success(),
                failure: acc.metrics.failures,
                tokens: acc.metrics.total,
                cost: acc.cost,
                failure_rate: acc.metrics.failure_rate(),
                share: ratio(acc.metrics.calls as f64, cell_calls as f64),
            })
            .collect();
        list.sort_by(|a, b| {
            b.calls
                .cmp(&a.calls)
                .then_with(|| cost_key(b.cost).total_cmp(&cost_key(a.cost)))
                .then_with(|| a.key.cmp(&b.key))
        });
        list.truncate(5);
        list
    };
    cells
        .into_iter()
        .map(|((weekday, hour), cell)| {
            let m = cell.acc.metrics;
            HeatCell {
                weekday,
                hour,
                calls: m.calls,
                success: m.success(),
                failure: m.failures,
                tokens: m.total,
                cost: cell.acc.cost,
                failure_rate: m.failure_rate(),
                model_contributors: top(&cell.models, m.calls),
                api_key_contributors: top(&cell.keys, m.calls),
                provider_contributors: top(&cell.providers, m.calls),
            }
        })
        .collect()
}

fn task_buckets(events: &[RawEvent]) -> Vec<TaskBucket> {
    struct Task {
        bucket: TaskBucket,
        latency_sum: i64,
        latency_samples: i64,
        models: BTreeSet<String>,
        endpoints: BTreeSet<String>,
    }
    let mut tasks: HashMap<String, Task> = HashMap::new();
    for event in events {
        let identity = &event.identity;
        let key = format!(
            "{}|{}|{}",
            event.timestamp, identity.source_hash, identity.auth_index
        );
        let task = tasks.entry(key.clone()).or_insert_with(|| Task {
            bucket: TaskBucket {
                bucket_key: key,
                total: 0,
                success: 0,
                failure: 0,
                first_ms: event.timestamp_ms,
                last_ms: event.timestamp_ms,
                source: identity.source.to_string(),
                source_hash: identity.source_hash.to_string(),
                auth_index: identity.auth_index.to_string(),
                models: Vec::new(),
                endpoints: Vec::new(),
                input_tokens: 0,
                output_tokens: 0,
                cached_tokens: 0,
                cache_read_tokens: 0,
                cache_creation_tokens: 0,
                total_tokens: 0,
                average_latency_ms: None,
                max_latency_ms: None,
            },
            latency_sum: 0,
            latency_samples: 0,
            models: BTreeSet::new(),
            endpoints: BTreeSet::new(),
        });
        let bucket = &mut task.bucket;
        bucket.total += 1;
        if event.failed {
            bucket.failure += 1;
        } else {
            bucket.success += 1;
        }
        bucket.first_ms = bucket.first_ms.min(event.timestamp_ms);
        bucket.last_ms = bucket.last_ms.max(event.timestamp_ms);
        bucket.input_tokens += event.normalized_input();
        bucket.output_tokens += event.tokens.output;
        bucket.cached_tokens += event.compat_cached();
        bucket.cache_read_tokens += event.tokens.cache_read;
        bucket.cache_creation_tokens += event.tokens.cache_creation;
        bucket.total_tokens += event.tokens.total;
        if let Some(latency) = event.latency_ms.filter(|latency| *latency > 0) {
            task.latency_sum += latency;
            task.latency_samples += 1;
            bucket.max_latency_ms = Some(bucket.max_latency_ms.unwrap_or(0).max(latency));
        }
        if !event.analytics_model.is_empty() {
            task.models.insert(event.analytics_model.to_string());
        }
        if !event.endpoint.is_empty() {
            task.endpoints.insert(event.endpoint.to_string());
        }
    }
    let mut out: Vec<TaskBucket> = tasks
        .into_values()
        .map(|mut task| {
            task.bucket.models = task.models.into_iter().collect();
            task.bucket.endpoints = task.endpoints.into_iter().collect();
            task.bucket.average_latency_ms = (task.latency_samples > 0)
                .then(|| task.latency_sum as f64 / task.latency_samples as f64);
            task.bucket
        })
        .collect();
    out.sort_by(|a, b| {
        b.last_ms
            .cmp(&a.last_ms)
            .then_with(|| a.bucket_key.cmp(&b.bucket_key))
    });
    out.truncate(500);
    out
}

fn events_section(page: super::query::EventPage, total_count: i64) -> EventsSection {
    let (next_before_ms, next_before_id) = match (page.has_more, page.items.last()) {
        (true, Some(last)) => (last.timestamp_ms, last.id),
        _ => (0, 0),
    };
    EventsSection {
        items: page.items.iter().map(event_item).collect(),
        next_before_ms,
        next_before_id,
        has_more: page.has_more,
        total_count,
    }
}

/// Answers a monitoring request.
pub async fn monitoring<S: AnalyticsStore>(
    store: &S,
    request: MonitoringRequest,
) -> Result<MonitoringResponse, QueryError> {
    let MonitoringRequest {
        scope,
        now_ms,
        zone,
        granularity,
        include,
        generated_at_ms,
    } = request;
    let book = store.price_book().await?;
    let mut response = MonitoringResponse {
        generated_at_ms,
        granularity: granularity.as_str(),
        ..MonitoringResponse::default()
    };
    let timeline = Some((zone.clone(), granularity));
    let full = include.summary && !include.compact;
    let need_main = include.summary
        || include.timeline
        || include.anomaly_points
        || include.model_share
        || include.model_stats;
    let need_identity = include.channel_share
        || include.failure_sources
        || include.account_stats
        || include.credential_stats
        || include.api_key_stats;
    let need_percentiles = include.timeline
        || include.anomaly_points
        || (include.summary && (full || include.percentiles));

    let main_rows = async {
        if need_main {
            store
                .groups(GroupRequest {
                    scope: scope.clone(),
                    identity: false,
                    timeline: timeline.clone(),
                })
                .await
        } else {
            Ok(Vec::new())
        }
    };
    let identity_rows = async {
        if need_identity {
            store
                .groups(GroupRequest {
                    scope: scope.clone(),
                    identity: true,
                    timeline: None,
                })
                .await
        } else {
            Ok(Vec::new())
        }
    };
    let samples = async {
        if need_percentiles {
            let timeline = if include.timeline || include.anomaly_points {
                timeline.clone()
            } else {
                None
            };
            store
                .samples(GroupRequest {
                    scope: scope.clone(),
                    identity: false,
                    timeline,
                })
                .await
        } else {
            Ok(Vec::new())
        }
    };
    // One after the other: run at once, the three reads' transient buffers (blob
    // chunks, merge maps, page caches of three connections) peak together, and
    // memory is the scarcer resource on the small hosts this runs on.
    let main_rows = main_rows.await?;
    let identity_rows = identity_rows.await?;
    let samples = samples.await?;

    let totals = {
        let mut acc = Acc {
            cost: Some(0.0),
            started: true,
            ..Acc::default()
        };
        for row in &main_rows {
            acc.add(row, row_cost(&book, row));
        }
        acc
    };

    let points = if include.timeline || include.anomaly_points {
        timeline_points(&book, &main_rows, &samples, &zone, granularity)
    } else {
        Vec::new()
    };

    if include.summary {
        let m = totals.metrics;
        let (mut p95_latency, mut p95_ttft, mut p50, mut p99) = (None, None, None, None);
        if full || include.percentiles {
            // Selected across the blocks in place: the samples are never copied
            // into one buffer, which would double them in memory.
            let latencies: Vec<&[u32]> = samples.iter().map(|b| b.latencies.as_slice()).collect();
            let ttfts: Vec<&[u32]> = samples.iter().map(|b| b.ttfts.as_slice()).collect();
            p95_latency = nearest_rank_in(&latencies, 0.95);
            p50 = nearest_rank_in(&latencies, 0.50);
            p99 = nearest_rank_in(&latencies, 0.99);
            p95_ttft = nearest_rank_in(&ttfts, 0.95);
        }
        let mut summary = Summary {
            total_calls: m.calls,
            success_calls: m.success(),
            failure_calls: m.failures,
            success_rate: m.success_rate(),
            input_tokens: m.input,
            output_tokens: m.output,
            cached_tokens: m.cached,
            cache_read_tokens: m.cache_read,
            cache_creation_tokens: m.cache_creation,
            cache_hit_rate: m.cache_hit_rate(),
            reasoning_tokens: m.reasoning,
            total_tokens: m.total,
            total_cost: totals.cost,
            average_cost_per_call: totals.cost.map(|cost| ratio(cost, m.calls as f64)),
            average_latency_ms: m.average_latency(),
            p95_latency_ms: p95_latency,
            p95_ttft_ms: p95_ttft,
            p50_latency_ms: p50,
            p99_latency_ms: p99,
            zero_token_calls: m.zero_token_calls,
            rpm_30m: 0.0,
            tpm_30m: 0.0,
            avg_daily_requests: 0.0,
            avg_daily_tokens: 0.0,
            approx_tasks: 0,
            approx_task_failures: 0,
            approx_task_success_rate: 0.0,
            zero_token_models: None,
        };
        if full {
            let now = if now_ms > 0 { now_ms } else { generated_at_ms };
            let rolling = store
                .groups(GroupRequest {
                    scope: scope.with_range(now - 30 * MINUTE_MS, now),
                    identity: false,
                    timeline: None,
                })
                .await?;
            let mut rolling_metrics = Metrics::default();
            for row in &rolling {
                rolling_metrics.add(&row.metrics);
            }
            summary.rpm_30m = rolling_metrics.calls as f64 / 30.0;
            summary.tpm_30m = rolling_metrics.total as f64 / 30.0;
            let day_rows = if granularity == Granularity::Day {
                None
            } else {
                Some(
                    store
                        .groups(GroupRequest {
                            scope: scope.clone(),
                            identity: false,
                            timeline: Some((zone.clone(), Granularity::Day)),
                        })
                        .await?,
                )
            };
            let days: BTreeSet<i64> = day_rows
                .as_deref()
                .unwrap_or(&main_rows)
                .iter()
                .filter(|row| row.metrics.calls > 0)
                .map(|row| row.bucket_ms)
                .collect();
            let active_days = days.len().max(1) as f64;
            summary.avg_daily_requests = m.calls as f64 / active_days;
            summary.avg_daily_tokens = m.total as f64 / active_days;
            summary.zero_token_models = Some(sorted_distinct(
                main_rows
                    .iter()
                    .filter(|row| row.metrics.zero_token_calls > 0)
                    .map(|row| &*row.model),
            ));
            let events = store.raw_events(scope.clone(), usize::MAX).await?;
            let tasks = task_buckets(&events);
            summary.approx_tasks = tasks.len() as i64;
            summary.approx_task_failures =
                tasks.iter().filter(|task| task.failure > 0).count() as i64;
            summary.approx_task_success_rate = ratio(
                (summary.approx_tasks - summary.approx_task_failures) as f64,
                summary.approx_tasks as f64,
            );
            if include.task_buckets {
                response.task_buckets = tasks;
            }
        }
        response.summary = Some(summary);
        if include.summary_comparison {
            let span = scope.to_ms - scope.from_ms;
            let start = scope.from_ms - span;
            if start > 0 {
                let rows = store
                    .groups(GroupRequest {
                        scope: scope.with_range(start, scope.from_ms),
                        identity: false,
                        timeline: None,
                    })
                    .await?;
                let mut acc = Acc {
                    cost: Some(0.0),
                    started: true,
                    ..Acc::default()
                };
                for row in &rows {
                    acc.add(row, row_cost(&book, row));
                }
                let m = acc.metrics;
                response.summary_comparison = Some(Comparison {
                    from_ms: start,
                    to_ms: scope.from_ms,
                    total_calls: m.calls,
                    success_calls: m.success(),
                    failure_calls: m.failures,
                    success_rate: m.success_rate(),
                    total_tokens: m.total,
                    total_cost: acc.cost,
                });
            }
        }
    }
    if include.task_buckets && response.task_buckets.is_empty() {
        let events = store.raw_events(scope.clone(), usize::MAX).await?;
        response.task_buckets = task_buckets(&events);
    }
    if include.anomaly_points && points.len() >= 2 {
        response.anomaly_points = anomalies(&points, granularity);
    }
    if include.timeline {
        response.timeline = points;
    }
    if include.hourly_distribution || include.heatmap {
        let rows = store
            .groups(GroupRequest {
                scope: scope.clone(),
                identity: include.heatmap,
                timeline: Some((zone.clone(), Granularity::Hour)),
            })
            .await?;
        if include.hourly_distribution {
            let mut hours: BTreeMap<i64, (i64, i64)> = BTreeMap::new();
            for row in &rows {
                let entry = hours.entry(zone.weekday_hour(row.bucket_ms).1).or_default();
                entry.0 += row.metrics.calls;
                entry.1 += row.metrics.total;
            }
            response.hourly_distribution = hours
                .into_iter()
                .filter(|(_, (calls, _))| *calls > 0)
                .map(|(hour, (calls, tokens))| HourPoint {
                    hour,
                    calls,
                    tokens,
                })
                .collect();
        }
        if include.heatmap {
            response.heatmap = heatmap(&book, &rows, &zone);
        }
    }
    if include.model_share || include.model_stats {
        let stats = model_stats(&book, &main_rows);
        if include.model_share {
            response.model_share = stats
                .iter()
                .map(|stat| ModelShare {
                    model: stat.model.clone(),
                    calls: stat.calls,
                    tokens: stat.total_tokens,
                    cost: stat.cost,
                })
                .collect();
        }
        if include.model_stats {
            response.model_stats = stats;
        }
    }
    if include.channel_share {
        response.channel_share = channel_share(&book, &identity_rows);
    }
    if include.failure_sources {
        response.failure_sources = failure_sources(&book, &identity_rows);
    }
    if include.account_stats {
        response.account_stats = account_stats(&book, &identity_rows);
    }
    if include.credential_stats {
        response.credential_stats = credential_stats(&book, &identity_rows);
    }
    if include.api_key_stats {
        response.api_key_stats = api_key_stats(&book, &identity_rows);
    }
    let api_key_filter =
        !scope.filters.api_key_hashes.is_empty() || !scope.search_api_key_hash.is_empty();
    if include.credential_timeline || (include.api_key_timeline && api_key_filter) {
        let rows = store
            .groups(GroupRequest {
                scope: scope.clone(),
                identity: true,
                timeline: timeline.clone(),
            })
            .await?;
        if include.credential_timeline {
            response.credential_timeline = group_timeline(
                &book,
                &rows,
                &zone,
                granularity,
                |identity| Some(identity.credential_id().to_string()),
                false,
            );
        }
        if include.api_key_timeline && api_key_filter {
            response.api_key_timeline = group_timeline(
                &book,
                &rows,
                &zone,
                granularity,
                |identity| {
                    let hash = identity.api_key_hash.trim();
                    (!hash.is_empty()).then(|| hash.to_string())
                },
                true,
            );
        }
    }
    if include.filter_selectors {
        let pairs = store.identity_models(scope.base()).await?;
        response.filter_options = Some(selectors(&pairs));
    } else if include.filter_options {
        let base = scope.base();
        let rows = store
            .groups(GroupRequest {
                scope: base,
                identity: true,
                timeline: None,
            })
            .await?;
        response.filter_options = Some({
            let mut options = options(&book, &rows);
            drop(rows);
            let headers = store.header_values(scope.base()).await?;
            options.header_error_kinds = headers.error_kinds;
            options.header_error_codes = headers.error_codes;
            options.header_quota_plans = headers.quota_plans;
            options.header_trace_ids = headers.trace_ids;
            options
        });
    }
    if include.recent_failures > 0 {
        let mut failed_scope = scope.clone();
        failed_scope.filters.include_failed = true;
        failed_scope.filters.failed_only = true;
        let page = store
            .events_page(failed_scope, Cursor::default(), include.recent_failures)
            .await?;
        response.recent_failures = page
            .items
            .iter()
            .map(|event| recent_failure_item(event, true))
            .collect();
    }
    if let Some(page_request) = include.events_page {
        let page = store
            .events_page(scope.clone(), page_request.cursor, page_request.limit)
            .await?;
        let total_count = if include.summary && need_main {
            totals.metrics.calls
        } else {
            let rows = store
                .groups(GroupRequest {
                    scope: scope.clone(),
                    identity: false,
                    timeline: None,
                })
                .await?;
            rows.iter().map(|row| row.metrics.calls).sum()
        };
        response.events = Some(events_section(page, total_count));
    }
    if let Some((from_ms, to_ms, limit)) = include.drilldown_preview
        && from_ms > 0
        && to_ms > from_ms
    {
        let page = store
            .events_page(scope.with_range(from_ms, to_ms), Cursor::default(), limit)
            .await?;
        let count = page.items.len() as i64;
        response.drilldown_preview = Some(events_section(page, count));
    }
    Ok(response)
}
