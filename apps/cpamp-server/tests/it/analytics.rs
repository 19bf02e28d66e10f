//! Analytics endpoints through the real binary, on the worked example of the
//! analytics spec (two events: a success and a rate-limited failure). No prices
//! exist yet, so every cost is `null` (unknown), never 0.

use cpamp_domain::event::{CacheInputMode, NormalizedTokens, TokenCounts, UsageEvent};
use cpamp_domain::ports::{BatchOrigin, EventSink, IngestBatch};
use serde_json::{Value, json};

use crate::support::{ServerProcess, client};

const ADMIN_KEY: &str = "cpamp-analytics-test-admin-key-0123456789";

pub(crate) fn worked_example() -> Vec<UsageEvent> {
    let base = UsageEvent {
        event_hash: "11".repeat(32),
        request_id: Some("req-1".into()),
        timestamp_ms: 1_735_693_200_000,
        timestamp: "2025-01-01T01:00:00Z".into(),
        provider: Some("openai".into()),
        executor_type: Some("openai".into()),
        model: "gpt-5(high)".into(),
        requested_model: Some("gpt-5(high)".into()),
        endpoint: Some("POST /v1/chat/completions".into()),
        method: Some("POST".into()),
        path: Some("/v1/chat/completions".into()),
        client_ip: Some("10.1.2.3".into()),
        user_agent: Some("codex-cli/0.40".into()),
        auth_index: Some("a1".into()),
        source: Some("key-1".into()),
        source_hash: Some("sh1".into()),
        api_key_hash: Some("kh1".into()),
        cache_input_mode: Some(CacheInputMode::IncludedInInput),
        tokens: TokenCounts {
            input: 1000,
            output: 200,
            reasoning: 50,
            cached: 400,
            total: 1250,
            ..TokenCounts::default()
        },
        normalized: NormalizedTokens {
            uncached_input: 600,
            total_input: 1000,
            cache_read: 400,
            cache_creation: 0,
        },
        latency_ms: Some(1200),
        ttft_ms: Some(300),
        created_at_ms: 1_735_693_200_500,
        ..UsageEvent::default()
    };
    let failure = UsageEvent {
        event_hash: "22".repeat(32),
        request_id: Some("req-2".into()),
        timestamp_ms: 1_735_695_000_000,
        timestamp: "2025-01-01T01:30:00Z".into(),
        tokens: TokenCounts::default(),
        normalized: NormalizedTokens::default(),
        latency_ms: Some(150),
        ttft_ms: None,
        failed: true,
        fail_status_code: Some(429),
        fail_summary: Some("rate limited".into()),
        created_at_ms: 1_735_695_000_500,
        ..base.clone()
    };
    vec![base, failure]
}

fn seeded_server() -> (tempfile::TempDir, ServerProcess) {
    let data = tempfile::tempdir().expect("tempdir");
    let db = data.path().join("usage.sqlite");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let store = cpamp_storage::SqliteStore::open(cpamp_storage::Options::new(&db))
            .await
            .expect("open");
        store
            .store_batch(IngestBatch {
                origin: BatchOrigin::Collector("http://cpa".into()),
                events: worked_example(),
                dead_letters: Vec::new(),
            })
            .await
            .expect("seed");
        store.close().await;
    });
    let server = ServerProcess::start(data.path(), &[("CPA_MANAGER_ADMIN_KEY", ADMIN_KEY)]);
    (data, server)
}

fn get(server: &ServerProcess, path: &str) -> (u16, Value) {
    let response = client()
        .get(server.url(path))
        .bearer_auth(ADMIN_KEY)
        .send()
        .expect("get");
    let status = response.status().as_u16();
    (status, response.json().unwrap_or(Value::Null))
}

fn post(server: &ServerProcess, path: &str, body: &str) -> (u16, Value) {
    let response = client()
        .post(server.url(path))
        .bearer_auth(ADMIN_KEY)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .expect("post");
    let status = response.status().as_u16();
    (status, response.json().unwrap_or(Value::Null))
}

#[test]
fn dashboard_monitoring_and_usage_answer_the_worked_example() {
    let (_data, server) = seeded_server();

    let (status, dashboard) = get(
        &server,
        "/v0/management/dashboard/summary?today_start_ms=1735689600000&now_ms=1735696800000&top_models=5&recent_failures=5",
    );
    assert_eq!(status, 200, "{dashboard}");
    assert_eq!(
        dashboard["today"],
        json!({"total_calls":2,"success_calls":1,"failure_calls":1,"success_rate":0.5,"input_tokens":1000,"output_tokens":200,
               "cached_tokens":400,"cache_read_tokens":0,"cache_creation_tokens":0,"reasoning_tokens":50,"total_tokens":1250,
               "total_cost":null,"average_latency_ms":675.0,"zero_token_calls":0})
    );
    assert_eq!(
        dashboard["rolling_30m"],
        json!({"rpm":1.0/30.0,"tpm":0.0,"total_calls":1,"total_tokens":0})
    );
    assert_eq!(
        dashboard["top_models_today"],
        json!([{"model":"gpt-5","calls":2,"tokens":1250,"cost":null,"success_rate":0.5}])
    );
    assert_eq!(
        dashboard["traffic_timeline"].as_array().map(Vec::len),
        Some(24)
    );
    assert_eq!(
        dashboard["traffic_timeline"][1],
        json!({"bucket_ms":1735693200000_i64,"calls":2,"tokens":1250,"success":1,"failure":1,"calls_share":1.0,"tokens_share":1.0,"failure_rate":0.5})
    );
    let points = dashboard["today_request_health_timeline"]["points"]
        .as_array()
        .expect("points");
    assert_eq!(points.len(), 144);
    assert_eq!(points[6]["tone"], "good");
    assert_eq!(points[9]["tone"], "bad");
    assert_eq!(points[12]["tone"], "empty");
    assert_eq!(points[13]["tone"], "future");
    assert_eq!(
        dashboard["token_mix"],
        json!([{"key":"input","tokens":600,"share":0.48},{"key":"cached","tokens":400,"share":0.32},
               {"key":"output","tokens":200,"share":0.16},{"key":"reasoning","tokens":50,"share":0.04}])
    );
    assert_eq!(
        dashboard["channel_health"],
        json!([{"auth_index":"a1","source":"key-1","auth_provider_snapshot":"openai","calls":2,"failures":1,"failure_rate":0.5,
                "success_rate":0.5,"tokens":1250,"cost":null,"average_latency_ms":675.0,"tone":"bad"}])
    );
    assert_eq!(
        dashboard["failure_sources"],
        json!([{"source":"key-1","source_hash":"sh1","auth_index":"a1","auth_provider_snapshot":"openai","calls":2,"failures":1,
                "failure_rate":0.5,"last_seen_ms":1735695000000_i64,"average_latency_ms":675.0,"tone":"bad"}])
    );
    assert_eq!(
        dashboard["recent_failures"],
        json!([{"timestamp_ms":1735695000000_i64,"model":"gpt-5","api_key_hash":"kh1","source":"key-1","source_hash":"sh1",
                "auth_index":"a1","endpoint":"POST /v1/chat/completions","duration_ms":150,"fail_status_code":429,"fail_summary":"rate limited"}])
    );

    let body = r#"{"from_ms":1735689600000,"to_ms":1735776000000,"now_ms":1735696800000,"time_zone":"UTC","unknown_field":[1,2],
        "include":{"summary":true,"summary_profile":"compact","summary_percentiles":true,"timeline":true,"model_stats":true,
                   "events_page":{"limit":1,"before_ms":null,"before_id":null}}}"#;
    let (status, first) = post(&server, "/v0/management/monitoring/analytics", body);
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["granularity"], "hour");
    assert_eq!(first["summary"]["total_calls"], 2);
    assert_eq!(first["summary"]["cache_hit_rate"], 0.4);
    assert_eq!(first["summary"]["p95_latency_ms"], 1200);
    assert_eq!(first["summary"]["p95_ttft_ms"], 300);
    assert_eq!(first["summary"]["total_cost"], Value::Null);
    assert_eq!(
        first["timeline"],
        json!([{"bucket_ms":1735693200000_i64,"label":"01:00","calls":2,"tokens":1250,"success":1,"failure":1,"input_tokens":1000,
                "output_tokens":200,"cached_tokens":400,"cache_read_tokens":0,"cache_creation_tokens":0,"cache_hit_rate":0.4,
                "reasoning_tokens":50,"total_tokens":1250,"cost":null,"average_latency_ms":675.0,"p95_latency_ms":1200,
                "p95_ttft_ms":300,"success_rate":0.5,"failure_rate":0.5}])
    );
    assert_eq!(first["model_stats"][0]["cache_hit_tokens"], 400);
    let events = &first["events"];
    assert_eq!(events["has_more"], true);
    assert_eq!(events["total_count"], 2);
    assert_eq!(events["next_before_ms"], 1735695000000_i64);
    let item = &events["items"][0];
    assert_eq!(item["request_id"], "req-2");
    assert_eq!(item["analytics_model"], "gpt-5");
    assert_eq!(item["auth_provider_snapshot"], "openai");
    assert_eq!(item["client_ip"], "10.1.2.3");
    assert_eq!(item["ttft_ms"], Value::Null);
    assert_eq!(item["fail_summary"], "rate limited");
    assert!(item.get("fail_body").is_none() && item.get("raw_json").is_none());

    let next = body.replace(
        r#""before_ms":null,"before_id":null"#,
        &format!(
            r#""before_ms":{},"before_id":{}"#,
            events["next_before_ms"], events["next_before_id"]
        ),
    );
    let (status, second) = post(&server, "/v0/management/monitoring/analytics", &next);
    assert_eq!(status, 200);
    assert_eq!(second["events"]["items"][0]["request_id"], "req-1");
    assert_eq!(second["events"]["has_more"], false);
    assert_eq!(
        (
            second["events"]["next_before_ms"].clone(),
            second["events"]["next_before_id"].clone()
        ),
        (json!(0), json!(0))
    );

    let (status, usage) = get(&server, "/v0/management/usage");
    assert_eq!(status, 200);
    assert_eq!(usage["total_requests"], 2);
    assert_eq!(usage["failure_count"], 1);
    let details = &usage["apis"]["POST /v1/chat/completions"]["models"]["gpt-5"]["details"];
    assert_eq!(details[0]["timestamp"], "2025-01-01T01:30:00Z");
    assert_eq!(details[1]["tokens"]["cache_tokens"], 400);
    assert!(details[0].get("client_ip").is_none() && details[0].get("user_agent").is_none());

    let _ = server.terminate();
}

#[test]
fn bad_input_is_a_400_with_a_code_never_a_500() {
    let (_data, server) = seeded_server();
    let path = "/v0/management/monitoring/analytics";
    for (body, code, message) in [
        ("", "request_failed", None),
        ("{not json", "request_failed", None),
        (r#"{"from_ms":"1","to_ms":2}"#, "request_failed", None),
        (r#"{"from_ms":1.5,"to_ms":2}"#, "request_failed", None),
        (
            r#"{"from_ms":5,"to_ms":5}"#,
            "request_failed",
            Some("from_ms and to_ms are required and from_ms must be less than to_ms"),
        ),
        (
            r#"{"to_ms":5}"#,
            "request_failed",
            Some("from_ms and to_ms are required and from_ms must be less than to_ms"),
        ),
        (
            r#"{"from_ms":1,"to_ms":5,"time_zone":"Mars/Olympus"}"#,
            "invalid_time_zone",
            Some("invalid time zone: Mars/Olympus"),
        ),
        (
            r#"{"from_ms":1,"to_ms":5,"include":{"events_page":{"limit":50001}}}"#,
            "request_failed",
            Some("events_page.limit must be less than or equal to 50000"),
        ),
        (
            r#"{"from_ms":1,"to_ms":5,"filters":{"models":"gpt-5"}}"#,
            "request_failed",
            None,
        ),
        (
            r#"{"from_ms":1,"to_ms":5,"include":{"summary":"yes"}}"#,
            "request_failed",
            None,
        ),
    ] {
        let (status, error) = post(&server, path, body);
        assert_eq!(status, 400, "{body}: {error}");
        assert_eq!(error["code"], code, "{body}");
        if let Some(message) = message {
            assert_eq!(error["error"], message);
        }
    }
    let (status, ok) = post(
        &server,
        path,
        r#"{"from_ms":1,"to_ms":5,"filters":null,"include":null,"extra":{"x":1}}"#,
    );
    assert_eq!(status, 200);
    assert_eq!(ok["granularity"], "hour");

    for (query, message) in [
        ("", "today_start_ms is required"),
        (
            "today_start_ms=abc",
            "today_start_ms must be a positive integer",
        ),
        (
            "today_start_ms=-5",
            "today_start_ms must be a positive integer",
        ),
        ("today_start_ms=100&now_ms=x", "now_ms must be an integer"),
        (
            "today_start_ms=100&now_ms=50",
            "now_ms must be greater than or equal to today_start_ms",
        ),
        (
            "today_start_ms=100&top_models=1.5",
            "top_models must be an integer",
        ),
        (
            "today_start_ms=100&recent_failures=z",
            "recent_failures must be an integer",
        ),
    ] {
        let (status, error) = get(
            &server,
            &format!("/v0/management/dashboard/summary?{query}"),
        );
        assert_eq!(status, 400, "{query}");
        assert_eq!(error, json!({"error": message, "code": "request_failed"}));
    }

    let (status, error) = get(&server, path);
    assert_eq!(
        (status, error["code"].clone()),
        (405, json!("method_not_allowed"))
    );
    let (status, _) = get(&server, "/v0/management/monitoring/unknown");
    assert_eq!(status, 405);
    let (status, _) = get(&server, "/v0/management/dashboard/other");
    assert_eq!(status, 405);
    let unauthenticated = client()
        .post(server.url(path))
        .body("{}")
        .send()
        .expect("post");
    assert_eq!(unauthenticated.status(), 401);
    let _ = server.terminate();
}

/// Two calls through one file-backed credential an hour and a minute ago, the
/// older one carrying quota headers, the newer one a rate-limit failure.
fn recent_credential_server() -> (tempfile::TempDir, ServerProcess, i64, i64) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(0))
        .unwrap_or(0);
    let (old_ms, new_ms) = (now - 3_600_000, now - 60_000);
    let mut events = worked_example();
    for (event, at) in events.iter_mut().zip([old_ms, new_ms]) {
        event.timestamp_ms = at;
        event.timestamp = String::new();
        event.created_at_ms = at + 500;
        event.auth_file_snapshot = Some("codex-a.json".into());
        event.auth_provider_snapshot = Some("codex".into());
    }
    events[0].response_metadata_json = Some(r#"{"quota":{"plan_type":"plus"}}"#.into());
    events[0].header_quota_plan_type = Some("plus".into());
    events[0].header_quota_used_percent = Some(42.5);
    events[1].header_error_kind = Some("rate_limit".into());
    events[1].header_trace_id = Some("trace-9".into());
    let data = tempfile::tempdir().expect("tempdir");
    let db = data.path().join("usage.sqlite");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let store = cpamp_storage::SqliteStore::open(cpamp_storage::Options::new(&db))
            .await
            .expect("open");
        store
            .store_batch(IngestBatch {
                origin: BatchOrigin::Collector("http://cpa".into()),
                events,
                dead_letters: Vec::new(),
            })
            .await
            .expect("seed");
        store.close().await;
    });
    let server = ServerProcess::start(data.path(), &[("CPA_MANAGER_ADMIN_KEY", ADMIN_KEY)]);
    (data, server, old_ms, new_ms)
}

#[test]
fn header_snapshots_account_history_and_window_usage_through_the_binary() {
    let (_data, server, old_ms, new_ms) = recent_credential_server();

    let (status, snapshots) = get(
        &server,
        "/v0/management/monitoring/header-snapshots?days=1&limit=5",
    );
    assert_eq!(status, 200, "{snapshots}");
    let items = snapshots["items"].as_array().expect("items");
    // One credential: only its newest header event is listed.
    assert_eq!(items.len(), 1, "{snapshots}");
    assert_eq!(items[0]["event_hash"], "22".repeat(32));
    assert_eq!(items[0]["timestamp_ms"], new_ms);
    assert_eq!(items[0]["auth_file_snapshot"], "codex-a.json");
    assert_eq!(items[0]["header_error_kind"], "rate_limit");
    assert_eq!(items[0]["header_trace_id"], "trace-9");
    assert!(items[0].get("header_quota_plan_type").is_none());
    // Wire key order (a `Value` sorts keys, so read the text).
    let text = client()
        .get(server.url("/v0/management/monitoring/header-snapshots"))
        .bearer_auth(ADMIN_KEY)
        .send()
        .and_then(|response| response.text())
        .expect("raw snapshots");
    let order: Vec<usize> = [
        "\"generated_at_ms\":",
        "\"from_ms\":",
        "\"to_ms\":",
        "\"items\":",
        "\"event_hash\":",
        "\"timestamp_ms\":",
        "\"model\":",
        "\"auth_file_snapshot\":",
        "\"header_error_kind\":",
        "\"header_trace_id\":",
    ]
    .iter()
    .map(|key| text.find(key).unwrap_or(usize::MAX))
    .collect();
    assert!(order.windows(2).all(|pair| pair[0] < pair[1]), "{text}");
    for query in ["days=abc", "days=-1", "limit=1.5"] {
        let (status, error) = get(
            &server,
            &format!("/v0/management/monitoring/header-snapshots?{query}"),
        );
        assert_eq!(
            (status, error["code"].as_str()),
            (400, Some("request_failed")),
            "{query}"
        );
    }

    let (status, history) = post(
        &server,
        "/v0/management/monitoring/account-history",
        r#"{"accounts":[{"row_key":"a","auth_file_snapshot":"codex-a.json","auth_provider_snapshot":"codex","auth_index":"a1"}],"catch_up":true}"#,
    );
    assert_eq!(status, 200, "{history}");
    let item = &history["items"][0];
    assert_eq!(
        item["account_key"],
        "usage-account-history:2:file-index:636F6465782D612E6A736F6E:6131"
    );
    assert_eq!(item["total_requests"], 2);
    assert_eq!(item["success_calls"], 1);
    assert_eq!(item["failure_calls"], 1);
    assert_eq!(item["total_tokens"], 1250);
    assert_eq!(item["success_rate"], 0.5);
    assert_eq!(item["first_seen_ms"], old_ms);
    assert_eq!(item["last_seen_ms"], new_ms);
    assert_eq!(item["sync_status"], "ready");
    // No prices are stored: the cost is unknown, never 0.
    assert_eq!(item["total_cost"], serde_json::Value::Null);
    assert_eq!(item["latest_request"]["fail_status_code"], 429);
    assert_eq!(item["recent_requests"].as_array().map(Vec::len), Some(2));
    assert_eq!(history["checkpoint"]["latest_id"], 2);
    assert_eq!(history["checkpoint"]["pending"], false);

    let (status, usage) = post(
        &server,
        "/v0/management/monitoring/account-window-usage",
        &format!(
            r#"{{"windows":[{{"row_key":"a","provider_window_id":"5h","from_ms":{},"to_ms":{},"auth_file_snapshot":"codex-a.json","auth_provider_snapshot":"codex","auth_index":"a1","model_scope":{{"kind":"family","key":"codex_main"}}}}],"other":1}}"#,
            old_ms - 1,
            new_ms
        ),
    );
    assert_eq!(status, 200, "{usage}");
    let window = &usage["items"][0];
    // `to_ms` is exclusive: only the older call is inside.
    assert_eq!(window["total_requests"], 1);
    assert_eq!(window["request_key"], "a\u{0}5h\u{0}codex_main\u{0}current");
    assert_eq!(window["period"], "current");
    assert_eq!(window["scope_match_status"], "complete");
    assert_eq!(window["last_seen_ms"], old_ms);
    assert_eq!(window["total_cost"], serde_json::Value::Null);

    for (path, body) in [
        ("account-history", r#"{"accounts":[]}"#),
        (
            "account-history",
            r#"{"accounts":[{"row_key":"a","source":"x","bogus":1}]}"#,
        ),
        ("account-history", r#"{"accounts":[{"row_key":"a"}]}"#),
        (
            "account-history",
            r#"{"accounts":[{"row_key":"a","auth_file_snapshot":"f.json"}]}"#,
        ),
        (
            "account-history",
            r#"{"accounts":[{"row_key":"a","source":"x"},{"row_key":"a","source":"y"}]}"#,
        ),
        ("account-history", "{broken"),
        (
            "account-window-usage",
            r#"{"windows":[{"row_key":"a","provider_window_id":"w","from_ms":5,"to_ms":5,"source":"x"}]}"#,
        ),
        (
            "account-window-usage",
            r#"{"windows":[{"row_key":"a","provider_window_id":"w","from_ms":1,"to_ms":5,"source":"x","period":"later"}]}"#,
        ),
        (
            "account-window-usage",
            r#"{"windows":[{"row_key":"a","provider_window_id":"w","from_ms":1,"to_ms":5,"source":"x","model_scope":{"kind":"vendor"}}]}"#,
        ),
        (
            "account-window-usage",
            r#"{"windows":[{"row_key":"a","from_ms":1,"to_ms":5,"source":"x"}]}"#,
        ),
    ] {
        let (status, error) = post(&server, &format!("/v0/management/monitoring/{path}"), body);
        assert_eq!(
            (status, error["code"].as_str()),
            (400, Some("request_failed")),
            "{path} {body}: {error}"
        );
    }
    let (status, _) = get(&server, "/v0/management/monitoring/account-history");
    assert_eq!(status, 405);
}
