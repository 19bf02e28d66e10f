//! Finding JSON inside failure text: upstream error bodies arrive as JSON, JSON after a
//! text prefix ("upstream error: {…}"), or several JSON values in a row; CPA's
//! redacted failure summary keeps that shape.

use serde_json::Value;

/// Every JSON object or array found in `text`, in order: the whole text when it is JSON
/// (several concatenated values included), else each value starting at a `{` or `[`
/// that parses, scanning on after its end.
pub fn json_values(text: &str) -> Vec<Value> {
    let text = text.trim();
    if text.is_empty() {
        return Vec::new();
    }
    let whole: Result<Vec<Value>, _> = serde_json::Deserializer::from_str(text)
        .into_iter::<Value>()
        .collect();
    if let Ok(values) = whole
        && !values.is_empty()
    {
        return values;
    }
    let mut found = Vec::new();
    let mut index = 0;
    let bytes = text.as_bytes();
    while index < bytes.len() {
        if matches!(bytes[index], b'{' | b'[') {
            let mut stream =
                serde_json::Deserializer::from_str(&text[index..]).into_iter::<Value>();
            if let Some(Ok(value)) = stream.next() {
                let consumed = stream.byte_offset().max(1);
                found.push(value);
                index += consumed;
                continue;
            }
        }
        index += 1;
    }
    found
}

/// Visits `value` and every object and array below it, depth first; stops at the first
/// visit that returns `Some`.
pub fn find_map<T>(value: &Value, visit: &mut impl FnMut(&Value) -> Option<T>) -> Option<T> {
    if let Some(found) = visit(value) {
        return Some(found);
    }
    match value {
        Value::Object(members) => members.values().find_map(|child| find_map(child, visit)),
        Value::Array(items) => items.iter().find_map(|child| find_map(child, visit)),
        _ => None,
    }
}

/// A value as trimmed text (numbers in decimal).
pub fn as_text(value: &Value) -> Option<String> {
    match value {
        Value::String(text) => Some(text.trim().to_string()),
        Value::Number(number) => Some(number.to_string()),
        _ => None,
    }
}

/// A reset time in Unix ms from a JSON value: seconds from `base_ms` when `relative`,
/// else an absolute time (RFC 3339, RFC 1123/2822, `YYYY-MM-DD HH:MM:SS[ zone]`, or a
/// number: above 1e12 milliseconds, above 1e9 seconds).
pub fn reset_ms(value: &Value, base_ms: i64, relative: bool) -> Option<i64> {
    let text = as_text(value)?;
    if text.is_empty() || text.eq_ignore_ascii_case("null") {
        return None;
    }
    if !relative && let Some(at) = parse_time(&text) {
        return Some(at);
    }
    let number: f64 = text
        .parse()
        .ok()
        .filter(|number: &f64| number.is_finite())?;
    if number <= 0.0 {
        return None;
    }
    if relative {
        return base_ms.checked_add((number * 1000.0) as i64);
    }
    if number > 1e12 {
        Some(number as i64)
    } else if number > 1e9 {
        Some((number as i64).saturating_mul(1000))
    } else {
        None
    }
}

fn parse_time(text: &str) -> Option<i64> {
    if let Ok(timestamp) = text.parse::<jiff::Timestamp>() {
        return Some(timestamp.as_millisecond());
    }
    if let Ok(zoned) = jiff::fmt::rfc2822::parse(text) {
        return Some(zoned.timestamp().as_millisecond());
    }
    // `2026-08-22 15:30:29` (UTC), optionally followed by a zone name.
    let mut parts = text.splitn(3, ' ');
    let (date, time) = (parts.next()?, parts.next()?);
    let zone = parts.next().unwrap_or("UTC");
    let civil: jiff::civil::DateTime = format!("{date}T{time}").parse().ok()?;
    let zone = if zone.eq_ignore_ascii_case("utc") || zone.eq_ignore_ascii_case("gmt") {
        jiff::tz::TimeZone::UTC
    } else {
        jiff::tz::TimeZone::get(zone).ok()?
    };
    civil
        .to_zoned_datetime(zone)
        .ok()
        .map(|zoned| zoned.timestamp().as_millisecond())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn json_is_found_whole_after_text_and_concatenated() {
        assert_eq!(json_values(r#"{"a":1}"#), vec![json!({"a": 1})]);
        assert_eq!(json_values(r#"{"a":1} {"b":2}"#).len(), 2);
        assert_eq!(
            json_values(r#"upstream error: {"error":{"type":"x"}} (retry later)"#),
            vec![json!({"error": {"type": "x"}})]
        );
        assert!(json_values("no json here").is_empty());
        assert!(json_values("").is_empty());
    }

    #[test]
    fn reset_times_in_every_spelling() {
        let base = 1_700_000_000_000;
        assert_eq!(reset_ms(&json!(60), base, true), Some(base + 60_000));
        assert_eq!(reset_ms(&json!("1.5"), base, true), Some(base + 1_500));
        assert_eq!(
            reset_ms(&json!(1_800_000_000), base, false),
            Some(1_800_000_000_000)
        );
        assert_eq!(
            reset_ms(&json!(1_800_000_000_123i64), base, false),
            Some(1_800_000_000_123)
        );
        assert_eq!(reset_ms(&json!(5), base, false), None);
        assert_eq!(
            reset_ms(&json!("2026-08-22T15:30:29Z"), base, false),
            Some(1_787_412_629_000)
        );
        assert_eq!(
            reset_ms(&json!("Sat, 22 Aug 2026 15:30:29 GMT"), base, false),
            Some(1_787_412_629_000)
        );
        assert_eq!(
            reset_ms(&json!("2026-08-22 15:30:29"), base, false),
            Some(1_787_412_629_000)
        );
        assert_eq!(reset_ms(&json!(null), base, false), None);
        assert_eq!(reset_ms(&json!(-3), base, true), None);
    }
}
