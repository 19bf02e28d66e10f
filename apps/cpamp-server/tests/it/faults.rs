//! Faults against the real binary and the fake CPA, each comparing the fake's ledger of
//! emitted events with the rows in the SQLite file: repeated `kill -9` mid-ingest in
//! every transport.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use cpamp_testkit::{EmittedEvent, EventGenerator};

use crate::support::ServerProcess;
use crate::support::live::{
    LiveCpa, db_path, env_refs, expected_counts, read_only, runtime, stored_counts, wait_until,
};

const KILLS: usize = 3;
const EVENTS: usize = 6_000;

/// `(cause, detail)` of every recorded collection gap.
fn gaps(db: &std::path::Path) -> Vec<(String, String)> {
    runtime().block_on(async {
        let mut connection = read_only(db).await;
        sqlx::query_as("SELECT cause, detail FROM collection_gaps ORDER BY id")
            .fetch_all(&mut connection)
            .await
            .expect("read gaps")
    })
}

/// Emits `EVENTS` events at about 3,000 a second while the server is killed with
/// SIGKILL `KILLS` times at pseudo-random moments and started again at once; then
/// compares what is stored with what was emitted. Returns `(lost, duplicated)`.
fn kill_nine_during_ingest(mode: &str, seed: u64) -> (usize, usize) {
    let dir = tempfile::tempdir().expect("tempdir");
    let cpa = LiveCpa::start(|_| {});
    let mut env = cpa.server_env(mode);
    env.push(("USAGE_BATCH_SIZE".into(), "200".into()));
    let start = || ServerProcess::start(dir.path(), &env_refs(&env));
    let mut server = start();
    assert!(server.wait_for_log("collector starting", Duration::from_secs(10)));
    if mode == "subscribe" {
        assert!(cpa.wait_for_subscriber(Duration::from_secs(10)));
    }
    let mut emitted: Vec<EmittedEvent> = Vec::with_capacity(EVENTS);
    let mut random = seed;
    let mut next_kill = || {
        // xorshift: a different moment for every kill, the same for every run.
        random ^= random << 13;
        random ^= random >> 7;
        random ^= random << 17;
        Duration::from_millis(150 + random % 450)
    };
    let mut kills = 0;
    let mut kill_at = Instant::now() + next_kill();
    let mut logs = Vec::new();
    while emitted.len() < EVENTS {
        emitted.extend(cpa.emit(60));
        std::thread::sleep(Duration::from_millis(20));
        if kills < KILLS && Instant::now() >= kill_at {
            let _ = server.child.kill();
            let _ = server.child.wait();
            logs.push(server.log_text());
            kills += 1;
            server = start();
            kill_at = Instant::now() + next_kill();
        }
    }
    assert_eq!(kills, KILLS, "the run ended before every kill");
    let expected = expected_counts(&emitted);
    let db = db_path(dir.path());
    let total: i64 = expected.values().sum();
    // Everything still in CPA is taken; what a killed read carried never arrives, so the
    // wait ends once the stored count stops moving.
    wait_until(Duration::from_secs(30), || cpa.cpa.queued_len() == 0);
    let mut last = -1;
    wait_until(Duration::from_secs(30), || {
        std::thread::sleep(Duration::from_millis(1_000));
        let now: i64 = stored_counts(&db).values().sum();
        let settled = now == last || now >= total;
        last = now;
        settled
    });
    let stored = stored_counts(&db);
    let lost: usize = expected
        .iter()
        .map(|(id, count)| (count - stored.get(id).copied().unwrap_or(0)).max(0) as usize)
        .sum();
    let duplicated: usize = stored
        .iter()
        .map(|(id, count)| (count - expected.get(id).copied().unwrap_or(0)).max(0) as usize)
        .sum();
    let recorded = gaps(&db);
    let in_cpa = cpa.cpa.undelivered_events() + cpa.cpa.lost_events();
    eprintln!(
        "kill -9 x{KILLS} over {total} events in {mode}: {lost} lost ({in_cpa} never left CPA), {duplicated} duplicated; gaps {recorded:?}"
    );
    assert_eq!(
        duplicated,
        0,
        "{mode}: duplicated events\n{}",
        server.log_text()
    );
    // A kill can land inside a read from CPA (CPA's pop is destructive): at most one
    // read (a batch of 200) per kill is lost, and a loss always leaves a gap saying so.
    let interrupted = recorded.iter().any(|(cause, detail)| {
        cause == "server_down" && detail.contains("stopped abruptly while reading from CPA")
    });
    assert!(
        lost <= KILLS * 200 && (lost == 0 || interrupted),
        "{mode}: {lost} events lost, interrupted read recorded: {interrupted} ({recorded:?})\nlogs:\n{}",
        logs.join("\n----\n")
    );
    assert!(server.terminate().success());
    (lost, duplicated)
}

#[test]
fn kill_nine_mid_ingest_over_http_loses_nothing_received() {
    kill_nine_during_ingest("http", 0x9e37_79b9_7f4a_7c15);
}

#[test]
fn kill_nine_mid_ingest_over_resp_loses_nothing_received() {
    kill_nine_during_ingest("resp", 0xd1b5_4a32_d192_ed03);
}

#[test]
fn kill_nine_mid_ingest_over_subscribe_loses_nothing_received() {
    kill_nine_during_ingest("subscribe", 0x8cb9_2ba7_2f3d_8dd7);
}

/// The inbox is trimmed once everything in it is stored, and a torn record at its end
/// (a write cut short by a crash) is cut off at the next start without losing what
/// precedes it.
#[test]
fn the_inbox_empties_after_commits_and_survives_a_torn_tail() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cpa = LiveCpa::start(|_| {});
    let env = cpa.server_env("http");
    let server = ServerProcess::start(dir.path(), &env_refs(&env));
    let emitted = cpa.emit(500);
    let db = db_path(dir.path());
    let inbox = dir.path().join("usage.sqlite.inbox");
    assert!(
        wait_until(Duration::from_secs(30), || {
            stored_counts(&db) == expected_counts(&emitted)
                && std::fs::metadata(&inbox)
                    .map(|meta| meta.len())
                    .unwrap_or(1)
                    == 0
        }),
        "stored {:?} of 500, inbox {:?} bytes\n{}",
        stored_counts(&db).values().sum::<i64>(),
        std::fs::metadata(&inbox).map(|meta| meta.len()),
        server.log_text()
    );
    assert!(server.terminate().success());
    std::fs::write(&inbox, b"B\x10\x00\x00\x00garbage").expect("tear the inbox");
    let server = ServerProcess::start(dir.path(), &env_refs(&env));
    assert!(
        server.wait_for_log("cut a torn record", Duration::from_secs(10)),
        "{}",
        server.log_text()
    );
    let more = cpa.emit(100);
    let mut all: BTreeMap<String, i64> = expected_counts(&emitted);
    for (id, count) in expected_counts(&more) {
        *all.entry(id).or_insert(0) += count;
    }
    assert!(
        wait_until(Duration::from_secs(30), || stored_counts(&db) == all),
        "{}",
        server.log_text()
    );
    assert!(server.terminate().success());
}

/// A stand-in for CPA's HTTP usage queue that answers its first pop with the first `sent`
/// bytes of `body` (announcing the whole length) and then stalls, as a slow link or a
/// busy CPA does; every later pop gets `[]` and every other path 404.
fn stalling_queue(body: Vec<u8>, sent: usize) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let address = listener.local_addr().expect("address");
    let first = Arc::new(AtomicBool::new(true));
    std::thread::spawn(move || {
        for stream in listener.incoming().map_while(Result::ok) {
            let (body, first) = (body.clone(), Arc::clone(&first));
            std::thread::spawn(move || serve_stalling(stream, &body, sent, &first));
        }
    });
    format!("http://{address}")
}

fn serve_stalling(mut stream: TcpStream, body: &[u8], sent: usize, first: &AtomicBool) {
    let mut request = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        while let Some(end) = request.windows(4).position(|window| window == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&request[..end]).into_owned();
            request.drain(..end + 4);
            let path = head.split_whitespace().nth(1).unwrap_or("").to_string();
            let written = if !path.starts_with("/v0/management/usage-queue") {
                stream.write_all(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n")
            } else if first.swap(false, Ordering::SeqCst) {
                let head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
                    body.len()
                );
                let _ = stream.write_all(head.as_bytes());
                let _ = stream.write_all(&body[..sent]);
                let _ = stream.flush();
                // The rest never comes.
                std::thread::sleep(Duration::from_secs(600));
                return;
            } else {
                stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n[]")
            };
            if written.is_err() {
                return;
            }
        }
        match stream.read(&mut buffer) {
            Ok(0) | Err(_) => return,
            Ok(read) => request.extend_from_slice(&buffer[..read]),
        }
    }
}

/// A kill while a pop's response is still arriving keeps every item that had arrived:
/// the bytes went to the inbox as they came, and the next start stores each complete
/// item of the cut-short body and records the interrupted read as a gap.
#[test]
fn a_kill_inside_an_http_response_keeps_every_item_that_arrived() {
    let events = EventGenerator::new(0x5a1e).generate(10);
    let mut body = b"[".to_vec();
    let mut starts = Vec::new();
    for (index, event) in events.iter().enumerate() {
        if index > 0 {
            body.push(b',');
        }
        starts.push(body.len());
        body.extend_from_slice(&event.payload);
    }
    body.push(b']');
    // Six events whole, the seventh cut in its middle.
    let sent = starts[6] + events[6].payload.len() / 2;
    let upstream = stalling_queue(body, sent);
    let dir = tempfile::tempdir().expect("tempdir");
    let env = [
        ("CPA_UPSTREAM_URL", upstream.as_str()),
        ("CPA_MANAGEMENT_KEY", "stalling-queue-key"),
        ("USAGE_COLLECTOR_MODE", "http"),
        ("USAGE_POLL_INTERVAL_MS", "50"),
    ];
    let mut server = ServerProcess::start(dir.path(), &env);
    let inbox = dir.path().join("usage.sqlite.inbox");
    assert!(
        wait_until(Duration::from_secs(20), || {
            std::fs::metadata(&inbox).is_ok_and(|meta| meta.len() as usize > sent)
        }),
        "the response bytes never reached the inbox\n{}",
        server.log_text()
    );
    let _ = server.child.kill();
    let _ = server.child.wait();
    let server = ServerProcess::start(dir.path(), &env);
    let db = db_path(dir.path());
    let expected = expected_counts(&events[..6]);
    assert!(
        wait_until(Duration::from_secs(20), || stored_counts(&db) == expected),
        "stored {:?}, expected the six whole events {expected:?}\n{}",
        stored_counts(&db),
        server.log_text()
    );
    assert!(
        server.wait_for_log("kept the events of a response", Duration::from_secs(5)),
        "{}",
        server.log_text()
    );
    let recorded = gaps(&db);
    assert!(
        recorded.iter().any(|(cause, detail)| cause == "server_down"
            && detail.contains("stopped abruptly while reading from CPA")),
        "{recorded:?}"
    );
    assert!(server.terminate().success());
}
