//! End-to-end ingest: the real binary collecting from a fake CPA in this process, with
//! every request id checked in the SQLite file. Covers each collector mode, a locked
//! database, a CPA restart, RESP pointed at an HTTP-only port, SIGTERM with events held
//! (committed once the lock goes, or left to the next start past the shutdown grace), and
//! the `demo` subcommand.

use std::time::Duration;

use cpamp_testkit::EmittedEvent;

use crate::support::ServerProcess;
use crate::support::live::{
    LiveCpa, WriteLock, assert_stored_exactly_once, db_path, env_refs, expected_counts,
    stored_total, wait_until,
};

const STORE_TIMEOUT: Duration = Duration::from_secs(30);
const METRICS_TOKEN: &str = "scrape-only-token-ingest";

/// Starts the server against `cpa` in `mode`, with extra environment.
fn start_server(
    dir: &tempfile::TempDir,
    cpa: &LiveCpa,
    mode: &str,
    extra: &[(&str, &str)],
) -> ServerProcess {
    let mut env = cpa.server_env(mode);
    env.push(("METRICS_TOKEN".to_string(), METRICS_TOKEN.to_string()));
    env.extend(
        extra
            .iter()
            .map(|(name, value)| (name.to_string(), value.to_string())),
    );
    ServerProcess::start(dir.path(), &env_refs(&env))
}

/// What reached the store, not what it kept: the store's own count of the events it was
/// handed (inserted, and skipped as already stored). The rows alone cannot show a batch
/// sent twice, since the store drops the second copy by its event hash.
/// The counters move just after the commit that made the rows visible, so they are read
/// once they account for every emitted event (or the wait ends), then a moment later again
/// so a late second delivery would still show.
fn assert_each_event_reached_the_store_once(server: &ServerProcess, emitted: usize) {
    let handed = || {
        let skipped = crate::support::metric(server, METRICS_TOKEN, "cpamp_events_skipped_total");
        let inserted = crate::support::metric(server, METRICS_TOKEN, "cpamp_events_ingested_total");
        (inserted, skipped)
    };
    wait_until(Duration::from_secs(10), || {
        let (inserted, skipped) = handed();
        inserted + skipped >= emitted as u64
    });
    std::thread::sleep(Duration::from_millis(500));
    let (inserted, skipped) = handed();
    assert_eq!(
        (inserted, skipped),
        (emitted as u64, 0),
        "the store was handed {} events for {emitted} emitted ({skipped} of them again); log:\n{}",
        inserted + skipped,
        server.log_text()
    );
}

/// 5,000 events in bursts of 500 reach the database exactly once each, and each reached
/// the store once.
fn every_event_stored_once(mode: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let cpa = LiveCpa::start(|_| {});
    let server = start_server(&dir, &cpa, mode, &[("USAGE_BATCH_SIZE", "500")]);
    assert!(
        server.wait_for_log("collector starting", Duration::from_secs(10)),
        "collector did not start; log:\n{}",
        server.log_text()
    );
    let emitted = cpa.emit_bursts(5_000, 500, Duration::from_millis(50));
    assert_stored_exactly_once(
        &db_path(dir.path()),
        &expected_counts(&emitted),
        STORE_TIMEOUT,
        || server.log_text(),
    );
    assert_eq!(cpa.cpa.lost_events(), 0, "the fake dropped a subscriber");
    assert_each_event_reached_the_store_once(&server, emitted.len());
    let status = server.terminate();
    assert!(status.success(), "exit status {status}");
}

#[test]
fn http_mode_stores_every_event_exactly_once() {
    every_event_stored_once("http");
}

#[test]
fn resp_mode_stores_every_event_exactly_once() {
    every_event_stored_once("resp");
}

#[test]
fn subscribe_mode_stores_every_event_exactly_once() {
    every_event_stored_once("subscribe");
}

#[test]
fn auto_mode_stores_every_event_exactly_once() {
    every_event_stored_once("auto");
}

/// Another connection holds SQLite's write lock longer than the store's busy timeout
/// while events flow: the batch fails, is kept and retried, and nothing popped is lost.
#[test]
fn locked_database_during_ingest_loses_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cpa = LiveCpa::start(|_| {});
    let server = start_server(&dir, &cpa, "http", &[]);
    let db = db_path(dir.path());
    let mut emitted: Vec<EmittedEvent> = cpa.emit(300);
    assert!(
        wait_until(STORE_TIMEOUT, || stored_total(&db) == 300),
        "first events not stored; log:\n{}",
        server.log_text()
    );

    let lock = WriteLock::hold(&db);
    emitted.extend(cpa.emit_bursts(1_000, 250, Duration::from_millis(100)));
    assert!(
        server.wait_for_log("storing a batch failed", Duration::from_secs(15)),
        "the store never reported the lock; log:\n{}",
        server.log_text()
    );
    assert_eq!(
        stored_total(&db),
        300,
        "nothing commits while the lock is held"
    );
    lock.release();

    emitted.extend(cpa.emit(500));
    assert_stored_exactly_once(&db, &expected_counts(&emitted), STORE_TIMEOUT, || {
        server.log_text()
    });
    assert_each_event_reached_the_store_once(&server, emitted.len());
    assert!(server.terminate().success());
}

/// The database files become read-only during ingest (immutable, so even root cannot
/// write, as on a read-only mount) and writable again: every popped event is stored,
/// and nothing is reported as stored that is not on disk.
#[test]
fn read_only_database_files_during_ingest_lose_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cpa = LiveCpa::start(|_| {});
    let server = start_server(&dir, &cpa, "subscribe", &[]);
    let db = db_path(dir.path());
    let mut emitted: Vec<EmittedEvent> = cpa.emit(300);
    assert!(
        wait_until(STORE_TIMEOUT, || stored_total(&db) == 300),
        "first events not stored; log:\n{}",
        server.log_text()
    );

    let files = ["usage.sqlite", "usage.sqlite-wal", "usage.sqlite-shm"]
        .map(|name| dir.path().join(name))
        .to_vec();
    let read_only = cpamp_testkit::ReadOnlyFiles::set(files);
    emitted.extend(cpa.emit_bursts(600, 200, Duration::from_millis(100)));
    assert!(
        server.wait_for_log("storing a batch failed", Duration::from_secs(15)),
        "the store never reported the read-only files; log:\n{}",
        server.log_text()
    );
    assert_eq!(stored_total(&db), 300, "nothing commits to read-only files");
    drop(read_only);

    emitted.extend(cpa.emit(300));
    assert_stored_exactly_once(&db, &expected_counts(&emitted), STORE_TIMEOUT, || {
        server.log_text()
    });
    assert!(server.terminate().success());
}

/// CPA restarts mid-stream (its queue is lost, as with a real restart): the collector
/// reconnects and stores everything emitted before the stop and after the restart.
fn cpa_restart_is_survived(mode: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let cpa = LiveCpa::start(|_| {});
    let server = start_server(&dir, &cpa, mode, &[]);
    let db = db_path(dir.path());
    let mut emitted = cpa.emit_bursts(1_000, 250, Duration::from_millis(20));
    assert!(
        wait_until(STORE_TIMEOUT, || stored_total(&db) == 1_000),
        "events before the restart not stored; log:\n{}",
        server.log_text()
    );

    cpa.restart(Duration::from_millis(700));
    if mode == "subscribe" {
        assert!(
            cpa.wait_for_subscriber(Duration::from_secs(15)),
            "no resubscription; log:\n{}",
            server.log_text()
        );
    }
    emitted.extend(cpa.emit_bursts(1_000, 250, Duration::from_millis(20)));
    assert_stored_exactly_once(&db, &expected_counts(&emitted), STORE_TIMEOUT, || {
        server.log_text()
    });
    assert!(
        server.log_text().contains("collector error"),
        "the outage went unnoticed; log:\n{}",
        server.log_text()
    );
    assert!(server.terminate().success());
}

#[test]
fn cpa_restart_mid_stream_is_reconnected_over_subscribe() {
    cpa_restart_is_survived("subscribe");
}

#[test]
fn cpa_restart_mid_stream_is_reconnected_over_http() {
    cpa_restart_is_survived("http");
}

/// A RESP client pointed at an HTTP-only port (a reverse proxy in front of CPA) reads an
/// HTTP response: `lastError` names the `H` prefix. `auto` falls back to the HTTP queue.
#[test]
fn resp_against_an_http_port_names_the_prefix_and_auto_falls_back_to_http() {
    let cpa = LiveCpa::start(|options| options.resp_enabled = false);

    let resp_dir = tempfile::tempdir().expect("tempdir");
    let resp = start_server(&resp_dir, &cpa, "resp", &[]);
    assert!(
        resp.wait_for_log("unsupported RESP prefix 'H'", Duration::from_secs(15)),
        "no prefix error; log:\n{}",
        resp.log_text()
    );
    assert!(resp.terminate().success());

    let auto_dir = tempfile::tempdir().expect("tempdir");
    let auto = start_server(&auto_dir, &cpa, "auto", &[]);
    let emitted = cpa.emit_bursts(1_000, 250, Duration::from_millis(20));
    assert_stored_exactly_once(
        &db_path(auto_dir.path()),
        &expected_counts(&emitted),
        STORE_TIMEOUT,
        || auto.log_text(),
    );
    let log = auto.log_text();
    assert!(
        log.contains("unsupported RESP prefix 'H'")
            && log.contains("falling back to the HTTP queue"),
        "auto did not fall back for the prefix error; log:\n{log}"
    );
    assert_eq!(
        stored_total(&db_path(resp_dir.path())),
        0,
        "resp mode cannot have collected anything"
    );
    assert!(auto.terminate().success());
}

/// SIGTERM while the collector holds popped events it cannot commit yet (the database is
/// locked): the process stops taking events, commits what it holds once the lock goes,
/// and exits cleanly.
#[test]
fn sigterm_commits_what_the_collector_holds() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cpa = LiveCpa::start(|_| {});
    let server = start_server(&dir, &cpa, "http", &[("USAGE_BATCH_SIZE", "100")]);
    let db = db_path(dir.path());
    assert!(server.wait_for_log("collector starting", Duration::from_secs(10)));

    let lock = WriteLock::hold(&db);
    let held = cpa.emit(200);
    assert!(
        cpa.wait_until_popped(Duration::from_secs(10)),
        "the collector did not pop everything; log:\n{}",
        server.log_text()
    );
    let pid = server.child.id();
    crate::support::send_sigterm(pid);
    // Events emitted after SIGTERM stay in CPA: they belong to the next run.
    std::thread::sleep(Duration::from_millis(300));
    let after = cpa.emit(50);
    std::thread::sleep(Duration::from_millis(700));
    lock.release();

    let log = server.log.clone();
    let status = server.terminate();
    assert!(status.success(), "exit status {status}");
    assert_stored_exactly_once(&db, &expected_counts(&held), Duration::from_secs(5), || {
        log.lock().expect("log").join("\n")
    });
    assert_eq!(
        cpa.cpa.queued_len(),
        after.len(),
        "events emitted after SIGTERM were taken"
    );
}

/// SIGTERM while another connection keeps the database locked past the shutdown grace:
/// the store's busy wait (5 s) outlasts the grace (1 s), so the committer gives up after
/// its first retry past the grace, says that the events stay in the inbox, and the process
/// exits cleanly instead of hanging on the lock. The next start stores every one of them,
/// each reaching the store once.
#[test]
fn sigterm_past_the_grace_leaves_held_events_to_the_next_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cpa = LiveCpa::start(|_| {});
    let extra = [
        ("USAGE_BATCH_SIZE", "100"),
        ("USAGE_SHUTDOWN_GRACE_SECONDS", "1"),
    ];
    let server = start_server(&dir, &cpa, "http", &extra);
    let db = db_path(dir.path());
    assert!(server.wait_for_log("collector starting", Duration::from_secs(10)));

    let lock = WriteLock::hold(&db);
    let held = cpa.emit(200);
    assert!(
        cpa.wait_until_popped(Duration::from_secs(10)),
        "the collector did not pop everything; log:\n{}",
        server.log_text()
    );
    let log = server.log.clone();
    let mut server = server;
    crate::support::send_sigterm(server.child.id());
    // Each refused attempt waits out the store's busy timeout (twice when the writer
    // connection is reopened), and so do the shutdown steps after the committer: the
    // process needs about 25 s, but it does exit.
    let status = crate::support::wait_with_timeout(&mut server.child, Duration::from_secs(60));
    let text = log.lock().expect("log").join("\n");
    assert!(status.success(), "exit status {status}; log:\n{text}");
    assert!(
        text.contains("the store still refuses writes at shutdown"),
        "shutdown did not give up on the locked store; log:\n{text}"
    );
    assert!(
        !text.contains("could not be stored or synced to the inbox"),
        "events were held in memory only; log:\n{text}"
    );
    assert_eq!(
        stored_total(&db),
        0,
        "nothing commits while the lock is held"
    );
    lock.release();

    let server = start_server(&dir, &cpa, "http", &extra);
    assert_stored_exactly_once(&db, &expected_counts(&held), STORE_TIMEOUT, || {
        server.log_text()
    });
    assert_each_event_reached_the_store_once(&server, held.len());
    assert!(server.terminate().success());
}

/// `cpamp-server demo` fills the database from its built-in fake CPA and keeps the fake's
/// connection out of the settings table.
#[test]
fn demo_mode_shows_data_without_a_cpa() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = ServerProcess::start_with_args(dir.path(), &["demo"], &[]);
    // The demo keeps its data apart, even when USAGE_DATA_DIR names the real directory.
    let db = db_path(&dir.path().join("demo"));
    assert!(!dir.path().join("usage.sqlite").exists());
    assert!(
        wait_until(STORE_TIMEOUT, || stored_total(&db) >= 100),
        "demo stored nothing; log:\n{}",
        server.log_text()
    );
    assert!(server.log_text().contains("demo mode"));
    let saved: i64 = crate::support::live::runtime().block_on(async {
        use sqlx::Connection;
        let options = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(&db)
            .read_only(true);
        let mut connection = sqlx::SqliteConnection::connect_with(&options)
            .await
            .expect("open");
        sqlx::query_scalar("SELECT COUNT(*) FROM settings WHERE value LIKE '%127.0.0.1%'")
            .fetch_one(&mut connection)
            .await
            .expect("query settings")
    });
    assert_eq!(saved, 0, "the demo connection was written to SQLite");
    assert!(server.terminate().success());
}
