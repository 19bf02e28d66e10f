//! Failed requests as failure lists show them (dashboard and monitoring
//! `recent_failures`).

#![warn(missing_docs)]

use serde::Serialize;

use super::headers::HeaderFields;
use super::identity::{IdentityFields, RecentFailureKeys};
use super::query::RawEvent;

/// A failed request as shown in failure lists: the redacted summary only, never a
/// raw body; no client IP, forwarded-for or user agent.
#[derive(Debug, Serialize)]
pub struct RecentFailure {
    /// When the request started, Unix ms.
    pub timestamp_ms: i64,
    /// The analytics model.
    pub model: String,
    /// The credential and client key.
    #[serde(flatten)]
    pub identity: IdentityFields<RecentFailureKeys>,
    /// CPA's endpoint (`METHOD /path`).
    pub endpoint: String,
    /// The latency, ms.
    pub duration_ms: Option<i64>,
    /// The upstream HTTP status.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fail_status_code: Option<i64>,
    /// The redacted failure summary.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fail_summary: Option<String>,
    /// Facts from the response headers.
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
