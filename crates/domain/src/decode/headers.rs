//! Upstream response headers → quota, rate-limit, error and trace facts.
//!
//! CPA forwards the **unfiltered** upstream headers (cookies included), so
//! only an allow-list of headers is read, and only their parsed facts are
//! kept. The result feeds the `header_*` columns and a compact
//! `response_metadata_json` object whose top-level keys are `quota`,
//! `rate_limit`, `errors`, `trace` and `response`.

use std::borrow::Cow;

use serde_json::{Map, Value};

use super::json::Json;
use super::redact::sanitize_client_text;

/// Longest header text kept (trace ids, plan names, error codes).
const HEADER_TEXT_LIMIT: usize = 256;

/// What the headers of one event told us.
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct HeaderFacts {
    pub(crate) metadata_json: Option<String>,
    pub(crate) recover_at_ms: Option<i64>,
    pub(crate) used_percent: Option<f64>,
    pub(crate) plan_type: Option<String>,
    pub(crate) error_kind: Option<String>,
    pub(crate) error_code: Option<String>,
    pub(crate) trace_id: Option<String>,
}

/// Case-insensitive view of a `{"Header-Name": ["value", …]}` object.
struct Headers<'o, 'a> {
    members: &'o [(Cow<'a, str>, Json<'a>)],
}

impl Headers<'_, '_> {
    /// The first non-empty value of a header (last duplicate key wins).
    fn text(&self, name: &str) -> Option<&str> {
        let value = self
            .members
            .iter()
            .rev()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value)?;
        let text = match value {
            Json::String(text) => text.as_ref(),
            Json::Array(items) => items.iter().find_map(|item| match item {
                Json::String(text) if !text.trim().is_empty() => Some(text.as_ref()),
                _ => None,
            })?,
            _ => return None,
        };
        let text = text.trim();
        if text.is_empty() { None } else { Some(text) }
    }

    fn clean(&self, name: &str) -> Option<String> {
        self.text(name)
            .and_then(|text| sanitize_client_text(text, HEADER_TEXT_LIMIT))
    }

    fn number(&self, name: &str) -> Option<f64> {
        self.text(name)?
            .parse::<f64>()
            .ok()
            .filter(|value| value.is_finite())
    }

    fn integer(&self, name: &str) -> Option<i64> {
        self.text(name)?.parse::<i64>().ok()
    }
}

/// One Codex usage window (`X-Codex-Primary-*` / `X-Codex-Secondary-*`).
struct Window {
    used_percent: Option<f64>,
    window_minutes: Option<i64>,
    reset_after_seconds: Option<i64>,
    reset_at_ms: Option<i64>,
}

impl Window {
    fn read(headers: &Headers<'_, '_>, which: &str, response_ms: i64) -> Option<Window> {
        let used_percent = headers.number(&format!("X-Codex-{which}-Used-Percent"));
        let window_minutes = headers.integer(&format!("X-Codex-{which}-Window-Minutes"));
        let reset_after_seconds = headers.integer(&format!("X-Codex-{which}-Reset-After-Seconds"));
        let reset_at_ms = match reset_after_seconds {
            Some(seconds) => offset_ms(response_ms, seconds),
            None => headers
                .integer(&format!("X-Codex-{which}-Reset-At"))
                .and_then(|seconds| seconds.checked_mul(1000)),
        };
        if used_percent.is_none() && window_minutes.is_none() && reset_at_ms.is_none() {
            return None;
        }
        Some(Window {
            used_percent,
            window_minutes,
            reset_after_seconds,
            reset_at_ms,
        })
    }

    fn to_value(&self) -> Value {
        let mut object = Map::new();
        insert_f64(&mut object, "used_percent", self.used_percent);
        insert_i64(&mut object, "window_minutes", self.window_minutes);
        insert_i64(&mut object, "reset_after_seconds", self.reset_after_seconds);
        insert_i64(&mut object, "reset_at_ms", self.reset_at_ms);
        Value::Object(object)
    }

    fn exhausted(&self) -> bool {
        self.used_percent.is_some_and(|used| used >= 100.0)
    }
}

fn offset_ms(base_ms: i64, seconds: i64) -> Option<i64> {
    base_ms.checked_add(seconds.checked_mul(1000)?)
}

fn insert_f64(object: &mut Map<String, Value>, key: &str, value: Option<f64>) {
    if let Some(number) = value.and_then(serde_json::Number::from_f64) {
        object.insert(key.to_string(), Value::Number(number));
    }
}

fn insert_i64(object: &mut Map<String, Value>, key: &str, value: Option<i64>) {
    if let Some(number) = value {
        object.insert(key.to_string(), Value::from(number));
    }
}

fn insert_text(object: &mut Map<String, Value>, key: &str, value: Option<String>) {
    if let Some(text) = value {
        object.insert(key.to_string(), Value::String(text));
    }
}

/// `Retry-After`: delay seconds or an HTTP date, as Unix ms.
fn retry_after_ms(headers: &Headers<'_, '_>, response_ms: i64) -> Option<i64> {
    if let Some(ms) = headers.integer("Retry-After-Ms") {
        return response_ms.checked_add(ms);
    }
    let text = headers.text("Retry-After")?;
    if let Ok(seconds) = text.parse::<i64>() {
        return offset_ms(response_ms, seconds);
    }
    jiff::fmt::rfc2822::parse(text)
        .ok()
        .map(|zoned| zoned.timestamp().as_millisecond())
}

/// Reads the allow-listed headers. `response_ms` is when the headers were
/// received (request start plus time to first byte, or plus latency when that
/// is unknown); relative resets are counted from it.
pub(crate) fn header_facts(headers: &Json<'_>, response_ms: i64) -> HeaderFacts {
    let Some(members) = headers.as_object() else {
        return HeaderFacts::default();
    };
    let headers = Headers { members };
    let mut facts = HeaderFacts::default();
    let mut metadata = Map::new();

    // Quota: Codex usage windows, Anthropic unified limits, Retry-After.
    let primary = Window::read(&headers, "Primary", response_ms);
    let secondary = Window::read(&headers, "Secondary", response_ms);
    let plan_type = headers.clean("X-Codex-Plan-Type");
    let unified_status = headers.clean("Anthropic-Ratelimit-Unified-Status");
    let unified_5h = headers.number("Anthropic-Ratelimit-Unified-5h-Utilization");
    let unified_7d = headers.number("Anthropic-Ratelimit-Unified-7d-Utilization");
    let unified_reset_ms = headers
        .integer("Anthropic-Ratelimit-Unified-Reset")
        .and_then(|seconds| seconds.checked_mul(1000));
    let retry_at_ms = retry_after_ms(&headers, response_ms);

    facts.used_percent = primary
        .as_ref()
        .and_then(|window| window.used_percent)
        .or_else(|| secondary.as_ref().and_then(|window| window.used_percent))
        // Anthropic reports utilisation as a fraction of 1.
        .or_else(|| unified_5h.map(|fraction| (fraction * 10_000.0).round() / 100.0));
    // When the quota is back: an explicit Retry-After first, then the reset of
    // an exhausted window, then the next reset of the primary window.
    let exhausted_reset = [primary.as_ref(), secondary.as_ref()]
        .into_iter()
        .flatten()
        .filter(|window| window.exhausted())
        .filter_map(|window| window.reset_at_ms)
        .max();
    facts.recover_at_ms = retry_at_ms
        .or(exhausted_reset)
        .or_else(|| primary.as_ref().and_then(|window| window.reset_at_ms))
        .or(unified_reset_ms);
    facts.plan_type = plan_type.clone();

    let mut quota = Map::new();
    insert_text(&mut quota, "plan_type", plan_type);
    if let Some(window) = &primary {
        quota.insert("primary".to_string(), window.to_value());
    }
    if let Some(window) = &secondary {
        quota.insert("secondary".to_string(), window.to_value());
    }
    insert_text(&mut quota, "unified_status", unified_status);
    insert_f64(&mut quota, "unified_5h_utilization", unified_5h);
    insert_f64(&mut quota, "unified_7d_utilization", unified_7d);
    insert_i64(&mut quota, "unified_reset_at_ms", unified_reset_ms);
    insert_i64(&mut quota, "retry_after_at_ms", retry_at_ms);
    insert_i64(&mut quota, "recover_at_ms", facts.recover_at_ms);
    insert_f64(&mut quota, "used_percent", facts.used_percent);
    if !quota.is_empty() {
        metadata.insert("quota".to_string(), Value::Object(quota));
    }

    // OpenAI-style rate-limit counters.
    let mut rate_limit = Map::new();
    for (header, key) in [
        ("X-Ratelimit-Limit-Requests", "limit_requests"),
        ("X-Ratelimit-Limit-Tokens", "limit_tokens"),
        ("X-Ratelimit-Remaining-Requests", "remaining_requests"),
        ("X-Ratelimit-Remaining-Tokens", "remaining_tokens"),
    ] {
        insert_i64(&mut rate_limit, key, headers.integer(header));
    }
    for (header, key) in [
        ("X-Ratelimit-Reset-Requests", "reset_requests"),
        ("X-Ratelimit-Reset-Tokens", "reset_tokens"),
    ] {
        insert_text(&mut rate_limit, key, headers.clean(header));
    }
    if !rate_limit.is_empty() {
        metadata.insert("rate_limit".to_string(), Value::Object(rate_limit));
    }

    // Errors reported in headers.
    facts.error_kind = headers
        .clean("X-Error-Type")
        .or_else(|| headers.clean("X-Error-Kind"));
    facts.error_code = headers.clean("X-Error-Code");
    let mut errors = Map::new();
    insert_text(&mut errors, "kind", facts.error_kind.clone());
    insert_text(&mut errors, "code", facts.error_code.clone());
    if let Some(retry) = headers.text("X-Should-Retry")
        && (retry.eq_ignore_ascii_case("true") || retry.eq_ignore_ascii_case("false"))
    {
        errors.insert(
            "should_retry".to_string(),
            Value::Bool(retry.eq_ignore_ascii_case("true")),
        );
    }
    if !errors.is_empty() {
        metadata.insert("errors".to_string(), Value::Object(errors));
    }

    // Trace ids: the provider's request id first, then the CDN's.
    let request_id = headers
        .clean("X-Request-Id")
        .or_else(|| headers.clean("Request-Id"))
        .or_else(|| headers.clean("X-Trace-Id"))
        .or_else(|| headers.clean("X-Amzn-Requestid"));
    let cf_ray = headers.clean("Cf-Ray");
    facts.trace_id = request_id.clone().or_else(|| cf_ray.clone());
    let mut trace = Map::new();
    insert_text(&mut trace, "request_id", request_id);
    insert_text(&mut trace, "cf_ray", cf_ray);
    if !trace.is_empty() {
        metadata.insert("trace".to_string(), Value::Object(trace));
    }

    let mut response = Map::new();
    insert_text(&mut response, "content_type", headers.clean("Content-Type"));
    insert_text(&mut response, "server", headers.clean("Server"));
    if !response.is_empty() {
        metadata.insert("response".to_string(), Value::Object(response));
    }

    if !metadata.is_empty() {
        facts.metadata_json = serde_json::to_string(&Value::Object(metadata)).ok();
    }
    facts
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::json::parse;

    #[test]
    fn codex_windows_and_trace() {
        let headers = parse(
            r#"{"Cf-Ray":["ray-1"],"Set-Cookie":["a=b"],"X-Codex-Plan-Type":["pro"],"X-Codex-Primary-Reset-After-Seconds":["100"],"X-Codex-Primary-Used-Percent":["12"],"X-Codex-Primary-Window-Minutes":["300"],"X-Codex-Secondary-Used-Percent":["8"],"X-Request-Id":["req-1"]}"#,
        )
        .expect("valid JSON");
        let facts = header_facts(&headers, 1_000_000);
        assert_eq!(facts.used_percent, Some(12.0));
        assert_eq!(facts.recover_at_ms, Some(1_100_000));
        assert_eq!(facts.plan_type.as_deref(), Some("pro"));
        assert_eq!(facts.trace_id.as_deref(), Some("req-1"));
        let metadata = facts.metadata_json.expect("metadata");
        assert!(
            !metadata.contains("a=b") && !metadata.to_ascii_lowercase().contains("cookie"),
            "{metadata}"
        );
        assert!(metadata.contains(r#""primary":{"reset_after_seconds":100,"reset_at_ms":1100000,"used_percent":12.0,"window_minutes":300}"#), "{metadata}");
    }

    #[test]
    fn retry_after_wins_and_accepts_dates() {
        let headers = parse(r#"{"retry-after":"37","X-Codex-Primary-Used-Percent":["100"],"X-Codex-Primary-Reset-After-Seconds":["500"]}"#).expect("valid");
        assert_eq!(header_facts(&headers, 0).recover_at_ms, Some(37_000));
        let headers = parse(r#"{"Retry-After":["Sat, 22 Aug 2026 14:32:11 GMT"]}"#).expect("valid");
        assert_eq!(
            header_facts(&headers, 0).recover_at_ms,
            Some(1_787_409_131_000)
        );
    }

    #[test]
    fn nothing_recognised_gives_nothing() {
        let headers = parse(r#"{"Set-Cookie":["a=b"],"Vary":["Origin"]}"#).expect("valid");
        assert_eq!(header_facts(&headers, 0), HeaderFacts::default());
        assert_eq!(header_facts(&Json::Null, 0), HeaderFacts::default());
    }

    #[test]
    fn anthropic_utilisation_is_a_fraction() {
        let headers = parse(r#"{"Anthropic-Ratelimit-Unified-5h-Utilization":["0.31"],"Anthropic-Ratelimit-Unified-Status":["allowed"],"Request-Id":["req_1"],"X-Error-Type":["overloaded_error"]}"#).expect("valid");
        let facts = header_facts(&headers, 0);
        assert_eq!(facts.used_percent, Some(31.0));
        assert_eq!(facts.trace_id.as_deref(), Some("req_1"));
        assert_eq!(facts.error_kind.as_deref(), Some("overloaded_error"));
    }
}
