//! The route-ownership table (`cpamp_api::routes::owned::OWNED_ROUTES`) against the real
//! binary and a recording fake CPA: no Manager-owned path ever reaches CPA, whatever the
//! method or sub-path; pending ones answer 501 with a code; unauthenticated callers get
//! 401 before anything else.

use cpamp_api::routes::owned::{OWNED_ROUTES, PathMatch, RouteAuth, RouteState};
use cpamp_testkit::FakeCpaOptions;
use serde_json::Value;

use crate::status::{runtime, start_cpa, start_server};
use crate::support::client;

const ADMIN: &str = "cmp_admin_status0123456789abcdefghijklmn";
const CPA_KEY: &str = "cpa-management-key-for-owned-routes";

#[test]
fn every_owned_path_is_answered_by_cpamp_and_never_forwarded_to_cpa() {
    let runtime = runtime();
    let mut options = FakeCpaOptions::new(CPA_KEY);
    options.record_requests = true;
    let cpa = start_cpa(&runtime, options);
    let data = tempfile::tempdir().expect("tempdir");
    // Price sync sources off: probing the sync path must not reach the internet.
    let server = start_server(
        data.path(),
        &cpa.base_url(),
        CPA_KEY,
        &[
            ("MODEL_PRICE_SYNC_MODELS_DEV_URL", "off"),
            ("MODEL_PRICE_SYNC_LITELLM_URL", "off"),
            ("MODEL_PRICE_SYNC_OPENROUTER_URL", "off"),
        ],
    );

    let mut probed = 0;
    for route in OWNED_ROUTES {
        let mut paths = vec![route.path.to_string(), format!("{}/", route.path)];
        if route.matches == PathMatch::Subtree {
            paths.push(format!("{}/some/sub-path", route.path));
        }
        for path in &paths {
            for method in ["GET", "POST", "PUT", "PATCH", "DELETE"] {
                let response = client()
                    .request(method.parse().expect("method"), server.url(path))
                    .bearer_auth(ADMIN)
                    .header("Content-Type", "application/json")
                    .body("{}")
                    .send()
                    .expect("request");
                let status = response.status().as_u16();
                let text = response.text().expect("body");
                let forwarded = cpa
                    .recorded_requests()
                    .into_iter()
                    .any(|request| request.path == *path);
                assert!(!forwarded, "{method} {path} reached CPA");
                match route.state {
                    RouteState::Pending => {
                        assert_eq!(status, 501, "{method} {path}: {text}");
                        let body: Value = serde_json::from_str(&text).expect("json");
                        assert_eq!(body["code"], "not_implemented", "{method} {path}");
                        assert!(
                            body["error"]
                                .as_str()
                                .is_some_and(|m| m.contains(path.as_str())),
                            "{body}"
                        );
                    }
                    RouteState::Served => {
                        assert_ne!(status, 501, "{method} {path} is marked served: {text}");
                    }
                }
                probed += 1;
            }
        }
        if route.auth == RouteAuth::Admin {
            let response = client()
                .get(server.url(route.path))
                .send()
                .expect("unauthenticated");
            assert_eq!(response.status(), 401, "GET {} without a key", route.path);
        }
    }
    assert!(probed >= OWNED_ROUTES.len() * 10);

    // CPA's own management paths still go through the proxy.
    let response = client()
        .get(server.url("/v0/management/usage-statistics-enabled"))
        .bearer_auth(ADMIN)
        .send()
        .expect("proxied");
    assert_eq!(response.status(), 200);
    assert!(
        cpa.recorded_requests()
            .iter()
            .any(|request| request.path == "/v0/management/usage-statistics-enabled")
    );
}
