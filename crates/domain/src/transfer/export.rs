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
use crate::event::TokenCounts;

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
        self.write_record(out, &ExportRecord::of(event));
    }

    /// Appends one borrowed record in this format, line terminator included.
    pub fn write_record(self, out: &mut String, record: &ExportRecord<'_>) {
        match self {
            ExportFormat::Jsonl => write_jsonl_record(out, record),
            ExportFormat::Csv => write_csv_record(out, record),
        }
    }
}

/// One event as the export writes it, borrowing every text.
///
/// [`ExportRecord::of`] views a [`RawEvent`]; storage fills one straight from a
/// database row, so a large export allocates nothing per event. An empty text is
/// a field the NDJSON line leaves out.
#[derive(Debug, Clone, Copy, Default)]
pub struct ExportRecord<'a> {
    /// Upstream request id.
    pub request_id: &'a str,
    /// Lowercase hex dedupe hash.
    pub event_hash: &'a str,
    /// Unix milliseconds.
    pub timestamp_ms: i64,
    /// RFC 3339 time as stored or derived from `timestamp_ms`.
    pub timestamp: &'a str,
    /// Provider.
    pub provider: &'a str,
    /// Executor type.
    pub executor_type: &'a str,
    /// Model as reported.
    pub model: &'a str,
    /// Model with the reasoning suffix removed.
    pub analytics_model: &'a str,
    /// Model the client asked for.
    pub requested_model: &'a str,
    /// Model the upstream resolved to.
    pub resolved_model: &'a str,
    /// `METHOD /path` of the request.
    pub endpoint: &'a str,
    /// HTTP method.
    pub method: &'a str,
    /// Request path.
    pub path: &'a str,
    /// Authentication type.
    pub auth_type: &'a str,
    /// Credential index.
    pub auth_index: &'a str,
    /// Masked credential source.
    pub source: &'a str,
    /// Hash of the credential source.
    pub source_hash: &'a str,
    /// SHA-256 hex of the client API key.
    pub api_key_hash: &'a str,
    /// Account snapshot.
    pub account: &'a str,
    /// Auth label snapshot.
    pub auth_label: &'a str,
    /// Auth file snapshot.
    pub auth_file: &'a str,
    /// Auth provider snapshot.
    pub auth_provider: &'a str,
    /// Auth project id snapshot.
    pub auth_project: &'a str,
    /// When the auth snapshot was taken (Unix ms); left out unless positive.
    pub auth_snapshot_at_ms: Option<i64>,
    /// Reasoning effort.
    pub reasoning_effort: &'a str,
    /// Service tier.
    pub service_tier: &'a str,
    /// Service tier the request asked for.
    pub request_service_tier: &'a str,
    /// Service tier the response reported.
    pub response_service_tier: &'a str,
    /// `included_in_input`, `separate_from_input` or empty.
    pub cache_input_mode: &'a str,
    /// Token counts.
    pub tokens: TokenCounts,
    /// Latency in ms.
    pub latency_ms: Option<i64>,
    /// Time to first token in ms.
    pub ttft_ms: Option<i64>,
    /// Whether the request failed.
    pub failed: bool,
    /// Upstream status of a failure; left out unless positive.
    pub fail_status_code: Option<i64>,
    /// Redacted failure summary.
    pub fail_summary: &'a str,
    /// Quota recovery time from response headers; left out unless positive.
    pub header_quota_recover_at_ms: Option<i64>,
    /// Quota used percent from response headers.
    pub header_quota_used_percent: Option<f64>,
    /// Plan type from response headers.
    pub header_quota_plan_type: &'a str,
    /// Error kind from response headers.
    pub header_error_kind: &'a str,
    /// Error code from response headers.
    pub header_error_code: &'a str,
    /// Trace id from response headers.
    pub header_trace_id: &'a str,
    /// When the event was stored (Unix ms).
    pub created_at_ms: i64,
    /// The stored response metadata JSON; written only if it is a JSON object.
    pub response_metadata_json: &'a str,
}

impl<'a> ExportRecord<'a> {
    /// The export view of a stored event.
    pub fn of(event: &'a RawEvent) -> ExportRecord<'a> {
        let identity = &*event.identity;
        ExportRecord {
            request_id: event.request_id.as_deref().unwrap_or(""),
            event_hash: &event.event_hash,
            timestamp_ms: event.timestamp_ms,
            timestamp: &event.timestamp,
            provider: &identity.provider,
            executor_type: &identity.executor_type,
            model: &event.model,
            analytics_model: &event.analytics_model,
            requested_model: &event.requested_model,
            resolved_model: &event.resolved_model,
            endpoint: &event.endpoint,
            method: &event.method,
            path: &event.path,
            auth_type: &event.auth_type,
            auth_index: &identity.auth_index,
            source: &identity.source,
            source_hash: &identity.source_hash,
            api_key_hash: &identity.api_key_hash,
            account: &identity.account,
            auth_label: &identity.auth_label,
            auth_file: &identity.auth_file,
            auth_provider: &identity.auth_provider,
            auth_project: &identity.auth_project,
            auth_snapshot_at_ms: event.auth_snapshot_at_ms,
            reasoning_effort: &event.reasoning_effort,
            service_tier: &event.service_tier,
            request_service_tier: &event.request_service_tier,
            response_service_tier: &event.response_service_tier,
            cache_input_mode: event.cache_input_mode.unwrap_or(""),
            tokens: event.tokens,
            latency_ms: event.latency_ms,
            ttft_ms: event.ttft_ms,
            failed: event.failed,
            fail_status_code: event.fail_status_code,
            fail_summary: event.fail_summary.as_deref().unwrap_or(""),
            header_quota_recover_at_ms: event.header_quota_recover_at_ms,
            header_quota_used_percent: event.header_quota_used_percent,
            header_quota_plan_type: &event.header_quota_plan_type,
            header_error_kind: &event.header_error_kind,
            header_error_code: &event.header_error_code,
            header_trace_id: event.header_trace_id.as_deref().unwrap_or(""),
            created_at_ms: event.created_at_ms,
            response_metadata_json: event.response_metadata_json.as_deref().unwrap_or(""),
        }
    }
}

/// One field's value.
enum Value<'a> {
    Text(&'a str),
    Int(i64),
    Float(f64),
    Bool(bool),
    /// A JSON object written verbatim.
    Raw(&'a str),
    /// A field the NDJSON line leaves out (an empty CSV cell).
    Absent,
}

/// Calls `visit` for every field of [`EXPORT_FIELDS`], in order.
#[inline(always)]
fn visit_fields<'a>(event: &ExportRecord<'a>, mut visit: impl FnMut(Value<'a>)) {
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
    let tokens = &event.tokens;
    visit(text(event.request_id));
    visit(Value::Text(event.event_hash));
    visit(Value::Int(event.timestamp_ms));
    visit(Value::Text(event.timestamp));
    visit(text(event.provider));
    visit(text(event.executor_type));
    visit(Value::Text(event.model));
    visit(text(event.analytics_model));
    visit(text(event.requested_model));
    visit(text(event.resolved_model));
    visit(text(event.endpoint));
    visit(text(event.method));
    visit(text(event.path));
    visit(text(event.auth_type));
    visit(text(event.auth_index));
    visit(text(event.source));
    visit(text(event.source_hash));
    visit(text(event.api_key_hash));
    visit(text(event.account));
    visit(text(event.auth_label));
    visit(text(event.auth_file));
    visit(text(event.auth_provider));
    visit(text(event.auth_project));
    visit(positive(event.auth_snapshot_at_ms));
    visit(text(event.reasoning_effort));
    visit(text(event.service_tier));
    visit(text(event.request_service_tier));
    visit(text(event.response_service_tier));
    visit(text(event.cache_input_mode));
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
    visit(text(event.fail_summary));
    visit(positive(event.header_quota_recover_at_ms));
    visit(
        event
            .header_quota_used_percent
            .map_or(Value::Absent, Value::Float),
    );
    visit(text(event.header_quota_plan_type));
    visit(text(event.header_error_kind));
    visit(text(event.header_error_code));
    visit(text(event.header_trace_id));
    visit(Value::Int(event.created_at_ms));
    visit(response_metadata(event.response_metadata_json).map_or(Value::Absent, Value::Raw));
}

/// The stored metadata if it is a valid JSON object (trimmed), as in the
/// compatible usage payload; anything else is left out.
fn response_metadata(text: &str) -> Option<&str> {
    let text = text.trim();
    if !(text.starts_with('{') && text.ends_with('}')) {
        return None;
    }
    serde_json::from_str::<serde::de::IgnoredAny>(text)
        .ok()
        .map(|_| text)
}

fn write_int(out: &mut String, value: i64) {
    out.push_str(itoa::Buffer::new().format(value));
}

/// `,"name":` for every field of [`EXPORT_FIELDS`].
fn json_keys() -> &'static [String] {
    static KEYS: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    KEYS.get_or_init(|| {
        EXPORT_FIELDS
            .iter()
            .map(|name| format!(",\"{name}\":"))
            .collect()
    })
}

/// One NDJSON line: compact, Go key order and escaping, empty fields left out.
pub fn write_jsonl(out: &mut String, event: &RawEvent) {
    write_jsonl_record(out, &ExportRecord::of(event));
}

/// [`write_jsonl`] of a borrowed record.
pub fn write_jsonl_record(out: &mut String, event: &ExportRecord<'_>) {
    out.push('{');
    let keys = json_keys();
    let mut fields = keys.iter();
    let mut first = true;
    visit_fields(event, |value| {
        let Some(key) = fields.next() else { return };
        if matches!(value, Value::Absent) {
            return;
        }
        out.push_str(if first { &key[1..] } else { key });
        first = false;
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
    write_csv_record(out, &ExportRecord::of(event));
}

/// [`write_csv`] of a borrowed record.
pub fn write_csv_record(out: &mut String, event: &ExportRecord<'_>) {
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
