//! `events` and `drilldown_preview`: pages of single events, newest first.

use serde::Serialize;

use crate::analytics::headers::HeaderFields;
use crate::analytics::identity::{EventKeys, IdentityFields};
use crate::analytics::query::{EventPage, RawEvent};
use crate::analytics::totals::TokenSums;

fn is_empty_str(value: &str) -> bool {
    value.is_empty()
}

/// `events` and `drilldown_preview` of the monitoring answer: one page of events,
/// newest first. All five keys are always present.
#[derive(Debug, Serialize)]
pub struct EventsSection {
    /// The page (`[]` when empty).
    pub items: Vec<EventItem>,
    /// `before_ms` for the next page: the last item's time when `has_more`, else 0.
    pub next_before_ms: i64,
    /// `before_id` for the next page: the last item's id when `has_more`, else 0.
    pub next_before_id: i64,
    /// More events match after this page.
    pub has_more: bool,
    /// For `events`, the events matching the scope regardless of the cursor; for the
    /// drill-down preview, the number of items returned.
    pub total_count: i64,
}

/// One event in a page. Client IP, forwarded-for and user agent appear here and
/// nowhere else; the failure shows only its redacted summary.
/// Optional keys are left out when empty; the item carries no row id (page with
/// `next_before_*`).
#[derive(Debug, Serialize)]
pub struct EventItem {
    /// CPA's request id; several attempts of one request share it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// Dedupe hash of the event (lowercase hex); `GET /model-prices/explain` takes it.
    pub event_hash: String,
    /// Request start, Unix milliseconds.
    pub timestamp_ms: i64,
    /// Display model as stored (requested, else resolved model).
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
    /// CPA's endpoint, `METHOD /path`.
    pub endpoint: String,
    /// The client's HTTP method.
    pub method: String,
    /// The client's request path.
    pub path: String,
    /// The client's address as CPA saw it.
    #[serde(skip_serializing_if = "is_empty_str")]
    pub client_ip: String,
    /// The client's `X-Forwarded-For`, sanitised.
    #[serde(skip_serializing_if = "is_empty_str")]
    pub x_forwarded_for: String,
    /// The client's `User-Agent`, sanitised.
    #[serde(skip_serializing_if = "is_empty_str")]
    pub user_agent: String,
    /// Credential and client-key fields (auth index, source, hashes, snapshots).
    #[serde(flatten)]
    pub identity: IdentityFields<EventKeys>,
    /// The reasoning effort the client asked for.
    #[serde(skip_serializing_if = "is_empty_str")]
    pub reasoning_effort: String,
    /// Effective service tier.
    #[serde(skip_serializing_if = "is_empty_str")]
    pub service_tier: String,
    /// CPA's executor that made the attempt.
    #[serde(skip_serializing_if = "is_empty_str")]
    pub executor_type: String,
    /// Input (normalised, cache buckets included), output and cache token counts.
    #[serde(flatten)]
    pub token_sums: TokenSums,
    /// Reasoning tokens (part of output).
    pub reasoning_tokens: i64,
    /// Total tokens as reported.
    pub total_tokens: i64,
    /// Time to the complete answer, ms; `null` when not reported.
    pub latency_ms: Option<i64>,
    /// Time to the first token, ms; `null` when not reported (non-streaming calls).
    pub ttft_ms: Option<i64>,
    /// The attempt failed.
    pub failed: bool,
    /// Upstream HTTP status of a failure.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fail_status_code: Option<i64>,
    /// Redacted, size-capped failure text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fail_summary: Option<String>,
    /// Header metadata: quota, rate limits, error kind and code, trace id.
    #[serde(flatten)]
    pub headers: HeaderFields,
}

/// One stored event as an `events.items[]` entry.
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
        identity: IdentityFields::of(identity),
        reasoning_effort: event.reasoning_effort.to_string(),
        service_tier: event.service_tier.to_string(),
        executor_type: identity.executor_type.to_string(),
        token_sums: TokenSums::of(&event.metrics()),
        reasoning_tokens: event.tokens.reasoning,
        total_tokens: event.tokens.total,
        latency_ms: event.latency_ms,
        ttft_ms: event.ttft_ms,
        failed: event.failed,
        fail_status_code: event.fail_status_code,
        fail_summary: event.fail_summary.clone().filter(|text| !text.is_empty()),
        headers: HeaderFields::of(event),
    }
}

pub(super) fn events_section(page: EventPage, total_count: i64) -> EventsSection {
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
