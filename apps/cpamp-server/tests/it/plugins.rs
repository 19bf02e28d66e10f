//! CPA plugin paths through the real binary: plugin pages and APIs reach CPA with CPA's
//! own origin in place of cpamp's; public plugin assets need no admin key while plugin
//! management paths do; and the panel's Manager-only members of auth-file changes never
//! reach CPA.

use cpamp_testkit::events::ACCOUNTS;
use serde_json::{Value, json};

use crate::support::live::LiveCpa;
use crate::support::{ADMIN_KEY, client, json_of};

#[test]
fn plugin_requests_carry_cpas_origin_and_manager_fields_are_stripped() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cpa = LiveCpa::start(|options| options.record_requests = true);
    let server = cpa.start_server(&dir, &[]);
    let cpa_origin = cpa.cpa.base_url();

    let (status, echo) = json_of(
        client()
            .post(server.url("/v0/management/codex-team-invite/invite"))
            .bearer_auth(ADMIN_KEY)
            .header("X-Codex-Invite-Origin", "https://panel.example.com")
            .json(&json!({"email": "new@example.com", "management_origin": "https://panel.example.com"}))
            .send()
            .expect("plugin call"),
    );
    assert_eq!(status, 200, "{echo}");
    assert_eq!(echo["inviteOrigin"], cpa_origin.as_str());
    assert_eq!(echo["body"]["management_origin"], cpa_origin.as_str());
    assert_eq!(echo["body"]["email"], "new@example.com");
    assert_eq!(
        echo["authorization"], "Bearer",
        "the CPA Management Key is substituted"
    );
    let (status, _) = json_of(
        client()
            .post(server.url("/v0/management/codex-team-invite/invite"))
            .json(&json!({}))
            .send()
            .expect("plugin call"),
    );
    assert_eq!(status, 401, "plugin management paths need the admin key");

    // Public plugin assets: no admin key needed, and none is invented.
    let (status, echo) = json_of(
        client()
            .get(server.url("/v0/resource/plugins/codex-team-invite/index.html"))
            .send()
            .expect("asset"),
    );
    assert_eq!(status, 200, "{echo}");
    assert_eq!(
        echo["plugin"],
        "/v0/resource/plugins/codex-team-invite/index.html"
    );
    assert_eq!(echo["authorization"], Value::Null);
    let response = client()
        .request(
            reqwest::Method::from_bytes(b"PROPFIND").expect("method"),
            server.url("/v0/resource/plugins/x"),
        )
        .send()
        .expect("propfind");
    assert_eq!(response.status().as_u16(), 405);
    let huge = format!(
        "{{\"management_origin\":\"x\",\"pad\":\"{}\"}}",
        "a".repeat(5 << 20)
    );
    let response = client()
        .post(server.url("/v0/resource/plugins/x/api"))
        .header("Content-Type", "application/json")
        .body(huge)
        .send()
        .expect("huge");
    assert_eq!(response.status().as_u16(), 413);

    // The panel's cpamp_* members are for the Manager only.
    let alice = ACCOUNTS[0];
    let (status, body) = json_of(
        client()
            .patch(server.url("/v0/management/auth-files/status"))
            .bearer_auth(ADMIN_KEY)
            .json(&json!({"name": alice.file_name, "disabled": true, "cpamp_physical_name": alice.file_name, "cpamp_provider": "codex"}))
            .send()
            .expect("status"),
    );
    assert_eq!(status, 200, "{body}");
    let sent = cpa
        .cpa
        .recorded_requests()
        .into_iter()
        .rfind(|request| request.path == "/v0/management/auth-files/status")
        .expect("forwarded");
    let sent: Value = serde_json::from_slice(&sent.body).expect("json body");
    assert_eq!(sent, json!({"name": alice.file_name, "disabled": true}));
    let status = server.terminate();
    assert!(status.success(), "exit status {status}");
}
