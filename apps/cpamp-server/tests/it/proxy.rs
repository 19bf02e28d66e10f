//! The CPA proxy against the fake CPA: what reaches CPA, with which credential, and what
//! the caller gets back.

use cpamp_testkit::FakeCpaOptions;
use serde_json::Value;

use crate::status::{runtime, start_cpa, start_server, wait_status};
use crate::support::{ServerProcess, client};

const ADMIN: &str = "cmp_admin_status0123456789abcdefghijklmn";
const CPA_KEY: &str = "cpa-management-key-for-status-tests";

#[test]
fn the_management_proxy_passes_requests_through_with_the_cpa_key_only_after_admin_auth() {
    let runtime = runtime();
    let mut options = FakeCpaOptions::new(CPA_KEY);
    options.record_requests = true;
    let cpa = start_cpa(&runtime, options);
    let data = tempfile::tempdir().expect("tempdir");
    let server = start_server(data.path(), &cpa.base_url(), CPA_KEY, &[]);
    wait_status(&server, "collector running", |s| {
        s["collector"]["collector"] == "running"
    });
    let management = |method: &str, path: &str| {
        cpa.recorded_requests()
            .into_iter()
            .filter(|request| request.method == method && request.path == path)
            .collect::<Vec<_>>()
    };

    // GET with a query: status, body and query pass through; the CPA key replaces the
    // admin key.
    let response = client()
        .get(server.url("/v0/management/config?probe=1&b=two"))
        .bearer_auth(ADMIN)
        .header("X-Forwarded-For", "203.0.113.9")
        .header("X-CPAMP-Auth-File-Physical-Name", "secret.json")
        .send()
        .expect("config");
    assert_eq!(response.status(), 200);
    let body: Value = response.json().expect("json");
    assert_eq!(body["redis-usage-queue-retention-seconds"], 60);
    let seen = management("GET", "/v0/management/config");
    let seen = seen
        .iter()
        .find(|request| request.query == "probe=1&b=two")
        .expect("forwarded GET");
    assert_eq!(
        seen.header("authorization"),
        Some(format!("Bearer {CPA_KEY}").as_str())
    );
    // The caller's own claim is not passed on: cpamp names the client it saw.
    assert_eq!(seen.header("x-forwarded-for"), Some("127.0.0.1"));
    assert_eq!(seen.header("x-cpamp-auth-file-physical-name"), None);

    // PUT and PATCH with bodies.
    let put = client()
        .put(server.url("/v0/management/usage-statistics-enabled"))
        .bearer_auth(ADMIN)
        .header("Content-Type", "application/json")
        .body(r#"{"value":false}"#)
        .send()
        .expect("put");
    assert_eq!(put.status(), 200);
    let seen = management("PUT", "/v0/management/usage-statistics-enabled");
    assert_eq!(seen.len(), 1);
    assert_eq!(&seen[0].body[..], br#"{"value":false}"#);
    assert_eq!(seen[0].header("content-type"), Some("application/json"));
    let patch = client()
        .patch(server.url("/v0/management/usage-statistics-enabled"))
        .bearer_auth(ADMIN)
        .body(r#"{"value":true}"#)
        .send()
        .expect("patch");
    assert_eq!(patch.status(), 200);
    assert_eq!(
        &management("PATCH", "/v0/management/usage-statistics-enabled")[0].body[..],
        br#"{"value":true}"#
    );

    // DELETE: CPA's own status comes back verbatim.
    let delete = client()
        .delete(server.url("/v0/management/auth-files?name=gone.json"))
        .bearer_auth(ADMIN)
        .send()
        .expect("delete");
    assert_eq!(delete.status(), 404);
    let seen = management("DELETE", "/v0/management/auth-files");
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].query, "name=gone.json");

    // The admin key never reaches CPA.
    for request in cpa.recorded_requests() {
        for (_, value) in &request.headers {
            assert!(!value.contains(ADMIN), "admin key forwarded in {request:?}");
        }
    }

    // Failed admin auth: 401 and nothing forwarded, whatever the credential.
    let before = cpa.recorded_requests().len();
    for credential in [None, Some(CPA_KEY), Some("sk-client-key")] {
        let mut request = client().get(server.url("/v0/management/config"));
        if let Some(credential) = credential {
            request = request.bearer_auth(credential);
        }
        let response = request.send().expect("unauthenticated");
        assert_eq!(response.status(), 401);
        let body: Value = response.json().expect("json");
        assert_eq!(body["code"], "invalid_admin_key");
    }
    let put = client()
        .put(server.url("/v0/management/usage-statistics-enabled"))
        .body(r#"{"value":false}"#)
        .send()
        .expect("put");
    assert_eq!(put.status(), 401);
    // Local routes are served here, never proxied.
    let local = client()
        .get(server.url("/v0/management/collector-gaps"))
        .bearer_auth(ADMIN)
        .send()
        .expect("gaps");
    assert_eq!(local.status(), 200);
    let proxied_since: Vec<_> = cpa.recorded_requests()[before..]
        .iter()
        .filter(|request| request.path != "/v0/management/usage-queue")
        .map(|request| format!("{} {}", request.method, request.path))
        .collect();
    assert!(
        proxied_since.iter().all(|line| !line.contains("config")
            && !line.contains("usage-statistics")
            && !line.contains("collector-gaps")),
        "{proxied_since:?}"
    );

    // Model lists go with the caller's own CPA API key.
    let models = client()
        .get(server.url("/v1/models?limit=5"))
        .bearer_auth("sk-client-key")
        .send()
        .expect("models");
    assert_eq!(models.status(), 200);
    let seen = management("GET", "/v1/models");
    assert_eq!(
        seen[0].header("authorization"),
        Some("Bearer sk-client-key")
    );
    assert_eq!(seen[0].query, "limit=5");
    assert_eq!(
        client()
            .get(server.url("/models"))
            .send()
            .expect("models")
            .status(),
        200
    );
    assert_eq!(
        client()
            .post(server.url("/v1/models"))
            .send()
            .expect("post")
            .status(),
        405
    );
    assert_eq!(
        client()
            .get(server.url("/v1/chat"))
            .send()
            .expect("other")
            .status(),
        404
    );
}

#[test]
fn an_unreachable_cpa_is_a_502_naming_it_and_no_setup_is_a_428() {
    let data = tempfile::tempdir().expect("tempdir");
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", closed.local_addr().expect("addr"));
    drop(closed);
    let server = start_server(data.path(), &url, CPA_KEY, &[]);
    let response = client()
        .get(server.url("/v0/management/config"))
        .bearer_auth(ADMIN)
        .send()
        .expect("proxy");
    assert_eq!(response.status(), 502);
    let body: Value = response.json().expect("json");
    assert_eq!(body["code"], "request_failed");
    let message = body["error"].as_str().expect("error");
    assert!(
        message.starts_with(&format!("CPA at {url} is unreachable: ")),
        "{message}"
    );
    assert!(message.contains("cpamp-server doctor"), "{message}");
    drop(server);

    let data = tempfile::tempdir().expect("tempdir");
    let server = ServerProcess::start(data.path(), &[("CPA_MANAGER_ADMIN_KEY", ADMIN)]);
    let unauthenticated = client()
        .get(server.url("/v0/management/config"))
        .send()
        .expect("proxy");
    assert_eq!(unauthenticated.status(), 401);
    let response = client()
        .get(server.url("/v0/management/config"))
        .bearer_auth(ADMIN)
        .send()
        .expect("proxy");
    assert_eq!(response.status(), 428);
    let body: Value = response.json().expect("json");
    assert_eq!(body["code"], "usage_service_not_configured");
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|message| message.contains("/management.html")),
        "{body}"
    );
    // Every proxied endpoint, whatever the method, says the same before setup.
    for (method, path) in [
        ("GET", "/v0/management/auth-files"),
        ("PUT", "/v0/management/usage-statistics-enabled"),
        ("PATCH", "/v0/management/auth-files/status"),
        ("DELETE", "/v0/management/api-keys?index=0"),
        ("POST", "/v0/management/api-call"),
        ("GET", "/v0/management/latest-version"),
    ] {
        let response = client()
            .request(method.parse().expect("method"), server.url(path))
            .bearer_auth(ADMIN)
            .body("{}")
            .send()
            .expect("proxy");
        assert_eq!(response.status(), 428, "{method} {path}");
        let body: Value = response.json().expect("json");
        assert_eq!(
            body["code"], "usage_service_not_configured",
            "{method} {path}"
        );
    }
    for path in ["/v1/models", "/models"] {
        assert_eq!(
            client()
                .get(server.url(path))
                .send()
                .expect("models")
                .status(),
            428,
            "{path}"
        );
    }
}
