//! Account automation through the real binary and the fake CPA: quota cooldowns (disable
//! on a Codex usage limit, restore when the quota resets, even across a restart; a manual
//! disable is never undone), the account action queue (one pending candidate per
//! credential and reason; auto-disable only when switched on; manual actions) and the
//! policy endpoint with its environment locks.

use std::time::{Duration, Instant};

use cpamp_testkit::events::ACCOUNTS;
use cpamp_testkit::{Account, PayloadSpec};
use serde_json::{Value, json};

use crate::support::live::{LiveCpa, db_path, stored_total, wait_until};
use crate::support::{ADMIN_KEY, ServerProcess, client, json_of};

const ALICE: Account = ACCOUNTS[0];
const BOB: Account = ACCOUNTS[1];
const DAVE: Account = ACCOUNTS[5];

/// A Codex 429 whose five-hour window is full and resets in `reset_secs`.
fn usage_limit(account: Account, request_id: &str, reset_secs: u64) -> PayloadSpec {
    PayloadSpec::failure(
        account,
        request_id,
        429,
        r#"{"error":{"type":"usage_limit_reached","message":"The usage limit has been reached"}}"#,
    )
    .header("X-Codex-Primary-Used-Percent", "100")
    .header("X-Codex-Primary-Window-Minutes", "300")
    .header(
        "X-Codex-Primary-Reset-After-Seconds",
        &reset_secs.to_string(),
    )
}

fn revoked(account: Account, request_id: &str) -> PayloadSpec {
    PayloadSpec::failure(
        account,
        request_id,
        401,
        r#"{"error":{"message":"Encountered invalidated oauth token for user, failing request","code":"token_revoked"}}"#,
    )
}

fn get(server: &ServerProcess, path: &str) -> (u16, Value) {
    json_of(
        client()
            .get(server.url(path))
            .bearer_auth(ADMIN_KEY)
            .send()
            .expect("GET"),
    )
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

fn disabled(cpa: &LiveCpa, account: Account) -> bool {
    cpa.cpa
        .auth_file(account.file_name)
        .is_some_and(|file| file.disabled)
}

fn cooldowns(server: &ServerProcess) -> Vec<Value> {
    let (status, body) = get(server, "/usage-service/quota-cooldowns");
    assert_eq!(status, 200, "{body}");
    body["items"].as_array().cloned().unwrap_or_default()
}

fn audit(server: &ServerProcess, actor: &str) -> Vec<Value> {
    let (status, body) = get(
        server,
        &format!("/usage-service/automation-audit?actor={actor}"),
    );
    assert_eq!(status, 200, "{body}");
    body["items"].as_array().cloned().unwrap_or_default()
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_millis() as i64)
        .unwrap_or(0)
}

#[test]
fn a_codex_usage_limit_disables_the_account_until_its_quota_resets() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cpa = LiveCpa::start(|_| {});
    let server = cpa.start_server(&dir, &[("USAGE_QUOTA_COOLDOWN_ENABLED", "true")]);

    cpa.cpa
        .push_raw(usage_limit(ALICE, "d0000001", 3).payload());
    assert!(
        wait_until(Duration::from_secs(10), || disabled(&cpa, ALICE)),
        "{}",
        server.log_text()
    );
    // CPA confirms the disable before the server records the cooldown.
    assert!(wait_until(Duration::from_secs(5), || cooldowns(&server)
        .len()
        == 1));
    let items = cooldowns(&server);
    assert_eq!(items.len(), 1, "{items:?}");
    let cooldown = &items[0];
    assert_eq!(cooldown["authFileName"], ALICE.file_name);
    assert_eq!(cooldown["authIndex"], ALICE.auth_index);
    assert_eq!(cooldown["owner"], "cpamp_usage_429");
    assert_eq!(cooldown["reasonCode"], "codex_usage_limit_reached");
    assert_eq!(cooldown["windowKind"], "five_hour");
    let recover_at = cooldown["recoverAtMs"].as_i64().expect("recoverAtMs");
    assert!(recover_at > now_ms(), "{cooldown}");
    // Another account of the same provider is untouched.
    assert!(!disabled(&cpa, BOB));

    assert!(
        wait_until(Duration::from_secs(15), || !disabled(&cpa, ALICE)),
        "{}",
        server.log_text()
    );
    let restored_at = now_ms();
    assert!(
        restored_at >= recover_at,
        "restored {} ms early",
        recover_at - restored_at
    );
    assert!(
        restored_at - recover_at < 3_000,
        "restored {} ms late",
        restored_at - recover_at
    );
    // CPA confirms the enable before the server records it.
    assert!(wait_until(Duration::from_secs(5), || cooldowns(&server).is_empty()));
    assert!(wait_until(Duration::from_secs(5), || audit(
        &server,
        "quota_cooldown"
    )
    .len()
        == 2));
    let changes: Vec<bool> = cpa
        .cpa
        .status_changes()
        .iter()
        .map(|change| change.disabled)
        .collect();
    assert_eq!(changes, [true, false]);
    let entries = audit(&server, "quota_cooldown");
    let actions: Vec<(&str, &str)> = entries
        .iter()
        .map(|entry| {
            (
                entry["action"].as_str().unwrap_or(""),
                entry["outcome"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        actions,
        [("enable", "ok"), ("disable", "ok")],
        "{entries:?}"
    );
    let (status, metrics) = (
        200,
        client()
            .get(server.url("/metrics"))
            .bearer_auth(ADMIN_KEY)
            .send()
            .and_then(|response| response.text())
            .expect("metrics"),
    );
    assert_eq!(status, 200);
    assert!(
        metrics.contains(
            r#"cpamp_automation_actions_total{actor="quota_cooldown",action="disable",outcome="ok"} 1"#
        ),
        "{metrics}"
    );
    let status = server.terminate();
    assert!(status.success(), "exit status {status}");
}

#[test]
fn a_manual_disable_during_a_cooldown_is_never_undone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cpa = LiveCpa::start(|_| {});
    let server = cpa.start_server(&dir, &[]);
    let db = db_path(dir.path());

    // Off by default: a usage limit is stored and nothing else happens.
    let (status, policy) = get(&server, "/usage-service/account-processing-policy");
    assert_eq!(status, 200, "{policy}");
    assert_eq!(policy["codexQuotaCooldown"]["enabled"], false);
    cpa.cpa
        .push_raw(usage_limit(ALICE, "e0000001", 60).payload());
    assert!(wait_until(Duration::from_secs(10), || stored_total(&db) == 1));
    std::thread::sleep(Duration::from_millis(500));
    assert!(!disabled(&cpa, ALICE));
    assert!(cpa.cpa.status_changes().is_empty());

    // Switched on through the policy: the next one starts a cooldown.
    let (status, policy) = send(
        &server,
        "PATCH",
        "/usage-service/account-processing-policy",
        Some(json!({"codexQuotaCooldownEnabled": true})),
    );
    assert_eq!(status, 200, "{policy}");
    assert_eq!(policy["codexQuotaCooldown"]["enabled"], true);
    assert_eq!(policy["codexQuotaCooldown"]["source"], "database");
    cpa.cpa
        .push_raw(usage_limit(ALICE, "e0000002", 3).payload());
    assert!(wait_until(Duration::from_secs(10), || disabled(
        &cpa, ALICE
    )));
    // CPA confirms the disable before the server records the cooldown.
    assert!(wait_until(Duration::from_secs(5), || cooldowns(&server)
        .len()
        == 1));
    let recover_at = cooldowns(&server)[0]["recoverAtMs"]
        .as_i64()
        .expect("recoverAtMs");

    // The operator disables the account through the panel during the cooldown.
    let (status, body) = send(
        &server,
        "PATCH",
        "/v0/management/auth-files/status",
        Some(json!({"name": ALICE.file_name, "auth_index": ALICE.auth_index, "disabled": true})),
    );
    assert_eq!(status, 200, "{body}");
    assert!(
        cooldowns(&server).is_empty(),
        "the manual change ends the cooldown"
    );
    let wait = u64::try_from(recover_at - now_ms() + 1_500).unwrap_or(0);
    std::thread::sleep(Duration::from_millis(wait));
    assert!(disabled(&cpa, ALICE), "automation undid a manual disable");
    let changes: Vec<bool> = cpa
        .cpa
        .status_changes()
        .iter()
        .map(|change| change.disabled)
        .collect();
    assert_eq!(changes, [true, true], "no enable was sent");
    let released = audit(&server, "quota_cooldown");
    assert_eq!(released[0]["action"], "release", "{released:?}");
    assert_eq!(audit(&server, "operator")[0]["action"], "disable");
    let status = server.terminate();
    assert!(status.success(), "exit status {status}");
}

#[test]
fn a_restart_in_the_middle_of_a_cooldown_restores_on_time() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cpa = LiveCpa::start(|_| {});
    let env = [("USAGE_QUOTA_COOLDOWN_ENABLED", "true")];
    let server = cpa.start_server(&dir, &env);
    cpa.cpa
        .push_raw(usage_limit(ALICE, "f0000001", 5).payload());
    assert!(wait_until(Duration::from_secs(10), || disabled(
        &cpa, ALICE
    )));
    // CPA confirms the disable before the server records the cooldown.
    assert!(wait_until(Duration::from_secs(5), || cooldowns(&server)
        .len()
        == 1));
    let recover_at = cooldowns(&server)[0]["recoverAtMs"]
        .as_i64()
        .expect("recoverAtMs");
    let status = server.terminate();
    assert!(status.success(), "exit status {status}");
    assert!(
        recover_at > now_ms(),
        "the restart must happen before the reset"
    );

    let server = cpa.start_server(&dir, &env);
    assert_eq!(
        cooldowns(&server).len(),
        1,
        "the cooldown survived the restart"
    );
    assert!(disabled(&cpa, ALICE));
    let started = Instant::now();
    assert!(
        wait_until(Duration::from_secs(15), || !disabled(&cpa, ALICE)),
        "{}",
        server.log_text()
    );
    let restored_at = now_ms();
    assert!(restored_at >= recover_at, "restored early");
    assert!(
        restored_at - recover_at < 3_000,
        "restored {} ms late ({:?} after the restart)",
        restored_at - recover_at,
        started.elapsed()
    );
    let status = server.terminate();
    assert!(status.success(), "exit status {status}");
}

fn candidates(server: &ServerProcess, query: &str) -> Value {
    let (status, body) = get(
        server,
        &format!("/v0/management/account-action-candidates{query}"),
    );
    assert_eq!(status, 200, "{body}");
    body
}

#[test]
fn an_auth_failure_makes_one_pending_candidate_and_auto_disable_waits_for_its_switch() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cpa = LiveCpa::start(|_| {});
    let server = cpa.start_server(&dir, &[("USAGE_ACCOUNT_ACTIONS_ENABLED", "true")]);
    let db = db_path(dir.path());

    cpa.cpa.push_raw(revoked(BOB, "a1000001").payload());
    cpa.cpa.push_raw(revoked(BOB, "a1000002").payload());
    assert!(wait_until(Duration::from_secs(10), || {
        candidates(&server, "?status=pending")["items"][0]["hitCount"] == 2
    }));
    let list = candidates(&server, "?status=pending&limit=500");
    assert_eq!(list["pendingCount"], 1, "{list}");
    let candidate = &list["items"][0];
    assert_eq!(candidate["actionType"], "reauth");
    assert_eq!(candidate["reasonCode"], "token_revoked");
    assert_eq!(candidate["authFileName"], BOB.file_name);
    assert_eq!(candidate["authIndex"], BOB.auth_index);
    assert_eq!(candidate["autoDisableEligible"], true);
    assert!(candidate.get("autoDisabledAtMs").is_none());
    assert_eq!(candidate["evidence"]["statusCode"], 401);
    assert!(!disabled(&cpa, BOB), "auto-disable is off");

    // The queue is locked by its environment variable; auto-disable is not.
    let (status, body) = send(
        &server,
        "PATCH",
        "/usage-service/account-processing-policy",
        Some(json!({"authIssueQueueEnabled": false})),
    );
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["code"], "account_processing_policy_env_locked");
    let (status, policy) = send(
        &server,
        "PATCH",
        "/usage-service/account-processing-policy",
        Some(json!({"authIssueAutoDisableEnabled": true})),
    );
    assert_eq!(status, 200, "{policy}");
    assert_eq!(policy["authIssueQueue"]["locked"], true);
    assert_eq!(policy["authIssueAutoDisable"]["enabled"], true);

    cpa.cpa.push_raw(revoked(BOB, "a1000003").payload());
    assert!(
        wait_until(Duration::from_secs(10), || disabled(&cpa, BOB)),
        "{}",
        server.log_text()
    );
    // CPA confirms the disable before the server marks the candidate.
    assert!(wait_until(Duration::from_secs(5), || {
        candidates(&server, "?status=pending")["items"][0]["autoDisabledAtMs"].is_i64()
    }));
    let list = candidates(&server, "?status=pending");
    assert_eq!(list["pendingCount"], 1, "still one candidate: {list}");
    let candidate = list["items"][0].clone();
    assert_eq!(candidate["hitCount"], 3);
    assert!(candidate["autoDisabledAtMs"].is_i64(), "{candidate}");
    let id = candidate["id"].as_i64().expect("id");

    // Enabling it by hand resolves the candidate.
    let (status, body) = send(
        &server,
        "POST",
        &format!("/v0/management/account-action-candidates/{id}/enable"),
        None,
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["item"]["status"], "resolved");
    assert!(!disabled(&cpa, BOB));
    let (status, body) = send(
        &server,
        "POST",
        &format!("/v0/management/account-action-candidates/{id}/ignore"),
        None,
    );
    assert_eq!(
        (status, body["error"].as_str()),
        (409, Some("account action candidate is not pending"))
    );

    // A deactivated account asks for its file to be deleted.
    cpa.cpa.push_raw(
        PayloadSpec::failure(DAVE, "a1000004", 401, r#"{"error":{"code":"account_deactivated","message":"This account has been deactivated"}}"#)
            .payload(),
    );
    assert!(wait_until(Duration::from_secs(10), || stored_total(&db) == 4));
    assert!(wait_until(Duration::from_secs(10), || {
        candidates(&server, "?status=pending")["pendingCount"] == 1
    }));
    let dave = candidates(&server, "?status=pending")["items"][0].clone();
    assert_eq!(dave["actionType"], "delete");
    let id = dave["id"].as_i64().expect("id");
    let (status, body) = send(
        &server,
        "DELETE",
        &format!("/v0/management/account-action-candidates/{id}/auth-file"),
        None,
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["item"]["status"], "deleted");
    assert_eq!(cpa.cpa.deleted_auth_files(), [DAVE.file_name]);
    for (method, path, expected) in [
        ("POST", "99999/ignore", 404),
        ("POST", "abc/ignore", 400),
        ("GET", "1/ignore", 405),
        ("POST", "1/auth-file", 405),
    ] {
        let (status, body) = send(
            &server,
            method,
            &format!("/v0/management/account-action-candidates/{path}"),
            None,
        );
        assert_eq!(status, expected, "{method} {path}: {body}");
    }
    let status = server.terminate();
    assert!(status.success(), "exit status {status}");
}
