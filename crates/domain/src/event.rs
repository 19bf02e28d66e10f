//! The stored shape of one usage event (one upstream attempt reported by CPA).

/// One row of `usage_events`, already normalised, masked and redacted.
///
/// Every text field that may be absent is an `Option`; the decoder maps empty
/// strings to `None` so storage writes SQL `NULL` for them.
/// Secrets never reach this type: `source` is masked, API keys only appear as
/// hashes, and the failure body only as its redacted, size-capped summary. The raw
/// payload and the raw failure body are deliberately not kept (the Go server stored
/// them as `raw_json`/`fail_body` but never showed them; they can hold secrets).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UsageEvent {
    /// Lowercase hex SHA-256 of the dedupe pre-hash string; unique per stored row.
    pub event_hash: String,
    pub request_id: Option<String>,
    /// Request start, Unix milliseconds.
    pub timestamp_ms: i64,
    /// Request start as RFC 3339 UTC text (Go `RFC3339Nano` style).
    pub timestamp: String,
    pub provider: Option<String>,
    pub executor_type: Option<String>,
    /// Display model: requested model (alias) if known, else resolved model, else `-`.
    pub model: String,
    pub requested_model: Option<String>,
    pub resolved_model: Option<String>,
    pub endpoint: Option<String>,
    pub method: Option<String>,
    pub path: Option<String>,
    pub client_ip: Option<String>,
    pub x_forwarded_for: Option<String>,
    pub user_agent: Option<String>,
    pub auth_type: Option<String>,
    pub auth_index: Option<String>,
    /// Masked credential identity (never the raw key or full e-mail).
    pub source: Option<String>,
    pub source_hash: Option<String>,
    pub api_key_hash: Option<String>,
    pub account_snapshot: Option<String>,
    pub auth_label_snapshot: Option<String>,
    pub auth_file_snapshot: Option<String>,
    pub auth_provider_snapshot: Option<String>,
    pub auth_project_id_snapshot: Option<String>,
    pub auth_snapshot_at_ms: Option<i64>,
    pub reasoning_effort: Option<String>,
    /// Effective service tier.
    pub service_tier: Option<String>,
    pub request_service_tier: Option<String>,
    pub response_service_tier: Option<String>,
    pub cache_input_mode: Option<CacheInputMode>,
    pub tokens: TokenCounts,
    pub normalized: NormalizedTokens,
    pub latency_ms: Option<i64>,
    pub ttft_ms: Option<i64>,
    pub failed: bool,
    pub fail_status_code: Option<i64>,
    /// Redacted, size-capped failure text; safe to show.
    pub fail_summary: Option<String>,
    pub response_metadata_json: Option<String>,
    pub header_quota_recover_at_ms: Option<i64>,
    pub header_quota_used_percent: Option<f64>,
    pub header_quota_plan_type: Option<String>,
    pub header_error_kind: Option<String>,
    pub header_error_code: Option<String>,
    pub header_trace_id: Option<String>,
    /// Wall-clock ms when the payload was normalised.
    pub created_at_ms: i64,
}

/// Raw token counters as CPA reported them (unclamped).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TokenCounts {
    pub input: i64,
    pub output: i64,
    pub reasoning: i64,
    pub cached: i64,
    pub cache: i64,
    pub cache_read: i64,
    pub cache_creation: i64,
    pub total: i64,
}

/// Token buckets after cache-accounting normalisation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NormalizedTokens {
    pub uncached_input: i64,
    pub total_input: i64,
    pub cache_read: i64,
    pub cache_creation: i64,
}

/// Whether the provider counts cache tokens inside `input_tokens` or beside them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheInputMode {
    IncludedInInput,
    SeparateFromInput,
}

impl CacheInputMode {
    pub fn as_str(self) -> &'static str {
        match self {
            CacheInputMode::IncludedInInput => "included_in_input",
            CacheInputMode::SeparateFromInput => "separate_from_input",
        }
    }

    pub fn parse(text: &str) -> Option<CacheInputMode> {
        match text {
            "included_in_input" => Some(CacheInputMode::IncludedInInput),
            "separate_from_input" => Some(CacheInputMode::SeparateFromInput),
            _ => None,
        }
    }
}

/// A queue item that could not be turned into an event, kept with its reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// The original queue item, untrimmed (lossily decoded if it was not UTF-8).
    pub payload: String,
    pub reason: String,
    pub created_at_ms: i64,
}

/// What one queue item turned out to be.
#[derive(Debug, Clone, PartialEq)]
pub enum Decoded {
    /// A usage event to store.
    Event(Box<UsageEvent>),
    /// `{"refresh":true}`: CPA's credential metadata changed; caches of auth files should be dropped.
    Refresh,
    /// `{"support_refresh":true}`: sent first on every subscription; nothing to do.
    SupportRefresh,
    /// Blank item: nothing to store.
    Blank,
    /// Not a usage payload; kept as a dead letter.
    Dead(DeadLetter),
}

/// Formats Unix milliseconds as the stored RFC 3339 UTC text: `Z` suffix, fractional
/// seconds only when non-zero and without trailing zeros (`2026-01-01T00:00:00.12Z`).
pub fn format_timestamp_ms(timestamp_ms: i64) -> String {
    match jiff::Timestamp::from_millisecond(timestamp_ms) {
        Ok(timestamp) => timestamp.to_string(),
        Err(_) => String::from("1970-01-01T00:00:00Z"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_print_like_go_rfc3339nano() {
        assert_eq!(
            format_timestamp_ms(1_767_225_600_000),
            "2026-01-01T00:00:00Z"
        );
        assert_eq!(
            format_timestamp_ms(1_767_225_600_120),
            "2026-01-01T00:00:00.12Z"
        );
        assert_eq!(
            format_timestamp_ms(1_767_225_600_007),
            "2026-01-01T00:00:00.007Z"
        );
        assert_eq!(format_timestamp_ms(-1), "1969-12-31T23:59:59.999Z");
    }
}
