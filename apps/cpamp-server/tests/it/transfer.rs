//! Export, import, import sessions, backups and the CLI against the real binary.

use std::io::{Read, Write};
use std::path::Path;
use std::time::Duration;

use cpamp_domain::decode::decode;
use cpamp_domain::event::{Decoded, UsageEvent};
use cpamp_domain::ports::{BatchOrigin, EventSink, IngestBatch};
use cpamp_testkit::corpus::Corpus;
use serde_json::Value;

use crate::support::live::{LiveCpa, env_refs, runtime};
use crate::support::{ADMIN_KEY, ServerProcess, client, command, eventually};

const START_MS: i64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z
const STEP_MS: i64 = 3_011;
const GO_EXPORT: &str =
    include_str!("../../../../crates/domain/tests/fixtures/go/usage-export.jsonl");

fn corpus(count: u64) -> Vec<UsageEvent> {
    Corpus::new(count, START_MS, STEP_MS)
        .map(|payload| match decode(&payload, START_MS) {
            Decoded::Event(event) => *event,
            other => panic!("corpus payload did not decode: {other:?}"),
        })
        .collect()
}

/// A data directory whose database holds `events` (collected from a CPA).
fn seeded_dir(events: Vec<UsageEvent>) -> tempfile::TempDir {
    let data = tempfile::tempdir().expect("tempdir");
    let db = data.path().join("usage.sqlite");
    runtime().block_on(async {
        let store = cpamp_storage::SqliteStore::open(cpamp_storage::Options::new(&db))
            .await
            .expect("open");
        for chunk in events.chunks(2_000) {
            store
                .store_batch(IngestBatch {
                    origin: BatchOrigin::Collector("http://cpa".into()),
                    events: chunk.to_vec(),
                    dead_letters: Vec::new(),
                })
                .await
                .expect("seed");
        }
        store.close().await;
    });
    data
}

fn start(data: &Path) -> ServerProcess {
    ServerProcess::start(data, &[("CPA_MANAGER_ADMIN_KEY", ADMIN_KEY)])
}

fn export(server: &ServerProcess, query: &str) -> (u16, String, Option<String>) {
    let response = client()
        .get(server.url(&format!("/v0/management/usage/export{query}")))
        .bearer_auth(ADMIN_KEY)
        .send()
        .expect("export");
    let status = response.status().as_u16();
    let total = response
        .headers()
        .get("x-usage-export-events")
        .and_then(|value| value.to_str().ok())
        .map(String::from);
    (status, response.text().expect("body"), total)
}

fn import(server: &ServerProcess, body: impl Into<reqwest::blocking::Body>) -> (u16, Value) {
    let response = client()
        .post(server.url("/v0/management/usage/import"))
        .bearer_auth(ADMIN_KEY)
        .body(body)
        .send()
        .expect("import");
    let status = response.status().as_u16();
    (status, response.json().unwrap_or(Value::Null))
}

fn request(
    server: &ServerProcess,
    method: reqwest::Method,
    path: &str,
    body: Option<Vec<u8>>,
) -> (u16, Value) {
    let mut builder = client()
        .request(method, server.url(path))
        .bearer_auth(ADMIN_KEY);
    if let Some(body) = body {
        builder = builder.body(body);
    }
    let response = builder.send().expect("request");
    let status = response.status().as_u16();
    (status, response.json().unwrap_or(Value::Null))
}

/// The aggregates the panel shows over the whole corpus, without generation times.
/// API-key stats and channel share are left out: they show the identity fields of
/// an arbitrary first row of each group, which differs between two runs of the
/// same server on the same database.
fn aggregates(server: &ServerProcess) -> Vec<Value> {
    let end = START_MS + 40 * 86_400_000;
    let mut out = Vec::new();
    let (_, mut dashboard) = request(
        server,
        reqwest::Method::GET,
        &format!("/v0/management/dashboard/summary?today_start_ms={START_MS}&now_ms={end}"),
        None,
    );
    strip_generated(&mut dashboard);
    out.push(dashboard);
    let body = serde_json::json!({
        "from_ms": START_MS - 86_400_000, "to_ms": end, "time_zone": "Asia/Kolkata",
        "include": {"granularity": "day", "summary": true, "summary_percentiles": true, "timeline": true,
                    "model_stats": true, "model_share": true, "failure_sources": true,
                    "account_stats": true, "credential_stats": true,
                    "hourly_distribution": true, "heatmap": true, "task_buckets": true, "recent_failures": 20,
                    "events_page": {"limit": 50}}
    });
    let (status, mut analytics) = request(
        server,
        reqwest::Method::POST,
        "/v0/management/monitoring/analytics",
        Some(body.to_string().into_bytes()),
    );
    assert_eq!(status, 200, "{analytics}");
    strip_generated(&mut analytics);
    out.push(analytics);
    let (_, usage) = request(server, reqwest::Method::GET, "/v0/management/usage", None);
    out.push(usage);
    out
}

/// Equal values, or a failure naming the first path where they differ.
fn assert_same(left: &[Value], right: &[Value]) {
    fn walk(path: &str, left: &Value, right: &Value) {
        match (left, right) {
            (Value::Object(a), Value::Object(b)) => {
                for key in a.keys().chain(b.keys()) {
                    walk(
                        &format!("{path}.{key}"),
                        a.get(key).unwrap_or(&Value::Null),
                        b.get(key).unwrap_or(&Value::Null),
                    );
                }
            }
            (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
                for (index, (x, y)) in a.iter().zip(b).enumerate() {
                    walk(&format!("{path}[{index}]"), x, y);
                }
            }
            _ => assert_eq!(left, right, "differs at {path}"),
        }
    }
    assert_eq!(left.len(), right.len());
    for (index, (a, b)) in left.iter().zip(right).enumerate() {
        walk(&format!("[{index}]"), a, b);
    }
}

fn strip_generated(value: &mut Value) {
    match value {
        Value::Object(members) => {
            // Client IP, forwarded-for and user agent are never exported (by design),
            // so event details of an imported copy do not have them.
            members.retain(|key, _| {
                !key.starts_with("generated_at")
                    && !matches!(key.as_str(), "client_ip" | "x_forwarded_for" | "user_agent")
            });
            members.values_mut().for_each(strip_generated);
        }
        Value::Array(items) => items.iter_mut().for_each(strip_generated),
        _ => {}
    }
}

#[test]
fn a_round_trip_keeps_aggregates_and_export_bytes_and_a_second_import_adds_nothing() {
    const COUNT: u64 = 6_000;
    let source_dir = seeded_dir(corpus(COUNT));
    let source = start(source_dir.path());
    let (status, exported, total) = export(&source, "");
    assert_eq!(status, 200);
    assert_eq!(total.as_deref(), Some("6000"));
    assert_eq!(exported.lines().count() as u64, COUNT);

    let target_dir = tempfile::tempdir().expect("tempdir");
    let target = start(target_dir.path());
    let (status, result) = import(&target, exported.clone());
    assert_eq!(status, 200, "{result}");
    assert_eq!(
        (
            result["format"].as_str(),
            result["added"].as_u64(),
            result["skipped"].as_u64(),
            result["total"].as_u64(),
            result["failed"].as_u64()
        ),
        (
            Some("usage_service_jsonl"),
            Some(COUNT),
            Some(0),
            Some(COUNT),
            Some(0)
        )
    );
    let (_, again, _) = export(&target, "");
    assert!(
        again == exported,
        "the re-export differs from the export it was imported from"
    );
    assert_same(&aggregates(&source), &aggregates(&target));

    let (status, result) = import(&target, exported);
    assert_eq!(status, 200);
    assert_eq!(
        (result["added"].as_u64(), result["skipped"].as_u64()),
        (Some(0), Some(COUNT))
    );
}

#[test]
fn malformed_lines_are_reported_with_their_line_numbers() {
    let dir = seeded_dir(corpus(1_000));
    let server = start(dir.path());
    let (_, exported, _) = export(&server, "");
    let mut lines: Vec<String> = exported.lines().map(String::from).collect();
    lines[0] = "{\"event_hash\": broken".to_string();
    lines[499] = "not json at all".to_string();
    lines[999] = "[\"an array\"]".to_string();
    let fresh_dir = tempfile::tempdir().expect("tempdir");
    let fresh = start(fresh_dir.path());
    let (status, result) = import(&fresh, lines.join("\n"));
    assert_eq!(status, 200, "{result}");
    assert_eq!(result["added"], 997);
    assert_eq!(result["failed"], 3);
    let reported: Vec<u64> = result["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .map(|error| error["line"].as_u64().expect("line"))
        .collect();
    assert_eq!(reported, vec![1, 500, 1000]);
}

#[test]
fn a_go_server_export_imports_losslessly_and_filters_and_csv_work() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start(dir.path());
    let (status, result) = import(&server, GO_EXPORT);
    assert_eq!(status, 200, "{result}");
    let count = GO_EXPORT.lines().count();
    assert_eq!(result["added"].as_u64(), Some(count as u64));
    let (_, exported, _) = export(&server, "");
    for line in GO_EXPORT.lines() {
        let hash = &line[line.find("\"event_hash\":\"").expect("hash") + 14..][..64];
        let ours = exported
            .lines()
            .find(|ours| ours.contains(hash))
            .expect("exported");
        let mut stripped = ours.to_string();
        for key in [
            "request_service_tier",
            "response_service_tier",
            "cache_input_mode",
        ] {
            let needle = format!(",\"{key}\":\"");
            if let Some(start) = stripped.find(&needle) {
                let value = start + needle.len();
                let end = value + stripped[value..].find('"').expect("quote") + 1;
                stripped.replace_range(start..end, "");
            }
        }
        assert_eq!(stripped, line);
    }
    let (status, text, total) = export(&server, "?model=gpt-5.5&format=csv");
    assert_eq!(status, 200);
    assert_eq!(total.as_deref(), Some("3"));
    assert!(text.starts_with("request_id,event_hash,"));
    let (status, body, _) = export(&server, "?format=xml");
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("format must be jsonl or csv"));
}

#[test]
fn imports_over_the_limit_get_413_with_a_code() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start(dir.path());
    let mut stream = std::net::TcpStream::connect(server.addr).expect("connect");
    write!(
        stream,
        "POST /v0/management/usage/import HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ADMIN_KEY}\r\nContent-Length: 67108865\r\nConnection: close\r\n\r\n"
    )
    .expect("send");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    assert!(response.starts_with("HTTP/1.1 413"), "{response}");
    assert!(
        response.contains("\"code\":\"usage_import_too_large\""),
        "{response}"
    );
    let (status, body) = import(&server, "");
    assert_eq!(status, 400);
    assert_eq!(body["error"], "empty usage import payload");
    assert_eq!(body["code"], "usage_import_invalid");
}

#[test]
fn import_sessions_upload_in_chunks_resume_and_import_in_the_background() {
    let source_dir = seeded_dir(corpus(2_000));
    let source = start(source_dir.path());
    let (_, exported, _) = export(&source, "");
    drop(source);
    let dir = tempfile::tempdir().expect("tempdir");
    let server = ServerProcess::start(
        dir.path(),
        &[
            ("CPA_MANAGER_ADMIN_KEY", ADMIN_KEY),
            ("USAGE_IMPORT_CHUNK_BYTES", "262144"),
            ("USAGE_IMPORT_MAX_SESSIONS", "2"),
        ],
    );
    let base = "/v0/management/usage/import-sessions";
    let bytes = exported.into_bytes();
    let key = "00112233445566778899aabbccddeeff";
    let create = serde_json::json!({"filename": "history.jsonl", "size_bytes": bytes.len(), "resume_key": key});
    let (status, session) = request(
        &server,
        reqwest::Method::POST,
        base,
        Some(create.to_string().into_bytes()),
    );
    assert_eq!(status, 201, "{session}");
    assert_eq!(session["status"], "uploading");
    assert_eq!(session["chunk_size_bytes"], 262_144);
    assert!(session.get("resume_key").is_none());
    let id = session["id"].as_str().expect("id").to_string();
    assert_eq!(id.len(), 32);

    // Unknown fields, a wrong offset, an oversized chunk and unknown paths.
    let (status, body) = request(&server, reqwest::Method::POST, base, Some(b"{}".to_vec()));
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("usage_import_session_invalid_request"))
    );
    let (status, body) = request(
        &server,
        reqwest::Method::POST,
        base,
        Some(br#"{"filename":"a","size_bytes":1,"extra":1}"#.to_vec()),
    );
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("usage_import_session_invalid_request"))
    );
    let (status, body) = request(
        &server,
        reqwest::Method::PUT,
        &format!("{base}/{id}/chunk?offset=5"),
        Some(b"xx".to_vec()),
    );
    assert_eq!(
        (status, body["error"].as_str()),
        (409, Some("offset mismatch: expected 0"))
    );
    let (status, body) = request(
        &server,
        reqwest::Method::PUT,
        &format!("{base}/{id}/chunk?offset=0"),
        Some(vec![b' '; 262_145]),
    );
    assert_eq!(
        (status, body["code"].as_str()),
        (413, Some("usage_import_session_too_large"))
    );
    let (status, _) = request(
        &server,
        reqwest::Method::PUT,
        &format!("{base}/{id}/chunk"),
        Some(b"x".to_vec()),
    );
    assert_eq!(status, 400);
    let response = client()
        .get(server.url(&format!("{base}/{id}/nope")))
        .bearer_auth(ADMIN_KEY)
        .send()
        .expect("get");
    assert_eq!(response.status().as_u16(), 404);
    let (status, body) = request(
        &server,
        reqwest::Method::POST,
        &format!("{base}/{id}/complete"),
        None,
    );
    assert_eq!(status, 409, "{body}");

    // Upload half, then "resume" with the same key, as the panel does after a reload.
    let chunks: Vec<&[u8]> = bytes.chunks(262_144).collect();
    let half = chunks.len() / 2;
    let mut offset = 0;
    for chunk in &chunks[..half] {
        let (status, body) = request(
            &server,
            reqwest::Method::PUT,
            &format!("{base}/{id}/chunk?offset={offset}"),
            Some(chunk.to_vec()),
        );
        assert_eq!(status, 200, "{body}");
        offset += chunk.len();
        assert_eq!(body["received_bytes"].as_u64(), Some(offset as u64));
    }
    let (status, resumed) = request(
        &server,
        reqwest::Method::POST,
        base,
        Some(create.to_string().into_bytes()),
    );
    assert_eq!((status, resumed["id"].as_str()), (201, Some(id.as_str())));
    assert_eq!(resumed["received_bytes"].as_u64(), Some(offset as u64));
    for chunk in &chunks[half..] {
        let (status, body) = request(
            &server,
            reqwest::Method::PUT,
            &format!("{base}/{id}/chunk?offset={offset}"),
            Some(chunk.to_vec()),
        );
        assert_eq!(status, 200, "{body}");
        offset += chunk.len();
    }
    let (_, session) = request(&server, reqwest::Method::GET, &format!("{base}/{id}"), None);
    assert_eq!(session["status"], "ready");
    let (status, session) = request(
        &server,
        reqwest::Method::POST,
        &format!("{base}/{id}/complete"),
        None,
    );
    assert!(
        status == 202 || (status == 200 && session["status"] == "completed"),
        "{status} {session}"
    );
    let mut last = Value::Null;
    assert!(
        eventually(Duration::from_secs(60), || {
            last = request(&server, reqwest::Method::GET, &format!("{base}/{id}"), None).1;
            last["status"] == "completed"
        }),
        "{last}"
    );
    assert_eq!(last["result"]["added"], 2_000);
    assert_eq!(last["result"]["format"], "usage_service_jsonl");
    let (status, again) = request(
        &server,
        reqwest::Method::POST,
        &format!("{base}/{id}/complete"),
        None,
    );
    assert_eq!((status, again["status"].as_str()), (200, Some("completed")));
    assert!(
        !dir.path()
            .join("usage-imports")
            .join(format!("{id}.part"))
            .exists()
    );

    // Limits: two active sessions at most; a cancelled one frees its slot.
    let small = |name: &str| {
        serde_json::json!({"filename": name, "size_bytes": 10})
            .to_string()
            .into_bytes()
    };
    let (_, first) = request(&server, reqwest::Method::POST, base, Some(small("a")));
    let (_, second) = request(&server, reqwest::Method::POST, base, Some(small("b")));
    let (status, body) = request(&server, reqwest::Method::POST, base, Some(small("c")));
    assert_eq!(
        (status, body["code"].as_str()),
        (429, Some("usage_import_session_limit_exceeded"))
    );
    let first_id = first["id"].as_str().expect("id");
    let (status, cancelled) = request(
        &server,
        reqwest::Method::DELETE,
        &format!("{base}/{first_id}"),
        None,
    );
    assert_eq!(
        (status, cancelled["status"].as_str()),
        (200, Some("cancelled"))
    );
    let (status, _) = request(&server, reqwest::Method::POST, base, Some(small("c")));
    assert_eq!(status, 201);
    assert!(second["id"].is_string());
    let (status, body) = request(
        &server,
        reqwest::Method::GET,
        &format!("{base}/ffffffffffffffffffffffffffffffff"),
        None,
    );
    assert_eq!(
        (status, body["code"].as_str()),
        (404, Some("usage_import_session_not_found"))
    );
}

/// Every event hash in a database file (hex), read beside the server.
fn hashes(db: &Path) -> std::collections::HashSet<String> {
    use sqlx::Connection;
    runtime().block_on(async {
        let options = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(db)
            .read_only(true)
            .busy_timeout(Duration::from_secs(5));
        let mut connection = sqlx::SqliteConnection::connect_with(&options)
            .await
            .expect("open");
        let rows: Vec<Vec<u8>> = sqlx::query_scalar("SELECT event_hash FROM usage_events")
            .fetch_all(&mut connection)
            .await
            .expect("hashes");
        let _ = connection.close().await;
        rows.into_iter()
            .map(|hash| hash.iter().map(|byte| format!("{byte:02x}")).collect())
            .collect()
    })
}

fn integrity(db: &Path) -> String {
    use sqlx::Connection;
    runtime().block_on(async {
        let mut connection = crate::support::live::read_only(db).await;
        let result: String = sqlx::query_scalar("PRAGMA integrity_check")
            .fetch_one(&mut connection)
            .await
            .expect("check");
        let _ = connection.close().await;
        result
    })
}

#[test]
fn a_backup_taken_during_heavy_ingest_is_consistent_and_complete() {
    let cpa = LiveCpa::start(|_| {});
    let dir = tempfile::tempdir().expect("tempdir");
    let mut env = cpa.server_env("http");
    env.push(("CPA_MANAGER_ADMIN_KEY".into(), ADMIN_KEY.into()));
    env.push(("USAGE_BATCH_SIZE".into(), "1000".into()));
    let server = ServerProcess::start(dir.path(), &env_refs(&env));
    let db = dir.path().join("usage.sqlite");
    // 5,000 events/s in 100 ms bursts of 500, in the background.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let emitter = {
        let cpa = &cpa;
        std::thread::scope(|scope| {
            let flag = stop.clone();
            let handle = scope.spawn(move || {
                let mut emitted = 0;
                while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                    let tick = std::time::Instant::now();
                    emitted += cpa.emit(500).len();
                    std::thread::sleep(Duration::from_millis(100).saturating_sub(tick.elapsed()));
                }
                emitted
            });
            assert!(
                eventually(Duration::from_secs(30), || hashes(&db).len() > 5_000),
                "{}",
                server.log_text()
            );
            let before = hashes(&db);
            let (status, manifest) = request(
                &server,
                reqwest::Method::POST,
                "/usage-service/backups",
                None,
            );
            assert_eq!(status, 201, "{manifest}");
            std::thread::sleep(Duration::from_millis(500));
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            let emitted = handle.join().expect("emitter");
            let path = std::path::PathBuf::from(manifest["path"].as_str().expect("path"));
            let copy = path.join("usage.sqlite");
            assert_eq!(integrity(&copy), "ok");
            let copied = hashes(&copy);
            let missing = before.difference(&copied).count();
            assert_eq!(
                missing, 0,
                "{missing} events committed before the backup are missing from it"
            );
            assert_eq!(manifest["events"].as_u64(), Some(copied.len() as u64));
            assert_eq!(manifest["data_key"], "included");
            emitted
        })
    };
    assert!(emitter > 5_000);
}

#[test]
fn restore_brings_a_stopped_server_back_with_the_same_aggregates_and_no_plain_admin_key() {
    let dir = seeded_dir(corpus(1_500));
    let server = start(dir.path());
    let expected = aggregates(&server);
    let (status, manifest) = request(
        &server,
        reqwest::Method::POST,
        "/usage-service/backups",
        None,
    );
    assert_eq!(status, 201, "{manifest}");
    let backup_dir = std::path::PathBuf::from(manifest["path"].as_str().expect("path"));
    let (status, listed) = request(
        &server,
        reqwest::Method::GET,
        "/usage-service/backups",
        None,
    );
    assert_eq!(status, 200);
    assert_eq!(listed["items"][0]["name"], manifest["name"]);
    // Nothing in the backup holds the admin key in plain text.
    for entry in std::fs::read_dir(&backup_dir).expect("backup dir") {
        let bytes = std::fs::read(entry.expect("entry").path()).expect("read");
        assert!(
            !bytes
                .windows(ADMIN_KEY.len())
                .any(|window| window == ADMIN_KEY.as_bytes()),
            "the admin key is in the backup"
        );
    }
    let saved = tempfile::tempdir().expect("tempdir");
    let copy = saved.path().join("backup");
    std::fs::rename(&backup_dir, &copy).expect("move the backup away");
    assert!(server.terminate().success());

    // Lose the data: the database and the data key.
    for name in [
        "usage.sqlite",
        "usage.sqlite-wal",
        "usage.sqlite-shm",
        "data.key",
    ] {
        let _ = std::fs::remove_file(dir.path().join(name));
    }
    let output = command(dir.path(), &[])
        .args(["restore", "--from", copy.to_str().expect("utf-8")])
        .output()
        .expect("restore");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains("Restored 1500 events"));
    let restored = start(dir.path());
    assert_same(&aggregates(&restored), &expected);
    // The restored credential still accepts the same admin key.
    let (status, _) = request(&restored, reqwest::Method::GET, "/status", None);
    assert_eq!(status, 200);
    // Restoring while the server runs is refused.
    let output = command(dir.path(), &[])
        .args(["restore", "--from", copy.to_str().expect("utf-8")])
        .output()
        .expect("restore");
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("stop it"));
}

#[test]
fn the_cli_exports_and_imports_offline_and_through_the_running_server() {
    let dir = seeded_dir(corpus(800));
    let work = tempfile::tempdir().expect("tempdir");
    let offline = work.path().join("offline.jsonl");
    let output = command(dir.path(), &[])
        .args(["export", "--out", offline.to_str().expect("utf-8")])
        .output()
        .expect("export");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(&offline)
            .expect("read")
            .lines()
            .count(),
        800
    );

    let server = start(dir.path());
    let online = work.path().join("online.jsonl");
    let url = format!("http://{}", server.addr);
    let output = command(dir.path(), &[("CPA_MANAGER_ADMIN_KEY", ADMIN_KEY)])
        .args([
            "export",
            "--server-url",
            &url,
            "--out",
            online.to_str().expect("utf-8"),
        ])
        .output()
        .expect("export");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(std::fs::read(&online).expect("online") == std::fs::read(&offline).expect("offline"));
    let output = command(dir.path(), &[])
        .args(["export", "--server-url", &url])
        .output()
        .expect("export");
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("--admin-key"));
    drop(server);

    let fresh = tempfile::tempdir().expect("tempdir");
    let output = command(fresh.path(), &[])
        .args(["import", offline.to_str().expect("utf-8")])
        .output()
        .expect("import");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        String::from_utf8_lossy(&output.stdout).contains("800 added, 0 already present"),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );
    let server = start(fresh.path());
    let url = format!("http://{}", server.addr);
    let output = command(fresh.path(), &[("CPA_MANAGER_ADMIN_KEY", ADMIN_KEY)])
        .args([
            "import",
            "--server-url",
            &url,
            offline.to_str().expect("utf-8"),
        ])
        .output()
        .expect("import");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        String::from_utf8_lossy(&output.stdout).contains("0 added, 800 already present"),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );
}
