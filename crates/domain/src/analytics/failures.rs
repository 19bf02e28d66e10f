//! Failed requests as failure lists show them (dashboard and monitoring
//! `recent_failures`).

use serde::Serialize;

use super::headers::HeaderFields;
use super::identity::{IdentityFields, RecentFailureKeys};
use super::query::RawEvent;

/// A failed request as shown in failure lists: the redacted summary only, never a
/// raw body; no client IP, forwarded-for or user agent.
#[derive(Debug, Serialize)]
pub struct RecentFailure {
    pub timestamp_ms: i64,
    pub model: String,
    #[serde(flatten)]
    pub identity: IdentityFields<RecentFailureKeys>,
    pub endpoint: String,
    pub duration_ms: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fail_status_code: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fail_summary: Option<String>,
    #[serde(flatten)]
    pub headers: HeaderFields,
}

/// A failed event as a [`RecentFailure`]; `provider_fallback` fills the provider
/// snapshot from the event provider (monitoring does, the dashboard does not).
pub fn recent_failure_item(event: &RawEvent, provider_fallback: bool) -> RecentFailure {
    let mut identity = IdentityFields::of(&event.identity);
    if !provider_fallback {
        identity.auth_provider_snapshot = event.identity.auth_provider.clone();
    }
    RecentFailure {
        timestamp_ms: event.timestamp_ms,
        model: event.analytics_model.to_string(),
        identity,
        endpoint: event.endpoint.to_string(),
        duration_ms: event.latency_ms,
        fail_status_code: event.fail_status_code,
        fail_summary: event.fail_summary.clone().filter(|text| !text.is_empty()),
        headers: HeaderFields::of(event),
    }
}
