//! What the proxy refuses to pass on: the admin key on the open model-list routes,
//! paths with dot segments (plain or percent-encoded), and the caller's forwarding
//! headers.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use cpamp_testkit::{FakeCpa, FakeCpaOptions};

use crate::status::{runtime, start_cpa, start_server, wait_status};
use crate::support::{ServerProcess, client};

const ADMIN: &str = "cmp_admin_status0123456789abcdefghijklmn";
const CPA_KEY: &str = "cpa-management-key-for-proxy-paths";

fn recording_setup(
    runtime: &tokio::runtime::Runtime,
) -> (FakeCpa, tempfile::TempDir, ServerProcess) {
    let mut options = FakeCpaOptions::new(CPA_KEY);
    options.record_requests = true;
    let cpa = start_cpa(runtime, options);
    let data = tempfile::tempdir().expect("tempdir");
    let server = start_server(data.path(), &cpa.base_url(), CPA_KEY, &[]);
    wait_status(&server, "collector running", |s| {
        s["collector"]["collector"] == "running"
    });
    (cpa, data, server)
}

/// Sends `path` byte for byte (an HTTP client library would resolve dot segments
/// itself) and returns the status code.
fn raw_get(server: &ServerProcess, path: &str) -> u16 {
    let mut stream = TcpStream::connect(server.addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: cpamp\r\nAuthorization: Bearer {ADMIN}\r\nConnection: close\r\n\r\n"
    )
    .expect("send");
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    let text = String::from_utf8_lossy(&response);
    text.split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"))
}

#[test]
fn the_admin_key_never_reaches_cpa_through_the_model_list() {
    let runtime = runtime();
    let (cpa, _data, server) = recording_setup(&runtime);
    let models_seen = || {
        cpa.recorded_requests()
            .into_iter()
            .filter(|request| request.path == "/v1/models" || request.path == "/models")
            .collect::<Vec<_>>()
    };
    // Before and after a login (when the key is remembered), on both paths.
    for round in 0..2 {
        for path in ["/v1/models", "/models"] {
            let response = client()
                .get(server.url(path))
                .bearer_auth(ADMIN)
                .send()
                .expect("models");
            assert_eq!(response.status(), 200, "{path} round {round}");
        }
        let login = client()
            .get(server.url("/v0/management/collector-gaps?startMs=0&endMs=1&limit=1"))
            .bearer_auth(ADMIN)
            .send()
            .expect("login");
        assert_eq!(login.status(), 200);
    }
    let seen = models_seen();
    assert_eq!(seen.len(), 4, "{seen:?}");
    for request in &seen {
        assert_eq!(request.header("authorization"), None, "{request:?}");
        assert!(
            request
                .headers
                .iter()
                .all(|(_, value)| !value.contains(ADMIN)),
            "{request:?}"
        );
    }
    // A CPA API key still goes through for CPA to check.
    let response = client()
        .get(server.url("/v1/models"))
        .bearer_auth("sk-client-key-1")
        .send()
        .expect("models");
    assert_eq!(response.status(), 200);
    assert_eq!(
        models_seen()
            .last()
            .and_then(|request| request.header("authorization")),
        Some("Bearer sk-client-key-1")
    );
}

#[test]
fn dot_segment_paths_are_refused_before_anything_is_forwarded() {
    let runtime = runtime();
    let (cpa, _data, server) = recording_setup(&runtime);
    let before = cpa.recorded_requests().len();
    for path in [
        "/v0/management/../../etc/passwd",
        "/v0/management/%2e%2e/%2e%2e/etc/passwd",
        "/v0/management/.%2E/config",
        "/v0/management/./config",
        "/v0/management/auth-files/%2e%2e",
        "/v0/management/x%2f..%2fconfig",
        "/v1/models/..",
        "/v0/resource/plugins/%2e%2e/%2e%2e/v0/management/config",
    ] {
        assert_eq!(raw_get(&server, path), 400, "{path}");
    }
    let forwarded: Vec<String> = cpa.recorded_requests()[before..]
        .iter()
        .filter(|request| !request.path.contains("usage-queue"))
        .map(|request| request.path.clone())
        .collect();
    assert!(forwarded.is_empty(), "forwarded: {forwarded:?}");

    // Repeated slashes are collapsed: CPA sees the path that was authorised.
    assert_eq!(raw_get(&server, "/v0/management//config"), 200);
    let last = cpa
        .recorded_requests()
        .into_iter()
        .rev()
        .find(|request| !request.path.contains("usage-queue"))
        .expect("forwarded");
    assert_eq!(last.path, "/v0/management/config");
}

#[test]
fn forwarding_headers_are_rebuilt_not_passed_through() {
    let runtime = runtime();
    let (cpa, _data, server) = recording_setup(&runtime);
    let response = client()
        .get(server.url("/v0/management/config?headers=1"))
        .bearer_auth(ADMIN)
        .header("X-Forwarded-For", "6.6.6.6")
        .header("X-Real-IP", "6.6.6.6")
        .header("Forwarded", "for=6.6.6.6;host=evil.example")
        .header("X-Forwarded-Host", "evil.example")
        .header("X-Forwarded-Proto", "https")
        .header("Proxy-Authorization", "Basic c2VjcmV0")
        .header("Connection", "X-Custom-Hop")
        .header("X-Custom-Hop", "1")
        .send()
        .expect("config");
    assert_eq!(response.status(), 200);
    let seen = cpa
        .recorded_requests()
        .into_iter()
        .find(|request| request.query == "headers=1")
        .expect("forwarded");
    assert_eq!(seen.header("x-forwarded-for"), Some("127.0.0.1"));
    for name in [
        "x-real-ip",
        "forwarded",
        "x-forwarded-host",
        "x-forwarded-proto",
        "proxy-authorization",
        "x-custom-hop",
    ] {
        assert_eq!(seen.header(name), None, "{name} was passed through");
    }
}
