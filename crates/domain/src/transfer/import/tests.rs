use std::ops::ControlFlow;

use super::*;

const NOW: i64 = 1_767_225_600_000;

fn read(input: &str) -> (ImportReport, Vec<UsageEvent>) {
    let mut events = Vec::new();
    let report = read_import(input.as_bytes(), NOW, &mut |event| {
        events.push(event);
        ControlFlow::Continue(())
    });
    (report, events)
}

fn exported(hash: &str, ms: i64) -> String {
    format!(
        r#"{{"event_hash":"{hash}","timestamp_ms":{ms},"model":"gpt-5","endpoint":"POST /v1/responses","input_tokens":10,"output_tokens":2,"failed":false,"created_at_ms":{ms}}}"#
    )
}

#[test]
fn empty_input_is_an_error_without_a_format() {
    for input in ["", "  \n\t\r\n", "\u{feff}\n"] {
        let (report, events) = read(input);
        assert!(
            matches!(report.error, Some(ImportError::Empty)),
            "{input:?}"
        );
        assert_eq!(report.format, None);
        assert!(events.is_empty());
    }
}

#[test]
fn malformed_lines_are_counted_with_their_line_numbers_and_never_stop_the_rest() {
    let mut lines = Vec::new();
    for index in 0..1000 {
        lines.push(exported(&format!("{index:064x}"), NOW - index));
    }
    lines[9] = "{not json".to_string();
    lines[499] = "[1,2]".to_string();
    lines[998] = r#"{"event_hash":"x","input_tokens":"99999999999999999999999"}"#.to_string();
    let input = lines.join("\n") + "\n\n";
    let (report, events) = read(&input);
    assert!(report.error.is_none(), "{:?}", report.error);
    assert_eq!(report.format, Some(ImportFormat::UsageServiceJsonl));
    assert_eq!(events.len(), 997);
    assert_eq!(report.events, 997);
    assert_eq!(report.failed, 3);
    let lines: Vec<_> = report
        .issues
        .iter()
        .map(|issue| issue.location.clone())
        .collect();
    assert_eq!(
        lines,
        vec![Location::Line(10), Location::Line(500), Location::Line(999)]
    );
    assert!(report.issues[1].message.contains("not a JSON object"));
    assert!(report.issues[2].message.contains("input_tokens"));
}

#[test]
fn a_broken_first_line_is_one_failure_and_the_rest_imports() {
    for broken in [
        "{\"event_hash\": broken",
        "{\"a\":1,",
        "{\"a\":[1,}",
        "{\"a\":\"\\x\"}",
    ] {
        let input = format!(
            "{broken}\n{}\n{}\n",
            exported(&"e".repeat(64), 1),
            exported(&"f".repeat(64), 2)
        );
        let (report, events) = read(&input);
        assert_eq!(events.len(), 2, "{broken}: {:?}", report.issues);
        assert_eq!(report.failed, 1);
        assert_eq!(report.issues[0].location, Location::Line(1));
    }
}

#[test]
fn raw_cpa_records_and_exported_records_mix_in_one_file() {
    let input = format!(
        "{}\r\n{}\n",
        r#"{"timestamp":"2026-01-01T00:00:00Z","model":"claude-sonnet-4-6","usage":{"input_tokens":7},"source":"sk-ant-api03-secretsecretsecret","request_id":"r1"}"#,
        exported(&"a".repeat(64), NOW)
    );
    let (report, events) = read(&input);
    assert!(report.error.is_none(), "{:?}", report.error);
    assert_eq!(events.len(), 2);
    // A CPA record whose tokens sit under `usage` is a record, not a snapshot.
    assert_eq!(events[0].tokens.input, 7);
    assert_eq!(events[0].source.as_deref(), Some("m:sk-a...cret"));
    assert_eq!(events[0].event_hash.len(), 64);
    assert_eq!(events[1].event_hash, "a".repeat(64));
}

#[test]
fn a_pretty_printed_first_record_is_followed_by_jsonl_with_true_line_numbers() {
    let input = format!(
        "\n{{\n  \"event_hash\": \"{}\",\n  \"timestamp_ms\": 5\n}}\n{}\nbroken\n",
        "b".repeat(64),
        exported(&"c".repeat(64), 6)
    );
    let (report, events) = read(&input);
    assert_eq!(events.len(), 2, "{:?}", report.issues);
    assert_eq!(report.failed, 1);
    assert_eq!(report.issues[0].location, Location::Line(7));
}

#[test]
fn control_messages_and_empty_objects_are_not_records() {
    let (report, events) = read("{\"refresh\":true}\n{}\n");
    assert!(events.is_empty());
    assert_eq!(report.failed, 2);
    assert!(report.error.is_none());
}

#[test]
fn overlong_lines_are_one_failure_each() {
    let long = format!("{{\"model\":\"{}\"}}", "x".repeat(MAX_LINE_BYTES + 10));
    let input = format!(
        "{}\n{long}\n{}\n",
        exported(&"1".repeat(64), 1),
        exported(&"2".repeat(64), 2)
    );
    let (report, events) = read(&input);
    assert_eq!(events.len(), 2);
    assert_eq!(report.failed, 1);
    assert_eq!(report.issues[0].location, Location::Line(2));
    assert!(report.issues[0].message.contains("10 MiB"));
}

#[test]
fn arrays_are_read_element_by_element() {
    let input = format!(
        "[{}, 42, {}]",
        exported(&"d".repeat(64), 1),
        r#"{"timestamp":1767225600,"model":"gpt-5"}"#
    );
    let (report, events) = read(&input);
    assert!(report.error.is_none(), "{:?}", report.error);
    assert_eq!(events.len(), 2);
    assert_eq!(report.failed, 1);
    assert_eq!(report.issues[0].location, Location::Element(2));

    let (report, events) = read("[{\"model\":\"a\",\"timestamp\":1}, {oops");
    assert_eq!(events.len(), 1);
    assert!(
        matches!(&report.error, Some(ImportError::Syntax(message)) if message.contains("invalid JSON array")),
        "{:?}",
        report.error
    );
    let (report, _) = read("[] trailing");
    assert!(matches!(report.error, Some(ImportError::Syntax(_))));
}

fn legacy_snapshot(wrapped: bool) -> String {
    let apis = r#"{
      "POST /v1/chat/completions": {"models": {
        "gpt-5": {"details": [
          {"timestamp": "2025-01-01T01:00:00Z", "source": "key-1", "auth_index": "a1", "latency_ms": 1200,
           "tokens": {"input_tokens": 1000, "output_tokens": 200, "total_tokens": 1200}, "failed": false},
          {"timestamp": "2025-01-01T01:30:00Z", "requested_model": "gpt-5(high)", "tokens": {}, "failed": true},
          {"source": "no-time"},
          7
        ]},
        "gpt-4o": {"details": []},
        "o3": "not an object"
      }},
      "GET /v1/models": {"total_requests": 3},
      "POST /v1/messages": []
    }"#;
    if wrapped {
        format!("{{\"usage\": {{\"total_requests\": 2, \"apis\": {apis}}}}}\n\n")
    } else {
        format!("{{\"apis\": {apis}, \"total_requests\": 2}}")
    }
}

#[test]
fn legacy_snapshots_become_events_with_the_go_counting_rules() {
    for (wrapped, format) in [
        (true, ImportFormat::LegacyUsageExport),
        (false, ImportFormat::LegacyUsagePayload),
    ] {
        let (report, events) = read(&legacy_snapshot(wrapped));
        assert!(report.error.is_none(), "{:?}", report.error);
        assert_eq!(report.format, Some(format));
        assert_eq!(events.len(), 2);
        // Detail without timestamp, detail that is no object, model that is no
        // object, endpoint without models, endpoint that is no object.
        assert_eq!(report.failed, 5, "{:?}", report.issues);
        assert_eq!(report.unsupported, 1);
        assert_eq!(report.warnings, LEGACY_WARNINGS);
        let first = &events[0];
        assert_eq!(first.endpoint.as_deref(), Some("POST /v1/chat/completions"));
        assert_eq!(first.method.as_deref(), Some("POST"));
        assert_eq!(first.model, "gpt-5");
        assert_eq!(first.tokens.input, 1000);
        assert!(
            first
                .request_id
                .as_deref()
                .is_some_and(|id| id.starts_with("legacy:") && id.len() == 23)
        );
        assert_eq!(events[1].model, "gpt-5(high)");
        assert!(events[1].failed);
    }
    // The same snapshot yields the same events (so a second import adds nothing).
    let (_, again) = read(&legacy_snapshot(true));
    let (_, once) = read(&legacy_snapshot(true));
    assert_eq!(again[0].event_hash, once[0].event_hash);
}

#[test]
fn summaries_and_snapshots_without_details_are_unsupported() {
    for (input, format) in [
        (
            r#"{"total_requests":5,"success_count":5}"#,
            ImportFormat::LegacyUsagePayload,
        ),
        (
            r#"{"usage":{"total_requests":5,"apis":{}}}"#,
            ImportFormat::LegacyUsageExport,
        ),
    ] {
        let (report, events) = read(input);
        assert!(events.is_empty());
        assert!(
            matches!(report.error, Some(ImportError::NoDetails)),
            "{input}"
        );
        assert_eq!(report.format, Some(format));
        assert_eq!(report.unsupported, 1);
    }
    let (report, _) = read(r#"{"apis":{"POST /x":{"models":{"m":{"details":[]}}}}}"#);
    assert!(matches!(report.error, Some(ImportError::NoDetails)));
    let (report, _) = read(&(legacy_snapshot(false) + "\n{\"more\":1}"));
    assert!(
        matches!(report.error, Some(ImportError::Syntax(_))),
        "{:?}",
        report.error
    );
}

#[test]
fn snapshots_larger_than_a_line_are_streamed() {
    let detail = r#"{"timestamp":"2025-01-01T01:00:00Z","source":"key-1","tokens":{"input_tokens":3},"failed":false,"padding":"PAD"}"#
        .replace("PAD", &"p".repeat(2000));
    let count = MAX_LINE_BYTES / detail.len() + 50;
    let details = vec![detail; count].join(",");
    let input = format!(
        "{{\"usage\":{{\"apis\":{{\"POST /v1/responses\":{{\"models\":{{\"gpt-5\":{{\"details\":[{details}]}}}}}}}}}}}}"
    );
    assert!(input.len() > MAX_LINE_BYTES);
    let (report, events) = read(&input);
    assert!(report.error.is_none(), "{:?}", report.error);
    assert_eq!(report.format, Some(ImportFormat::LegacyUsageExport));
    assert_eq!(events.len(), count);
    // Identical details at different positions are different requests.
    assert_ne!(events[0].event_hash, events[1].event_hash);

    let huge = format!("{{\"model\":\"{}\"}}", "x".repeat(MAX_LINE_BYTES));
    let (report, _) = read(&huge);
    assert!(
        matches!(&report.error, Some(ImportError::Syntax(message)) if message.contains("larger than 10 MiB")),
        "{:?}",
        report.error
    );
}

#[test]
fn the_sink_can_stop_the_import() {
    let input = (0..10)
        .map(|index| exported(&format!("{index:064x}"), index))
        .collect::<Vec<_>>()
        .join("\n");
    let mut seen = 0;
    let report = read_import(input.as_bytes(), NOW, &mut |_| {
        seen += 1;
        if seen == 3 {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    });
    assert_eq!(seen, 3);
    assert!(matches!(report.error, Some(ImportError::Stopped)));
}

#[test]
fn arbitrary_bytes_never_panic() {
    let samples: &[&[u8]] = &[
        b"{",
        b"[",
        b"}",
        b"{\"usage\":",
        b"{\"apis\":{\"a\":{\"models\":{\"m\":{\"details\":[{\"timestamp\":",
        b"\xff\xfe{}",
        b"[\xff]",
        b"{\"event_hash\":1}",
        b"{\"apis\":[]}",
        b"\"str\"",
        b"{\"a\":\"\\",
    ];
    for sample in samples {
        let _ = read_import(*sample, NOW, &mut |_| ControlFlow::Continue(()));
    }
}
