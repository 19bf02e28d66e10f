//! Quota snapshots through the real binary: the panel's write and query round trip,
//! writes are idempotent and strict, complete inventories retire windows they no longer
//! list, and Codex response headers of collected events become snapshots by themselves.

use std::time::Duration;

use cpamp_testkit::PayloadSpec;
use cpamp_testkit::events::ACCOUNTS;
use serde_json::{Value, json};

use crate::support::live::{LiveCpa, wait_until};
use crate::support::{ADMIN_KEY, ServerProcess, client, json_of, now_ms};

fn post(server: &ServerProcess, path: &str, body: &Value) -> (u16, Value) {
    json_of(
        client()
            .post(server.url(path))
            .bearer_auth(ADMIN_KEY)
            .json(body)
            .send()
            .expect("post"),
    )
}

fn query(server: &ServerProcess, account: Value, include_inactive: bool) -> Value {
    let (status, body) = post(
        server,
        "/v0/management/quota-snapshots/query",
        &json!({"accounts": [{"row_key": "r", "provider": "claude", "account": account}], "include_inactive": include_inactive}),
    );
    assert_eq!(status, 200, "{body}");
    body["items"][0].clone()
}

#[test]
fn snapshots_round_trip_and_follow_the_inventory() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cpa = LiveCpa::start(|_| {});
    let server = cpa.start_server(&dir, &[]);
    let account = json!({"auth_file_snapshot": "claude-carol.json", "auth_index": "1c0f"});
    let now = now_ms();
    let window = |id: &str, used: f64, observed: i64| {
        json!({"provider_window_id": id, "window_mode": "fixed", "model_scope_kind": "all", "source": "api_query",
               "observed_at_ms": observed, "boundary_accuracy": "exact", "cycle_end_ms": now + 3_600_000,
               "duration_seconds": 18000, "used_percent": used})
    };
    let observation = |mode: &str, observed: i64, windows: Vec<Value>| {
        json!({"entries": [{"row_key": "r", "provider": "claude", "account": account,
            "observation": {"source": "api_query", "observed_at_ms": observed, "inventory_scope_key": "claude:quota-windows", "inventory_mode": mode},
            "windows": windows}]})
    };
    let first = observation(
        "complete",
        now - 60_000,
        vec![
            window("five-hour", 30.0, now - 60_000),
            window("seven-day", 10.0, now - 60_000),
        ],
    );
    let (status, written) = post(&server, "/v0/management/quota-snapshots", &first);
    assert_eq!(status, 200, "{written}");
    assert_eq!(written["items"][0]["inserted_count"], 2);
    assert_eq!(written["items"][0]["row_key"], "r");
    let key = written["items"][0]["account_key"]
        .as_str()
        .expect("key")
        .to_string();
    assert!(
        key.starts_with("usage-account-history:2:file-index:"),
        "{key}"
    );
    // Posting the same observation again stores nothing.
    let (_, again) = post(&server, "/v0/management/quota-snapshots", &first);
    assert_eq!(again["items"][0]["inserted_count"], 0);

    let item = query(&server, account.clone(), false);
    assert_eq!(item["account_key"], key.as_str());
    let windows = item["windows"].as_array().expect("windows");
    assert_eq!(windows.len(), 2, "{item}");
    assert_eq!(windows[0]["used_percent"], 30.0);
    assert_eq!(windows[0]["availability"], "active");
    assert_eq!(windows[0]["stale"], false);
    assert_eq!(windows[0]["current_cycle"]["forecast_eligible"], true);
    assert_eq!(windows[0]["cycle_start_ms"], now + 3_600_000 - 18_000_000);

    // Two later complete inventories without "seven-day" retire it.
    for offset in [30_000, 10_000] {
        let next = observation(
            "complete",
            now - offset,
            vec![window("five-hour", 40.0, now - offset)],
        );
        let (status, body) = post(&server, "/v0/management/quota-snapshots", &next);
        assert_eq!(status, 200, "{body}");
    }
    let item = query(&server, account.clone(), false);
    let ids: Vec<&str> = item["windows"]
        .as_array()
        .expect("windows")
        .iter()
        .filter_map(|window| window["provider_window_id"].as_str())
        .collect();
    assert_eq!(ids, ["five-hour"]);
    assert_eq!(item["windows"][0]["used_percent"], 40.0);
    let all = query(&server, account.clone(), true);
    let retired = all["windows"]
        .as_array()
        .expect("windows")
        .iter()
        .find(|window| window["provider_window_id"] == "seven-day")
        .cloned()
        .expect("kept");
    assert_eq!(retired["availability"], "inactive");
    assert_eq!(retired["stale"], true);

    // Strict bodies: every rule answers 400 naming the problem.
    for (body, expected) in [
        (json!({"entries": []}), "entries are required"),
        (
            json!({"entries": [{"provider": "claude", "account": account, "windows": [window("w", 101.0, now)]}]}),
            "used_percent",
        ),
        (
            json!({"entries": [{"provider": "aws", "account": account, "windows": [window("w", 1.0, now)]}]}),
            "unsupported provider",
        ),
        (
            json!({"entries": [{"provider": "claude", "account": {}, "windows": [window("w", 1.0, now)]}]}),
            "account identity is required",
        ),
        (
            json!({"entries": [{"provider": "claude", "account": account, "windows": [window("w", 1.0, now)], "surprise": 1}]}),
            "unknown field",
        ),
        (
            json!({"entries": [{"provider": "claude", "account": account, "windows": [window("w", 1.0, now + 3_600_000)]}]}),
            "future",
        ),
    ] {
        let (status, error) = post(&server, "/v0/management/quota-snapshots", &body);
        assert_eq!(status, 400, "{body}: {error}");
        assert!(
            error["error"]
                .as_str()
                .is_some_and(|text| text.contains(expected)),
            "{expected}: {error}"
        );
    }

    // Codex response headers of collected events are evidence by themselves.
    let alice = ACCOUNTS[0];
    cpa.cpa.push_raw(
        PayloadSpec::success(alice, "q0000001")
            .header("X-Codex-Plan-Type", "plus")
            .header("X-Codex-Primary-Used-Percent", "12")
            .header("X-Codex-Primary-Window-Minutes", "300")
            .header("X-Codex-Primary-Reset-After-Seconds", "3600")
            .header("X-Codex-Secondary-Used-Percent", "40")
            .header("X-Codex-Secondary-Window-Minutes", "10080")
            .header("X-Codex-Secondary-Reset-After-Seconds", "86400")
            .payload(),
    );
    let codex = json!({"accounts": [{"row_key": "a", "provider": "codex", "account": {"auth_file_snapshot": alice.file_name, "auth_index": alice.auth_index}}]});
    let mut item = Value::Null;
    assert!(
        wait_until(Duration::from_secs(10), || {
            let (_, body) = post(&server, "/v0/management/quota-snapshots/query", &codex);
            item = body["items"][0].clone();
            item["windows"]
                .as_array()
                .is_some_and(|windows| windows.len() == 2)
        }),
        "{item}\n{}",
        server.log_text()
    );
    assert_eq!(item["windows"][0]["provider_window_id"], "five-hour");
    assert_eq!(item["windows"][0]["source"], "response_header");
    assert_eq!(item["windows"][0]["used_percent"], 12.0);
    assert_eq!(item["windows"][0]["container_provider_window_id"], "weekly");
    assert_eq!(item["windows"][1]["provider_window_id"], "weekly");

    // So is a native xAI failure that reports its free usage exhausted.
    let dave = ACCOUNTS[5];
    cpa.cpa.push_raw(
        PayloadSpec::failure(
            dave,
            "x0000001",
            429,
            r#"{"code":"subscription:free-usage-exhausted","error":"Tokens (actual/limit): 1200/1000"}"#,
        )
        .payload(),
    );
    let xai = json!({"accounts": [{"row_key": "d", "provider": "xai", "account": {"auth_file_snapshot": dave.file_name, "auth_index": dave.auth_index}}]});
    let mut item = Value::Null;
    assert!(
        wait_until(Duration::from_secs(10), || {
            let (_, body) = post(&server, "/v0/management/quota-snapshots/query", &xai);
            item = body["items"][0].clone();
            item["windows"]
                .as_array()
                .is_some_and(|windows| windows.len() == 1)
        }),
        "{item}\n{}",
        server.log_text()
    );
    let window = &item["windows"][0];
    assert_eq!(window["provider_window_id"], "included-free-rolling-24h");
    assert_eq!(window["source"], "response_body");
    assert_eq!(window["window_mode"], "rolling");
    assert_eq!(window["used_value"], 1200.0);
    assert_eq!(window["limit_value"], 1000.0);
    assert_eq!(window["used_percent"], 100.0);
    let status = server.terminate();
    assert!(status.success(), "exit status {status}");
}
