//! An exported record (a line of cpamp's or the Go server's usage export) back
//! into a [`UsageEvent`].
//!
//! Unlike a CPA payload, an exported record already holds stored values: the
//! event hash is its identity, the source is masked and the keys are hashes.
//! Every exported field is kept as it is, so importing an export and exporting
//! again gives the same bytes; only what is derived (cache accounting, the
//! normalised buckets, a missing total) is recomputed, and the failure summary
//! is redacted again in case the file came from a less careful producer.

use std::borrow::Cow;

use super::json::{self, Json, Number};
use super::{
    Members, SortedMembers, TokenSources, event_time, fail_status_code, first_present,
    infer_cache_mode, integer, normalize_tokens, optional_integer, redact, split_endpoint,
    text_field, text_of, time,
};
#[cfg(test)]
use crate::event::CacheInputMode;
use crate::event::{TokenCounts, UsageEvent};

/// Largest `response_metadata` object kept (bytes of compact JSON).
const METADATA_LIMIT: usize = 64 * 1024;

/// The event of an exported record (an object with a non-empty `event_hash`).
/// `text` is the record's JSON text when known: its `response_metadata` object
/// is then kept byte for byte, as the exporter stored it.
pub(crate) fn decode_exported(
    members: &[(Cow<'_, str>, Json<'_>)],
    text: Option<&str>,
    now_ms: i64,
) -> Result<UsageEvent, String> {
    let sorted = SortedMembers::new(members);
    let members = Members::Sorted(&sorted);
    let event_hash = text_field(members, &["event_hash", "eventHash"])
        .ok_or_else(|| "event_hash is empty".to_string())?;

    let time = match first_present(members, &["timestamp_ms", "timestampMs"]) {
        Some((key, value)) if *value != Json::Null => {
            let ms = integer(value, "", key)?;
            let text = first_present(members, &["timestamp"])
                .and_then(|(_, value)| match value {
                    Json::String(text) => time::parse_text(text.trim()),
                    _ => None,
                })
                .filter(|parsed| parsed.ms == ms)
                .map(|parsed| parsed.text);
            match text {
                Some(text) => time::EventTime { ms, text },
                None => time::from_millis(ms)
                    .ok_or_else(|| format!("{key} {ms} is outside the years 0000-9999"))?,
            }
        }
        _ => event_time(members, now_ms)?,
    };

    let request_id = text_field(members, &["request_id", "requestId"]);
    let requested_model = text_field(members, &["requested_model", "requestedModel"]);
    let resolved_model = text_field(members, &["resolved_model", "resolvedModel"]);
    let model = text_field(members, &["model"])
        .or_else(|| requested_model.clone())
        .or_else(|| resolved_model.clone())
        .unwrap_or_else(|| "-".to_string());

    let mut method = text_field(members, &["method"]).map(|method| method.to_uppercase());
    let mut path = text_field(members, &["path"]);
    let endpoint = match text_field(members, &["endpoint"]) {
        Some(endpoint) => {
            if let Some((endpoint_method, endpoint_path)) = split_endpoint(&endpoint) {
                method.get_or_insert_with(|| endpoint_method.to_string());
                path.get_or_insert_with(|| endpoint_path.to_string());
            }
            endpoint
        }
        None => match (&method, &path) {
            (Some(method), Some(path)) => format!("{method} {path}"),
            _ => "-".to_string(),
        },
    };

    let provider = text_field(members, &["provider"]);
    let executor_type = text_field(members, &["executor_type", "executorType"]);
    let auth_type = text_field(members, &["auth_type", "authType"]);
    let auth_index = text_field(members, &["auth_index", "authIndex"]);
    let source = text_field(members, &["source"]).map(|source| mask_again(&source));
    let source_hash = text_field(members, &["source_hash", "sourceHash"]).map(hash_field);
    let api_key_hash = text_field(members, &["api_key_hash", "apiKeyHash"]).map(hash_field);
    let account_snapshot = text_field(members, &["account_snapshot", "accountSnapshot"]);
    let auth_label_snapshot = text_field(members, &["auth_label_snapshot", "authLabelSnapshot"]);
    let auth_file_snapshot = text_field(members, &["auth_file_snapshot", "authFileSnapshot"]);
    let auth_provider_snapshot =
        text_field(members, &["auth_provider_snapshot", "authProviderSnapshot"]);
    let auth_project_id_snapshot = text_field(
        members,
        &["auth_project_id_snapshot", "authProjectIdSnapshot"],
    );
    let auth_snapshot_at_ms =
        optional_integer(members, &["auth_snapshot_at_ms", "authSnapshotAtMs"])?
            .filter(|ms| *ms > 0);
    let reasoning_effort = text_field(members, &["reasoning_effort", "reasoningEffort"]);

    let client_text = |keys: &[&'static str], limit| {
        first_present(members, keys)
            .and_then(|(_, value)| redact::sanitize_client_text(&text_of(value), limit))
    };
    let client_ip = client_text(&["client_ip", "clientIp"], super::CLIENT_IP_LIMIT);
    let x_forwarded_for = client_text(
        &["x_forwarded_for", "xForwardedFor"],
        super::FORWARDED_FOR_LIMIT,
    );
    let user_agent = client_text(&["user_agent", "userAgent"], super::USER_AGENT_LIMIT);

    // `service_tier` is the stored effective tier; the request tier defaults to it.
    let effective_tier = text_field(members, &["service_tier", "serviceTier"]);
    let request_tier = text_field(members, &["request_service_tier", "requestServiceTier"]);
    let response_tier = text_field(members, &["response_service_tier", "responseServiceTier"]);
    let service_tier = effective_tier
        .clone()
        .or_else(|| response_tier.clone())
        .or_else(|| request_tier.clone());
    let request_service_tier = request_tier.or(effective_tier);

    let sources = TokenSources::new(members);
    let mut tokens = TokenCounts {
        input: sources.count(super::INPUT_KEYS)?,
        output: sources.count(super::OUTPUT_KEYS)?,
        reasoning: sources.count(super::REASONING_KEYS)?,
        cached: sources.count(super::CACHED_KEYS)?,
        cache: sources.count(super::CACHE_KEYS)?,
        cache_read: sources.count(super::CACHE_READ_KEYS)?,
        cache_creation: sources.count(super::CACHE_CREATION_KEYS)?,
        total: sources.count(super::TOTAL_KEYS)?,
    };
    let cache_input_mode = sources.explicit_mode().unwrap_or_else(|| {
        infer_cache_mode(
            executor_type.as_deref().unwrap_or(""),
            &[
                provider.as_deref().unwrap_or(""),
                auth_provider_snapshot.as_deref().unwrap_or(""),
            ],
            &[
                resolved_model.as_deref().unwrap_or(""),
                requested_model.as_deref().unwrap_or(""),
                &model,
            ],
            tokens.cache_read,
            tokens.cache_creation,
        )
    });
    let normalized = normalize_tokens(&tokens, cache_input_mode);
    if tokens.total <= 0 {
        tokens.total = normalized
            .total_input
            .saturating_add(tokens.output.max(0))
            .saturating_add(tokens.reasoning.max(0));
    }

    let latency_ms = optional_integer(members, &["latency_ms", "latencyMs"])?;
    let ttft_ms = optional_integer(members, &["ttft_ms", "ttftMs"])?;
    let failed = match first_present(members, &["failed", "is_failed", "isFailed"]) {
        Some((_, value)) => truthy(value),
        None => false,
    };
    let fail_status_code = fail_status_code(members)?;
    let fail_summary = match text_field(members, &["fail_summary", "failSummary"]) {
        Some(summary) => redact::summarize(&summary),
        None => {
            let body = super::fail_body_text(members);
            if body.is_empty() {
                None
            } else {
                redact::summarize(&redact::truncate_with_marker(&body, super::FAIL_BODY_LIMIT))
            }
        }
    };

    let header_quota_recover_at_ms = optional_integer(
        members,
        &["header_quota_recover_at_ms", "headerQuotaRecoverAtMs"],
    )?
    .filter(|ms| *ms > 0);
    let header_quota_used_percent = match first_present(
        members,
        &["header_quota_used_percent", "headerQuotaUsedPercent"],
    ) {
        None | Some((_, Json::Null)) => None,
        Some((_, Json::Number(number))) => Some(match number {
            Number::Unsigned(value) => *value as f64,
            Number::Signed(value) => *value as f64,
            Number::Float(value) => *value,
        })
        .filter(|value| value.is_finite()),
        Some((key, Json::String(text))) => Some(
            text.trim()
                .parse::<f64>()
                .map_err(|_| format!("{key} must be a number; got {:?}", text.trim()))?,
        )
        .filter(|value| value.is_finite()),
        Some((key, other)) => {
            return Err(format!(
                "{key} must be a number; found {}",
                other.type_name()
            ));
        }
    };
    let header_quota_plan_type =
        text_field(members, &["header_quota_plan_type", "headerQuotaPlanType"]);
    let header_error_kind = text_field(members, &["header_error_kind", "headerErrorKind"]);
    let header_error_code = text_field(members, &["header_error_code", "headerErrorCode"]);
    let header_trace_id = text_field(members, &["header_trace_id", "headerTraceId"]);
    let response_metadata_json = match first_present(
        members,
        &[
            "response_metadata",
            "responseMetadata",
            "response_metadata_json",
        ],
    ) {
        Some((key, value @ Json::Object(members))) if !members.is_empty() => {
            match text.and_then(|text| json::raw_member(text, key)) {
                Some(raw) if raw.starts_with('{') => Some(raw.to_string()),
                _ => {
                    let mut out = String::new();
                    json::write_compact(&mut out, value);
                    Some(out)
                }
            }
        }
        Some((_, Json::String(text))) => metadata_from_text(text),
        _ => None,
    }
    .filter(|text| text.len() <= METADATA_LIMIT);

    let created_at_ms = optional_integer(members, &["created_at_ms", "createdAtMs"])?
        .filter(|ms| *ms > 0)
        .unwrap_or(now_ms);

    Ok(UsageEvent {
        event_hash,
        request_id,
        timestamp_ms: time.ms,
        timestamp: time.text,
        provider,
        executor_type,
        model,
        requested_model,
        resolved_model,
        endpoint: Some(endpoint),
        method,
        path,
        client_ip,
        x_forwarded_for,
        user_agent,
        auth_type,
        auth_index,
        source,
        source_hash,
        api_key_hash,
        account_snapshot,
        auth_label_snapshot,
        auth_file_snapshot,
        auth_provider_snapshot,
        auth_project_id_snapshot,
        auth_snapshot_at_ms,
        reasoning_effort,
        service_tier,
        request_service_tier,
        response_service_tier: response_tier,
        cache_input_mode: Some(cache_input_mode),
        tokens,
        normalized,
        latency_ms,
        ttft_ms,
        failed,
        fail_status_code,
        fail_summary,
        response_metadata_json,
        header_quota_recover_at_ms,
        header_quota_used_percent,
        header_quota_plan_type,
        header_error_kind,
        header_error_code,
        header_trace_id,
        created_at_ms,
    })
    .and_then(super::plausible)
}

/// `failed`: a boolean, a non-zero number, or `1`/`true`/`yes`/`on`.
fn truthy(value: &Json<'_>) -> bool {
    match value {
        Json::Bool(flag) => *flag,
        Json::Number(Number::Unsigned(number)) => *number != 0,
        Json::Number(Number::Signed(number)) => *number != 0,
        Json::Number(Number::Float(number)) => *number != 0.0,
        Json::String(text) => matches!(
            text.trim().to_ascii_lowercase().as_str(),
            "1" | "true" | "yes" | "on"
        ),
        _ => false,
    }
}

/// A source as an export carries it is already masked; one that is not (a
/// hand-made file) is masked now. Masked e-mails (`bob***@…`) are left alone
/// because masking them again would add stars.
fn mask_again(source: &str) -> String {
    if let Some(at) = source.find('@')
        && source[..at].ends_with("***")
    {
        return source.to_string();
    }
    redact::mask_source(source).into_owned()
}

/// A hash column: 64 hex characters are a SHA-256 already; anything else is
/// a raw value that must not be stored, so it is hashed.
fn hash_field(value: String) -> String {
    if value.len() == 64 && value.bytes().all(|byte| byte.is_ascii_hexdigit()) {
        value.to_ascii_lowercase()
    } else {
        redact::sha256_hex(&value)
    }
}

/// Metadata given as a string holding a JSON object.
fn metadata_from_text(text: &str) -> Option<String> {
    let trimmed = text.trim();
    let parsed = json::parse(trimmed).ok()?;
    match &parsed {
        Json::Object(members) if !members.is_empty() => {
            let mut out = String::new();
            json::write_compact(&mut out, &parsed);
            Some(out)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_line(line: &str) -> Result<UsageEvent, String> {
        let parsed = json::parse(line).expect("json");
        let members = parsed.as_object().expect("object");
        decode_exported(members, Some(line), 42)
    }

    #[test]
    fn the_spec_example_keeps_every_stored_value() {
        let event = decode_line(
            r#"{"request_id":"req-1","event_hash":"eh1","timestamp_ms":1735693200000,"timestamp":"2025-01-01T01:00:00Z","provider":"openai","executor_type":"openai","model":"gpt-5(high)","analytics_model":"gpt-5","requested_model":"gpt-5(high)","endpoint":"POST /v1/chat/completions","method":"POST","path":"/v1/chat/completions","auth_index":"a1","source":"key-1","source_hash":"sh1","api_key_hash":"kh1","input_tokens":1000,"output_tokens":200,"reasoning_tokens":50,"cached_tokens":400,"cache_tokens":0,"cache_read_tokens":0,"cache_creation_tokens":0,"total_tokens":1250,"latency_ms":1200,"ttft_ms":300,"failed":false,"created_at_ms":1735693200500}"#,
        )
        .expect("event");
        assert_eq!(event.event_hash, "eh1");
        assert_eq!(event.timestamp, "2025-01-01T01:00:00Z");
        assert_eq!(event.model, "gpt-5(high)");
        assert_eq!(event.source.as_deref(), Some("key-1"));
        assert_eq!(event.created_at_ms, 1_735_693_200_500);
        assert_eq!(event.tokens.cached, 400);
        assert_eq!(event.tokens.total, 1250);
        assert_eq!(event.latency_ms, Some(1200));
        assert_eq!(
            event.cache_input_mode,
            Some(CacheInputMode::IncludedInInput)
        );
        // Short values in hash columns are not hashes: they are hashed.
        assert_eq!(event.source_hash.as_deref().map(str::len), Some(64));
        assert!(event.fail_summary.is_none());
    }

    #[test]
    fn nanosecond_text_survives_and_a_mismatched_text_yields_to_the_milliseconds() {
        let event = decode_line(
            r#"{"event_hash":"e","timestamp_ms":1767225600123,"timestamp":"2026-01-01T00:00:00.123456789Z","model":"m"}"#,
        )
        .expect("event");
        assert_eq!(event.timestamp, "2026-01-01T00:00:00.123456789Z");
        let event = decode_line(
            r#"{"event_hash":"e","timestamp_ms":1767225600000,"timestamp":"2030-01-01T00:00:00Z","model":"m"}"#,
        )
        .expect("event");
        assert_eq!(event.timestamp, "2026-01-01T00:00:00Z");
    }

    #[test]
    fn secrets_in_hand_made_records_are_masked_hashed_and_redacted() {
        let event = decode_line(
            r#"{"event_hash":"e","timestamp_ms":1,"model":"m","source":"sk-proj-abcdefghijklmnopqrstuvwxyz","api_key_hash":"sk-live-key","failed":"yes","fail_summary":"Authorization: Bearer abcdefghijklmnop"}"#,
        )
        .expect("event");
        assert_eq!(event.source.as_deref(), Some("m:sk-p...wxyz"));
        assert_eq!(
            event.api_key_hash.as_deref(),
            Some(redact::sha256_hex("sk-live-key").as_str())
        );
        assert!(event.failed);
        let summary = event.fail_summary.expect("summary");
        assert!(!summary.contains("abcdefghijklmnop"), "{summary}");
        let masked =
            decode_line(r#"{"event_hash":"e","timestamp_ms":1,"source":"a***@example.com"}"#)
                .expect("event");
        assert_eq!(masked.source.as_deref(), Some("a***@example.com"));
    }

    #[test]
    fn an_explicit_cache_mode_wins_over_inference() {
        let event = decode_line(
            r#"{"event_hash":"e","timestamp_ms":1,"model":"gpt-5","cache_input_mode":"separate_from_input","input_tokens":100,"cache_read_tokens":50}"#,
        )
        .expect("event");
        assert_eq!(
            event.cache_input_mode,
            Some(CacheInputMode::SeparateFromInput)
        );
        assert_eq!(event.normalized.total_input, 150);
        assert_eq!(event.tokens.total, 150);
    }

    #[test]
    fn metadata_objects_are_kept_compact_and_bad_values_are_errors() {
        let event = decode_line(
            r#"{"event_hash":"e","timestamp_ms":1,"response_metadata":{"quota": {"used_percent": 12.5, "kind":"a<b"}},"header_quota_used_percent":0}"#,
        )
        .expect("event");
        // Kept byte for byte from the record's text.
        assert_eq!(
            event.response_metadata_json.as_deref(),
            Some(r#"{"quota": {"used_percent": 12.5, "kind":"a<b"}}"#)
        );
        let parsed =
            json::parse(r#"{"event_hash":"e","response_metadata":{"a" : 1.0}}"#).expect("json");
        let without_text =
            decode_exported(parsed.as_object().expect("object"), None, 1).expect("event");
        assert_eq!(
            without_text.response_metadata_json.as_deref(),
            Some(r#"{"a":1}"#)
        );
        assert_eq!(event.header_quota_used_percent, Some(0.0));
        let error =
            decode_line(r#"{"event_hash":"e","timestamp_ms":1,"header_quota_used_percent":[1]}"#)
                .expect_err("invalid");
        assert!(error.contains("header_quota_used_percent"), "{error}");
        let error = decode_line(r#"{"event_hash":"e","input_tokens":"99999999999999999999"}"#)
            .expect_err("invalid");
        assert!(error.contains("input_tokens"), "{error}");
    }
}
