//! Test support: an in-memory `EventSink`, a harness around the collector, a real Redis
//! server started per test, and polling helpers.

#![allow(
    dead_code,
    reason = "each test binary uses a different part of the support module"
)]

use std::collections::HashSet;
use std::net::TcpListener as StdListener;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cpamp_collector::{
    BackoffPolicy, Collector, CollectorSettings, HoldLimits, Inbox, ManagementKey, Mode,
    StatusHandle,
};
use cpamp_domain::StoreError;
use cpamp_domain::ports::{BatchOutcome, EventSink, IngestBatch};
use cpamp_testkit::EmittedEvent;

/// Stores batches in memory, idempotent on the event hash like the real store. Dead
/// letters are kept too; their payload's `request_id` counts as received, so the tests
/// hold whether or not the decoder accepts a payload. Besides what it keeps, it records
/// every event that reached it in an accepted batch (`reached_ids`), so a collector that
/// sends a batch twice is caught even though the dedupe hides it from what is kept.
#[derive(Clone, Default)]
pub struct MemorySink {
    state: Arc<Mutex<SinkState>>,
    failing: Arc<AtomicBool>,
}

#[derive(Default)]
struct SinkState {
    hashes: HashSet<String>,
    ids: Vec<String>,
    reached: Vec<String>,
    batches: usize,
}

impl MemorySink {
    pub fn set_failing(&self, failing: bool) {
        self.failing.store(failing, Ordering::SeqCst);
    }

    pub fn sorted_ids(&self) -> Vec<String> {
        let mut ids = self.state.lock().unwrap().ids.clone();
        ids.sort();
        ids
    }

    /// Every event of every accepted batch, duplicates included, sorted.
    pub fn reached_ids(&self) -> Vec<String> {
        let mut ids = self.state.lock().unwrap().reached.clone();
        ids.sort();
        ids
    }

    pub fn id_count(&self) -> usize {
        self.state.lock().unwrap().ids.len()
    }
}

impl EventSink for MemorySink {
    async fn store_batch(&self, batch: IngestBatch) -> Result<BatchOutcome, StoreError> {
        if self.failing.load(Ordering::SeqCst) {
            return Err(StoreError::Unavailable {
                message: "database is locked".into(),
                source: None,
            });
        }
        let mut state = self.state.lock().unwrap();
        state.batches += 1;
        let mut outcome = BatchOutcome::default();
        for (index, event) in batch.events.into_iter().enumerate() {
            let id = event.request_id.clone().unwrap_or_default();
            state.reached.push(id);
            if state.hashes.insert(event.event_hash.clone()) {
                state.ids.push(event.request_id.clone().unwrap_or_default());
                outcome.inserted += 1;
                outcome.fresh.push(index);
            } else {
                outcome.skipped += 1;
            }
        }
        for dead in batch.dead_letters {
            let id = serde_json::from_str::<serde_json::Value>(&dead.payload)
                .ok()
                .and_then(|value| {
                    value
                        .get("request_id")
                        .and_then(|id| id.as_str())
                        .map(str::to_string)
                });
            if let Some(id) = id {
                state.ids.push(id.clone());
                state.reached.push(id);
            }
            outcome.dead_lettered += 1;
        }
        Ok(outcome)
    }
}

pub struct Harness {
    pub sink: MemorySink,
    pub collector: Collector<MemorySink>,
}

impl Harness {
    pub fn new() -> Harness {
        Harness::with_limits(fast_limits())
    }

    /// Holding in memory only, within `limits`.
    pub fn with_limits(limits: HoldLimits) -> Harness {
        let sink = MemorySink::default();
        let collector =
            Collector::with_limits(sink.clone(), StatusHandle::new("auto", "usage"), limits);
        Harness { sink, collector }
    }

    /// With a durable inbox at `path` (replaying what is in it), storing into `sink`.
    pub fn with_inbox(sink: MemorySink, path: &std::path::Path, limits: HoldLimits) -> Harness {
        let (inbox, recovery) = Inbox::open(path).unwrap();
        let collector = Collector::with_inbox(
            sink.clone(),
            StatusHandle::new("auto", "usage"),
            limits,
            inbox,
            recovery,
        );
        Harness { sink, collector }
    }

    /// Waits until the sink holds exactly the expected ids (as a multiset).
    pub async fn wait_for_ids(&self, expected: &[String]) {
        let mut expected = expected.to_vec();
        expected.sort();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            if self.sink.id_count() >= expected.len() {
                break;
            }
            if tokio::time::Instant::now() > deadline {
                panic!(
                    "stored {} of {} events; status {:?}",
                    self.sink.id_count(),
                    expected.len(),
                    self.collector.status().snapshot()
                );
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(self.sink.sorted_ids(), expected, "every event exactly once");
        assert_eq!(
            self.sink.reached_ids(),
            expected,
            "every event reached the store exactly once"
        );
    }
}

pub fn settings(upstream: &str, key: &str, mode: Mode) -> CollectorSettings {
    let mut settings = CollectorSettings::new(upstream, ManagementKey::new(key));
    settings.mode = mode;
    settings.poll_interval = Duration::from_millis(25);
    settings.backoff.initial = Duration::from_millis(100);
    settings.backoff.max = Duration::from_secs(1);
    settings
}

/// Default holding with store retries quick enough for tests.
pub fn fast_limits() -> HoldLimits {
    HoldLimits {
        store_retry: BackoffPolicy {
            initial: Duration::from_millis(50),
            max: Duration::from_millis(200),
        },
        ..HoldLimits::default()
    }
}

pub fn emitted_ids(events: &[EmittedEvent]) -> Vec<String> {
    events
        .iter()
        .map(|event| event.request_id.clone())
        .collect()
}

pub async fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while !condition() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A `redis-server` child process with `requirepass`, killed on drop.
pub struct RedisServer {
    child: Child,
    pub port: u16,
    pub password: String,
}

impl RedisServer {
    pub async fn start(password: &str) -> RedisServer {
        // Redis cannot listen on port 0, so a free port is found first.
        let port = StdListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--requirepass", password])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|error| {
                panic!("redis-server is required for the RESP tests (install the redis-server package): {error}")
            });
        let server = RedisServer {
            child,
            port,
            password: password.to_string(),
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            assert!(
                tokio::time::Instant::now() < deadline,
                "redis-server did not start on port {port}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        server
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Runs one command with redis-cli semantics over a raw connection (AUTH first).
    pub async fn command(&self, args: &[&[u8]]) -> Vec<u8> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", self.port))
            .await
            .unwrap();
        let mut out = encode(&[b"AUTH", self.password.as_bytes()]);
        out.extend(encode(args));
        stream.write_all(&out).await.unwrap();
        let mut reply = vec![0u8; 4096];
        let mut read = 0;
        // "+OK\r\n" for AUTH, then at least one more line.
        while read < 7
            || !reply[..read].ends_with(b"\r\n")
            || reply[..read].iter().filter(|b| **b == b'\n').count() < 2
        {
            let n = stream.read(&mut reply[read..]).await.unwrap();
            assert!(n > 0, "redis closed the connection");
            read += n;
        }
        reply.truncate(read);
        reply
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn encode(args: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        out.extend(format!("${}\r\n", arg.len()).into_bytes());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
    out
}
