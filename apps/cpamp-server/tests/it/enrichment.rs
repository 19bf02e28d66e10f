//! Auth-file enrichment through the real binary: events collected from the fake CPA are
//! labelled with the account, label, file and provider of CPA's auth files, so account
//! history matches a credential; a CPA whose listing is slow or silent delays no batch.

use std::time::{Duration, Instant};

use cpamp_testkit::events::ACCOUNTS;
use cpamp_testkit::{Account, AuthFile, PayloadSpec};
use serde_json::Value;

use crate::support::live::{LiveCpa, db_path, stored_total, wait_until};
use crate::support::{ADMIN_KEY, ServerProcess, client, json_of};

const ALICE: Account = ACCOUNTS[0];
/// A credential CPA gains while the server runs.
const ERIN: Account = Account {
    provider: "codex",
    executor: "CodexExecutor",
    model: "gpt-5.5",
    source: "erin@example.com",
    auth_index: "e1e1e1e1e1e1e1e1",
    auth_type: "oauth",
    file_name: "codex-erin@example.com.json",
};

/// A Codex answer with quota headers, so header snapshots list its credential.
fn codex_event(account: Account, request_id: &str) -> PayloadSpec {
    PayloadSpec::success(account, request_id)
        .header("X-Codex-Primary-Used-Percent", "12")
        .header("X-Codex-Primary-Window-Minutes", "300")
}

fn snapshot_of(server: &ServerProcess, file: &str) -> Option<Value> {
    let (status, body) = json_of(
        client()
            .get(server.url("/v0/management/monitoring/header-snapshots?days=1"))
            .bearer_auth(ADMIN_KEY)
            .send()
            .expect("header snapshots"),
    );
    assert_eq!(status, 200, "{body}");
    body["items"]
        .as_array()
        .expect("items")
        .iter()
        .find(|item| item["auth_index"].as_str() == Some(file_index(file)))
        .cloned()
}

fn file_index(file: &str) -> &'static str {
    [ALICE, ERIN]
        .iter()
        .find(|account| account.file_name == file)
        .map(|account| account.auth_index)
        .unwrap_or_default()
}

fn history(server: &ServerProcess, account: Account) -> Value {
    let body = serde_json::json!({"accounts": [{
        "row_key": "row",
        "auth_file_snapshot": account.file_name,
        "auth_provider_snapshot": account.provider,
        "auth_index": account.auth_index,
    }]});
    let (status, body) = json_of(
        client()
            .post(server.url("/v0/management/monitoring/account-history"))
            .bearer_auth(ADMIN_KEY)
            .json(&body)
            .send()
            .expect("account history"),
    );
    assert_eq!(status, 200, "{body}");
    body["items"][0].clone()
}

/// `cpamp_enrichment_credentials` from `/metrics`.
fn enrichment_credentials(server: &ServerProcess) -> u64 {
    let metrics = client()
        .get(server.url("/metrics"))
        .bearer_auth(ADMIN_KEY)
        .send()
        .and_then(|response| response.text())
        .expect("metrics");
    metrics
        .lines()
        .find_map(|line| line.strip_prefix("cpamp_enrichment_credentials "))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or_else(|| panic!("no credentials gauge in {metrics}"))
}

#[test]
fn events_are_labelled_from_auth_files_and_account_history_matches() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cpa = LiveCpa::start(|_| {});
    let server = cpa.start_server(&dir, &[]);

    for id in ["a0000001", "a0000002"] {
        cpa.cpa.push_raw(codex_event(ALICE, id).payload());
    }
    // An API-key credential from CPA's config has no auth file and stays unlabelled.
    cpa.cpa
        .push_raw(PayloadSpec::success(ACCOUNTS[3], "a0000003").payload());
    let db = db_path(dir.path());
    assert!(wait_until(Duration::from_secs(20), || stored_total(&db) == 3));

    let snapshot = snapshot_of(&server, ALICE.file_name).expect("alice's snapshot");
    assert_eq!(snapshot["auth_file_snapshot"], ALICE.file_name);
    assert_eq!(snapshot["account_snapshot"], ALICE.source);
    assert_eq!(snapshot["auth_label_snapshot"], ALICE.source);
    assert_eq!(snapshot["auth_provider_snapshot"], "codex");
    let alice = history(&server, ALICE);
    assert_eq!(alice["matched"], true, "{alice}");
    assert_eq!(alice["total_requests"], 2, "{alice}");

    // CPA gains a credential and announces it; the next events name it.
    // Labels come from the listing the server holds, which is fetched in the background
    // (ingest never waits for CPA): wait until the server holds the new credential.
    let before = enrichment_credentials(&server);
    cpa.cpa.upsert_auth_file(AuthFile::new(
        ERIN.file_name,
        ERIN.auth_index,
        "codex",
        ERIN.source,
    ));
    cpa.cpa.broadcast_refresh();
    assert!(wait_until(Duration::from_secs(10), || {
        enrichment_credentials(&server) == before + 1
    }));
    cpa.cpa.push_raw(codex_event(ERIN, "a0000004").payload());
    assert!(wait_until(Duration::from_secs(20), || stored_total(&db) == 4));
    let snapshot = snapshot_of(&server, ERIN.file_name).expect("erin's snapshot");
    assert_eq!(snapshot["auth_file_snapshot"], ERIN.file_name);
    assert_eq!(history(&server, ERIN)["matched"], true);

    let status = server.terminate();
    assert!(status.success(), "exit status {status}");
}

#[test]
fn a_slow_or_silent_auth_file_listing_delays_no_batch() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cpa = LiveCpa::start(|_| {});
    // CPA accepts the listing request but never answers it.
    cpa.cpa.set_auth_files_delay(Duration::from_secs(3600));
    let server = cpa.start_server(&dir, &[]);
    let db = db_path(dir.path());

    // Each event is stored promptly although every listing hangs (the Go server waited
    // up to 5 s in every batch).
    for round in 0..4u32 {
        let started = Instant::now();
        cpa.cpa
            .push_raw(codex_event(ALICE, &format!("b000000{round}")).payload());
        assert!(
            wait_until(Duration::from_secs(10), || stored_total(&db)
                == i64::from(round) + 1),
            "{}",
            server.log_text()
        );
        let took = started.elapsed();
        assert!(
            took < Duration::from_millis(1500),
            "round {round}: stored after {took:?}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    let snapshot = snapshot_of(&server, ALICE.file_name).expect("alice's snapshot");
    assert!(snapshot.get("auth_file_snapshot").is_none(), "{snapshot}");

    // CPA answers again and announces a change: later events are labelled.
    cpa.cpa.set_auth_files_delay(Duration::ZERO);
    cpa.cpa.broadcast_refresh();
    let mut next = 10;
    let labelled = wait_until(Duration::from_secs(20), || {
        next += 1;
        cpa.cpa
            .push_raw(codex_event(ALICE, &format!("c00000{next}")).payload());
        std::thread::sleep(Duration::from_millis(200));
        snapshot_of(&server, ALICE.file_name)
            .is_some_and(|snapshot| snapshot["auth_file_snapshot"] == ALICE.file_name)
    });
    assert!(labelled, "{}", server.log_text());
    let status = server.terminate();
    assert!(status.success(), "exit status {status}");
}
