//! `/status`, the doctor (route and CLI), gaps and `/metrics` against the fake CPA, as an
//! operator following the FAQ's "Monitoring has no data" checklist would see them.

use std::time::{Duration, Instant};

use cpamp_testkit::{FakeCpa, FakeCpaOptions};
use serde_json::Value;

use crate::support::{ServerProcess, binary, client, command};

const ADMIN: &str = "cmp_admin_status0123456789abcdefghijklmn";
const CPA_KEY: &str = "cpa-management-key-for-status-tests";

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

pub fn start_cpa(runtime: &tokio::runtime::Runtime, options: FakeCpaOptions) -> FakeCpa {
    runtime.block_on(FakeCpa::start(options)).expect("fake CPA")
}

/// Starts the server against `cpa` with an env-managed connection.
pub fn start_server(
    data: &std::path::Path,
    cpa_url: &str,
    key: &str,
    extra: &[(&str, &str)],
) -> ServerProcess {
    let mut env = vec![
        ("CPA_UPSTREAM_URL", cpa_url),
        ("CPA_MANAGEMENT_KEY", key),
        ("CPA_MANAGER_ADMIN_KEY", ADMIN),
        ("USAGE_COLLECTOR_MODE", "http"),
        ("USAGE_POLL_INTERVAL_MS", "100"),
    ];
    for (name, value) in extra {
        env.retain(|(existing, _)| existing != name);
        env.push((name, value));
    }
    ServerProcess::start(data, &env)
}

pub fn status(server: &ServerProcess) -> Value {
    let response = client()
        .get(server.url("/status"))
        .bearer_auth(ADMIN)
        .send()
        .expect("status");
    assert_eq!(response.status(), 200);
    response.json().expect("status json")
}

/// Polls `/status` until `check` holds, returning that status.
pub fn wait_status(server: &ServerProcess, what: &str, check: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let value = status(server);
        if check(&value) {
            return value;
        }
        if Instant::now() > deadline {
            panic!(
                "timed out waiting for {what}; last status:\n{value:#}\nlog:\n{}",
                server.log_text()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn codes(status: &Value) -> Vec<String> {
    status["diagnosis"]["findings"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|finding| finding["code"].as_str().unwrap_or_default().to_string())
        .collect()
}

fn finding<'a>(status: &'a Value, code: &str) -> &'a Value {
    status["diagnosis"]["findings"]
        .as_array()
        .and_then(|findings| findings.iter().find(|finding| finding["code"] == code))
        .unwrap_or_else(|| panic!("no finding {code} in {status:#}"))
}

fn run_doctor(server: &ServerProcess) -> (i32, String) {
    let output = command(&server.data_dir, &[])
        .args([
            "doctor",
            "--admin-key",
            ADMIN,
            "--server-url",
            &server.url(""),
        ])
        .output()
        .expect("doctor");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
    )
}

#[test]
fn status_reports_every_field_and_lastinsertedat_stops_when_sqlite_refuses_writes() {
    let runtime = runtime();
    let cpa = start_cpa(&runtime, FakeCpaOptions::new(CPA_KEY));
    let data = tempfile::tempdir().expect("tempdir");
    let server = start_server(data.path(), &cpa.base_url(), CPA_KEY, &[]);

    // Admin key required; the CPA Management Key is not an admin key.
    for key in [None, Some(CPA_KEY)] {
        let mut request = client().get(server.url("/status"));
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        let response = request.send().expect("status");
        assert_eq!(response.status(), 401);
    }
    let post = client()
        .post(server.url("/status"))
        .bearer_auth(ADMIN)
        .send()
        .expect("post");
    assert_eq!(post.status(), 405);

    let first = wait_status(&server, "collector running", |s| {
        s["collector"]["collector"] == "running"
    });
    for field in [
        "service",
        "dbPath",
        "events",
        "eventCount",
        "deadLetters",
        "collector",
        "dataMigration",
        "databaseMaintenance",
        "database",
        "gaps",
        "diagnosis",
    ] {
        assert!(first.get(field).is_some(), "missing {field}: {first:#}");
    }
    for field in [
        "collector",
        "upstream",
        "mode",
        "transport",
        "queue",
        "lastConsumedAt",
        "lastInsertedAt",
        "totalInserted",
        "totalSkipped",
    ] {
        assert!(
            first["collector"].get(field).is_some(),
            "missing collector.{field}"
        );
    }
    assert_eq!(first["service"], "cpa-manager-plus");
    assert_eq!(first["collector"]["upstream"], cpa.base_url());
    assert_eq!(first["collector"]["mode"], "http");
    assert_eq!(first["collector"]["transport"], "http");
    assert_eq!(first["collector"]["queue"], "usage");
    assert_eq!(first["collector"]["lastConsumedAt"], 0);
    assert_eq!(first["dataMigration"]["status"], "completed");
    assert_eq!(first["databaseMaintenance"]["required"], false);
    assert_eq!(
        first["databaseMaintenance"]["reasons"],
        serde_json::json!([])
    );
    assert!(first["database"]["databaseBytes"].as_u64().expect("bytes") > 0);
    assert_eq!(first["database"]["journalSizeLimitBytes"], 268_435_456);
    assert!(
        first["dbPath"]
            .as_str()
            .expect("path")
            .ends_with("usage.sqlite")
    );
    assert_eq!(first["diagnosis"]["ok"], true, "{:#}", first["diagnosis"]);
    assert_eq!(first["diagnosis"]["cpa"]["keyAccepted"], true);
    assert_eq!(first["diagnosis"]["cpa"]["version"], "7.2.140");

    let scoped: Value = client()
        .get(server.url("/status?scope=database-maintenance"))
        .bearer_auth(ADMIN)
        .send()
        .expect("scoped")
        .json()
        .expect("json");
    assert_eq!(scoped.as_object().expect("object").len(), 1);
    assert_eq!(scoped["databaseMaintenance"]["required"], false);

    // Events flow: lastConsumedAt moves, lastInsertedAt follows, eventCount counts.
    runtime.block_on(cpa.emit(20));
    let flowing = wait_status(&server, "20 events", |s| s["eventCount"] == 20);
    let consumed = flowing["collector"]["lastConsumedAt"]
        .as_i64()
        .expect("consumed");
    let inserted = flowing["collector"]["lastInsertedAt"]
        .as_i64()
        .expect("inserted");
    assert!(consumed > 0 && inserted >= consumed, "{flowing:#}");
    assert_eq!(flowing["events"], 20);
    assert_eq!(flowing["collector"]["totalInserted"], 20);

    std::thread::sleep(Duration::from_millis(20));
    runtime.block_on(cpa.emit(5));
    let more = wait_status(&server, "25 events", |s| s["eventCount"] == 25);
    let consumed_again = more["collector"]["lastConsumedAt"]
        .as_i64()
        .expect("consumed");
    assert!(
        consumed_again > consumed,
        "lastConsumedAt must advance while events flow"
    );
    let inserted_before_lock = more["collector"]["lastInsertedAt"]
        .as_i64()
        .expect("inserted");

    // Another process takes SQLite's write lock: the database refuses every write.
    let db_url = format!("sqlite://{}", data.path().join("usage.sqlite").display());
    let mut blocker = runtime.block_on(async {
        use sqlx::Connection;
        let mut connection = sqlx::SqliteConnection::connect(&db_url)
            .await
            .expect("connect");
        sqlx::query("BEGIN EXCLUSIVE")
            .execute(&mut connection)
            .await
            .expect("lock");
        connection
    });
    runtime.block_on(cpa.emit(5));
    let stalled = wait_status(&server, "consumed but not inserted", |s| {
        s["collector"]["lastConsumedAt"].as_i64().unwrap_or(0) > consumed_again
            && codes(s).contains(&"consumed_not_inserted".to_string())
    });
    assert_eq!(
        stalled["collector"]["lastInsertedAt"].as_i64(),
        Some(inserted_before_lock)
    );
    assert_eq!(stalled["eventCount"], 25);
    assert_eq!(stalled["diagnosis"]["ok"], false);
    let diagnosed = finding(&stalled, "consumed_not_inserted");
    assert_eq!(diagnosed["severity"], "error");
    assert!(
        diagnosed["observed"]
            .as_str()
            .expect("observed")
            .contains("lastInsertedAt")
    );
    assert!(!diagnosed["fix"].as_str().expect("fix").is_empty());
    assert!(
        diagnosed["observed"]
            .as_str()
            .expect("observed")
            .contains("5 events are held (in memory or the collector inbox)"),
        "{diagnosed:#}"
    );
    // The store's error and the held items show while the failure lasts.
    assert_eq!(stalled["collector"]["heldItems"], 5, "{stalled:#}");
    assert_eq!(stalled["collector"]["pendingItems"], 5, "{stalled:#}");
    assert!(
        stalled["collector"]["storeError"]
            .as_str()
            .is_some_and(|error| error.contains("database is locked")),
        "{stalled:#}"
    );

    // The gap is open while the failure lasts, shown from memory: its row cannot be
    // written to the locked database yet.
    let gapped = wait_status(&server, "an open store_failed gap", |s| {
        s["gaps"]["open"] == true
            && s["gaps"]["recent"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|gap| gap["cause"] == "store_failed" && gap["open"] == true)
    });
    let open_gap = gapped["gaps"]["recent"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|gap| gap["cause"] == "store_failed")
        .expect("the open gap");
    assert_eq!(open_gap["recorded"], false, "{gapped:#}");
    assert_eq!(open_gap["id"], 0, "{gapped:#}");
    assert!(
        open_gap["detail"]
            .as_str()
            .is_some_and(|detail| detail.contains("database is locked")),
        "{gapped:#}"
    );

    // The CLI doctor run beside the server reports the same cause.
    let (code, out) = run_doctor(&server);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("consumed_not_inserted"), "{out}");
    assert!(out.contains("live server"), "{out}");

    // Writes are possible again: the held batch is stored, nothing was lost.
    runtime.block_on(async {
        sqlx::query("ROLLBACK")
            .execute(&mut blocker)
            .await
            .expect("unlock");
    });
    drop(blocker);
    let recovered = wait_status(&server, "30 events", |s| s["eventCount"] == 30);
    assert!(
        recovered["collector"]["lastInsertedAt"]
            .as_i64()
            .expect("inserted")
            > inserted_before_lock
    );
    // The failure was recorded as a gap in collection, closed once writes resumed.
    wait_status(&server, "a closed store_failed gap", |s| {
        s["gaps"]["recent"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|gap| {
                gap["cause"] == "store_failed"
                    && gap["open"] == false
                    && gap["recorded"] == true
                    && gap["id"].as_i64().is_some_and(|id| id > 0)
            })
    });
}

#[test]
fn the_doctor_names_publishing_off_and_a_retention_shorter_than_the_poll_interval() {
    let runtime = runtime();
    let mut options = FakeCpaOptions::new(CPA_KEY);
    options.publishing_enabled = false;
    options.retention = Duration::from_secs(1);
    let cpa = start_cpa(&runtime, options);
    let data = tempfile::tempdir().expect("tempdir");
    let server = start_server(
        data.path(),
        &cpa.base_url(),
        CPA_KEY,
        &[("USAGE_POLL_INTERVAL_MS", "2000")],
    );
    let value = wait_status(&server, "diagnosis", |s| {
        let codes = codes(s);
        codes.contains(&"usage_publishing_disabled".to_string())
            && codes.contains(&"poll_interval_exceeds_retention".to_string())
    });
    assert_eq!(value["diagnosis"]["cpa"]["usageStatisticsEnabled"], false);
    assert_eq!(value["diagnosis"]["cpa"]["retentionSeconds"], 1);
    assert!(
        finding(&value, "poll_interval_exceeds_retention")["observed"]
            .as_str()
            .expect("observed")
            .contains("2000 ms")
    );
    let (code, out) = run_doctor(&server);
    assert_eq!(code, 1);
    assert!(
        out.contains("usage_publishing_disabled")
            && out.contains("poll_interval_exceeds_retention"),
        "{out}"
    );

    // Turning publishing on clears that finding (after the diagnosis cache expires).
    cpa.set_publishing(true);
    wait_status(&server, "publishing finding gone", |s| {
        !codes(s).contains(&"usage_publishing_disabled".to_string())
    });
}

#[test]
fn the_doctor_names_a_wrong_key_and_resp_through_an_http_endpoint() {
    let runtime = runtime();
    let cpa = start_cpa(&runtime, FakeCpaOptions::new(CPA_KEY));
    let data = tempfile::tempdir().expect("tempdir");
    let server = start_server(data.path(), &cpa.base_url(), "not-the-cpa-key", &[]);
    let value = wait_status(&server, "key rejected", |s| {
        codes(s).contains(&"cpa_management_key_rejected".to_string())
    });
    assert_eq!(
        finding(&value, "cpa_management_key_rejected")["severity"],
        "error"
    );
    assert_eq!(value["diagnosis"]["cpa"]["reachable"], true);
    drop(server);

    let mut options = FakeCpaOptions::new(CPA_KEY);
    options.resp_enabled = false;
    let http_only = start_cpa(&runtime, options);
    let data = tempfile::tempdir().expect("tempdir");
    let server = start_server(
        data.path(),
        &http_only.base_url(),
        CPA_KEY,
        &[("USAGE_COLLECTOR_MODE", "resp")],
    );
    let value = wait_status(&server, "resp over http", |s| {
        codes(s).contains(&"resp_through_http_proxy".to_string())
    });
    let found = finding(&value, "resp_through_http_proxy");
    assert!(
        found["fix"]
            .as_str()
            .expect("fix")
            .contains("USAGE_COLLECTOR_MODE=auto")
    );

    // An unreachable CPA on loopback: this test runs natively (not as a container's main
    // process), so the hints are about this host, not Docker.
    let data = tempfile::tempdir().expect("tempdir");
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", closed.local_addr().expect("addr"));
    drop(closed);
    let server = start_server(data.path(), &url, CPA_KEY, &[]);
    let value = wait_status(&server, "unreachable", |s| {
        codes(s).contains(&"cpa_unreachable".to_string())
    });
    let hints = finding(&value, "cpa_unreachable")["hints"].to_string();
    assert!(hints.contains(&format!("curl {url}/healthz")), "{hints}");
    assert!(!hints.to_lowercase().contains("docker"), "{hints}");
}

#[test]
fn a_server_stopped_longer_than_retention_leaves_a_gap_row() {
    let runtime = runtime();
    let mut options = FakeCpaOptions::new(CPA_KEY);
    options.retention = Duration::from_secs(1);
    let cpa = start_cpa(&runtime, options);
    let data = tempfile::tempdir().expect("tempdir");
    let server = start_server(data.path(), &cpa.base_url(), CPA_KEY, &[]);
    wait_status(&server, "collector running", |s| {
        s["collector"]["collector"] == "running"
    });
    // Let the tracker write its first heartbeat.
    std::thread::sleep(Duration::from_millis(1500));
    let status = server.terminate();
    assert!(status.success());
    let stopped_at = now_ms();
    std::thread::sleep(Duration::from_secs(3));

    let server = start_server(data.path(), &cpa.base_url(), CPA_KEY, &[]);
    let value = wait_status(&server, "closed server_down gap", |s| {
        s["gaps"]["recent"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|gap| gap["cause"] == "server_down" && gap["open"] == false)
            && s["diagnosis"]["findings"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|f| f["code"] == "queue_retention_gap" && f["gap"]["endMs"].is_i64())
    });
    let gap = value["gaps"]["recent"]
        .as_array()
        .expect("gaps")
        .iter()
        .find(|gap| gap["cause"] == "server_down")
        .expect("gap")
        .clone();
    let start = gap["startMs"].as_i64().expect("start");
    let end = gap["endMs"].as_i64().expect("end");
    assert!(
        start <= stopped_at && stopped_at - start < 7_000,
        "gap starts at the last heartbeat: {gap:#}"
    );
    assert!(end - start >= 3_000, "{gap:#}");
    let found = finding(&value, "queue_retention_gap");
    assert_eq!(found["gap"]["startMs"], start);
    assert_eq!(found["gap"]["endMs"], end);

    // The same gap is served for chart overlays.
    let listed: Value = client()
        .get(server.url(&format!(
            "/v0/management/collector-gaps?startMs={start}&endMs={end}"
        )))
        .bearer_auth(ADMIN)
        .send()
        .expect("gaps")
        .json()
        .expect("json");
    assert!(
        listed["gaps"]
            .as_array()
            .expect("gaps")
            .iter()
            .any(|g| g["startMs"] == start && g["endMs"] == end)
    );
    let _ = binary();
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64
}
