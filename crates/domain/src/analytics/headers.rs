//! The response-header metadata of an event as rows show it (event items, failure
//! lists, header snapshots): the stored metadata object and the header fields
//! parsed out of it, one flattened type.

#![warn(missing_docs)]

use serde::Serialize;
use serde_json::value::RawValue;

use super::query::RawEvent;

fn is_empty_str(value: &str) -> bool {
    value.is_empty()
}

/// Header metadata of one event; each key is left out when empty.
#[derive(Debug, Default, Serialize)]
pub struct HeaderFields {
    /// The parsed header facts (`response_metadata_json`), as JSON.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response_metadata: Option<Box<RawValue>>,
    /// Unix ms when an exhausted quota resets.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub header_quota_recover_at_ms: Option<i64>,
    /// Quota used, percent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub header_quota_used_percent: Option<f64>,
    /// The account's plan.
    #[serde(skip_serializing_if = "is_empty_str")]
    pub header_quota_plan_type: String,
    /// The upstream's error kind.
    #[serde(skip_serializing_if = "is_empty_str")]
    pub header_error_kind: String,
    /// The upstream's error code.
    #[serde(skip_serializing_if = "is_empty_str")]
    pub header_error_code: String,
    /// The upstream's request or trace id.
    #[serde(skip_serializing_if = "is_empty_str")]
    pub header_trace_id: String,
}

impl Clone for HeaderFields {
    fn clone(&self) -> HeaderFields {
        HeaderFields {
            response_metadata: self.response_metadata.clone(),
            header_quota_recover_at_ms: self.header_quota_recover_at_ms,
            header_quota_used_percent: self.header_quota_used_percent,
            header_quota_plan_type: self.header_quota_plan_type.clone(),
            header_error_kind: self.header_error_kind.clone(),
            header_error_code: self.header_error_code.clone(),
            header_trace_id: self.header_trace_id.clone(),
        }
    }
}

impl HeaderFields {
    /// The header fields of a stored event.
    pub fn of(event: &RawEvent) -> HeaderFields {
        HeaderFields {
            response_metadata: response_metadata(event.response_metadata_json.as_deref()),
            header_quota_recover_at_ms: event.header_quota_recover_at_ms,
            header_quota_used_percent: event.header_quota_used_percent,
            header_quota_plan_type: event.header_quota_plan_type.to_string(),
            header_error_kind: event.header_error_kind.to_string(),
            header_error_code: event.header_error_code.to_string(),
            header_trace_id: event.header_trace_id.clone().unwrap_or_default(),
        }
    }

    /// Whether any header metadata is set.
    pub fn is_set(&self) -> bool {
        self.response_metadata.is_some()
            || self.header_quota_recover_at_ms.is_some()
            || self.header_quota_used_percent.is_some()
            || !self.header_quota_plan_type.is_empty()
            || !self.header_error_kind.is_empty()
            || !self.header_error_code.is_empty()
            || !self.header_trace_id.is_empty()
    }
}

/// The stored response metadata when it is a valid JSON object.
pub fn response_metadata(text: Option<&str>) -> Option<Box<RawValue>> {
    let text = text?.trim();
    if !(text.starts_with('{') && text.ends_with('}')) {
        return None;
    }
    RawValue::from_string(text.to_string()).ok()
}
