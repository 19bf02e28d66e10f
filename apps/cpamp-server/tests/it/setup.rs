//! First setup against the fake CPA: the pre-setup state, CPA's answers to the three
//! setup calls, secrets at rest, and recovery after `data.key` is lost.

use std::time::Duration;

use cpamp_testkit::FakeCpaOptions;
use serde_json::json;

use crate::support::{ADMIN_KEY, Cpa, ServerProcess, client, eventually, json_of, leaks};

const CPA_KEY: &str = "cpa-mgmt-SecretValue-4711";

fn info(server: &ServerProcess) -> serde_json::Value {
    json_of(
        client()
            .get(server.url("/usage-service/info"))
            .send()
            .expect("info"),
    )
    .1
}

fn setup(server: &ServerProcess, body: serde_json::Value) -> (u16, serde_json::Value) {
    json_of(
        client()
            .post(server.url("/setup"))
            .bearer_auth(ADMIN_KEY)
            .json(&body)
            .send()
            .expect("setup"),
    )
}

#[test]
fn setup_validates_against_cpa_enables_publishing_and_starts_collecting() {
    let mut options = FakeCpaOptions::new(CPA_KEY);
    options.publishing_enabled = false;
    options.retention = Duration::from_secs(30);
    let cpa = Cpa::start(options);
    let data = tempfile::tempdir().expect("tempdir");
    let server = ServerProcess::start(data.path(), &[("CPA_MANAGER_ADMIN_KEY", ADMIN_KEY)]);

    let before = info(&server);
    assert_eq!(before["service"], "cpa-manager-plus");
    assert_eq!(before["setupRequired"], true, "{before}");
    assert_eq!(before["projectInitialized"], false);
    assert_eq!(before["dataKeyReady"], true);
    assert_eq!(before["adminReady"], true);
    assert!(data.path().join("data.key").is_file());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(data.path().join("data.key"))
            .expect("data.key")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    // Before setup the config page is open, and shows no connection.
    let (status, config) = json_of(
        client()
            .get(server.url("/usage-service/config"))
            .send()
            .expect("config"),
    );
    assert_eq!(status, 200, "{config}");
    assert_eq!(config["source"], "");
    assert_eq!(config["config"]["cpaConnection"]["managementKeySet"], false);

    // Setup needs the admin key, before anything else.
    let (status, body) = json_of(
        client()
            .post(server.url("/setup"))
            .bearer_auth("wrong")
            .body("not json")
            .send()
            .expect("setup"),
    );
    assert_eq!(
        (status, body["code"].as_str()),
        (401, Some("invalid_admin_key"))
    );
    let (status, body) = setup(&server, json!({"cpaBaseUrl": cpa.fake.base_url()}));
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("cpa_connection_required"))
    );
    let (status, body) = json_of(
        client()
            .post(server.url("/setup"))
            .bearer_auth(ADMIN_KEY)
            .body("{")
            .send()
            .expect("setup"),
    );
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("request_failed"))
    );

    // A wrong CPA key is refused by CPA; nothing is saved.
    let (status, body) = setup(
        &server,
        json!({"cpaBaseUrl": cpa.fake.base_url(), "cpaManagementKey": "not-the-cpa-key"}),
    );
    assert_eq!(status, 502, "{body}");
    assert_eq!(body["code"], "management_api_validation_failed");
    assert_eq!(
        body["error"],
        "management API validation failed: 401 Unauthorized"
    );
    assert_eq!(info(&server)["setupRequired"], true);

    // A poll interval longer than CPA's retention would lose events.
    let (status, body) = setup(
        &server,
        json!({"cpaBaseUrl": cpa.fake.base_url(), "cpaManagementKey": CPA_KEY, "pollIntervalMs": 45_000}),
    );
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["code"], "poll_interval_exceeds_retention");
    assert_eq!(
        body["error"],
        "pollIntervalMs must be less than or equal to CPA redis-usage-queue-retention-seconds (30 seconds)"
    );

    // The panel's wizard request, with a URL as users paste it.
    let pasted = format!("{}/v0/management/", cpa.fake.base_url());
    let (status, body) = setup(
        &server,
        json!({
            "cpaBaseUrl": pasted,
            "cpaManagementKey": CPA_KEY,
            "pollIntervalMs": 200,
            "ensureUsageStatisticsEnabled": true,
            "requestMonitoringEnabled": true,
        }),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({"ok": true, "upstream": cpa.fake.base_url()}));
    // Setup's call C turned CPA's usage publishing on.
    let (_, publishing) = json_of(
        client()
            .get(format!(
                "{}/v0/management/usage-statistics-enabled",
                cpa.fake.base_url()
            ))
            .bearer_auth(CPA_KEY)
            .send()
            .expect("publishing"),
    );
    assert_eq!(publishing["usage-statistics-enabled"], true, "{publishing}");

    let after = info(&server);
    assert_eq!(after["setupRequired"], false, "{after}");
    assert_eq!(after["projectInitialized"], true);
    assert_eq!(after["connectionSource"], "db");

    // The collector runs with the saved connection: emitted events get stored.
    cpa.emit(5);
    assert!(
        eventually(
            Duration::from_secs(15),
            || info(&server)["hasHistoricalData"] == true
        ),
        "no events collected; log:\n{}",
        server.log_text()
    );

    // The config page never returns the CPA Management Key.
    let response = client()
        .get(server.url("/usage-service/config"))
        .bearer_auth(ADMIN_KEY)
        .send()
        .expect("config");
    let (status, config) = json_of(response);
    assert_eq!(status, 200, "{config}");
    assert_eq!(config["source"], "db");
    let connection = &config["config"]["cpaConnection"];
    assert_eq!(connection["managementKeySet"], true);
    assert_eq!(connection["managementKey"], "cpa-...4711");
    assert!(!config.to_string().contains(CPA_KEY));
    assert_eq!(config["cpaUsage"]["usageStatisticsEnabled"], true);
    assert_eq!(config["cpaUsage"]["redisUsageQueueRetentionSeconds"], 30);

    // Secrets at rest: neither key in SQLite or the log.
    let log = server.log_text();
    assert!(server.terminate().success());
    assert!(
        !leaks(data.path(), &log, CPA_KEY),
        "CPA Management Key leaked"
    );
    assert!(!leaks(data.path(), &log, ADMIN_KEY), "admin key leaked");
}

#[test]
fn a_lost_data_key_means_setup_again_not_a_dead_server() {
    let cpa = Cpa::start(FakeCpaOptions::new(CPA_KEY));
    let data = tempfile::tempdir().expect("tempdir");
    let env = [("CPA_MANAGER_ADMIN_KEY", ADMIN_KEY)];
    let server = ServerProcess::start(data.path(), &env);
    let (status, body) = setup(
        &server,
        json!({"cpaBaseUrl": cpa.fake.base_url(), "cpaManagementKey": CPA_KEY}),
    );
    assert_eq!(status, 200, "{body}");
    assert!(server.terminate().success());

    std::fs::remove_file(data.path().join("data.key")).expect("remove data.key");
    let server = ServerProcess::start(data.path(), &env);
    let state = info(&server);
    assert_eq!(state["dataKeyReady"], false, "{state}");
    assert_eq!(state["setupRequired"], true);
    assert!(
        state["setupReason"]
            .as_str()
            .is_some_and(|reason| reason.contains("save the CPA connection again")),
        "{state}"
    );
    // The saved URL is kept for the form; the key has to be entered again.
    let (_, config) = json_of(
        client()
            .get(server.url("/usage-service/config"))
            .send()
            .expect("config"),
    );
    assert_eq!(
        config["config"]["cpaConnection"]["cpaBaseUrl"],
        cpa.fake.base_url()
    );
    assert_eq!(config["config"]["cpaConnection"]["managementKeySet"], false);

    let (status, body) = setup(
        &server,
        json!({"cpaBaseUrl": cpa.fake.base_url(), "cpaManagementKey": CPA_KEY}),
    );
    assert_eq!(status, 200, "{body}");
    let state = info(&server);
    assert_eq!(
        (
            state["dataKeyReady"].clone(),
            state["setupRequired"].clone()
        ),
        (json!(true), json!(false))
    );
    cpa.emit(3);
    assert!(
        eventually(
            Duration::from_secs(15),
            || info(&server)["hasHistoricalData"] == true
        ),
        "collection did not resume; log:\n{}",
        server.log_text()
    );
    assert!(server.terminate().success());

    // An unusable key file is kept aside, never deleted, and the server still starts.
    std::fs::write(data.path().join("data.key"), "garbage\n").expect("write");
    let server = ServerProcess::start(data.path(), &env);
    assert_eq!(info(&server)["setupRequired"], true);
    let kept = std::fs::read_dir(data.path())
        .expect("dir")
        .filter_map(Result::ok)
        .any(|entry| {
            entry
                .file_name()
                .to_string_lossy()
                .starts_with("data.key.unusable-")
        });
    assert!(kept, "the unusable key file must be kept");
    assert!(server.terminate().success());
}

#[test]
fn an_env_managed_connection_needs_no_setup_and_stays_out_of_sqlite() {
    let cpa = Cpa::start(FakeCpaOptions::new(CPA_KEY));
    let data = tempfile::tempdir().expect("tempdir");
    let url = cpa.fake.base_url();
    let server = ServerProcess::start(
        data.path(),
        &[
            ("CPA_MANAGER_ADMIN_KEY", ADMIN_KEY),
            ("CPA_UPSTREAM_URL", &url),
            ("CPA_MANAGEMENT_KEY", CPA_KEY),
        ],
    );
    let state = info(&server);
    assert_eq!(state["setupRequired"], false, "{state}");
    assert_eq!(state["connectionSource"], "env");

    let (status, config) = json_of(
        client()
            .get(server.url("/usage-service/config"))
            .bearer_auth(ADMIN_KEY)
            .send()
            .expect("config"),
    );
    assert_eq!(status, 200);
    assert_eq!(config["source"], "env");
    assert_eq!(config["config"]["cpaConnection"]["cpaBaseUrl"], url);

    let (status, body) = setup(
        &server,
        json!({"cpaBaseUrl": "http://127.0.0.1:9", "cpaManagementKey": CPA_KEY}),
    );
    assert_eq!(
        (status, body["code"].as_str()),
        (409, Some("setup_env_managed"))
    );
    let (status, body) = json_of(
        client()
            .put(server.url("/usage-service/config"))
            .bearer_auth(ADMIN_KEY)
            .json(&json!({"config": {"cpaConnection": {"cpaBaseUrl": "http://127.0.0.1:9", "managementKey": "other"}}}))
            .send()
            .expect("put"),
    );
    assert_eq!(
        (status, body["code"].as_str()),
        (409, Some("connection_env_managed"))
    );
    // queryLimit stays editable.
    let (status, body) = json_of(
        client()
            .put(server.url("/usage-service/config"))
            .bearer_auth(ADMIN_KEY)
            .json(&json!({"config": {"collector": {"queryLimit": 1234}}}))
            .send()
            .expect("put"),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["config"]["collector"]["queryLimit"], 1234);
    assert_eq!(body["source"], "env");

    cpa.emit(3);
    assert!(
        eventually(
            Duration::from_secs(15),
            || info(&server)["hasHistoricalData"] == true
        ),
        "env-managed collector did not collect; log:\n{}",
        server.log_text()
    );
    let log = server.log_text();
    assert!(server.terminate().success());
    assert!(
        !leaks(data.path(), &log, CPA_KEY),
        "env key reached SQLite or the log"
    );
}

#[test]
fn config_put_changes_the_connection_and_keeps_a_masked_key() {
    let cpa = Cpa::start(FakeCpaOptions::new(CPA_KEY));
    let data = tempfile::tempdir().expect("tempdir");
    let server = ServerProcess::start(data.path(), &[("CPA_MANAGER_ADMIN_KEY", ADMIN_KEY)]);
    // Before setup, saving with monitoring on but no connection names what is missing.
    let put = |body: serde_json::Value| {
        json_of(
            client()
                .put(server.url("/usage-service/config"))
                .bearer_auth(ADMIN_KEY)
                .json(&body)
                .send()
                .expect("put"),
        )
    };
    let (status, body) = put(json!({"config": {"collector": {"enabled": true}}}));
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("cpa_connection_required_for_monitoring"))
    );
    let (status, body) = put(
        json!({"config": {"cpaConnection": {"cpaBaseUrl": cpa.fake.base_url(), "managementKey": "wrong"}}}),
    );
    assert_eq!(
        (status, body["code"].as_str()),
        (502, Some("management_api_validation_failed"))
    );
    let (status, body) = put(
        json!({"config": {"cpaConnection": {"cpaBaseUrl": cpa.fake.base_url(), "managementKey": CPA_KEY}, "collector": {"pollIntervalMs": 300}}}),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["config"]["cpaConnection"]["managementKey"],
        "cpa-...4711"
    );
    assert_eq!(info(&server)["setupRequired"], false);

    // Sending back what GET returned (the masked key) keeps the saved key.
    let (status, body) = put(json!({"config": {
        "cpaConnection": {"cpaBaseUrl": cpa.fake.base_url(), "managementKey": "cpa-...4711"},
        "collector": {"batchSize": 50}
    }}));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["config"]["collector"]["batchSize"], 50);
    assert_eq!(body["config"]["cpaConnection"]["managementKeySet"], true);
    cpa.emit(2);
    assert!(
        eventually(
            Duration::from_secs(15),
            || info(&server)["hasHistoricalData"] == true
        ),
        "collector did not run with the kept key; log:\n{}",
        server.log_text()
    );
    let (status, body) =
        put(json!({"config": {"codexInspection": {"schedule": {"timeZone": "Mars/Olympus"}}}}));
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("invalid_time_zone"))
    );
    assert!(server.terminate().success());
}
