//! Admin authentication over HTTP: the 401 envelope, the message for a mixed-up CPA
//! Management Key, and the per-address failure limit.

use std::net::IpAddr;
use std::time::Duration;

use cpamp_testkit::FakeCpaOptions;
use serde_json::json;

use crate::support::{ADMIN_KEY, Cpa, ServerProcess, client, json_of};

const CPA_KEY: &str = "cpa-mgmt-Another-Secret-99";

fn client_from(address: [u8; 4]) -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .local_address(IpAddr::from(address))
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client")
}

#[test]
fn a_wrong_key_gets_401_and_the_cpa_key_gets_a_message_naming_the_admin_key() {
    let cpa = Cpa::start(FakeCpaOptions::new(CPA_KEY));
    let data = tempfile::tempdir().expect("tempdir");
    let server = ServerProcess::start(data.path(), &[("CPA_MANAGER_ADMIN_KEY", ADMIN_KEY)]);
    let (status, body) = json_of(
        client()
            .post(server.url("/setup"))
            .bearer_auth(ADMIN_KEY)
            .json(&json!({"cpaBaseUrl": cpa.fake.base_url(), "cpaManagementKey": CPA_KEY}))
            .send()
            .expect("setup"),
    );
    assert_eq!(status, 200, "{body}");

    let (status, body) = json_of(
        client()
            .get(server.url("/usage-service/config"))
            .bearer_auth("cmp_admin_wrongwrongwrongwrongwrongwrong00")
            .send()
            .expect("config"),
    );
    assert_eq!(status, 401);
    assert_eq!(
        body,
        json!({"error": "invalid admin key", "code": "invalid_admin_key"})
    );
    let (status, body) = json_of(
        client()
            .get(server.url("/usage-service/config"))
            .send()
            .expect("config"),
    );
    assert_eq!(
        (status, body["code"].as_str()),
        (401, Some("invalid_admin_key"))
    );

    let (status, body) = json_of(
        client()
            .get(server.url("/usage-service/config"))
            .bearer_auth(CPA_KEY)
            .send()
            .expect("config"),
    );
    assert_eq!(status, 401);
    assert_eq!(body["code"], "invalid_admin_key");
    let message = body["error"].as_str().expect("message");
    assert!(
        message.contains("CPA Management Key") && message.contains("CPAMP Admin Key"),
        "{message}"
    );
    assert!(!message.contains(CPA_KEY));

    // The right key works, with any letter case of the scheme.
    let response = client()
        .get(server.url("/usage-service/config"))
        .header("Authorization", format!("bearer {ADMIN_KEY}"))
        .send()
        .expect("config");
    assert_eq!(response.status(), 200);
    // Public endpoints need no key.
    for path in ["/health", "/usage-service/info", "/management.html"] {
        let response = client().get(server.url(path)).send().expect("public");
        assert_eq!(response.status(), 200, "{path}");
    }

    // A CPA client API key seen in collected events is named as such, too. A fresh
    // client address keeps these tries clear of the failure limit.
    cpa.emit(30);
    assert!(
        crate::support::eventually(Duration::from_secs(20), || {
            crate::support::stored_events(data.path()) >= 30
        }),
        "events were not collected"
    );
    let fresh = client_from([127, 0, 0, 3]);
    let client_keys = [
        "sk-cpa-FAKE-team-alpha",
        "sk-cpa-FAKE-team-beta",
        "sk-cpa-FAKE-ci",
    ];
    let named = client_keys.iter().any(|key| {
        let (status, body) = json_of(
            fresh
                .get(server.url("/usage-service/config"))
                .bearer_auth(key)
                .send()
                .expect("config"),
        );
        status == 401
            && body["code"] == "invalid_admin_key"
            && body["error"].as_str().is_some_and(|message| {
                message.contains("CPA API Key") && message.contains("CPAMP Admin Key")
            })
    });
    assert!(
        named,
        "no client API key was recognised after events were collected"
    );
    assert!(server.terminate().success());
}

#[test]
fn six_wrong_tries_from_one_address_get_429_while_other_addresses_log_in() {
    let data = tempfile::tempdir().expect("tempdir");
    let server = ServerProcess::start(data.path(), &[("CPA_MANAGER_ADMIN_KEY", ADMIN_KEY)]);
    let attacker = client_from([127, 0, 0, 1]);
    let put = |client: &reqwest::blocking::Client, key: &str| {
        client
            .put(server.url("/usage-service/config"))
            .bearer_auth(key)
            .json(&json!({"config": {"collector": {"enabled": false}}}))
            .send()
            .expect("put")
    };
    for attempt in 1..=5 {
        let response = put(&attacker, &format!("guess-{attempt}"));
        assert_eq!(response.status(), 401, "attempt {attempt}");
    }
    let blocked = put(&attacker, "guess-6");
    assert_eq!(blocked.status(), 429);
    let retry_after: u64 = blocked.headers()["retry-after"]
        .to_str()
        .expect("header")
        .parse()
        .expect("seconds");
    assert!((1..=900).contains(&retry_after), "{retry_after}");
    let (_, body) = json_of(blocked);
    assert_eq!(body["code"], "too_many_attempts");
    // The blocked address cannot keep guessing, not even with the right key.
    assert_eq!(put(&attacker, ADMIN_KEY).status(), 429);

    // Another address is unaffected.
    let other = client_from([127, 0, 0, 2]);
    let response = put(&other, ADMIN_KEY);
    assert_eq!(response.status(), 200, "{:?}", response.text());
    assert!(server.terminate().success());
}
