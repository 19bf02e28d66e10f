//! `events` and `drilldown_preview`: pages of single events, newest first.

use serde::Serialize;

use crate::analytics::headers::HeaderFields;
use crate::analytics::identity::{EventKeys, IdentityFields};
use crate::analytics::query::{EventPage, RawEvent};
use crate::analytics::totals::TokenSums;

fn is_empty_str(value: &str) -> bool {
    value.is_empty()
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
    #[serde(flatten)]
    pub identity: IdentityFields<EventKeys>,
    #[serde(skip_serializing_if = "is_empty_str")]
    pub reasoning_effort: String,
    #[serde(skip_serializing_if = "is_empty_str")]
    pub service_tier: String,
    #[serde(skip_serializing_if = "is_empty_str")]
    pub executor_type: String,
    #[serde(flatten)]
    pub token_sums: TokenSums,
    pub reasoning_tokens: i64,
    pub total_tokens: i64,
    pub latency_ms: Option<i64>,
    pub ttft_ms: Option<i64>,
    pub failed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fail_status_code: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fail_summary: Option<String>,
    #[serde(flatten)]
    pub headers: HeaderFields,
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
