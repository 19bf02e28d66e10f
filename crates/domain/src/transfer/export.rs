//! One stored event as an export line: NDJSON (the Go server's field set and
//! order) or a CSV row with the same columns.
//!
//! Both writers walk the same field list ([`EXPORT_FIELDS`]), so a column can
//! never be in one format and missing from the other.
//!
//! Never exported: client IP, `X-Forwarded-For`, user agent and the normalised
//! token columns. Failure bodies leave the database only as the redacted
//! `fail_summary` written at ingest.
//!
//! Deviation from the Go server: it left out `request_service_tier`,
//! `response_service_tier` and `cache_input_mode`, on the grounds that an import
//! re-derives them. It cannot always: the cache mode may come from the payload
//! or CPA's own token breakdown, and it decides the normalised input every
//! aggregate is built from. They are exported (right after `service_tier`) so an
//! export imported again yields identical aggregates. Importers that do not know
//! them ignore them.

use crate::analytics::query::RawEvent;
use crate::decode::json;

/// The export's columns, in line order.
pub const EXPORT_FIELDS: &[&str] = &[
    "request_id",
    "event_hash",
    "timestamp_ms",
    "timestamp",
    "provider",
    "executor_type",
    "model",
    "analytics_model",
    "requested_model",
    "resolved_model",
    "endpoint",
    "method",
    "path",
    "auth_type",
    "auth_index",
    "source",
    "source_hash",
    "api_key_hash",
    "account_snapshot",
    "auth_label_snapshot",
    "auth_file_snapshot",
    "auth_provider_snapshot",
    "auth_project_id_snapshot",
    "auth_snapshot_at_ms",
    "reasoning_effort",
    "service_tier",
    "request_service_tier",
    "response_service_tier",
    "cache_input_mode",
    "input_tokens",
    "output_tokens",
    "reasoning_tokens",
    "cached_tokens",
    "cache_tokens",
    "cache_read_tokens",
    "cache_creation_tokens",
    "total_tokens",
    "latency_ms",
    "ttft_ms",
    "failed",
    "fail_status_code",
    "fail_summary",
    "header_quota_recover_at_ms",
    "header_quota_used_percent",
    "header_quota_plan_type",
    "header_error_kind",
    "header_error_code",
    "header_trace_id",
    "created_at_ms",
    "response_metadata",
];

/// An export file format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportFormat {
    /// One JSON object per line (`application/x-ndjson`); what import reads.
    Jsonl,
    /// RFC 4180 CSV with a header row, for spreadsheets. Not importable.
    Csv,
}

impl ExportFormat {
    /// `jsonl` (also `ndjson`, `json`) or `csv`, case-insensitive.
    pub fn parse(text: &str) -> Option<ExportFormat> {
        match text.trim().to_ascii_lowercase().as_str() {
            "jsonl" | "ndjson" | "json" => Some(ExportFormat::Jsonl),
            "csv" => Some(ExportFormat::Csv),
            _ => None,
        }
    }

    /// The HTTP `Content-Type` of the format.
    pub fn content_type(self) -> &'static str {
        match self {
            ExportFormat::Jsonl => "application/x-ndjson",
            ExportFormat::Csv => "text/csv; charset=utf-8",
        }
    }

    /// The download file name.
    pub fn file_name(self) -> &'static str {
        match self {
            ExportFormat::Jsonl => "usage-events.jsonl",
            ExportFormat::Csv => "usage-events.csv",
        }
    }

    /// What the file starts with before the first event (the CSV header row).
    pub fn preamble(self) -> String {
        match self {
            ExportFormat::Jsonl => String::new(),
            ExportFormat::Csv => {
                let mut header = EXPORT_FIELDS.join(",");
                header.push_str("\r\n");
                header
            }
        }
    }

    /// Appends one event in this format, line terminator included.
    pub fn write_event(self, out: &mut String, event: &RawEvent) {
        match self {
            ExportFormat::Jsonl => write_jsonl(out, event),
            ExportFormat::Csv => write_csv(out, event),
        }
    }
}

/// One field's value. `present` is false for a field the NDJSON line leaves out.
enum Value<'a> {
    Text(&'a str),
    Int(i64),
    Float(f64),
    Bool(bool),
    /// A JSON object written verbatim.
    Raw(&'a str),
    Absent,
}

/// Calls `visit` for every field of [`EXPORT_FIELDS`], in order.
fn visit_fields(event: &RawEvent, mut visit: impl FnMut(Value<'_>)) {
    fn text(value: &str) -> Value<'_> {
        if value.is_empty() {
            Value::Absent
        } else {
            Value::Text(value)
        }
    }
    let positive = |value: Option<i64>| match value {
        Some(value) if value != 0 => Value::Int(value),
        _ => Value::Absent,
    };
    let present = |value: Option<i64>| value.map_or(Value::Absent, Value::Int);
    let identity = &event.identity;
    let tokens = &event.tokens;
    visit(text(event.request_id.as_deref().unwrap_or("")));
    visit(Value::Text(&event.event_hash));
    visit(Value::Int(event.timestamp_ms));
    visit(Value::Text(&event.timestamp));
    visit(text(&identity.provider));
    visit(text(&identity.executor_type));
    visit(Value::Text(&event.model));
    visit(text(&event.analytics_model));
    visit(text(&event.requested_model));
    visit(text(&event.resolved_model));
    visit(text(&event.endpoint));
    visit(text(&event.method));
    visit(text(&event.path));
    visit(text(&event.auth_type));
    visit(text(&identity.auth_index));
    visit(text(&identity.source));
    visit(text(&identity.source_hash));
    visit(text(&identity.api_key_hash));
    visit(text(&identity.account));
    visit(text(&identity.auth_label));
    visit(text(&identity.auth_file));
    visit(text(&identity.auth_provider));
    visit(text(&identity.auth_project));
    visit(positive(event.auth_snapshot_at_ms));
    visit(text(&event.reasoning_effort));
    visit(text(&event.service_tier));
    visit(text(&event.request_service_tier));
    visit(text(&event.response_service_tier));
    visit(text(event.cache_input_mode.unwrap_or("")));
    visit(Value::Int(tokens.input));
    visit(Value::Int(tokens.output));
    visit(Value::Int(tokens.reasoning));
    visit(Value::Int(tokens.cached));
    visit(Value::Int(tokens.cache));
    visit(Value::Int(tokens.cache_read));
    visit(Value::Int(tokens.cache_creation));
    visit(Value::Int(tokens.total));
    visit(present(event.latency_ms));
    visit(present(event.ttft_ms));
    visit(Value::Bool(event.failed));
    visit(positive(event.fail_status_code));
    visit(text(event.fail_summary.as_deref().unwrap_or("")));
    visit(positive(event.header_quota_recover_at_ms));
    visit(
        event
            .header_quota_used_percent
            .map_or(Value::Absent, Value::Float),
    );
    visit(text(&event.header_quota_plan_type));
    visit(text(&event.header_error_kind));
    visit(text(&event.header_error_code));
    visit(text(event.header_trace_id.as_deref().unwrap_or("")));
    visit(Value::Int(event.created_at_ms));
    visit(
        response_metadata(event.response_metadata_json.as_deref())
            .map_or(Value::Absent, Value::Raw),
    );
}

/// The stored metadata if it is a valid JSON object (trimmed), as in the
/// compatible usage payload; anything else is left out.
fn response_metadata(text: Option<&str>) -> Option<&str> {
    let text = text?.trim();
    if !(text.starts_with('{') && text.ends_with('}')) {
        return None;
    }
    serde_json::from_str::<serde::de::IgnoredAny>(text)
        .ok()
        .map(|_| text)
}

fn write_int(out: &mut String, value: i64) {
    use std::fmt::Write as _;
    let _ = write!(out, "{value}");
}

/// One NDJSON line: compact, Go key order and escaping, empty fields left out.
pub fn write_jsonl(out: &mut String, event: &RawEvent) {
    out.push('{');
    let mut fields = EXPORT_FIELDS.iter();
    let mut first = true;
    visit_fields(event, |value| {
        let Some(name) = fields.next() else { return };
        if matches!(value, Value::Absent) {
            return;
        }
        if !first {
            out.push(',');
        }
        first = false;
        out.push('"');
        out.push_str(name);
        out.push_str("\":");
        match value {
            Value::Text(text) => json::write_string(out, text),
            Value::Int(number) => write_int(out, number),
            Value::Float(number) => json::write_number(out, json::Number::Float(number)),
            Value::Bool(flag) => out.push_str(if flag { "true" } else { "false" }),
            Value::Raw(raw) => out.push_str(raw),
            Value::Absent => {}
        }
    });
    out.push_str("}\n");
}

/// One CSV row (RFC 4180): every column, empty where the NDJSON line has no key.
///
/// A text cell starting with `=`, `+`, `-`, `@`, a tab or a carriage return gets a
/// leading `'`, so a spreadsheet shows it as text instead of running it as a formula
/// (model names, labels and failure summaries come from clients and upstreams).
/// Numbers are written as they are.
pub fn write_csv(out: &mut String, event: &RawEvent) {
    let mut first = true;
    visit_fields(event, |value| {
        if !first {
            out.push(',');
        }
        first = false;
        match value {
            Value::Text(text) | Value::Raw(text) => write_csv_text(out, text),
            Value::Int(number) => write_int(out, number),
            Value::Float(number) => json::write_number(out, json::Number::Float(number)),
            Value::Bool(flag) => out.push_str(if flag { "true" } else { "false" }),
            Value::Absent => {}
        }
    });
    out.push_str("\r\n");
}

/// Whether a spreadsheet would read a cell starting like `text` as a formula.
fn starts_like_a_formula(text: &str) -> bool {
    text.starts_with(['=', '+', '-', '@', '\t', '\r'])
}

fn write_csv_text(out: &mut String, text: &str) {
    let guarded;
    let text = if starts_like_a_formula(text) {
        guarded = format!("'{text}");
        guarded.as_str()
    } else {
        text
    };
    if text.contains([',', '"', '\n', '\r']) {
        out.push('"');
        for piece in text.split_inclusive('"') {
            out.push_str(piece);
            if piece.ends_with('"') {
                out.push('"');
            }
        }
        out.push('"');
    } else {
        out.push_str(text);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::analytics::query::Identity;
    use crate::event::TokenCounts;

    fn sample() -> RawEvent {
        RawEvent {
            id: 1,
            event_hash: "eh1".into(),
            request_id: Some("req-1".into()),
            timestamp_ms: 1_735_693_200_000,
            timestamp: "2025-01-01T01:00:00Z".into(),
            model: "gpt-5(high)".into(),
            requested_model: "gpt-5(high)".into(),
            resolved_model: "".into(),
            analytics_model: "gpt-5".into(),
            endpoint: "POST /v1/chat/completions".into(),
            method: "POST".into(),
            path: "/v1/chat/completions".into(),
            client_ip: "10.0.0.1".into(),
            x_forwarded_for: "".into(),
            user_agent: "curl/8".into(),
            auth_type: "".into(),
            identity: Arc::new(Identity {
                provider: "openai".into(),
                executor_type: "openai".into(),
                auth_index: "a1".into(),
                source: "key-1".into(),
                source_hash: "sh1".into(),
                api_key_hash: "kh1".into(),
                account: "".into(),
                auth_label: "".into(),
                auth_file: "".into(),
                auth_provider: "".into(),
                auth_project: "".into(),
            }),
            auth_snapshot_at_ms: None,
            reasoning_effort: "".into(),
            service_tier: "".into(),
            request_service_tier: "".into(),
            response_service_tier: "".into(),
            cache_input_mode: None,
            tokens: TokenCounts {
                input: 1000,
                output: 200,
                reasoning: 50,
                cached: 400,
                cache: 0,
                cache_read: 0,
                cache_creation: 0,
                total: 1250,
            },
            normalized_total_input: Some(1000),
            latency_ms: Some(1200),
            ttft_ms: Some(300),
            failed: false,
            fail_status_code: None,
            fail_summary: None,
            response_metadata_json: None,
            header_quota_recover_at_ms: None,
            header_quota_used_percent: None,
            header_quota_plan_type: "".into(),
            header_error_kind: "".into(),
            header_error_code: "".into(),
            header_trace_id: None,
            created_at_ms: 1_735_693_200_500,
        }
    }

    #[test]
    fn the_spec_example_line_is_reproduced_byte_for_byte() {
        let mut out = String::new();
        write_jsonl(&mut out, &sample());
        assert_eq!(
            out,
            "{\"request_id\":\"req-1\",\"event_hash\":\"eh1\",\"timestamp_ms\":1735693200000,\"timestamp\":\"2025-01-01T01:00:00Z\",\"provider\":\"openai\",\"executor_type\":\"openai\",\"model\":\"gpt-5(high)\",\"analytics_model\":\"gpt-5\",\"requested_model\":\"gpt-5(high)\",\"endpoint\":\"POST /v1/chat/completions\",\"method\":\"POST\",\"path\":\"/v1/chat/completions\",\"auth_index\":\"a1\",\"source\":\"key-1\",\"source_hash\":\"sh1\",\"api_key_hash\":\"kh1\",\"input_tokens\":1000,\"output_tokens\":200,\"reasoning_tokens\":50,\"cached_tokens\":400,\"cache_tokens\":0,\"cache_read_tokens\":0,\"cache_creation_tokens\":0,\"total_tokens\":1250,\"latency_ms\":1200,\"ttft_ms\":300,\"failed\":false,\"created_at_ms\":1735693200500}\n"
        );
        assert!(!out.contains("10.0.0.1") && !out.contains("curl"));
    }

    #[test]
    fn optional_fields_follow_the_presence_rules() {
        let mut event = sample();
        event.latency_ms = Some(0);
        event.ttft_ms = None;
        event.failed = true;
        event.fail_status_code = Some(429);
        event.fail_summary = Some("rate <limited>".into());
        event.header_quota_used_percent = Some(0.0);
        event.header_quota_recover_at_ms = Some(0);
        event.cache_input_mode = Some("included_in_input");
        event.response_metadata_json = Some(" {\"quota\":{\"used\":1e-7}} ".into());
        let mut out = String::new();
        write_jsonl(&mut out, &event);
        assert!(out.contains("\"latency_ms\":0,"), "{out}");
        assert!(!out.contains("ttft_ms"), "{out}");
        assert!(out.contains("\"failed\":true,\"fail_status_code\":429,\"fail_summary\":\"rate \\u003climited\\u003e\",\"header_quota_used_percent\":0,"), "{out}");
        assert!(!out.contains("header_quota_recover_at_ms"), "{out}");
        assert!(
            out.contains("\"cache_input_mode\":\"included_in_input\",\"input_tokens\""),
            "{out}"
        );
        assert!(out.ends_with("\"created_at_ms\":1735693200500,\"response_metadata\":{\"quota\":{\"used\":1e-7}}}\n"), "{out}");

        event.response_metadata_json = Some("{not json}".into());
        let mut out = String::new();
        write_jsonl(&mut out, &event);
        assert!(!out.contains("response_metadata"), "{out}");
    }

    #[test]
    fn csv_rows_have_every_column_and_quote_what_needs_it() {
        let mut event = sample();
        event.fail_summary = Some("a \"quoted\", multi\nline".into());
        let header = ExportFormat::Csv.preamble();
        assert_eq!(header.matches(',').count(), EXPORT_FIELDS.len() - 1);
        let mut row = String::new();
        write_csv(&mut row, &event);
        assert!(row.ends_with("\r\n"));
        assert!(row.contains(",\"a \"\"quoted\"\", multi\nline\","), "{row}");
        assert!(
            row.starts_with("req-1,eh1,1735693200000,2025-01-01T01:00:00Z,openai,"),
            "{row}"
        );
    }

    #[test]
    fn csv_cells_that_start_like_a_formula_are_written_as_text() {
        let mut event = sample();
        event.fail_summary = Some("=HYPERLINK(\"http://x\",\"y\")".into());
        event.reasoning_effort = "+1".into();
        event.identity = Arc::new(Identity {
            auth_label: "@evil".into(),
            account: "-2+3".into(),
            auth_file: "\tcmd".into(),
            auth_project: "\rx".into(),
            ..(*event.identity).clone()
        });
        event.fail_status_code = Some(-1);
        let mut row = String::new();
        write_csv(&mut row, &event);
        assert!(
            row.contains(",\"'=HYPERLINK(\"\"http://x\"\",\"\"y\"\")\","),
            "{row}"
        );
        for guarded in ["'+1", "'@evil", "'-2+3", "'\tcmd", "\"'\rx\""] {
            assert!(
                row.contains(&format!(",{guarded},")),
                "{guarded:?} in {row}"
            );
        }
        // Numbers stay numbers; plain text is untouched.
        assert!(row.contains(",-1,"), "{row}");
        assert!(row.contains(",gpt-5(high),gpt-5,"), "{row}");
    }

    #[test]
    fn formats_parse_case_insensitively() {
        assert_eq!(ExportFormat::parse(" CSV "), Some(ExportFormat::Csv));
        assert_eq!(ExportFormat::parse("ndjson"), Some(ExportFormat::Jsonl));
        assert_eq!(ExportFormat::parse("xml"), None);
    }
}
