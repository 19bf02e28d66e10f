//! Server inspection through the real binary: CPA's `api-call` answers are scripted in
//! the fake CPA. A run reports each account's state and suggested action, two triggers
//! never run at once, cancel stops it between probes, and the history and manual actions
//! work on finished runs.

use std::time::Duration;

use cpamp_testkit::ApiCallAnswer;
use cpamp_testkit::events::ACCOUNTS;
use serde_json::{Value, json};

use crate::support::live::{LiveCpa, wait_until};
use crate::support::{ADMIN_KEY, ServerProcess, client, json_of};

fn usage(primary: f64, weekly: f64) -> Value {
    json!({"plan_type": "plus", "rate_limit": {"allowed": true, "limit_reached": weekly >= 100.0,
        "primary_window": {"used_percent": primary, "limit_window_seconds": 18000, "reset_after_seconds": 3600},
        "secondary_window": {"used_percent": weekly, "limit_window_seconds": 604800, "reset_after_seconds": 86400}}})
}

fn send(server: &ServerProcess, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
    let mut request = client()
        .request(method, server.url(path))
        .bearer_auth(ADMIN_KEY);
    if let Some(body) = body {
        request = request.json(&body);
    }
    json_of(request.send().expect("request"))
}

fn configure(server: &ServerProcess, inspection: Value) {
    let (status, body) = send(
        server,
        "PUT",
        "/usage-service/config",
        Some(json!({"config": {"codexInspection": inspection}})),
    );
    assert_eq!(status, 200, "{body}");
}

fn run_detail(server: &ServerProcess, id: i64) -> Value {
    let (status, body) = send(
        server,
        "GET",
        &format!("/v0/management/codex-inspection/runs/{id}"),
        None,
    );
    assert_eq!(status, 200, "{body}");
    body
}

fn wait_finished(server: &ServerProcess, id: i64) -> Value {
    let mut detail = Value::Null;
    assert!(
        wait_until(Duration::from_secs(20), || {
            detail = run_detail(server, id);
            !matches!(
                detail["run"]["status"].as_str(),
                Some("running" | "cancelling")
            )
        }),
        "run {id} did not finish: {detail}\n{}",
        server.log_text()
    );
    detail
}

fn result_of<'a>(detail: &'a Value, file: &str) -> &'a Value {
    detail["results"]
        .as_array()
        .and_then(|results| results.iter().find(|result| result["fileName"] == file))
        .unwrap_or_else(|| panic!("no result for {file}: {detail}"))
}

#[test]
fn an_inspection_reports_each_account_runs_once_at_a_time_and_honours_cancel() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cpa = LiveCpa::start(|_| {});
    let (alice, bob, dave) = (ACCOUNTS[0], ACCOUNTS[1], ACCOUNTS[5]);
    let slow = Duration::from_millis(400);
    cpa.cpa.script_api_call(
        alice.auth_index,
        "wham/usage",
        ApiCallAnswer::json(200, &usage(40.0, 100.0)).delayed(slow),
        None,
    );
    cpa.cpa.script_api_call(
        bob.auth_index,
        "wham/usage",
        ApiCallAnswer::json(200, &usage(10.0, 30.0)).delayed(slow),
        None,
    );
    cpa.cpa.script_api_call(
        dave.auth_index,
        "billing",
        ApiCallAnswer::json(
            402,
            &json!({"code": "subscription:free-usage-exhausted", "error": "free usage exhausted"}),
        ),
        None,
    );
    let server = cpa.start_server(&dir, &[]);
    configure(
        &server,
        json!({"enabled": false, "targetTypes": ["codex", "xai"], "workers": 1, "autoActionMode": "none"}),
    );
    let (status, config) = send(&server, "GET", "/usage-service/config", None);
    assert_eq!(status, 200);
    assert_eq!(
        config["config"]["codexInspection"]["targetTypes"],
        json!(["codex", "xai"])
    );
    assert_eq!(config["config"]["codexInspection"]["workers"], 1);

    let (status, started) = send(&server, "POST", "/v0/management/codex-inspection/run", None);
    assert_eq!(status, 200, "{started}");
    let id = started["run"]["id"].as_i64().expect("id");
    assert_eq!(started["run"]["active"], true);
    assert_eq!(started["run"]["cancellable"], true);
    assert_eq!(started["results"], json!([]));
    // A second trigger while it runs is refused, never run beside it.
    let (status, refused) = send(&server, "POST", "/v0/management/codex-inspection/run", None);
    assert_eq!(status, 409, "{refused}");
    assert_eq!(refused["error"], "codex inspection is already running");

    let detail = wait_finished(&server, id);
    let run = &detail["run"];
    assert_eq!(run["status"], "completed", "{detail}");
    assert_eq!(run["active"], false);
    assert_eq!(
        run["probeSetCount"], 3,
        "codex alice and bob, xai dave: {run}"
    );
    assert_eq!(run["disableCount"], 2);
    assert_eq!(run["keepCount"], 1);
    let alice_result = result_of(&detail, alice.file_name);
    assert_eq!(alice_result["action"], "disable");
    assert_eq!(alice_result["isQuota"], true);
    assert_eq!(alice_result["usedPercent"], 100.0);
    assert_eq!(alice_result["statusCode"], 200);
    assert_eq!(alice_result["quotaWindows"][1]["id"], "weekly");
    assert_eq!(result_of(&detail, bob.file_name)["action"], "keep");
    let dave_result = result_of(&detail, dave.file_name);
    assert_eq!(dave_result["action"], "disable");
    assert_eq!(dave_result["errorKind"], "http_status");
    assert!(!detail["logs"].as_array().expect("logs").is_empty());
    // Each Codex result is quota evidence: the Accounts page's windows come from it.
    let (status, snapshots) = send(
        &server,
        "POST",
        "/v0/management/quota-snapshots/query",
        Some(
            json!({"accounts": [{"row_key": "alice", "provider": "codex",
            "account": {"auth_file_snapshot": alice.file_name, "auth_index": alice.auth_index}}]}),
        ),
    );
    assert_eq!(status, 200, "{snapshots}");
    let windows = &snapshots["items"][0]["windows"];
    let summary: Vec<(&str, &str, f64)> = windows
        .as_array()
        .expect("windows")
        .iter()
        .map(|window| {
            (
                window["provider_window_id"].as_str().unwrap_or(""),
                window["source"].as_str().unwrap_or(""),
                window["used_percent"].as_f64().unwrap_or(-1.0),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("five-hour", "inspection", 40.0),
            ("weekly", "inspection", 100.0)
        ],
        "{snapshots}"
    );
    assert_eq!(windows[1]["boundary_accuracy"], "derived", "{windows}");
    assert_eq!(windows[1]["availability"], "active", "{windows}");
    // The probe used the credential's token through CPA.
    let calls = cpa.cpa.api_calls();
    let probe = calls
        .iter()
        .find(|call| call.auth_index == alice.auth_index)
        .expect("alice probed");
    assert!(probe.url.ends_with("/backend-api/wham/usage"));
    assert!(
        probe
            .header
            .iter()
            .any(|(name, value)| name == "Authorization"
                && value.starts_with("Bearer fake-access-token-"))
    );
    // Suggestions only: nothing was changed in CPA.
    assert!(cpa.cpa.status_changes().is_empty());

    // A person acts on a suggestion.
    let result_id = alice_result["id"].as_i64().expect("result id");
    let (status, acted) = send(
        &server,
        "POST",
        &format!("/v0/management/codex-inspection/runs/{id}/actions"),
        Some(json!({"resultIds": [result_id]})),
    );
    assert_eq!(status, 200, "{acted}");
    assert_eq!(acted["outcomes"][0]["status"], "success", "{acted}");
    assert!(
        cpa.cpa
            .auth_file(alice.file_name)
            .is_some_and(|file| file.disabled)
    );
    assert_eq!(
        result_of(&acted["detail"], alice.file_name)["actionStatus"],
        "success"
    );

    // Cancel: slow probes, one worker; the run stops before probing everyone.
    let before = cpa.cpa.api_calls().len();
    let (status, started) = send(&server, "POST", "/v0/management/codex-inspection/run", None);
    assert_eq!(status, 200, "{started}");
    let second = started["run"]["id"].as_i64().expect("id");
    let (status, cancelling) = send(
        &server,
        "POST",
        &format!("/v0/management/codex-inspection/runs/{second}/cancel"),
        None,
    );
    assert_eq!(status, 200, "{cancelling}");
    assert!(matches!(
        cancelling["run"]["status"].as_str(),
        Some("cancelling" | "cancelled")
    ));
    let detail = wait_finished(&server, second);
    assert_eq!(detail["run"]["status"], "cancelled", "{detail}");
    let probed = cpa.cpa.api_calls().len() - before;
    assert!(probed < 3, "cancel did not stop the probes ({probed} made)");
    let (status, again) = send(
        &server,
        "POST",
        &format!("/v0/management/codex-inspection/runs/{second}/cancel"),
        None,
    );
    assert_eq!(
        (status, again["run"]["status"].as_str()),
        (200, Some("cancelled"))
    );
    let (status, _) = send(
        &server,
        "POST",
        &format!("/v0/management/codex-inspection/runs/{id}/cancel"),
        None,
    );
    assert_eq!(status, 409, "a completed run cannot be cancelled");

    let (status, history) = send(
        &server,
        "GET",
        "/v0/management/codex-inspection/runs?limit=30",
        None,
    );
    assert_eq!(status, 200, "{history}");
    let ids: Vec<i64> = history["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|run| run["id"].as_i64())
        .collect();
    assert_eq!(ids, [second, id], "newest first");
    let actions_of_cancelled = format!("runs/{second}/actions");
    for (method, path, expected) in [
        ("GET", "runs/999", 404),
        ("GET", "runs/abc", 400),
        ("DELETE", "runs", 405),
        ("POST", actions_of_cancelled.as_str(), 409),
    ] {
        let (status, body) = send(
            &server,
            method,
            &format!("/v0/management/codex-inspection/{path}"),
            Some(json!({"resultIds": [1]})),
        );
        assert_eq!(status, expected, "{method} {path}: {body}");
    }
    let status = server.terminate();
    assert!(status.success(), "exit status {status}");
}
