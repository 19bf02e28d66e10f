//! Security, tried from outside against the real binary and the fake CPA (which records
//! every request it receives):
//! - path traversal on panel and proxy paths (dot segments plain, percent-encoded,
//!   double-encoded and overlong, backslashes, NUL, very long paths) is refused or
//!   answered by cpamp itself, and never reaches CPA as another path;
//! - SQL injection through every filter of the usage, export, dashboard, monitoring and
//!   account endpoints neither fails (500) nor matches anything nor changes stored data;
//! - no secret (admin key, CPA Management Key, data key, raw client API keys) is in the
//!   logs, the database files, exports, backups (except their `data.key`), `/status`,
//!   `/metrics`, `/usage-service/config` or error bodies;
//! - the proxy never lends the CPA Management Key to a request without the admin key, and
//!   never passes the admin key on to CPA, whatever the method, path or credential, nor
//!   wherever it travels (any header, a cookie, a query parameter, a `Basic` credential);
//! - CORS is same-origin by default (CPA's own `Access-Control-Allow-Origin: *` is
//!   dropped) and every answer carries the security headers.

use std::io::{Read, Write};
use std::net::{IpAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use cpamp_testkit::{FakeCpa, FakeCpaOptions, RecordedRequest};
use serde_json::{Value, json};

use crate::status::{runtime, start_cpa};
use crate::support::{ServerProcess, client, eventually, json_of, stored_events};

const ADMIN: &str = "cmp_admin_Security0123456789abcdefABCDEF01";
const CPA_KEY: &str = "cpa-mgmt-key-SECURITY-5f0c1e";
/// Client API keys in payloads cpamp receives (besides the fake CPA's own).
const CLIENT_KEY: &str = "client-key-FAKE-security-77a1";
const DEAD_LETTER_KEY: &str = "client-key-FAKE-deadletter-9b2";
/// Keys the fake CPA's generated events carry: client API keys and raw provider keys.
const GENERATED_SECRETS: &[&str] = &[
    "sk-cpa-FAKE-team-alpha",
    "sk-cpa-FAKE-team-beta",
    "sk-cpa-FAKE-ci",
    "AIzaSyFAKE-testkit-0000000000000000000",
    "sk-or-v1-FAKE0000000000000000000000000000",
];

/// The fake CPA (recording requests), and cpamp connected to it through `/setup`, so the
/// CPA Management Key is saved (sealed) in the database as an operator would save it.
struct Rig {
    cpa: FakeCpa,
    _runtime: tokio::runtime::Runtime,
    data: tempfile::TempDir,
    server: ServerProcess,
}

fn rig(extra: &[(&str, &str)]) -> Rig {
    rig_as(ADMIN, extra)
}

/// [`rig`] with another admin key.
fn rig_as(admin: &str, extra: &[(&str, &str)]) -> Rig {
    let runtime = runtime();
    let mut options = FakeCpaOptions::new(CPA_KEY);
    options.record_requests = true;
    let cpa = start_cpa(&runtime, options);
    let data = tempfile::tempdir().expect("tempdir");
    let mut env = vec![
        ("CPA_MANAGER_ADMIN_KEY", admin),
        ("USAGE_COLLECTOR_MODE", "http"),
        ("USAGE_POLL_INTERVAL_MS", "100"),
    ];
    env.extend_from_slice(extra);
    let server = ServerProcess::start(data.path(), &env);
    let (status, body) = json_of(
        client()
            .post(server.url("/setup"))
            .bearer_auth(admin)
            .json(&json!({"cpaBaseUrl": cpa.base_url(), "cpaManagementKey": CPA_KEY}))
            .send()
            .unwrap_or_else(|error| panic!("setup: {error}\n{}", server.log_text())),
    );
    assert_eq!(status, 200, "{body}");
    Rig {
        cpa,
        _runtime: runtime,
        data,
        server,
    }
}

impl Rig {
    /// Requests the proxy passed on to CPA (it always sets `X-Forwarded-For`; cpamp's own
    /// calls, such as the collector's queue polling, do not).
    fn forwarded(&self) -> Vec<RecordedRequest> {
        self.cpa
            .recorded_requests()
            .into_iter()
            .filter(|request| request.header("x-forwarded-for").is_some())
            .collect()
    }

    fn admin_json(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> (u16, Value) {
        let mut request = client()
            .request(method, self.server.url(path))
            .bearer_auth(ADMIN);
        if let Some(body) = body {
            request = request.json(body);
        }
        json_of(request.send().expect(path))
    }
}

fn client_from(address: [u8; 4]) -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .local_address(IpAddr::from(address))
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client")
}

/// Sends a request line byte for byte (HTTP libraries resolve dot segments and refuse
/// some bytes themselves) and returns the status and the whole answer.
fn raw_request(
    server: &ServerProcess,
    method: &str,
    target: &[u8],
    key: Option<&str>,
) -> (u16, String) {
    let mut stream = TcpStream::connect(server.addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let mut request = Vec::new();
    request.extend_from_slice(method.as_bytes());
    request.push(b' ');
    request.extend_from_slice(target);
    request.extend_from_slice(b" HTTP/1.1\r\nHost: cpamp\r\n");
    if let Some(key) = key {
        request.extend_from_slice(format!("Authorization: Bearer {key}\r\n").as_bytes());
    }
    request.extend_from_slice(b"Connection: close\r\n\r\n");
    // The server may close early on a request it refuses.
    let _ = stream.write_all(&request);
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    (status, text)
}

/// Request targets that try to leave the path they name.
fn traversal_targets() -> Vec<Vec<u8>> {
    let mut targets: Vec<Vec<u8>> = [
        // The panel and the root.
        "/../../../../etc/passwd",
        "/management.html/../../etc/passwd",
        "/management.html/..%2f..%2fetc%2fpasswd",
        "/%2e%2e/%2e%2e/etc/passwd",
        "/..%2f..%2f..%2fetc%2fpasswd",
        "/%252e%252e/%252e%252e/etc/passwd",
        "/%c0%ae%c0%ae/%c0%ae%c0%ae/etc/passwd",
        "/..%5c..%5c..%5cetc%5cpasswd",
        "/management.html%00.png",
        "/management.html%2f..%2fCargo.toml",
        "//etc/passwd",
        "/./management.html/./../usage.sqlite",
        // Management paths.
        "/v0/management/../../etc/passwd",
        "/v0/management/%2e%2e/%2e%2e/etc/passwd",
        "/v0/management/%2E%2e/config",
        "/v0/management/.%2e/.%2e/config",
        "/v0/management/auth-files/..%2f..%2fconfig",
        "/v0/management/auth-files/%2e%2e%5c%2e%2e%5cconfig",
        "/v0/management/..%5c..%5cconfig",
        "/v0/management/%c0%ae%c0%ae/config",
        "/v0/management/config%00/../usage-queue",
        "/v0/management/./usage-queue",
        "/v0/management/usage/../../v0/management/config",
        // Plugin resources and the model lists (forwarded without the admin key).
        "/v0/resource/plugins/../../v0/management/config",
        "/v0/resource/plugins/%2e%2e/%2e%2e/v0/management/config",
        "/v0/resource/plugins/..%2f..%2fv0%2fmanagement%2fconfig",
        "/v0/resource/plugins/x/%2e%2e%5c%2e%2e%5cv0%5cmanagement%5cconfig",
        "/v0/resource/plugins/.%2e/.%2e/v0/management/usage-queue",
        "/v1/models/../../v0/management/config",
        "/v1/models/%2e%2e/%2e%2e/v0/management/config",
        "/models/..%2fv0%2fmanagement%2fconfig",
    ]
    .iter()
    .map(|target| target.as_bytes().to_vec())
    .collect();
    // Raw bytes an HTTP library would not send: backslashes and a NUL.
    targets.push(b"/v0/management/..\\..\\config".to_vec());
    targets.push(b"/v0/resource/plugins/..\\..\\v0\\management\\config".to_vec());
    targets.push(b"/management.html\\..\\..\\etc\\passwd".to_vec());
    targets.push(b"/v0/management/config\0/../../etc/passwd".to_vec());
    // Overlong: thousands of dot segments.
    targets.push(format!("/v0/management/{}etc/passwd", "../".repeat(3_000)).into_bytes());
    targets.push(format!("/v0/resource/plugins/{}config", "%2e%2e/".repeat(3_000)).into_bytes());
    targets
}

/// True when a path CPA received still holds a dot segment or an encoded separator.
fn unresolved(path: &str) -> bool {
    let lower = path.to_ascii_lowercase();
    path.split('/')
        .any(|segment| segment == "." || segment == "..")
        || ["%2e", "%2f", "%5c", "\\", "%00", "%c0"]
            .iter()
            .any(|needle| lower.contains(needle))
}

#[test]
fn traversal_paths_are_refused_or_answered_locally_and_never_reach_cpa() {
    let rig = rig(&[]);
    let targets = traversal_targets();
    assert!(targets.len() >= 30);
    // Without a key, then with the admin key.
    for key in [None, Some(ADMIN)] {
        for target in &targets {
            let shown = String::from_utf8_lossy(&target[..target.len().min(80)]).into_owned();
            let (status, answer) = raw_request(&rig.server, "GET", target, key);
            assert!(
                // 0: the connection was closed without an answer (a request line the
                // HTTP parser refuses, or one longer than it accepts).
                [0, 400, 401, 404, 405, 414, 431].contains(&status),
                "{shown} with {key:?}: {status}\n{}",
                &answer[..answer.len().min(400)]
            );
            assert!(!answer.contains("root:x:0:0"), "{shown} served a file");
            assert!(!answer.contains("[package]"), "{shown} served a file");
            assert!(!answer.contains(CPA_KEY), "{shown} echoed the CPA key");
        }
    }
    let forwarded = rig.forwarded();
    assert!(
        forwarded.iter().all(|request| !unresolved(&request.path)),
        "CPA received unresolved paths: {:?}",
        forwarded
            .iter()
            .map(|request| &request.path)
            .collect::<Vec<_>>()
    );
    // Nothing was forwarded at all: every target was refused before the proxy.
    assert!(
        forwarded.is_empty(),
        "forwarded: {:?}",
        forwarded
            .iter()
            .map(|request| &request.path)
            .collect::<Vec<_>>()
    );
    // The panel is still served, by cpamp.
    let (status, answer) = raw_request(
        &rig.server,
        "GET",
        b"/management.html?x=../../etc/passwd",
        None,
    );
    assert_eq!(status, 200);
    assert!(
        answer.contains("<html") || answer.contains("<!doctype") || answer.contains("<!DOCTYPE")
    );
}

/// One value of every injection style, against SQLite in particular.
const INJECTIONS: &[&str] = &[
    "' OR '1'='1",
    "' OR 1=1 --",
    "\" OR \"\"=\"",
    "x'); DROP TABLE usage_events; --",
    "1; DELETE FROM usage_events",
    "%' OR '%'='",
    "') UNION SELECT name, sql FROM sqlite_master --",
    "' AND randomblob(1000000000) AND '",
    "*/ OR 1=1 /*",
    "\\'; UPDATE counters SET value = 0; --",
    "x\u{0}' OR '1'='1",
    "%_%",
];

/// Every byte but the unreserved ones as `%XX`, for query strings and path segments.
fn percent_encoded(text: &str) -> String {
    text.bytes()
        .map(|byte| {
            if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
                char::from(byte).to_string()
            } else {
                format!("%{byte:02X}")
            }
        })
        .collect()
}

/// Counts that must not move: stored events, dead letters, aliases, prices, gaps, and
/// the schema itself.
fn fingerprint(data: &Path) -> Vec<(String, i64)> {
    crate::support::read_database(data, async |connection| {
        let mut out = Vec::new();
        for (name, sql) in [
            ("events", "SELECT COUNT(*) FROM usage_events"),
            ("dead letters", "SELECT COUNT(*) FROM dead_letter_events"),
            ("aliases", "SELECT COUNT(*) FROM api_key_aliases"),
            ("settings", "SELECT COUNT(*) FROM settings"),
            ("schema", "SELECT COUNT(*) FROM sqlite_master"),
            (
                "event counter",
                "SELECT value FROM counters WHERE name = 'usage_events'",
            ),
        ] {
            let value: i64 = sqlx::query_scalar(sql)
                .fetch_one(&mut *connection)
                .await
                .unwrap_or_else(|error| panic!("{name}: {error}"));
            out.push((name.to_string(), value));
        }
        out
    })
    .expect("database")
}

#[test]
fn sql_injection_through_every_filter_matches_nothing_and_changes_nothing() {
    let rig = rig(&[]);
    let emitted = rig.cpa.emit_now(40).len() as i64;
    assert!(
        eventually(Duration::from_secs(30), || stored_events(rig.data.path())
            >= emitted),
        "{}",
        rig.server.log_text()
    );
    // An alias, so deletes through injected hashes have something to hit.
    let (status, body) = rig.admin_json(
        reqwest::Method::PUT,
        "/v0/management/api-key-aliases",
        Some(&json!({"items": [{"apiKeyHash": "a".repeat(64), "alias": "kept"}]})),
    );
    assert!(status < 300, "{status} {body}");
    let before = fingerprint(rig.data.path());
    let now = crate::support::now_ms();
    let range = json!({"from_ms": now - 86_400_000, "to_ms": now + 60_000});
    let monitoring = |body: Value| {
        rig.admin_json(
            reqwest::Method::POST,
            "/v0/management/monitoring/analytics",
            Some(&body),
        )
    };
    let (status, all) = monitoring(json!({
        "from_ms": range["from_ms"], "to_ms": range["to_ms"], "include": {"summary": true}
    }));
    assert_eq!(status, 200, "{all}");
    assert_eq!(all["summary"]["total_calls"], emitted, "{all}");

    let list_filters = [
        "models",
        "providers",
        "accounts",
        "credential_ids",
        "auth_files",
        "auth_indices",
        "api_key_hashes",
        "source_hashes",
        "project_ids",
        "request_types",
        "header_error_kinds",
        "header_error_codes",
        "header_quota_plans",
        "header_trace_ids",
    ];
    let mut tried = 0;
    for injection in INJECTIONS {
        // Monitoring: each list filter alone must match nothing.
        for filter in list_filters {
            let (status, answer) = monitoring(json!({
                "from_ms": range["from_ms"], "to_ms": range["to_ms"],
                "filters": {filter: [injection]},
                "include": {"summary": true, "events_page": {"limit": 5}}
            }));
            tried += 1;
            assert!(status < 500, "{filter} = {injection:?}: {status} {answer}");
            if status == 200 {
                assert_eq!(
                    answer["summary"]["total_calls"], 0,
                    "{filter} = {injection:?} matched events: {answer}"
                );
            }
        }
        // Free text, hashes, time zone, cache status, granularity and profile.
        for body in [
            json!({"from_ms": range["from_ms"], "to_ms": range["to_ms"], "search_query": injection,
                   "include": {"summary": true, "events_page": {"limit": 5}}}),
            json!({"from_ms": range["from_ms"], "to_ms": range["to_ms"], "search_api_key_hash": injection,
                   "include": {"summary": true}}),
            json!({"from_ms": range["from_ms"], "to_ms": range["to_ms"], "time_zone": injection,
                   "include": {"summary": true}}),
            json!({"from_ms": range["from_ms"], "to_ms": range["to_ms"],
                   "filters": {"cache_status": injection}, "include": {"summary": true}}),
            json!({"from_ms": range["from_ms"], "to_ms": range["to_ms"],
                   "include": {"granularity": injection, "summary_profile": injection, "summary": true,
                               "filter_options": true, "filter_selectors": true}}),
        ] {
            let (status, answer) = monitoring(body.clone());
            tried += 1;
            assert!(status < 500, "{body}: {status} {answer}");
            if status == 200
                && (body.get("search_query").is_some() || body.get("search_api_key_hash").is_some())
            {
                assert_eq!(
                    answer["summary"]["total_calls"], 0,
                    "{body} matched: {answer}"
                );
            }
        }
        let encoded = percent_encoded(injection);
        // Export filters: a model or key hash that matches nothing exports nothing.
        for query in [
            format!("model={encoded}"),
            format!("models={encoded}"),
            format!("api_key_hash={encoded}"),
            format!("format={encoded}"),
            format!("from_ms={encoded}"),
            format!("limit={encoded}"),
        ] {
            let response = client()
                .get(
                    rig.server
                        .url(&format!("/v0/management/usage/export?{query}")),
                )
                .bearer_auth(ADMIN)
                .send()
                .expect("export");
            let status = response.status().as_u16();
            let text = response.text().expect("export body");
            tried += 1;
            assert!(status < 500, "export {query}: {status} {text}");
            if status == 200 && query.starts_with("model") {
                assert_eq!(
                    text.lines()
                        .filter(|line| line.contains("\"model\""))
                        .count(),
                    0,
                    "export {query}: {text}"
                );
            }
        }
        // Query strings of the other reads.
        for path in [
            format!(
                "/v0/management/dashboard/summary?today_start_ms={encoded}&now_ms={encoded}&top_models={encoded}"
            ),
            format!(
                "/v0/management/dashboard/summary?today_start_ms=1&top_models=5&recent_failures={encoded}"
            ),
            format!("/v0/management/usage?limit={encoded}&model={encoded}"),
            format!(
                "/v0/management/collector-gaps?startMs={encoded}&endMs={encoded}&limit={encoded}"
            ),
            format!("/v0/management/model-prices/explain?event_hash={encoded}"),
            format!("/v0/management/model-prices/usage-summary?from_ms={encoded}&model={encoded}"),
            format!(
                "/v0/management/monitoring/header-snapshots?auth_index={encoded}&provider={encoded}"
            ),
            format!("/usage-service/automation-audit?limit=5&action={encoded}&file={encoded}"),
            format!("/usage-service/quota-cooldowns?file={encoded}"),
            format!("/v0/management/codex-inspection/runs?limit={encoded}&status={encoded}"),
            format!("/v0/management/account-action-candidates?status={encoded}&file={encoded}"),
            format!("/status?window={encoded}"),
        ] {
            let (status, answer) = rig.admin_json(reqwest::Method::GET, &path, None);
            tried += 1;
            assert!(status < 500, "{path}: {status} {answer}");
        }
        // Bodies of the account and quota reads.
        for (path, body) in [
            (
                "/v0/management/monitoring/account-history",
                json!({"accounts": [{"row_key": injection, "account_key": injection, "auth_index": injection,
                                     "source": injection, "auth_file_snapshot": injection}]}),
            ),
            (
                "/v0/management/monitoring/account-window-usage",
                json!({"windows": [{"request_key": injection, "row_key": injection, "window_key": injection,
                                    "provider_window_id": injection, "period": injection,
                                    "from_ms": 0, "to_ms": now,
                                    "model_scope": {"kind": injection, "key": injection, "models": [injection]},
                                    "account_key": injection}]}),
            ),
            (
                "/v0/management/quota-snapshots/query",
                json!({"accounts": [{"rowKey": injection, "provider": injection}], "nowMs": now}),
            ),
        ] {
            let (status, answer) = rig.admin_json(reqwest::Method::POST, path, Some(&body));
            tried += 1;
            assert!(status < 500, "{path} {body}: {status} {answer}");
        }
        // A delete through a path parameter touches nothing it does not name.
        let (status, answer) = rig.admin_json(
            reqwest::Method::DELETE,
            &format!("/v0/management/api-key-aliases/{encoded}"),
            None,
        );
        tried += 1;
        assert!(
            status < 500,
            "alias delete {injection:?}: {status} {answer}"
        );
    }
    assert!(tried > 400, "{tried} requests");
    assert_eq!(fingerprint(rig.data.path()), before);
    let (status, after) = monitoring(json!({
        "from_ms": range["from_ms"], "to_ms": range["to_ms"], "include": {"summary": true}
    }));
    assert_eq!(status, 200);
    assert_eq!(after["summary"]["total_calls"], emitted);
    let integrity = crate::support::read_database(rig.data.path(), async |connection| {
        sqlx::query_scalar::<_, String>("PRAGMA integrity_check")
            .fetch_one(connection)
            .await
            .expect("integrity")
    });
    assert_eq!(integrity.as_deref(), Some("ok"));
}

/// Every file under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(next) = stack.pop() {
        for entry in std::fs::read_dir(&next).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.push(path);
            }
        }
    }
    out
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    !needle.is_empty()
        && haystack
            .windows(needle.len())
            .any(|window| window == needle.as_bytes())
}

/// A usage payload as CPA sends it, with a raw client API key in the places CPA puts it
/// (and in a failure body, where upstreams echo it).
fn payload_with_key(key: &str, input_tokens: i64, request_id: &str) -> Vec<u8> {
    json!({
        "timestamp": jiff::Timestamp::now().to_string(),
        "request_id": request_id,
        "provider": "openai",
        "model": "gpt-security",
        "endpoint": "POST /v1/chat/completions",
        "api_key": key,
        "source": "sk-proj-FAKEsourcekey000000000000000001",
        "auth_index": "sec-1",
        "latency_ms": 120,
        "tokens": {"input_tokens": input_tokens, "output_tokens": 3, "total_tokens": 13},
        "failed": true,
        "fail": {"status_code": 401, "body": format!("Incorrect API key provided: {key}. Authorization: Bearer {key}")},
    })
    .to_string()
    .into_bytes()
}

#[test]
fn no_secret_is_stored_logged_exported_backed_up_or_served() {
    let rig = rig(&[("RUST_LOG", "debug")]);
    let data = rig.data.path();
    let data_key = std::fs::read_to_string(data.join("data.key")).expect("data.key");
    let data_key = data_key.trim().to_string();
    assert!(data_key.len() >= 32, "data key {} bytes", data_key.len());

    // Ingest: generated events, one with our client key, and one dead letter carrying a
    // key (a token count no request can have) plus one that is not JSON at all.
    let emitted = rig.cpa.emit_now(30).len() as i64;
    assert!(rig.cpa.push_raw(payload_with_key(CLIENT_KEY, 10, "sec-ok")));
    assert!(
        rig.cpa
            .push_raw(payload_with_key(DEAD_LETTER_KEY, i64::MAX, "sec-dead"))
    );
    assert!(
        rig.cpa
            .push_raw(format!("{{\"api_key\":\"{DEAD_LETTER_KEY}\",\"timestamp\":").into_bytes())
    );
    let dead_letters = || {
        crate::support::read_database(data, async |connection| {
            sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM dead_letter_events")
                .fetch_one(connection)
                .await
                .unwrap_or(0)
        })
        .unwrap_or(0)
    };
    assert!(
        eventually(Duration::from_secs(30), || {
            stored_events(data) > emitted && dead_letters() >= 2
        }),
        "events {} dead letters {}\n{}",
        stored_events(data),
        dead_letters(),
        rig.server.log_text()
    );

    // Answers: the operator's reads, exports, a backup, and error bodies of key mix-ups.
    let mut answers: Vec<(String, Vec<u8>)> = Vec::new();
    let mut fetch = |what: &str, request: reqwest::blocking::RequestBuilder| {
        let response = request.send().expect(what);
        let mut text = format!("{:?}\n", response.headers()).into_bytes();
        text.extend_from_slice(&response.bytes().expect("body"));
        answers.push((what.to_string(), text));
    };
    let http = client();
    for path in [
        "/status",
        "/metrics",
        "/usage-service/config",
        "/usage-service/info",
        "/v0/management/usage",
        "/v0/management/usage/export?format=jsonl",
        "/v0/management/usage/export?format=csv",
        "/v0/management/dashboard/summary?today_start_ms=1",
        "/v0/management/collector-gaps?startMs=0&endMs=9999999999999&limit=50",
        "/v0/management/api-key-aliases",
    ] {
        fetch(path, http.get(rig.server.url(path)).bearer_auth(ADMIN));
    }
    let now = crate::support::now_ms();
    fetch(
        "monitoring",
        http.post(rig.server.url("/v0/management/monitoring/analytics"))
            .bearer_auth(ADMIN)
            .json(&json!({"from_ms": now - 86_400_000, "to_ms": now + 60_000,
                          "include": {"summary": true, "events_page": {"limit": 100}, "recent_failures": 20,
                                      "api_key_stats": true, "credential_stats": true, "filter_options": true}})),
    );
    // Key mix-ups and wrong keys: each from its own address, so none is locked out.
    for (index, presented) in [
        CPA_KEY,
        CLIENT_KEY,
        "sk-cpa-FAKE-team-alpha",
        "cmp_admin_wrong",
        &data_key,
    ]
    .into_iter()
    .enumerate()
    {
        let from = client_from([127, 0, 3, 10 + index as u8]);
        fetch(
            "401 /status",
            from.get(rig.server.url("/status")).bearer_auth(presented),
        );
        fetch(
            "401 proxied",
            from.get(rig.server.url("/v0/management/config"))
                .bearer_auth(presented),
        );
        fetch(
            "401 setup",
            from.post(rig.server.url("/setup"))
                .bearer_auth(presented)
                .json(&json!({"cpaBaseUrl": "http://127.0.0.1:1", "cpaManagementKey": presented})),
        );
    }
    // Setup with a wrong CPA key answers with CPA's refusal, not the key.
    fetch(
        "setup wrong CPA key",
        http.put(rig.server.url("/usage-service/config"))
            .bearer_auth(ADMIN)
            .json(&json!({"cpaBaseUrl": rig.cpa.base_url(), "cpaManagementKey": "wrong-cpa-key-FAKE-0001"})),
    );
    let (status, manifest) = rig.admin_json(reqwest::Method::POST, "/usage-service/backups", None);
    assert_eq!(status, 201, "{manifest}");
    let backup_dir = PathBuf::from(manifest["path"].as_str().expect("backup path"));
    for file in ["usage.sqlite", "manifest.json", "data.key"] {
        let name = manifest["name"].as_str().expect("name");
        fetch(
            "backup download",
            http.get(
                rig.server
                    .url(&format!("/usage-service/backups/{name}/{file}")),
            )
            .bearer_auth(ADMIN),
        );
    }

    // Let the collector commit and trim its inbox, then stop the server so every file
    // (the WAL included) is final.
    std::thread::sleep(Duration::from_millis(500));
    let log = rig.server.log_text();
    let Rig { server, cpa, .. } = rig;
    assert!(server.terminate().success());
    drop(cpa);

    let mut secrets: Vec<(&str, &str)> = vec![
        ("admin key", ADMIN),
        ("CPA Management Key", CPA_KEY),
        ("data key", &data_key),
        ("client API key", CLIENT_KEY),
        ("dead-letter client API key", DEAD_LETTER_KEY),
        (
            "provider key in source",
            "sk-proj-FAKEsourcekey000000000000000001",
        ),
    ];
    secrets.extend(
        GENERATED_SECRETS
            .iter()
            .map(|secret| ("generated key", *secret)),
    );
    let mut found = Vec::new();
    for (what, secret) in &secrets {
        if log.contains(secret) {
            found.push(format!("{what} in the log"));
        }
        for (answer, body) in &answers {
            // The backup's data.key download is the data key, on purpose.
            if *what == "data key" && answer == "backup download" && contains(body, secret) {
                let is_key_file = String::from_utf8_lossy(body).trim_end().ends_with(secret);
                if is_key_file {
                    continue;
                }
            }
            if contains(body, secret) {
                found.push(format!("{what} in the answer to {answer}"));
            }
        }
        for file in files_under(data) {
            // `data.key` (and its copy in each backup) is the one place the data key is
            // kept on purpose: the backup guide says to keep it with the database.
            let expected =
                *what == "data key" && file.file_name().is_some_and(|name| name == "data.key");
            if expected {
                continue;
            }
            let bytes = std::fs::read(&file).unwrap_or_default();
            if contains(&bytes, secret) {
                found.push(format!("{what} in {}", file.display()));
            }
        }
    }
    assert!(found.is_empty(), "secrets found:\n{}", found.join("\n"));
    // The data key is where the guide says, in the data directory and in the backup.
    assert!(contains(
        &std::fs::read(backup_dir.join("data.key")).expect("backup key"),
        &data_key
    ));
    // Dead letters were kept (redacted), so the evidence is not lost either.
    let kept = crate::support::read_database(data, async |connection| {
        sqlx::query_scalar::<_, String>("SELECT payload FROM dead_letter_events ORDER BY id")
            .fetch_all(connection)
            .await
            .expect("dead letters")
    })
    .expect("database");
    assert!(
        kept.iter().any(|payload| payload.contains("sec-dead")),
        "{kept:?}"
    );
    assert!(
        kept.iter().all(|payload| payload.contains("[redacted]")),
        "{kept:?}"
    );
}

#[test]
fn the_proxy_never_lends_the_cpa_key_or_passes_the_admin_key_on() {
    let rig = rig(&[]);
    let methods = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"];
    let paths = [
        "/v0/management/config",
        "/v0/management/config.yaml",
        "/v0/management/api-keys",
        "/v0/management/auth-files",
        "/v0/management/usage-queue",
        "/v0/management/codex-team-invite/invite",
        "/v0/management/my-plugin",
        "/v0/resource/plugins",
        "/v0/resource/plugins/invite/index.html",
        "/v0/resource/plugins/invite/api/send",
        "/v1/models",
        "/models",
    ];
    let credentials: [(&str, Option<(&str, String)>); 7] = [
        ("none", None),
        (
            "wrong admin key",
            Some((
                "authorization",
                "Bearer cmp_admin_WrongKey0123456789abcdefABCDEF01".into(),
            )),
        ),
        (
            "random bearer",
            Some(("authorization", "Bearer not-a-key-at-all".into())),
        ),
        ("empty bearer", Some(("authorization", "Bearer ".into()))),
        (
            "basic",
            Some(("authorization", format!("Basic {}", "YWRtaW46YWRtaW4="))),
        ),
        (
            "admin key without scheme",
            Some(("authorization", ADMIN.to_string())),
        ),
        (
            "management header",
            Some(("x-management-key", "guess-FAKE-0001".into())),
        ),
    ];
    let mut probes = 0;
    for (index, (name, credential)) in credentials.iter().enumerate() {
        // Each credential from its own address: some probes meet the failure limit (429)
        // and some get the plain 401, both must hold.
        let from = client_from([127, 0, 4, 10 + index as u8]);
        for method in methods {
            for path in paths {
                let mut request = from.request(
                    reqwest::Method::from_bytes(method.as_bytes()).expect("method"),
                    rig.server.url(path),
                );
                if let Some((header, value)) = credential {
                    request = request.header(*header, value.as_str());
                }
                let response = request.body("{}").send().expect("probe");
                probes += 1;
                let status = response.status().as_u16();
                let text = response.text().unwrap_or_default();
                assert_ne!(status, 500, "{name} {method} {path}: {text}");
                assert!(!text.contains(CPA_KEY), "{name} {method} {path}: {text}");
            }
        }
    }
    // The right admin key from a blocked address (the failure limit decides before the
    // key is checked) on a plugin resource: it must not be passed on either.
    let blocked = client_from([127, 0, 4, 11]);
    for _ in 0..3 {
        let response = blocked
            .get(rig.server.url("/v0/resource/plugins/invite/index.html"))
            .bearer_auth(ADMIN)
            .send()
            .expect("blocked admin");
        probes += 1;
        assert_ne!(response.status(), 500);
    }
    assert!(probes >= 550, "{probes} probes");
    let forwarded = rig.forwarded();
    let leaked: Vec<String> = forwarded
        .iter()
        .filter(|request| {
            request
                .headers
                .iter()
                .any(|(_, value)| value.contains(CPA_KEY) || value.contains(ADMIN))
        })
        .map(|request| format!("{} {} {:?}", request.method, request.path, request.headers))
        .collect();
    assert!(
        leaked.is_empty(),
        "keys reached CPA:\n{}",
        leaked.join("\n")
    );
    // What did reach CPA is what may go there without the admin key: plugin resources
    // and the model lists, never a management path.
    for request in &forwarded {
        assert!(
            request.path.starts_with("/v0/resource/plugins")
                || request.path == "/v1/models"
                || request.path == "/models",
            "{} {} reached CPA without the admin key",
            request.method,
            request.path
        );
    }
    assert!(!forwarded.is_empty(), "the open paths were never forwarded");
}

/// Where a client can put a credential besides `Authorization`.
#[derive(Clone, Copy, Debug)]
enum Place {
    Header(&'static str),
    Query(&'static str),
    Cookie,
    Basic,
}

impl Place {
    /// The request to `path` with `secret` in this place, beside harmless companions
    /// (a `limit` parameter, a `theme` cookie).
    fn request(
        self,
        http: &reqwest::blocking::Client,
        server: &ServerProcess,
        path: &str,
        secret: &str,
    ) -> reqwest::blocking::RequestBuilder {
        let base = server.url(path);
        match self {
            Place::Header(name) => http.get(format!("{base}?limit=20")).header(name, secret),
            Place::Query(name) => {
                let encoded = secret.replace('_', "%5F");
                http.get(format!("{base}?limit=20&{name}={encoded}&order=asc"))
            }
            Place::Cookie => http
                .get(format!("{base}?limit=20"))
                .header("cookie", format!("theme=dark; session={secret}; lang=en")),
            Place::Basic => http
                .get(format!("{base}?limit=20"))
                .basic_auth("operator", Some(secret)),
        }
    }
}

const PLACES: [Place; 8] = [
    Place::Header("x-api-key"),
    Place::Header("x-goog-api-key"),
    Place::Header("x-management-key"),
    Place::Header("x-auth-token"),
    Place::Query("key"),
    Place::Query("auth_token"),
    Place::Cookie,
    Place::Basic,
];

/// Every request CPA received that holds `secret` anywhere: a header, the query (also
/// percent-decoded) or the body.
fn holding(rig: &Rig, secret: &str) -> Vec<String> {
    rig.forwarded()
        .iter()
        .filter(|request| {
            request
                .headers
                .iter()
                .any(|(_, value)| value.contains(secret))
                || request.query.contains(secret)
                || request.query.replace("%5F", "_").contains(secret)
                || contains(&request.body, secret)
        })
        .map(|request| {
            format!(
                "{} {}?{} {:?}",
                request.method, request.path, request.query, request.headers
            )
        })
        .collect()
}

#[test]
fn the_admin_key_reaches_cpa_in_no_header_cookie_or_query() {
    let rig = rig(&[]);
    let paths = [
        ("/v1/models", false),
        ("/models", false),
        ("/v0/resource/plugins/invite/index.html", false),
        ("/v0/resource/plugins/invite/api/send", true),
        ("/v0/management/config", true),
        ("/v0/management/codex-team-invite/invite", true),
    ];
    let from = client_from([127, 0, 6, 10]);
    let mut sent = 0;
    for place in PLACES {
        for (path, with_admin) in paths {
            let mut request = place.request(&from, &rig.server, path, ADMIN);
            // Management paths need the admin key in `Authorization` to be forwarded at
            // all; the copy elsewhere must still stay behind.
            if with_admin && !matches!(place, Place::Basic) {
                request = request.bearer_auth(ADMIN);
            }
            let response = request.send().expect("probe");
            let status = response.status().as_u16();
            assert_ne!(status, 500, "{place:?} {path}");
            sent += 1;
        }
    }
    let leaked = holding(&rig, ADMIN);
    assert!(
        leaked.is_empty(),
        "the admin key reached CPA:\n{}",
        leaked.join("\n")
    );
    // Requests did go through, with what was not the admin key: the screen takes out
    // the key, not the rest.
    let forwarded = rig.forwarded();
    assert!(forwarded.len() >= sent / 2, "{} of {sent}", forwarded.len());
    assert!(
        forwarded
            .iter()
            .filter(|request| request.path == "/v1/models")
            .all(|request| request.query.starts_with("limit=20")),
        "{forwarded:?}"
    );
    assert!(
        forwarded
            .iter()
            .filter(|request| request.query.contains("order=asc"))
            .all(|request| request.query == "limit=20&order=asc"),
        "{forwarded:?}"
    );
    assert!(
        forwarded
            .iter()
            .filter_map(|request| request.header("cookie"))
            .all(|cookie| cookie == "theme=dark; lang=en"),
        "{forwarded:?}"
    );
    assert!(
        forwarded
            .iter()
            .any(|request| request.header("cookie").is_some()),
        "no cookie was forwarded: {forwarded:?}"
    );
    // A client's own credential in the same places still reaches CPA.
    let before = rig.forwarded().len();
    let client_key = "sk-client-FAKE-screen-31";
    for place in PLACES {
        let response = place
            .request(&from, &rig.server, "/v1/models", client_key)
            .send()
            .expect("client key");
        assert_ne!(response.status().as_u16(), 500, "{place:?}");
    }
    let passed = rig.forwarded().len() - before;
    assert_eq!(passed, PLACES.len());
    assert_eq!(
        holding(&rig, client_key).len(),
        PLACES.len() - 1,
        "all but Basic"
    );
}

#[test]
fn an_admin_key_of_any_shape_is_screened_once_it_was_used() {
    // An operator-chosen key: nothing about its shape gives it away, but once it has
    // verified (here by the setup call) the proxy recognises it everywhere.
    let admin = "operator-chosen-admin-secret-FAKE-0042";
    let rig = rig_as(admin, &[]);
    let from = client_from([127, 0, 6, 20]);
    for place in PLACES {
        for path in ["/v1/models", "/v0/resource/plugins/invite/index.html"] {
            let response = place
                .request(&from, &rig.server, path, admin)
                .send()
                .expect("probe");
            assert_ne!(response.status().as_u16(), 500, "{place:?} {path}");
        }
        if !matches!(place, Place::Basic) {
            let response = place
                .request(&from, &rig.server, "/v0/management/config", admin)
                .bearer_auth(admin)
                .send()
                .expect("management");
            assert_eq!(response.status().as_u16(), 200, "{place:?}");
        }
    }
    let leaked = holding(&rig, admin);
    assert!(
        leaked.is_empty(),
        "the admin key reached CPA:\n{}",
        leaked.join("\n")
    );
    assert!(rig.forwarded().len() >= PLACES.len() * 3 - 1);
}

#[test]
fn plugin_resources_get_the_cpa_key_only_with_the_admin_key_and_assets_cost_no_failures() {
    let rig = rig(&[]);
    let page = "/v0/resource/plugins/invite/index.html";
    let from = client_from([127, 0, 5, 10]);
    let seen_authorization = |rig: &Rig| {
        rig.forwarded()
            .last()
            .map(|request| request.header("authorization").map(str::to_string))
            .expect("forwarded")
    };
    // Public assets: no token, no admin check, so any number of them never locks the
    // address out.
    for _ in 0..8 {
        let response = from.get(rig.server.url(page)).send().expect("asset");
        assert_eq!(response.status(), 200);
        assert_eq!(seen_authorization(&rig), None);
    }
    // A wrong admin key: refused as admin, and not passed on.
    let response = from
        .get(rig.server.url(page))
        .bearer_auth("cmp_admin_WrongKey0123456789abcdefABCDEF01")
        .send()
        .expect("wrong key");
    assert_eq!(response.status(), 200);
    assert_eq!(seen_authorization(&rig), None);
    // A plugin's own credential (not shaped like the admin key) goes through.
    let response = from
        .get(rig.server.url(page))
        .bearer_auth("plugin-session-token-1")
        .send()
        .expect("plugin token");
    assert_eq!(response.status(), 200);
    assert_eq!(
        seen_authorization(&rig).as_deref(),
        Some("Bearer plugin-session-token-1")
    );
    // The CPA key itself is the caller's own: passed as it is, no failure counted.
    let response = from
        .get(rig.server.url(page))
        .bearer_auth(CPA_KEY)
        .send()
        .expect("cpa key");
    assert_eq!(response.status(), 200);
    // The admin key: the CPA key is substituted, and the address was never locked out.
    let response = from
        .get(rig.server.url(page))
        .bearer_auth(ADMIN)
        .send()
        .expect("admin");
    assert_eq!(response.status(), 200);
    assert_eq!(seen_authorization(&rig), Some(format!("Bearer {CPA_KEY}")));
}

#[test]
fn cors_is_same_origin_by_default_and_answers_carry_security_headers() {
    let rig = rig(&[]);
    let http = client();
    // A proxied answer: CPA sends `Access-Control-Allow-Origin: *`, cpamp drops it.
    let proxied = http
        .get(rig.server.url("/v0/management/config"))
        .bearer_auth(ADMIN)
        .header("Origin", "https://evil.example")
        .send()
        .expect("proxied");
    assert_eq!(proxied.status(), 200);
    assert!(
        rig.forwarded()
            .iter()
            .any(|request| request.path == "/v0/management/config"),
        "not forwarded"
    );
    let headers = proxied.headers().clone();
    assert!(
        headers.get("access-control-allow-origin").is_none(),
        "{headers:?}"
    );
    assert!(headers.get("access-control-allow-credentials").is_none());
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert_eq!(headers["x-frame-options"], "DENY");
    // cpamp's own answers, errors included.
    for (path, key) in [
        ("/status", Some(ADMIN)),
        ("/status", None),
        ("/health", None),
        ("/nowhere", Some(ADMIN)),
    ] {
        let mut request = http
            .get(rig.server.url(path))
            .header("Origin", "https://evil.example");
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        let response = request.send().expect(path);
        let headers = response.headers();
        assert!(
            headers.get("access-control-allow-origin").is_none(),
            "{path}: {headers:?}"
        );
        assert_eq!(headers["x-content-type-options"], "nosniff", "{path}");
        assert_eq!(headers["referrer-policy"], "no-referrer", "{path}");
        assert_eq!(headers["x-frame-options"], "DENY", "{path}");
        assert_eq!(
            headers["content-security-policy"], "default-src 'none'; frame-ancestors 'none'",
            "{path}"
        );
    }
    // A preflight from another site gets no permission.
    let preflight = http
        .request(reqwest::Method::OPTIONS, rig.server.url("/status"))
        .header("Origin", "https://evil.example")
        .header("Access-Control-Request-Method", "GET")
        .header("Access-Control-Request-Headers", "authorization")
        .send()
        .expect("preflight");
    assert_eq!(preflight.status(), 204);
    assert!(
        preflight
            .headers()
            .get("access-control-allow-origin")
            .is_none()
    );
    // The panel: its own policy (inline code by hash only), not framable, no sniffing.
    let panel = http
        .get(rig.server.url("/management.html"))
        .send()
        .expect("panel");
    assert_eq!(panel.status(), 200);
    let headers = panel.headers();
    let policy = headers["content-security-policy"].to_str().expect("policy");
    assert!(policy.contains("frame-ancestors 'none'"), "{policy}");
    assert!(policy.contains("script-src 'sha256-"), "{policy}");
    assert!(
        !policy.contains("unsafe-inline") && !policy.contains("unsafe-eval"),
        "{policy}"
    );
    assert_eq!(headers["x-frame-options"], "DENY");
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert_eq!(headers["referrer-policy"], "no-referrer");
}
