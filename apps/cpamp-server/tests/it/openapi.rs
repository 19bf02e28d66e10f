//! `/openapi.json` against the real server: public, valid OpenAPI, and every documented
//! operation is registered (never 404, 405 or 501) and answered by cpamp itself (never
//! forwarded to CPA), except CPA's pass-through model lists.

use cpamp_testkit::FakeCpaOptions;
use serde_json::Value;

use crate::status::{runtime, start_cpa, start_server};
use crate::support::client;

const ADMIN: &str = "cmp_admin_status0123456789abcdefghijklmn";
const CPA_KEY: &str = "cpa-management-key-for-openapi";

#[test]
fn every_documented_operation_is_served_by_cpamp() {
    let runtime = runtime();
    let mut options = FakeCpaOptions::new(CPA_KEY);
    options.record_requests = true;
    let cpa = start_cpa(&runtime, options);
    let data = tempfile::tempdir().expect("tempdir");
    // Price sync sources off: posting to the sync path must not reach the internet.
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

    let response = client()
        .get(server.url("/openapi.json"))
        .send()
        .expect("openapi");
    assert_eq!(response.status(), 200, "the reference needs no key");
    let document: Value = response.json().expect("json");
    assert!(
        document["openapi"]
            .as_str()
            .is_some_and(|version| version.starts_with("3."))
    );
    assert_eq!(document["info"]["version"], env!("CARGO_PKG_VERSION"));

    let mut probed = 0;
    for (path, item) in document["paths"].as_object().expect("paths") {
        let pending = item["x-cpamp-state"] == "pending";
        for (method, operation) in item.as_object().expect("path item") {
            if !["get", "post", "put", "patch", "delete"].contains(&method.as_str()) {
                continue;
            }
            let concrete = path.replace(['{', '}'], "");
            let response = client()
                .request(
                    method.to_uppercase().parse().expect("method"),
                    server.url(&concrete),
                )
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
                .any(|request| request.path == concrete);
            let passes_through = operation["tags"][0] == "cpa";
            assert_eq!(
                forwarded, passes_through,
                "{method} {path}: forwarded to CPA = {forwarded}"
            );
            if pending {
                assert_eq!(status, 501, "{method} {path}: {text}");
            } else {
                assert!(
                    ![404, 405, 501].contains(&status),
                    "{method} {path} is documented but answers {status}: {text}"
                );
            }
            probed += 1;
        }
    }
    assert!(
        probed >= cpamp_api::routes::openapi::OPERATIONS.len(),
        "{probed}"
    );
}
