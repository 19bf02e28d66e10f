//! The process itself: start, health, the data directory it owns, the process lock,
//! and clean shutdown.

use std::time::Duration;

use crate::support::{ServerProcess, client, command};

#[test]
fn a_fresh_server_owns_its_data_dir_and_answers_health() {
    let data = tempfile::tempdir().expect("tempdir");
    let server = ServerProcess::start(data.path(), &[]);

    let response = client().get(server.url("/health")).send().expect("health");
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.text().expect("body"),
        r#"{"ok":true,"service":"cpa-manager-plus"}"#
    );

    let root = client().get(server.url("/")).send().expect("root");
    assert_eq!(root.status(), 307);
    assert_eq!(root.headers()["location"], "/management.html");
    let panel = client()
        .get(server.url("/management.html"))
        .send()
        .expect("panel");
    assert_eq!(panel.status(), 200);
    assert!(
        panel.headers()["content-type"]
            .to_str()
            .expect("type")
            .starts_with("text/html")
    );

    let wrong_method = client()
        .post(server.url("/health"))
        .send()
        .expect("post health");
    assert_eq!(wrong_method.status(), 405);
    let body: serde_json::Value = wrong_method.json().expect("json");
    assert_eq!(
        body,
        serde_json::json!({"error": "method not allowed", "code": "method_not_allowed"})
    );

    let db = data.path().join("usage.sqlite");
    assert!(db.is_file());
    assert!(data.path().join("usage.sqlite.manager.lock").is_file());
    let status = server.terminate();
    assert!(status.success(), "exit status {status:?}");

    // WAL mode is a property of the file: read it back with a fresh connection.
    let header = std::fs::read(&db).expect("read db");
    // Bytes 18 and 19 of the SQLite header are 2 for WAL (1 for rollback journal).
    assert_eq!(
        (header[18], header[19]),
        (2, 2),
        "database is not in WAL mode"
    );
}

#[test]
fn a_second_server_on_the_same_database_refuses_and_names_the_lock() {
    let data = tempfile::tempdir().expect("tempdir");
    let first = ServerProcess::start(data.path(), &[]);

    let output = command(data.path(), &[]).output().expect("second server");
    assert!(!output.status.success(), "second instance must fail");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("manager database process lock is already held for"),
        "stderr: {stderr}"
    );
    // The first server is unaffected.
    assert_eq!(
        client()
            .get(first.url("/health"))
            .send()
            .expect("health")
            .status(),
        200
    );
    assert!(first.terminate().success());
}

#[test]
fn sigterm_stops_the_server_cleanly_and_releases_the_lock() {
    let data = tempfile::tempdir().expect("tempdir");
    let server = ServerProcess::start(data.path(), &[]);
    let log = server.log.clone();
    let status = server.terminate();
    let text = log.lock().expect("log").join("\n");
    assert!(status.success(), "exit status {status:?}; log:\n{text}");
    assert!(
        text.contains("shutting down") && text.contains("stopped"),
        "log: {text}"
    );

    // The lock is free again: a new server starts on the same directory.
    let again = ServerProcess::start(data.path(), &[]);
    assert!(again.wait_for_log("admin credential initialized", Duration::from_secs(5)));
    let log = again.log.clone();
    let status = again.terminate();
    assert!(
        status.success(),
        "{status:?} {}",
        log.lock().expect("log").join("\n")
    );
}

#[test]
fn invalid_configuration_is_refused_with_the_variable_named() {
    let data = tempfile::tempdir().expect("tempdir");
    let output = command(data.path(), &[("CPAMP_LOG_FORMAT", "xml")])
        .output()
        .expect("run");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("CPAMP_LOG_FORMAT (config key logFormat) must be text or json"),
        "stderr: {stderr}"
    );
    assert!(
        !data.path().join("usage.sqlite").exists(),
        "nothing may be created on a config error"
    );
}

#[test]
fn the_generated_admin_key_is_printed_once_and_never_again() {
    let data = tempfile::tempdir().expect("tempdir");
    let first = ServerProcess::start(data.path(), &[]);
    assert!(first.wait_for_log("admin key generated: cmp_admin_", Duration::from_secs(5)));
    let log = first.log_text();
    let key = log
        .split("admin key generated: ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .expect("key in log")
        .to_string();
    assert_eq!(key.len(), 42, "{key}");
    assert!(first.terminate().success());

    let second = ServerProcess::start(data.path(), &[]);
    assert!(second.wait_for_log("admin credential initialized", Duration::from_secs(5)));
    assert!(!second.log_text().contains(&key));
    assert!(second.terminate().success());

    let database = std::fs::read(data.path().join("usage.sqlite")).expect("db");
    let wal = std::fs::read(data.path().join("usage.sqlite-wal")).unwrap_or_default();
    for bytes in [&database, &wal] {
        assert!(
            !bytes
                .windows(key.len())
                .any(|window| window == key.as_bytes()),
            "plaintext key stored"
        );
    }
}

/// `GLIBC_TUNABLES` of a running process, as its environment was when it last executed.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn tunables_of(pid: u32) -> Option<String> {
    let environ = std::fs::read(format!("/proc/{pid}/environ")).expect("environ");
    environ
        .split(|byte| *byte == 0)
        .filter_map(|entry| std::str::from_utf8(entry).ok())
        .find_map(|entry| entry.strip_prefix("GLIBC_TUNABLES="))
        .map(str::to_string)
}

/// The server runs with the allocator settings that keep its memory near what it uses
/// (same process: it executes itself again before starting), unless the environment
/// names its own.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[test]
fn the_server_runs_with_its_allocator_settings_unless_the_environment_names_some() {
    let data = tempfile::tempdir().expect("tempdir");
    let server = ServerProcess::start(data.path(), &[]);
    // glibc may rewrite the variable once it has read it (2.36 leaves only the first
    // setting in the environment while applying all of them): ours, from the start.
    let tunables = tunables_of(server.child.id()).expect("GLIBC_TUNABLES set");
    assert!(
        tunables.starts_with("glibc.malloc.arena_max=1")
            && cpamp_server::allocator::TUNABLES.starts_with(&tunables),
        "{tunables}"
    );
    let health = client().get(server.url("/health")).send().expect("health");
    assert_eq!(health.status(), 200);
    server.terminate();

    let data = tempfile::tempdir().expect("tempdir");
    let server = ServerProcess::start(
        data.path(),
        &[("GLIBC_TUNABLES", "glibc.malloc.arena_max=4")],
    );
    assert_eq!(
        tunables_of(server.child.id()).as_deref(),
        Some("glibc.malloc.arena_max=4")
    );
    server.terminate();
}
