//! Decoder behaviour against the CPA reference fixtures and the rules of
//! server-core §4.6–§4.9. Most tests go through `check`, which renders an
//! event into `name=value` facts and compares the ones a case names.

use std::collections::{BTreeMap, BTreeSet};

use cpamp_domain::UsageEvent;
use cpamp_domain::decode::decode;
use cpamp_domain::event::Decoded;

const NOW_MS: i64 = 1_800_000_000_000;
const NOW_TEXT: &str = "2027-01-15T08:00:00Z";

fn fixture_lines(name: &str) -> Vec<Vec<u8>> {
    let path = format!("{}/tests/fixtures/cpa/{name}", env!("CARGO_MANIFEST_DIR"));
    let bytes = std::fs::read(&path).unwrap_or_else(|error| panic!("read {path}: {error}"));
    let mut lines: Vec<Vec<u8>> = bytes
        .split(|byte| *byte == b'\n')
        .map(<[u8]>::to_vec)
        .collect();
    // The files end with a newline; the empty remainder is not a line.
    assert_eq!(lines.pop().as_deref(), Some(&b""[..]));
    lines
}

fn good_lines() -> Vec<Vec<u8>> {
    let lines = fixture_lines("usage-events.jsonl");
    assert_eq!(lines.len(), 40);
    lines
}

fn event_of(item: &[u8]) -> UsageEvent {
    match decode(item, NOW_MS) {
        Decoded::Event(event) => *event,
        other => panic!(
            "expected an event for {}, got {other:?}",
            String::from_utf8_lossy(item)
        ),
    }
}

fn opt<T: ToString>(value: &Option<T>) -> String {
    value
        .as_ref()
        .map_or_else(|| "null".to_string(), ToString::to_string)
}

/// Every column as text; `null` for SQL NULL.
fn facts(event: &UsageEvent) -> BTreeMap<&'static str, String> {
    let tokens = &event.tokens;
    let normalized = &event.normalized;
    BTreeMap::from([
        ("hash", event.event_hash.clone()),
        ("request_id", opt(&event.request_id)),
        ("timestamp", event.timestamp.clone()),
        ("timestamp_ms", event.timestamp_ms.to_string()),
        ("provider", opt(&event.provider)),
        ("executor", opt(&event.executor_type)),
        ("model", event.model.clone()),
        ("requested", opt(&event.requested_model)),
        ("resolved", opt(&event.resolved_model)),
        ("endpoint", opt(&event.endpoint)),
        ("method", opt(&event.method)),
        ("path", opt(&event.path)),
        ("client_ip", opt(&event.client_ip)),
        ("xff", opt(&event.x_forwarded_for)),
        ("user_agent", opt(&event.user_agent)),
        ("auth_type", opt(&event.auth_type)),
        ("auth_index", opt(&event.auth_index)),
        ("source", opt(&event.source)),
        ("source_hash", opt(&event.source_hash)),
        ("api_key_hash", opt(&event.api_key_hash)),
        ("effort", opt(&event.reasoning_effort)),
        ("tier", opt(&event.service_tier)),
        ("request_tier", opt(&event.request_service_tier)),
        ("response_tier", opt(&event.response_service_tier)),
        (
            "mode",
            event
                .cache_input_mode
                .map_or("null", |mode| mode.as_str())
                .to_string(),
        ),
        (
            "tokens",
            format!(
                "{}/{}/{}/{}/{}/{}/{}/{}",
                tokens.input,
                tokens.output,
                tokens.reasoning,
                tokens.cached,
                tokens.cache,
                tokens.cache_read,
                tokens.cache_creation,
                tokens.total
            ),
        ),
        (
            "normalized",
            format!(
                "{}/{}/{}/{}",
                normalized.uncached_input,
                normalized.total_input,
                normalized.cache_read,
                normalized.cache_creation
            ),
        ),
        ("total", tokens.total.to_string()),
        ("latency", opt(&event.latency_ms)),
        ("ttft", opt(&event.ttft_ms)),
        ("failed", event.failed.to_string()),
        ("status", opt(&event.fail_status_code)),
        ("summary", opt(&event.fail_summary)),
        ("recover_at", opt(&event.header_quota_recover_at_ms)),
        ("used_percent", opt(&event.header_quota_used_percent)),
        ("plan", opt(&event.header_quota_plan_type)),
        ("error_kind", opt(&event.header_error_kind)),
        ("error_code", opt(&event.header_error_code)),
        ("trace", opt(&event.header_trace_id)),
        ("created_at_ms", event.created_at_ms.to_string()),
    ])
}

/// Decodes `item` and compares the facts named in `expected`
/// (`name=value` pairs separated by `; `).
fn check(item: &[u8], expected: &str) {
    let event = event_of(item);
    let actual = facts(&event);
    let mut mismatches = Vec::new();
    for pair in expected.split("; ").filter(|pair| !pair.trim().is_empty()) {
        let (name, value) = pair
            .split_once('=')
            .unwrap_or_else(|| panic!("bad expectation {pair:?}"));
        let name = name.trim();
        let got = actual
            .get(name)
            .unwrap_or_else(|| panic!("unknown fact {name:?}"));
        if got != value {
            mismatches.push(format!("  {name}: expected {value:?}, got {got:?}"));
        }
    }
    assert!(
        mismatches.is_empty(),
        "{}\n{}",
        String::from_utf8_lossy(item),
        mismatches.join("\n")
    );
}

fn check_line(number: usize, expected: &str) {
    check(&good_lines()[number - 1], expected);
}

fn json(text: &str) -> Vec<u8> {
    text.as_bytes().to_vec()
}

#[test]
fn good_lines_have_the_expected_columns() {
    check_line(
        1,
        "model=gpt-5.5; provider=codex; executor=CodexExecutor; failed=false; status=200; \
         tokens=48213/1877/1024/41984/0/41984/0/50090; normalized=6229/48213/41984/0; mode=included_in_input; \
         timestamp=2026-08-22T14:00:11.482913077Z; timestamp_ms=1787407211482; tier=auto; request_tier=auto; \
         response_tier=default; source=ali***@example.com; used_percent=12; plan=pro; \
         trace=6f1c2a9e-48b1-4c0e-9d7a-0e3f1b2c4d5e; recover_at=1787416332792; summary=null; latency=8412; ttft=1310; \
         client_ip=192.0.2.10; xff=203.0.113.5, 198.51.100.8; effort=high; endpoint=POST /v1/responses; method=POST; \
         path=/v1/responses; created_at_ms=1800000000000",
    );
    check_line(
        2,
        "timestamp=2026-08-22T14:00:23.007Z; timestamp_ms=1787407223007; endpoint=GET /v1/responses; method=GET; \
         tier=priority; response_tier=priority; effort=xhigh; source=bob***@example.net; \
         source_hash=4a3813fa60026f121d900d43c197ca5ef2499e47e7ab69ffec2f913368f86e74; xff=null",
    );
    // 429 with Retry-After: recovery counted from when the headers arrived.
    check_line(
        3,
        "failed=true; status=429; tokens=0/0/0/0/0/0/0/0; ttft=0; used_percent=100; \
         recover_at=1787412351532; endpoint=POST /backend-api/codex/responses",
    );
    check_line(
        4,
        "failed=true; status=401; model=gpt-5.4-mini; trace=req_FAKE41c2",
    );
    // Claude counts cache buckets beside the uncached input.
    check_line(
        5,
        "provider=claude; mode=separate_from_input; tokens=312/1789/0/118004/0/118004/6210/126315; \
         normalized=312/124526/118004/6210",
    );
    check_line(
        6,
        "tokens=1841/5320/2875/96512/0/96512/0/103673; normalized=1841/98353/96512/0; timestamp=2026-08-22T14:01:01.05050505Z",
    );
    check_line(
        7,
        "failed=true; status=529; timestamp=2026-08-22T14:01:10.000000001Z; timestamp_ms=1787407270000",
    );
    check_line(
        8,
        "source=m:sk-a...KEAA; tier=auto; mode=separate_from_input; normalized=2210/2210/0/0",
    );
    check_line(
        9,
        "provider=gemini; source=m:AIza...0000; tokens=128512/2213/4870/65536/0/65536/0/135595; \
         normalized=62976/128512/65536/0; mode=included_in_input; timestamp=2026-08-22T14:01:35.123456789Z",
    );
    check_line(
        10,
        "failed=true; status=429; recover_at=1787407338644; timestamp=2026-08-22T14:01:41.0005Z; timestamp_ms=1787407301000",
    );
    check_line(
        11,
        "provider=vertex; source=acme-vertex-prod-4821; mode=included_in_input",
    );
    // Classified by the antigravity route, not by the Claude model name.
    check_line(
        12,
        "provider=antigravity; model=sonnet; requested=sonnet; resolved=claude-sonnet-4-6; mode=included_in_input; \
         normalized=4912/35120/30208/0",
    );
    check_line(
        13,
        "model=ds-chat; resolved=deepseek/deepseek-chat-v3.1; source=m:sk-o...fake; normalized=1114/5210/4096/0",
    );
    check_line(
        14,
        "failed=true; status=401; model=qwen-coder; resolved=qwen/qwen3-coder",
    );
    check_line(
        15,
        "failed=true; status=502; trace=9a1b2c3d4e5f6072-FRA; timestamp=2026-08-22T14:02:32.314159265Z",
    );
    check_line(
        16,
        "provider=xai; source=m:xai-...0000; tier=default; request_tier=auto; response_tier=default; normalized=1208/8120/6912/0",
    );
    check_line(
        17,
        "provider=kimi; endpoint=POST /v1/messages; mode=included_in_input; normalized=2048/20480/18432/0",
    );
    check_line(18, "failed=true; status=499; ttft=812");
    check_line(
        19,
        "failed=true; status=504; latency=600000; ttft=0; timestamp=2026-08-22T13:53:10Z; recover_at=null; trace=null",
    );
    check_line(
        20,
        "failed=true; status=500; tokens=410/3998/0/72110/0/72110/0/76518; normalized=410/72520/72110/0",
    );
    check_line(21, "failed=false; tokens=1204/0/0/0/0/0/0/1204");
    // The SDK caller: every optional field empty.
    check_line(
        22,
        "request_id=null; endpoint=-; method=null; path=null; source=null; source_hash=null; auth_index=null; \
         api_key_hash=null; provider=unknown; model=unknown; latency=0; total=512; client_ip=null; user_agent=null",
    );
    check_line(
        23,
        "client_ip=2001:db8::17; xff=203.0.113.5, 198.51.100.8, 2001:db8:aa::1; source=car***@example.org",
    );
    // The user agent holds "; ", so it is compared outside `check`.
    assert_eq!(
        event_of(&good_lines()[22]).user_agent.as_deref(),
        Some("Zed/0.205.3 (macos; aarch64) — 测试客户端 ☕ Ünïcödé 🚀")
    );
    check_line(24, "tokens=1000/200/0/0/0/0/0/1500; total=1500");
    check_line(25, "tokens=0/0/0/13/0/13/0/13; normalized=0/0/13/0");
    check_line(26, "request_id=5f0c2a9e; failed=true; status=429");
    check_line(27, "request_id=5f0c2a9e; failed=false");
    check_line(
        28,
        "request_id=a1b2c3d4; timestamp=2026-08-22T14:04:22Z; model=gpt-5.5; total=0",
    );
    check_line(
        29,
        "request_id=a1b2c3d4; timestamp=2026-08-22T14:04:22Z; model=gpt-5.5; resolved=gpt-image-2; total=5696",
    );
    check_line(
        30,
        "timestamp=2026-08-22T13:54:20.555Z; tokens=210480/18231/12288/196608/0/196608/0/228711",
    );
    // Accounting v3 is not trusted; the family rules still apply.
    check_line(
        31,
        "provider=gemini; mode=included_in_input; normalized=2048/2048/0/0; total=2358",
    );
    check_line(
        33,
        "mode=separate_from_input; normalized=520/43528/40960/2048",
    );
    check_line(
        34,
        "tier=priority; request_tier=priority; response_tier=priority",
    );
    check_line(
        35,
        "tier=auto; response_tier=null; executor=XAIExecutor; effort=high",
    );
    check_line(
        36,
        "executor=null; mode=separate_from_input; ttft=null; tier=null; request_tier=null",
    );
    check_line(
        37,
        "failed=true; status=403; provider=gemini-cli; source=gem***@example.com-my-project-123.json; \
         api_key_hash=null; ttft=null",
    );
    // Oldest HTTP-era payload: no `fail`, legacy cached counter only.
    check_line(
        38,
        "status=null; failed=false; tokens=15120/1204/640/8192/0/0/0/16964; normalized=6928/15120/8192/0",
    );
    check_line(
        39,
        "requested=null; model=gpt-5.4; resolved=gpt-5.4; normalized=1186/2210/1024/0",
    );
    check_line(
        40,
        "timestamp=2026-08-22T14:05:00Z; timestamp_ms=1787407500000; tier=flex",
    );
}

#[test]
fn fixture_aggregates_hold() {
    let events: Vec<UsageEvent> = good_lines().iter().map(|line| event_of(line)).collect();
    let failed: Vec<usize> = (1..=40)
        .filter(|number| events[number - 1].failed)
        .collect();
    assert_eq!(failed, [3, 4, 7, 10, 14, 15, 18, 19, 20, 26, 37]);
    let statuses: Vec<i64> = failed
        .iter()
        .filter_map(|number| events[number - 1].fail_status_code)
        .collect();
    assert_eq!(
        statuses,
        [429, 401, 529, 429, 401, 502, 499, 504, 500, 429, 403]
    );
    assert_eq!(events.iter().filter(|event| !event.failed).count(), 29);

    // The README sums `tokens.total_tokens`; no fixture line needs the
    // fallback (every zero total has zero counters), so the stored column
    // sums to the same figure.
    let total: i64 = events.iter().map(|event| event.tokens.total).sum();
    assert_eq!(total, 1_184_364);

    let ids: BTreeSet<&str> = events
        .iter()
        .filter_map(|event| event.request_id.as_deref())
        .collect();
    assert_eq!(ids.len(), 37);
    assert_eq!(
        events
            .iter()
            .filter(|event| event.request_id.is_none())
            .count(),
        1
    );

    let mut providers = BTreeMap::new();
    for event in &events {
        *providers
            .entry(event.provider.clone().unwrap_or_default())
            .or_insert(0) += 1;
    }
    let expected: BTreeMap<String, i32> = [
        ("codex", 14),
        ("claude", 8),
        ("gemini", 5),
        ("openai-compatible-openrouter", 4),
        ("xai", 3),
        ("gemini-cli", 2),
        ("vertex", 1),
        ("antigravity", 1),
        ("kimi", 1),
        ("unknown", 1),
    ]
    .into_iter()
    .map(|(name, count)| (name.to_string(), count))
    .collect();
    assert_eq!(providers, expected);

    // Retries and additional-model records share request ids but are distinct events.
    let hashes: BTreeSet<&str> = events
        .iter()
        .map(|event| event.event_hash.as_str())
        .collect();
    assert_eq!(hashes.len(), 40);
}

#[test]
fn normalised_buckets_match_complete_breakdowns() {
    let lines = good_lines();
    let mut sums = [0_i64; 6];
    let mut gemini_family_reasoning = 0;
    let mut count = 0;
    for line in &lines {
        let payload: serde_json::Value = serde_json::from_slice(line).expect("fixture is JSON");
        let breakdown = &payload["token_breakdown"];
        if payload["accounting_version"] != 2 || breakdown["quality"] != "complete" {
            continue;
        }
        count += 1;
        let event = event_of(line);
        let input = &breakdown["input"];
        assert_eq!(
            event.normalized.total_input,
            input["total_tokens"].as_i64().unwrap_or(-1),
            "{payload}"
        );
        assert_eq!(
            event.normalized.uncached_input,
            input["uncached_tokens"].as_i64().unwrap_or(-1),
            "{payload}"
        );
        assert_eq!(
            event.normalized.cache_read,
            input["cache_read_tokens"].as_i64().unwrap_or(-1),
            "{payload}"
        );
        assert_eq!(
            event.normalized.cache_creation,
            input["cache_write_tokens"].as_i64().unwrap_or(-1),
            "{payload}"
        );
        sums[0] += event.normalized.total_input;
        sums[1] += event.normalized.uncached_input;
        sums[2] += event.normalized.cache_read;
        sums[3] += event.normalized.cache_creation;
        sums[4] += event.tokens.output;
        sums[5] += event.tokens.reasoning;
        if matches!(
            event.provider.as_deref(),
            Some("gemini" | "vertex" | "antigravity")
        ) {
            gemini_family_reasoning += event.tokens.reasoning;
        }
    }
    // The fixture README says "30 lines", but its sums are exactly those of
    // the 29 accounting-v2 lines; the 30th `complete` breakdown is line 31,
    // which is accounting v3 and deliberately not trusted.
    assert_eq!(count, 29);
    assert_eq!(
        [sums[0], sums[1], sums[2], sums[3], sums[5]],
        [952_420, 181_888, 763_298, 7_234, 30_568]
    );
    // The README's output figure is the breakdown's output total, which for
    // the Gemini family adds the thought tokens CPA reports beside
    // `output_tokens` (in `reasoning_tokens`).
    assert_eq!(sums[4] + gemini_family_reasoning, 62_508);
}

/// The fake secrets of the fixture README's table, plus every client key and
/// every e-mail/key-shaped `source` actually present in the files.
fn fixture_secrets() -> BTreeSet<String> {
    let mut secrets: BTreeSet<String> = [
        "eyJhbGciOiJSUzI1NiIsImtpZCI6IkZBS0UifQ",
        "RkFLRS1zaWduYXR1cmUtbm90LXJlYWw",
        "acc-FAKE-7d2c",
        "AIzaSyFAKE-FAKE-FAKE-FAKE-FAKE000000",
        "sk-proj-FAKEc2VjcmV0",
        "FAKEcookieFAKEcookie",
        "bob.ops@example.net",
        "sk-cpa-fake-client-0001-FAKEFAKEFAKE",
        "sk-cpa-fake-client-0002-FAKEFAKEFAKE",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    for name in ["usage-events.jsonl", "malformed.jsonl"] {
        for line in fixture_lines(name) {
            let Ok(payload) = serde_json::from_slice::<serde_json::Value>(&line) else {
                continue;
            };
            for key in ["api_key", "source"] {
                let Some(value) = payload.get(key).and_then(serde_json::Value::as_str) else {
                    continue;
                };
                let looks_secret = value.contains('@')
                    || value.starts_with("sk-")
                    || value.starts_with("AIza")
                    || value.starts_with("xai-");
                if !value.is_empty() && looks_secret {
                    secrets.insert(value.to_string());
                    // A bare local part would also identify the person.
                    if let Some((local, _)) = value.split_once('@') {
                        secrets.insert(format!("{local}@"));
                    }
                }
            }
        }
    }
    assert!(secrets.len() > 15, "{secrets:?}");
    secrets
}

fn text_columns(event: &UsageEvent) -> Vec<(&'static str, &str)> {
    let mut columns = vec![
        ("event_hash", event.event_hash.as_str()),
        ("timestamp", event.timestamp.as_str()),
        ("model", event.model.as_str()),
    ];
    let optional = [
        ("request_id", &event.request_id),
        ("provider", &event.provider),
        ("executor_type", &event.executor_type),
        ("requested_model", &event.requested_model),
        ("resolved_model", &event.resolved_model),
        ("endpoint", &event.endpoint),
        ("method", &event.method),
        ("path", &event.path),
        ("client_ip", &event.client_ip),
        ("x_forwarded_for", &event.x_forwarded_for),
        ("user_agent", &event.user_agent),
        ("auth_type", &event.auth_type),
        ("auth_index", &event.auth_index),
        ("source", &event.source),
        ("source_hash", &event.source_hash),
        ("api_key_hash", &event.api_key_hash),
        ("account_snapshot", &event.account_snapshot),
        ("auth_label_snapshot", &event.auth_label_snapshot),
        ("auth_file_snapshot", &event.auth_file_snapshot),
        ("auth_provider_snapshot", &event.auth_provider_snapshot),
        ("auth_project_id_snapshot", &event.auth_project_id_snapshot),
        ("reasoning_effort", &event.reasoning_effort),
        ("service_tier", &event.service_tier),
        ("request_service_tier", &event.request_service_tier),
        ("response_service_tier", &event.response_service_tier),
        ("fail_summary", &event.fail_summary),
        ("response_metadata_json", &event.response_metadata_json),
        ("header_quota_plan_type", &event.header_quota_plan_type),
        ("header_error_kind", &event.header_error_kind),
        ("header_error_code", &event.header_error_code),
        ("header_trace_id", &event.header_trace_id),
    ];
    columns.extend(
        optional
            .into_iter()
            .filter_map(|(name, value)| value.as_deref().map(|text| (name, text))),
    );
    columns
}

#[test]
fn no_fixture_secret_survives_in_any_stored_field() {
    let secrets = fixture_secrets();
    let mut events = 0;
    for name in ["usage-events.jsonl", "malformed.jsonl"] {
        for line in fixture_lines(name) {
            let Decoded::Event(event) = decode(&line, NOW_MS) else {
                continue;
            };
            events += 1;
            for (column, text) in text_columns(&event) {
                for secret in &secrets {
                    assert!(
                        !text.contains(secret.as_str()),
                        "{column} leaks {secret:?}: {text}"
                    );
                }
            }
        }
    }
    assert!(events >= 50, "only {events} events decoded");
}

#[test]
fn failure_summaries_are_redacted() {
    let lines = good_lines();
    let summary = |number: usize| {
        event_of(&lines[number - 1])
            .fail_summary
            .unwrap_or_default()
    };
    let line4 = summary(4);
    assert!(line4.contains(r#""Authorization":"[redacted]""#), "{line4}");
    assert!(
        line4.contains(r#""ChatGPT-Account-Id":"[redacted]""#),
        "{line4}"
    );
    assert!(line4.contains("account=b***@example.net"), "{line4}");
    assert!(line4.contains("token_expired"), "{line4}");
    assert!(
        summary(10).contains("alt=sse&key=[redacted]"),
        "{}",
        summary(10)
    );
    assert!(
        summary(14).contains("Incorrect API key provided: [redacted]. You can find"),
        "{}",
        summary(14)
    );
    assert!(
        summary(15).starts_with("<html>\r\n<head><title>502 Bad Gateway"),
        "{}",
        summary(15)
    );
    // Failed rows keep the (redacted) response headers after the body.
    assert!(
        summary(3).ends_with(r#""X-Request-Id":["6f1c2a9e-48b1-4c0e-9d7a-0e3f1b2c4d5e"]}"#),
        "{}",
        summary(3)
    );
    // Successful rows keep no failure text even though headers were sent.
    for number in [1, 2, 13] {
        let event = event_of(&lines[number - 1]);
        assert_eq!(event.fail_summary, None, "line {number}");
    }
}

#[test]
fn response_headers_become_header_columns() {
    let line1 = event_of(&good_lines()[0]);
    let metadata: serde_json::Value =
        serde_json::from_str(line1.response_metadata_json.as_deref().expect("metadata"))
            .expect("metadata is JSON");
    assert_eq!(metadata["quota"]["plan_type"], "pro");
    assert_eq!(metadata["quota"]["primary"]["window_minutes"], 300);
    assert_eq!(metadata["quota"]["secondary"]["used_percent"], 8.0);
    assert_eq!(metadata["trace"]["cf_ray"], "9a1b2c3d4e5f6071-SJC");

    let line13 = event_of(&good_lines()[12]);
    let metadata = line13.response_metadata_json.expect("metadata");
    assert!(
        metadata.contains(r#""remaining_requests":498"#),
        "{metadata}"
    );
    assert!(
        !metadata.to_ascii_lowercase().contains("cookie"),
        "{metadata}"
    );

    check(
        &json(
            r#"{"model":"m","timestamp":1767225600,"headers":{"X-Error-Type":["rate_limit"],"X-Error-Code":["E42"],"Retry-After":["10"]}}"#,
        ),
        "error_kind=rate_limit; error_code=E42; recover_at=1767225610000",
    );
    check(
        &json(r#"{"model":"m","response_headers":{"Vary":["Origin"]}}"#),
        "recover_at=null; trace=null",
    );
    assert_eq!(
        event_of(&json(
            r#"{"model":"m","response_headers":{"Vary":["Origin"]}}"#
        ))
        .response_metadata_json,
        None
    );
}

#[test]
fn worked_hash_examples_match_go() {
    let example_1 = json(
        r#"{"timestamp":"2026-08-22T22:00:23.007+08:00","latency_ms":64110,"source":"bob.ops@example.net","auth_index":"85ad019fd40e1278","tokens":{"input_tokens":91877,"output_tokens":6210,"reasoning_tokens":4096,"cached_tokens":88320,"cache_read_tokens":88320,"total_tokens":98087},"failed":false,"provider":"codex","model":"gpt-5.5","alias":"fast","endpoint":"POST /v1/responses","request_id":"9b1e04fa"}"#,
    );
    check(
        &example_1,
        "hash=95889cb1b091c4f4442dd5d36504408d3004cb7e2a043537f12a0ed318a6dbf9; \
         source_hash=4a3813fa60026f121d900d43c197ca5ef2499e47e7ab69ffec2f913368f86e74; \
         source=bob***@example.net; model=fast; resolved=gpt-5.5; timestamp=2026-08-22T14:00:23.007Z",
    );
    let example_2 = json(
        r#"{"timestamp":1767225600,"method":"post","path":"/v1/messages","model":"claude-sonnet-4","status":429,"usage":{"prompt_tokens":"7"},"cached_tokens":2,"cache_tokens":3}"#,
    );
    check(
        &example_2,
        "hash=97c9727f325115865a7b40e41f7cea46a2156a6a706c76ce9c6fd09238a81a27; endpoint=POST /v1/messages; \
         method=POST; failed=true; tokens=7/0/0/2/3/0/0/10; latency=null; request_id=null; timestamp=2026-01-01T00:00:00Z",
    );
}

#[test]
fn latency_presence_changes_the_hash() {
    let base = r#""timestamp":1767225600,"model":"m","request_id":"r""#;
    let hash = |extra: &str| event_of(&json(&format!("{{{base}{extra}}}"))).event_hash;
    let without = hash("");
    assert_eq!(hash(r#","latency_ms":null"#), without);
    assert_ne!(hash(r#","latency_ms":0"#), without);
    assert_eq!(hash(r#","latency_ms":"abc""#), hash(r#","latency_ms":0"#));
    check(
        &json(&format!(r#"{{{base},"latency_ms":"abc","ttft_ms":null}}"#)),
        "latency=0; ttft=null",
    );
    check(
        &json(&format!(
            r#"{{{base},"durationMs":12.9,"timeToFirstTokenMs":"5"}}"#
        )),
        "latency=12; ttft=5",
    );
}

#[test]
fn timestamp_rules() {
    let cases = [
        // Null first key stops the search: now.
        (
            r#"{"model":"m","timestamp":null,"time":1767225600}"#,
            NOW_TEXT,
        ),
        (r#"{"model":"m","time":1767225600}"#, "2026-01-01T00:00:00Z"),
        (
            r#"{"model":"m","createdAt":1767225600123}"#,
            "2026-01-01T00:00:00.123Z",
        ),
        (
            r#"{"model":"m","timestamp":1767225600.9}"#,
            "2026-01-01T00:00:00Z",
        ),
        (
            r#"{"model":"m","timestamp":"1767225600"}"#,
            "2026-01-01T00:00:00Z",
        ),
        (r#"{"model":"m","timestamp":"1767225600.5"}"#, NOW_TEXT),
        (
            r#"{"model":"m","timestamp":9999999999}"#,
            "2286-11-20T17:46:39Z",
        ),
        (
            r#"{"model":"m","timestamp":10000000000}"#,
            "1970-04-26T17:46:40Z",
        ),
        (r#"{"model":"m","timestamp":-1}"#, "1969-12-31T23:59:59Z"),
        (
            r#"{"model":"m","timestamp":"2026-05-06 08:30:15"}"#,
            "2026-05-06T08:30:15Z",
        ),
        (
            r#"{"model":"m","timestamp":"2026-05-06 08:30:15.5"}"#,
            "2026-05-06T08:30:15.5Z",
        ),
        (
            r#"{"model":"m","timestamp":"2026-05-06T08:30:15"}"#,
            "2026-05-06T08:30:15Z",
        ),
        (
            r#"{"model":"m","timestamp":"2026-05-06T08:30:15.123456789Z"}"#,
            "2026-05-06T08:30:15.123456789Z",
        ),
        (
            r#"{"model":"m","timestamp":"2026-05-06T08:30:15.120+08:00"}"#,
            "2026-05-06T00:30:15.12Z",
        ),
        (
            r#"{"model":"m","timestamp":"2026-05-06T08:30:15.000Z"}"#,
            "2026-05-06T08:30:15Z",
        ),
        (r#"{"model":"m","timestamp":"2026-05-06"}"#, NOW_TEXT),
        (
            r#"{"model":"m","timestamp":"2026-05-06t08:30:15z"}"#,
            NOW_TEXT,
        ),
        (r#"{"model":"m","timestamp":""}"#, NOW_TEXT),
        (r#"{"model":"m","timestamp":true}"#, NOW_TEXT),
        (
            r#"{"model":"m","request_time":"  2026-05-06T08:30:15Z "}"#,
            "2026-05-06T08:30:15Z",
        ),
        (r#"{"model":"m"}"#, NOW_TEXT),
    ];
    for (payload, expected) in cases {
        check(&json(payload), &format!("timestamp={expected}"));
    }
    check(
        &json(r#"{"model":"m","timestamp":"2026-05-06T08:30:15.1239Z"}"#),
        "timestamp_ms=1778056215123",
    );
    check(&json(r#"{"model":"m"}"#), &format!("timestamp_ms={NOW_MS}"));
}

#[test]
fn field_aliases_and_fallbacks() {
    // Alias beats model; endpoint derived from method + path; provider falls back to type.
    check(
        &json(
            r#"{"alias":"fast","model":"gpt-5.5","http_method":"put","urlPath":"/x","type":"codex"}"#,
        ),
        "model=fast; resolved=gpt-5.5; endpoint=PUT /x; method=PUT; path=/x; provider=codex",
    );
    check(
        &json(r#"{"modelName":"x","requestedModel":"y"}"#),
        "model=y; requested=y; resolved=x",
    );
    check(
        &json(r#"{"model":"","alias":""}"#),
        "model=-; requested=null; resolved=null",
    );
    // The endpoint pattern is case-sensitive and keeps its own text.
    check(
        &json(r#"{"model":"m","endpoint":"post /x"}"#),
        "endpoint=post /x; method=null; path=null",
    );
    check(
        &json("{\"model\":\"m\",\"endpoint\":\"DELETE\\t/v1/x?y extra\"}"),
        "endpoint=DELETE\t/v1/x?y extra; method=DELETE; path=/v1/x?y",
    );
    check(
        &json(r#"{"model":"m","endpoint":"","api":"GET /a"}"#),
        "endpoint=-",
    );
    check(
        &json(r#"{"model":"m","method":"get"}"#),
        "endpoint=-; method=GET",
    );
    // Numbers and booleans coerce to text; the first present key wins even when empty.
    check(
        &json(r#"{"model":"m","request_id":123,"auth_index":0,"reasoning_effort":true}"#),
        "request_id=123; auth_index=0; effort=true",
    );
    check(
        &json(r#"{"model":"m","request_id":"","requestId":"x"}"#),
        "request_id=null",
    );
    check(&json(r#"{"model":"m","request_id":1.5}"#), "request_id=1.5");
    // auth_type doubles as provider when nothing better is known.
    check(
        &json(r#"{"model":"m","authType":"oauth"}"#),
        "provider=oauth; auth_type=oauth",
    );
}

#[test]
fn source_and_key_hashes() {
    let hash_of = |text: &str| {
        let event = event_of(&json(&format!(r#"{{"model":"m","source":"{text}"}}"#)));
        event.source_hash.unwrap_or_default()
    };
    assert_eq!(
        hash_of("bob.ops@example.net"),
        "4a3813fa60026f121d900d43c197ca5ef2499e47e7ab69ffec2f913368f86e74"
    );
    assert_eq!(
        hash_of("  bob.ops@example.net "),
        hash_of("bob.ops@example.net")
    );
    check(
        &json(r#"{"model":"m","apiKey":" sk-cpa-abcdefgh12345678 "}"#),
        "source=m:sk-c...5678; api_key_hash=48f85ea48a9997366d09a46d56ad2402566e8eb3ebc9e22a9b4f7c95200e41f2",
    );
    check(
        &json(r#"{"model":"m","email":"x@example.com","account":"y@example.com"}"#),
        "source=y***@example.com",
    );
    check(
        &json(r#"{"model":"m","source":"","api_key":"k"}"#),
        "source=null; source_hash=null; api_key_hash=8254c329a92850f6d539dd376f4816ee2764517da5e0235514af433164480d7a",
    );
}

#[test]
fn token_lookup_order_and_totals() {
    // `tokens` before `usage` before top level; first non-zero wins; negatives count.
    check(
        &json(
            r#"{"model":"m","tokens":{"input_tokens":0,"inputTokens":5},"usage":{"input_tokens":7},"input_tokens":9}"#,
        ),
        "tokens=5/0/0/0/0/0/0/5",
    );
    check(
        &json(
            r#"{"model":"m","usage":{"prompt_tokens":0},"promptTokens":"8","completionTokens":2}"#,
        ),
        "tokens=8/2/0/0/0/0/0/10",
    );
    check(
        &json(r#"{"model":"m","tokens":{"input_tokens":-4,"output_tokens":3}}"#),
        "tokens=-4/3/0/0/0/0/0/3; normalized=0/0/0/0",
    );
    check(
        &json(
            r#"{"model":"m","usage":{"cache_read_input_tokens":10,"cache_creation_input_tokens":4,"input_tokens":2,"output_tokens":1}}"#,
        ),
        "mode=separate_from_input; normalized=2/16/10/4; total=17",
    );
    // An explicit mode wins over every inference.
    check(
        &json(
            r#"{"model":"claude-x","tokens":{"cache_input_mode":"included_in_input","input_tokens":20,"cache_read_tokens":5}}"#,
        ),
        "mode=included_in_input; normalized=15/20/5/0",
    );
    // Legacy cached beyond read + creation counts as extra cache read.
    check(
        &json(
            r#"{"model":"gpt-5","tokens":{"input_tokens":100,"cached_tokens":30,"cache_read_tokens":10}}"#,
        ),
        "normalized=70/100/30/0",
    );
    check(
        &json(r#"{"model":"m","total":"12","tokens":{"totalTokens":0}}"#),
        "total=12",
    );
    check(
        &json(
            r#"{"model":"m","tokens":{"input_tokens":"12.5","output_tokens":"1e3","reasoning_tokens":"abc"}}"#,
        ),
        "tokens=0/0/0/0/0/0/0/0",
    );
    check(
        &json(r#"{"model":"m","tokens":{"input_tokens":12.9,"output_tokens":-1.9}}"#),
        "tokens=12/-1/0/0/0/0/0/12",
    );
}

#[test]
fn failed_rule_is_stepwise() {
    let cases = [
        (r#"{"model":"m","failed":true,"success":true}"#, "true"),
        (r#"{"model":"m","failed":"true","success":true}"#, "false"),
        (r#"{"model":"m","failed":null,"ok":false}"#, "true"),
        (r#"{"model":"m","isFailed":false,"status":500}"#, "false"),
        (r#"{"model":"m","status":"503"}"#, "true"),
        (r#"{"model":"m","statusCode":399,"error":null}"#, "false"),
        (r#"{"model":"m","status":200,"error":""}"#, "true"),
        (r#"{"model":"m","errorMessage":false}"#, "true"),
        (r#"{"model":"m","error":{}}"#, "true"),
        (r#"{"model":"m"}"#, "false"),
    ];
    for (payload, failed) in cases {
        check(&json(payload), &format!("failed={failed}"));
    }
    check(
        &json(r#"{"model":"m","failed":true,"fail":{"status_code":0},"failStatusCode":503}"#),
        "status=503",
    );
    check(
        &json(r#"{"model":"m","failed":true,"fail":{"statusCode":-1}}"#),
        "status=null",
    );
    check(
        &json(r#"{"model":"m","failed":true,"fail":"upstream broke"}"#),
        "summary=upstream broke; status=null",
    );
    check(
        &json(
            r#"{"model":"m","failed":true,"fail_body":"sk-proj-abcdefgh1234 for a.person@example.com"}"#,
        ),
        "summary=[redacted] for a***@example.com",
    );
    check(
        &json(r#"{"model":"m","failed":true,"fail":{"body":""},"headers":{}}"#),
        "summary=null",
    );
}

#[test]
fn service_tier_rules() {
    check(
        &json(
            r#"{"model":"m","provider":"codex","service_tier":"auto","response_service_tier":"default"}"#,
        ),
        "tier=auto; request_tier=auto",
    );
    check(
        &json(r#"{"model":"m","executor_type":"CodexExecutor","response_service_tier":"flex"}"#),
        "tier=flex; request_tier=flex",
    );
    check(
        &json(
            r#"{"model":"m","provider":"claude","serviceTier":"auto","responseServiceTier":"priority"}"#,
        ),
        "tier=priority; request_tier=auto",
    );
    check(
        &json(r#"{"model":"m","provider":"claude","response_service_tier":"scale"}"#),
        "tier=scale; request_tier=scale; response_tier=scale",
    );
    check(
        &json(r#"{"model":"m","requestServiceTier":"flex","service_tier":"auto"}"#),
        "tier=flex; request_tier=flex",
    );
}

#[test]
fn client_metadata_is_sanitised_and_capped() {
    let agent = format!("a\u{0}b\t\tc\u{200b}{}", "é".repeat(600));
    let payload = serde_json::json!({"model": "m", "userAgent": agent, "clientIp": " 10.0.0.1\n", "x_forwarded_for": "x".repeat(3000)});
    let event = event_of(payload.to_string().as_bytes());
    assert_eq!(event.client_ip.as_deref(), Some("10.0.0.1"));
    let agent = event.user_agent.expect("user agent");
    assert!(
        agent.starts_with("a b c é") && agent.ends_with("...") && agent.len() <= 1024,
        "{agent}"
    );
    let forwarded = event.x_forwarded_for.expect("forwarded");
    assert_eq!(forwarded.len(), 2048);
}

#[test]
fn control_payloads() {
    assert_eq!(decode(br#"{"refresh":true}"#, NOW_MS), Decoded::Refresh);
    assert_eq!(
        decode(b" {\"support_refresh\" : true}\r\n", NOW_MS),
        Decoded::SupportRefresh
    );
    for payload in [
        r#"{"refresh":false}"#,
        r#"{"refresh":true,"x":1}"#,
        r#"{"support_refresh":"true"}"#,
        r#"{"other":true}"#,
        r#"{"refresh":1}"#,
    ] {
        assert!(
            matches!(decode(payload.as_bytes(), NOW_MS), Decoded::Dead(_)),
            "{payload}"
        );
    }
    // A real payload that also carries `refresh` is a payload.
    check(&json(r#"{"refresh":true,"model":"m"}"#), "model=m");
}

enum Outcome {
    Blank,
    Dead(&'static str),
    Event(&'static str),
}

#[test]
fn malformed_lines_have_decided_outcomes() {
    use Outcome::{Blank, Dead, Event};
    let table: [(usize, Outcome); 40] = [
        (
            1,
            Dead("invalid JSON at line 1 column 260: EOF while parsing a string"),
        ),
        (2, Dead("invalid JSON at line 1 column 1: expected value")),
        (3, Blank),
        (4, Blank),
        (5, Dead("usage payload is not a JSON object (found array)")),
        (
            6,
            Dead(
                "usage payload is not a JSON object (found a string holding encoded JSON; unwrap it once before decoding)",
            ),
        ),
        (7, Dead("usage payload is not a JSON object (found null)")),
        (8, Dead("usage payload is not a JSON object (found number)")),
        (
            9,
            Dead("usage payload is not a JSON object (found boolean)"),
        ),
        (
            10,
            Dead("no usage fields: the object has no timestamp, model or token counts"),
        ),
        (
            11,
            Dead("no usage fields: the object has no timestamp, model or token counts"),
        ),
        (12, Event("latency=8412; total=50090")),
        (13, Event("tokens=0/0/0/0/0/0/0/0; model=gpt-5.5")),
        (14, Event("failed=false")),
        (
            15,
            Event("timestamp=2026-08-22T14:00:11.482Z; timestamp_ms=1787407211482"),
        ),
        (16, Event("timestamp=2027-01-15T08:00:00Z")),
        (17, Event("timestamp=2027-01-15T08:00:00Z")),
        (18, Event("timestamp=2026-08-22T14:00:11.482Z")),
        (19, Event("tokens=12/1877/1024/41984/0/41984/0/50090")),
        (20, Event("failed=false; status=null; summary=null")),
        (
            21,
            Event(
                "source=null; source_hash=null; model=gpt-5.5; resolved=null; tokens=0/0/0/0/0/0/0/0",
            ),
        ),
        (
            22,
            Dead("tokens.input_tokens is out of the 64-bit integer range"),
        ),
        (
            23,
            Dead("tokens.total_tokens is out of the 64-bit integer range"),
        ),
        (24, Dead("latency_ms is out of the 64-bit integer range")),
        (
            25,
            Event(
                "latency=-20; ttft=-1; tokens=-5/-1/1024/41984/0/41984/0/1024; normalized=0/0/41984/0",
            ),
        ),
        (
            26,
            Event("normalized=6229/48213/41984/0; mode=included_in_input"),
        ),
        (27, Dead("invalid JSON at line 1 column 60: expected value")),
        (28, Dead("trailing comma")),
        (
            29,
            Dead("invalid JSON at line 1 column 2: key must be a string"),
        ),
        (
            30,
            Dead("invalid JSON at line 1 column 37: expected `,` or `}`"),
        ),
        (
            31,
            Dead("invalid JSON at line 1 column 44: trailing characters"),
        ),
        (32, Event("request_id=9b1e04fa; total=50090")),
        (33, Event("request_id=dup00002")),
        (34, Dead("recursion limit exceeded")),
        (
            35,
            Dead("payload is not valid UTF-8 (invalid byte at offset 318)"),
        ),
        (36, Dead("lone surrogates are rejected")),
        (37, Dead("no usage fields")),
        (38, Dead("no usage fields")),
        (39, Event("request_id=9b1e04fa; total=50090")),
        (40, Event("failed=true; status=500")),
    ];
    let lines = fixture_lines("malformed.jsonl");
    assert_eq!(lines.len(), 40);
    for (number, outcome) in table {
        let line = &lines[number - 1];
        let decoded = decode(line, NOW_MS);
        match (outcome, decoded) {
            (Blank, Decoded::Blank) => {}
            (Dead(reason), Decoded::Dead(letter)) => {
                assert!(
                    letter.reason.contains(reason),
                    "line {number}: {:?} lacks {reason:?}",
                    letter.reason
                );
                assert!(
                    !letter.payload.is_empty(),
                    "line {number}: dead letter without payload"
                );
                assert_eq!(letter.created_at_ms, NOW_MS);
            }
            (Event(expected), Decoded::Event(_)) => check(line, expected),
            (_, other) => panic!("line {number}: unexpected outcome {other:?}"),
        }
    }
    // Dead letters keep the original item; invalid UTF-8 is kept lossily.
    let Decoded::Dead(letter) = decode(&lines[34], NOW_MS) else {
        panic!("line 35 must be dead")
    };
    assert!(letter.payload.contains('\u{fffd}') && letter.payload.starts_with(r#"{"timestamp""#));
    let Decoded::Dead(letter) = decode(&lines[0], NOW_MS) else {
        panic!("line 1 must be dead")
    };
    assert_eq!(letter.payload.as_bytes(), lines[0].as_slice());
}

#[test]
fn huge_failure_body_is_capped_and_redacted() {
    let line = &fixture_lines("malformed.jsonl")[39];
    assert!(line.len() > 256 * 1024);
    let event = event_of(line);
    let summary = event.fail_summary.expect("fail_summary");
    assert_eq!(summary.len(), 4096 + 3);
    assert!(summary.ends_with("..."));
}

#[test]
fn out_of_range_numbers_name_their_field() {
    let cases = [
        (
            r#"{"model":"m","latency_ms":"99999999999999999999"}"#,
            "latency_ms is out of the 64-bit integer range",
        ),
        (
            r#"{"model":"m","usage":{"output_tokens":-1e300}}"#,
            "usage.output_tokens is out of the 64-bit integer range",
        ),
        (
            r#"{"model":"m","timestamp":9223372036854775808}"#,
            "timestamp is out of the 64-bit integer range",
        ),
        (
            r#"{"model":"m","fail":{"status_code":1e19}}"#,
            "fail.status_code is out of the 64-bit integer range",
        ),
        (
            r#"{"model":"m","meta":[{"x":1e999}]}"#,
            "meta[0].x is out of the 64-bit integer range",
        ),
    ];
    for (payload, reason) in cases {
        match decode(payload.as_bytes(), NOW_MS) {
            Decoded::Dead(letter) => assert_eq!(letter.reason, reason, "{payload}"),
            other => panic!("{payload}: {other:?}"),
        }
    }
    // Values that fit 64 bits but no request can have are dead letters too (see
    // docs/ingest.md, "Absurd values"); the bounds themselves are fine.
    match decode(
        br#"{"model":"m","latency_ms":9223372036854775807,"ttft_ms":-9223372036854775808}"#,
        NOW_MS,
    ) {
        Decoded::Dead(letter) => assert!(
            letter
                .reason
                .starts_with("latency_ms is 9223372036854775807, beyond 1000000000 ms"),
            "{}",
            letter.reason
        ),
        other => panic!("{other:?}"),
    }
    check(
        &json(r#"{"model":"m","latency_ms":1000000000,"ttft_ms":-1000000000}"#),
        "latency=1000000000; ttft=-1000000000",
    );
    // Unused huge fields are kept, not fatal.
    check(&json(r#"{"model":"m","cost":1e30}"#), "model=m");
}

#[test]
fn truncated_and_corrupted_payloads_never_panic() {
    let mut decoded = 0;
    for line in good_lines() {
        for cut in (0..line.len()).step_by(13) {
            let _ = decode(&line[..cut], NOW_MS);
            decoded += 1;
        }
        for position in (0..line.len()).step_by(29) {
            let mut corrupted = line.clone();
            corrupted[position] = [b'"', b'\\', 0xff, b'{', b'9'][position % 5];
            let _ = decode(&corrupted, NOW_MS);
            decoded += 1;
        }
    }
    assert!(decoded > 5000);
}
