//! Quota cooldown triggers (automation spec §3.2): which newly collected failures say that
//! a credential is out of quota until a known time.
//!
//! - **Codex usage limit** (owner [`Owner::CodexUsageLimit`]): HTTP 429 from a Codex
//!   credential. The reset comes from the response headers when they signal the limit (a
//!   window at 100 %, or an error code naming `usage_limit_reached`), else from the error
//!   body (`{"type":"usage_limit_reached","resets_at"|"resets_in_seconds":…}`).
//! - **xAI included free usage exhausted** (owner [`Owner::XaiFreeUsage`]): 402 or 429
//!   from a native xAI credential whose body carries the code
//!   `subscription:free-usage-exhausted`. The reset comes from the body (absolute keys
//!   first, then `reset_after_seconds`), else 24 hours after the event.
//!
//! A trigger needs the credential's auth file (from enrichment) and a reset in the future.

#![warn(missing_docs)]

use serde_json::{Map, Value};

use super::authfile::normalize_provider;
use super::jsonscan::{as_text, find_map, json_values, reset_ms};
use crate::event::UsageEvent;

/// The xAI error code for exhausted included free usage.
pub const XAI_FREE_USAGE_CODE: &str = "subscription:free-usage-exhausted";
const XAI_FREE_USAGE_WINDOW_MS: i64 = 24 * 60 * 60 * 1000;

/// Who disabled a credential for a quota cooldown (stored as these strings, which Go
/// databases use too).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Owner {
    /// A Codex credential answered 429 `usage_limit_reached`.
    CodexUsageLimit,
    /// An xAI credential exhausted its included free usage.
    XaiFreeUsage,
}

impl Owner {
    /// The owner as stored (`cpamp_usage_429`, `cpamp_xai_free_usage`).
    pub fn as_str(self) -> &'static str {
        match self {
            Owner::CodexUsageLimit => "cpamp_usage_429",
            Owner::XaiFreeUsage => "cpamp_xai_free_usage",
        }
    }

    /// The stored name back to an owner; `None` for anything else.
    pub fn parse(text: &str) -> Option<Owner> {
        match text.trim() {
            "cpamp_usage_429" => Some(Owner::CodexUsageLimit),
            "cpamp_xai_free_usage" => Some(Owner::XaiFreeUsage),
            _ => None,
        }
    }

    /// The reason code the audit log and panel show.
    pub fn reason_code(self) -> &'static str {
        match self {
            Owner::CodexUsageLimit => "codex_usage_limit_reached",
            Owner::XaiFreeUsage => "xai_free_usage_exhausted",
        }
    }
}

/// A credential to put in cooldown.
#[derive(Debug, Clone, PartialEq)]
pub struct Trigger {
    /// Which rule fired.
    pub owner: Owner,
    /// The credential's auth file name.
    pub auth_file: String,
    /// The credential's `auth_index`.
    pub auth_index: String,
    /// Empty when it only repeats the file name.
    pub account_snapshot: String,
    /// The credential's provider.
    pub provider: String,
    /// `five_hour`, `weekly`, `monthly`, `rolling_24h` or `unknown`.
    pub window_kind: String,
    /// Unix ms when the quota resets and the credential may be enabled again.
    pub recover_at_ms: i64,
    /// The event that fired the trigger.
    pub event_hash: String,
    /// The xAI usage facts (JSON object), for the panel's cooldown hint.
    pub evidence: Option<Value>,
}

/// The trigger an event fires, if any. `now_ms` decides whether the reset is still ahead.
pub fn detect(event: &UsageEvent, now_ms: i64) -> Option<Trigger> {
    if !event.failed {
        return None;
    }
    let file = event.auth_file_snapshot.as_deref().unwrap_or("").trim();
    if file.is_empty() {
        return None;
    }
    let status = event.fail_status_code.unwrap_or(0);
    let provider = normalize_provider(
        event
            .provider
            .as_deref()
            .filter(|provider| !provider.trim().is_empty())
            .or(event.auth_provider_snapshot.as_deref())
            .unwrap_or(""),
    );
    let (owner, recover_at_ms, window_kind, evidence) = if status == 429 && provider == "codex" {
        let (recover_at_ms, window_kind) = codex_reset(event, now_ms)?;
        (Owner::CodexUsageLimit, recover_at_ms, window_kind, None)
    } else if (status == 402 || status == 429) && is_native_xai(event) {
        let (recover_at_ms, evidence) = xai_reset(event, now_ms)?;
        (
            Owner::XaiFreeUsage,
            recover_at_ms,
            "rolling_24h".to_string(),
            Some(evidence),
        )
    } else {
        return None;
    };
    if recover_at_ms <= now_ms {
        return None;
    }
    let account = event.account_snapshot.as_deref().unwrap_or("").trim();
    Some(Trigger {
        owner,
        auth_file: file.to_string(),
        auth_index: event.auth_index.clone().unwrap_or_default(),
        account_snapshot: if account == file {
            String::new()
        } else {
            account.to_string()
        },
        provider: if provider.is_empty() {
            normalize_provider(event.auth_provider_snapshot.as_deref().unwrap_or(""))
        } else {
            provider
        },
        window_kind,
        recover_at_ms,
        event_hash: event.event_hash.clone(),
        evidence,
    })
}

/// The response-header facts cpamp keeps (`response_metadata_json`).
fn metadata(event: &UsageEvent) -> Option<Map<String, Value>> {
    let text = event.response_metadata_json.as_deref()?;
    match serde_json::from_str(text) {
        Ok(Value::Object(object)) => Some(object),
        _ => None,
    }
}

fn window_kind(minutes: Option<i64>) -> &'static str {
    match minutes {
        Some(299..=301) => "five_hour",
        Some(10_079..=10_081) => "weekly",
        Some(40_319..=44_641) => "monthly",
        _ => "unknown",
    }
}

fn is_usage_limit_text(text: &str) -> bool {
    text.trim()
        .to_ascii_lowercase()
        .replace('-', "_")
        .contains("usage_limit_reached")
}

/// Reset and window kind of a Codex 429.
fn codex_reset(event: &UsageEvent, now_ms: i64) -> Option<(i64, String)> {
    let metadata = metadata(event);
    let quota = metadata
        .as_ref()
        .and_then(|metadata| metadata.get("quota"))
        .and_then(Value::as_object);
    let windows: Vec<&Map<String, Value>> = ["primary", "secondary"]
        .iter()
        .filter_map(|key| {
            quota
                .and_then(|quota| quota.get(*key))
                .and_then(Value::as_object)
        })
        .collect();
    let is_full = |window: &Map<String, Value>| {
        window
            .get("used_percent")
            .and_then(Value::as_f64)
            .is_some_and(|used| used >= 100.0)
    };
    let error_texts = [
        event.header_error_kind.as_deref(),
        event.header_error_code.as_deref(),
    ];
    let header_signal = windows.iter().any(|window| is_full(window))
        || error_texts
            .iter()
            .flatten()
            .any(|text| is_usage_limit_text(text));
    if header_signal {
        // The latest reset among the full windows, else Retry-After.
        let full_windows: Vec<&Map<String, Value>> = windows
            .iter()
            .copied()
            .filter(|window| is_full(window))
            .collect();
        let reset = full_windows
            .iter()
            .filter_map(|window| window.get("reset_at_ms").and_then(Value::as_i64))
            .max()
            .or_else(|| {
                quota
                    .and_then(|quota| quota.get("retry_after_at_ms"))
                    .and_then(Value::as_i64)
            });
        if let Some(reset) = reset.filter(|reset| *reset > now_ms) {
            let kind = full_windows
                .iter()
                .max_by_key(|window| window.get("reset_at_ms").and_then(Value::as_i64))
                .map(|window| window_kind(window.get("window_minutes").and_then(Value::as_i64)))
                .unwrap_or("unknown");
            return Some((reset, kind.to_string()));
        }
    }
    let summary = event.fail_summary.as_deref().unwrap_or("");
    let reset = json_values(summary)
        .iter()
        .find_map(|value| find_map(value, &mut |value| usage_limit_reset(value, now_ms)))?;
    Some((reset, "unknown".to_string()))
}

fn is_usage_limit_object(object: &Map<String, Value>) -> bool {
    object
        .get("type")
        .and_then(as_text)
        .is_some_and(|kind| kind.eq_ignore_ascii_case("usage_limit_reached"))
}

fn explicit_reset(object: &Map<String, Value>, now_ms: i64) -> Option<i64> {
    for key in ["resets_at", "resetsAt"] {
        if let Some(value) = object.get(key) {
            return reset_ms(value, now_ms, false);
        }
    }
    for key in ["resets_in_seconds", "resetsInSeconds"] {
        if let Some(value) = object.get(key) {
            return reset_ms(value, now_ms, true);
        }
    }
    None
}

/// A `usage_limit_reached` object's reset (the object itself, or its `error` member with
/// the reset beside it).
fn usage_limit_reset(value: &Value, now_ms: i64) -> Option<i64> {
    let object = value.as_object()?;
    if is_usage_limit_object(object)
        && let Some(reset) = explicit_reset(object, now_ms)
    {
        return Some(reset);
    }
    let error = object.get("error")?.as_object()?;
    if is_usage_limit_object(error) {
        return explicit_reset(error, now_ms).or_else(|| explicit_reset(object, now_ms));
    }
    None
}

/// A native xAI credential: the provider (or its snapshot) is xAI, or the executor is
/// xAI's with no provider or a bare `grok` one (a `grok` provider alone can name an
/// OpenAI-compatible proxy).
pub fn is_native_xai(event: &UsageEvent) -> bool {
    let provider = normalize_provider(event.provider.as_deref().unwrap_or(""));
    let snapshot = normalize_provider(event.auth_provider_snapshot.as_deref().unwrap_or(""));
    let raw_provider = event
        .provider
        .as_deref()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let raw_snapshot = event
        .auth_provider_snapshot
        .as_deref()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let named_xai = |raw: &str, normalized: &str| normalized == "xai" && raw != "grok";
    if named_xai(&raw_provider, &provider) || named_xai(&raw_snapshot, &snapshot) {
        return true;
    }
    let executor = event
        .executor_type
        .as_deref()
        .unwrap_or("")
        .to_ascii_lowercase()
        .replace(['-', '_'], "");
    executor.starts_with("xai") && (raw_provider.is_empty() || raw_provider == "grok")
}

const XAI_ABSOLUTE_KEYS: &[&str] = &[
    "reset_at",
    "resetAt",
    "resets_at",
    "resetsAt",
    "period_end",
    "periodEnd",
    "billing_period_end",
    "billingPeriodEnd",
];
const XAI_RELATIVE_KEYS: &[&str] = &["reset_after_seconds", "resetAfterSeconds"];

fn is_header_container(key: &str) -> bool {
    let key = key.trim().to_ascii_lowercase().replace(['-', ' '], "_");
    matches!(
        key.as_str(),
        "headers" | "response_headers" | "responseheaders"
    )
}

fn keyed_reset(value: &Value, keys: &[&str], base_ms: i64, relative: bool) -> Option<i64> {
    match value {
        Value::Object(object) => {
            for key in keys {
                if let Some(reset) = object
                    .get(*key)
                    .and_then(|value| reset_ms(value, base_ms, relative))
                {
                    return Some(reset);
                }
            }
            let mut names: Vec<&String> = object.keys().collect();
            names.sort();
            names
                .into_iter()
                .filter(|name| !is_header_container(name))
                .find_map(|name| keyed_reset(&object[name], keys, base_ms, relative))
        }
        Value::Array(items) => items
            .iter()
            .find_map(|item| keyed_reset(item, keys, base_ms, relative)),
        _ => None,
    }
}

/// The reset time and evidence (`ProviderUsageMetadata`: `actual`, `limit`, `model`
/// when xAI's message names them) of a native xAI failure that reports its included
/// free usage exhausted (402 or 429 with `subscription:free-usage-exhausted`).
pub fn xai_free_usage(event: &UsageEvent, now_ms: i64) -> Option<(i64, Value)> {
    let status = event.fail_status_code?;
    if !event.failed || !(status == 402 || status == 429) || !is_native_xai(event) {
        return None;
    }
    xai_reset(event, now_ms)
}

/// Reset and evidence of an xAI free-usage failure.
fn xai_reset(event: &UsageEvent, now_ms: i64) -> Option<(i64, Value)> {
    let summary = event.fail_summary.as_deref().unwrap_or("");
    let values = json_values(summary);
    let coded = values.iter().any(|value| {
        find_map(value, &mut |value| {
            value
                .get("code")
                .and_then(as_text)
                .filter(|code| code.eq_ignore_ascii_case(XAI_FREE_USAGE_CODE))
        })
        .is_some()
    }) || summary.to_ascii_lowercase().contains(XAI_FREE_USAGE_CODE);
    if !coded {
        return None;
    }
    let observed_ms = if event.timestamp_ms > 0 {
        event.timestamp_ms
    } else {
        now_ms
    };
    let explicit = values
        .iter()
        .find_map(|value| keyed_reset(value, XAI_ABSOLUTE_KEYS, observed_ms, false))
        .or_else(|| {
            values
                .iter()
                .find_map(|value| keyed_reset(value, XAI_RELATIVE_KEYS, observed_ms, true))
        })
        .filter(|reset| *reset > observed_ms);
    let recover_at_ms = explicit.unwrap_or(observed_ms + XAI_FREE_USAGE_WINDOW_MS);
    let mut evidence = serde_json::json!({
        "provider": "xai",
        "kind": "included_free_usage",
        "state": "exhausted",
        "code": XAI_FREE_USAGE_CODE,
        "unit": "tokens",
        "window_kind": "rolling_24h",
        "observed_at_ms": observed_ms,
        "recover_at_ms": recover_at_ms,
        "source": "response_body",
    });
    if let Some(object) = evidence.as_object_mut() {
        if explicit.is_none() {
            object.insert("recover_at_estimated".into(), Value::Bool(true));
        }
        let model = event.model.trim();
        if !model.is_empty() && model != "-" {
            object.insert("model".into(), Value::String(model.to_string()));
        }
        if let Some((actual, limit)) = token_counts(summary) {
            object.insert("actual".into(), Value::from(actual));
            object.insert("limit".into(), Value::from(limit));
        }
    }
    Some((recover_at_ms, evidence))
}

/// `Tokens (actual/limit): 1200/1000` in xAI's message.
fn token_counts(text: &str) -> Option<(i64, i64)> {
    let lower = text.to_ascii_lowercase();
    let start = lower.find("tokens (actual/limit):")? + "tokens (actual/limit):".len();
    let rest = text[start..].trim_start();
    let end = rest
        .find(|character: char| !(character.is_ascii_digit() || character == '/'))
        .unwrap_or(rest.len());
    let (actual, limit) = rest[..end].split_once('/')?;
    Some((actual.parse().ok()?, limit.parse().ok()?))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]
mod tests {
    use super::*;

    const NOW: i64 = 1_787_400_000_000;

    fn codex_failure(summary: &str, metadata: Option<&str>) -> UsageEvent {
        UsageEvent {
            event_hash: "h".into(),
            timestamp_ms: NOW - 1_000,
            provider: Some("codex".into()),
            auth_index: Some("3f9c".into()),
            auth_file_snapshot: Some("codex-a.json".into()),
            account_snapshot: Some("a@example.com".into()),
            failed: true,
            fail_status_code: Some(429),
            fail_summary: Some(summary.into()),
            response_metadata_json: metadata.map(str::to_string),
            ..UsageEvent::default()
        }
    }

    #[test]
    fn a_full_codex_window_resets_when_the_header_says() {
        let metadata = format!(
            r#"{{"quota":{{"primary":{{"used_percent":100.0,"window_minutes":300,"reset_at_ms":{}}},"secondary":{{"used_percent":40.0,"window_minutes":10080,"reset_at_ms":{}}}}}}}"#,
            NOW + 60_000,
            NOW + 600_000
        );
        let trigger = detect(&codex_failure("", Some(&metadata)), NOW).unwrap();
        assert_eq!(trigger.owner, Owner::CodexUsageLimit);
        assert_eq!(trigger.recover_at_ms, NOW + 60_000);
        assert_eq!(trigger.window_kind, "five_hour");
        assert_eq!(trigger.auth_file, "codex-a.json");
        assert_eq!(trigger.account_snapshot, "a@example.com");
    }

    #[test]
    fn the_error_body_gives_the_reset_otherwise() {
        let body = r#"{"error":{"type":"usage_limit_reached","message":"The usage limit has been reached","resets_in_seconds":120}}"#;
        let trigger = detect(&codex_failure(body, None), NOW).unwrap();
        assert_eq!(trigger.recover_at_ms, NOW + 120_000);
        assert_eq!(trigger.window_kind, "unknown");
        let prefixed = format!(
            "upstream: {}",
            body.replace("\"resets_in_seconds\":120", "\"resets_at\":1787403600")
        );
        assert_eq!(
            detect(&codex_failure(&prefixed, None), NOW)
                .unwrap()
                .recover_at_ms,
            1_787_403_600_000
        );
    }

    #[test]
    fn no_trigger_without_file_reset_or_codex_429() {
        let body = r#"{"error":{"type":"usage_limit_reached","resets_in_seconds":120}}"#;
        let mut event = codex_failure(body, None);
        event.auth_file_snapshot = None;
        assert!(
            detect(&event, NOW).is_none(),
            "no auth file: nothing to disable"
        );
        let mut event = codex_failure(body, None);
        event.fail_status_code = Some(500);
        assert!(detect(&event, NOW).is_none());
        let mut event = codex_failure(body, None);
        event.provider = Some("claude".into());
        assert!(detect(&event, NOW).is_none());
        let past = r#"{"error":{"type":"usage_limit_reached","resets_at":1600000000}}"#;
        assert!(detect(&codex_failure(past, None), NOW).is_none());
        assert!(
            detect(
                &codex_failure(r#"{"error":{"type":"rate_limit"}}"#, None),
                NOW
            )
            .is_none()
        );
        let mut ok = codex_failure(body, None);
        ok.failed = false;
        assert!(detect(&ok, NOW).is_none());
    }

    #[test]
    fn xai_free_usage_defaults_to_a_day() {
        let mut event = codex_failure(
            r#"{"code":"subscription:free-usage-exhausted","error":"You have used all free usage for model grok-4. Tokens (actual/limit): 1200/1000"}"#,
            None,
        );
        event.provider = Some("xai".into());
        event.fail_status_code = Some(402);
        event.model = "grok-4".into();
        let trigger = detect(&event, NOW).unwrap();
        assert_eq!(trigger.owner, Owner::XaiFreeUsage);
        assert_eq!(
            trigger.recover_at_ms,
            event.timestamp_ms + XAI_FREE_USAGE_WINDOW_MS
        );
        let evidence = trigger.evidence.unwrap();
        assert_eq!(evidence["recover_at_estimated"], true);
        assert_eq!(evidence["actual"], 1200);
        assert_eq!(evidence["limit"], 1000);
        assert_eq!(evidence["model"], "grok-4");

        event.fail_summary =
            Some(r#"{"code":"subscription:free-usage-exhausted","reset_after_seconds":30}"#.into());
        assert_eq!(
            detect(&event, NOW).unwrap().recover_at_ms,
            event.timestamp_ms + 30_000
        );
        event.provider = Some("grok".into());
        event.executor_type = None;
        assert!(
            detect(&event, NOW).is_none(),
            "a bare grok provider is not native xAI"
        );
        event.executor_type = Some("XAIExecutor".into());
        assert!(detect(&event, NOW).is_some());
    }
}
