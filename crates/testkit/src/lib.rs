//! A fake CPA for tests, benchmarks and the `demo` mode: HTTP and RESP on one port, told
//! apart by the first byte the client sends, as CPA does.
//!
//! It reproduces what a manager depends on (facts from CPA v7.2.140):
//! - the usage queue: FIFO, destructive pops, lazy retention pruning, the publishing switch;
//! - subscribers: while anyone is subscribed nothing is queued, every subscriber gets every
//!   event, one that is 256 messages behind is dropped (the overflowing event is lost);
//!   `{"support_refresh":true}` opens every subscription, `{"refresh":true}` follows
//!   credential changes;
//! - management-key auth shared by HTTP and RESP, with per-IP failure counting and the
//!   ban after five failures; pre-AUTH RESP commands count as failures;
//! - the management routes a manager calls (`usage-queue`, `usage-statistics-enabled`,
//!   `config`, `auth-files`, `api-keys`), `/healthz`, `/`, `/v1/models`.
//!
//! Layout: `queue` (queue and subscribers), `auth` (key check and bans), `resp` and `http`
//! (the two protocols), `events` (realistic payloads), `corpus` (a long stream of varied,
//! unique payloads for round trips and benchmarks).
//!
//! ```no_run
//! # async fn example() -> std::io::Result<()> {
//! use cpamp_testkit::{FakeCpa, FakeCpaOptions};
//! let cpa = FakeCpa::start(FakeCpaOptions::new("management-key")).await?;
//! let emitted = cpa.emit(100).await;
//! assert_eq!(cpa.queued_len(), emitted.len());
//! # Ok(()) }
//! ```

pub mod auth;
pub mod corpus;
pub mod events;
mod files;
mod http;
pub mod queue;
mod resp;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

pub use events::{Account, EmittedEvent, EventGenerator};
pub use files::ReadOnlyFiles;

/// How the fake behaves. Start from [`FakeCpaOptions::new`] and adjust fields.
#[derive(Debug, Clone)]
pub struct FakeCpaOptions {
    /// The management key CPA accepts.
    pub management_key: String,
    /// `redis-usage-queue-retention-seconds` (CPA's default is 60 s).
    pub retention: Duration,
    /// `usage-statistics-enabled` at start (real CPA defaults to false; tests want true).
    pub publishing_enabled: bool,
    /// False makes `GET /v0/management/usage-queue` a 404, like CPA before v6.10.8.
    pub http_queue_supported: bool,
    /// False turns the fake into a plain HTTP server that never sniffs RESP, like an HTTP
    /// reverse proxy in front of CPA: RESP bytes get `HTTP/1.1 400 Bad Request`.
    pub resp_enabled: bool,
    /// False answers `SUBSCRIBE` with `-ERR unknown command 'subscribe'`, like CPA before v7.0.7.
    pub subscribe_supported: bool,
    /// Whether subscriptions open with `{"support_refresh":true}` (CPA v7.1.39+).
    pub support_refresh: bool,
    /// `X-CPA-VERSION` on management responses; `None` omits the version headers.
    pub version: Option<String>,
    /// How long the fifth failed login bans an IP.
    pub ban_duration: Duration,
    /// Keep every HTTP request (method, path, query, headers, body) for inspection.
    pub record_requests: bool,
    /// Where to listen; port 0 picks a free port.
    pub bind: SocketAddr,
    /// Seed for the payload generator.
    pub seed: u64,
}

impl FakeCpaOptions {
    pub fn new(management_key: impl Into<String>) -> FakeCpaOptions {
        FakeCpaOptions {
            management_key: management_key.into(),
            retention: Duration::from_secs(60),
            publishing_enabled: true,
            http_queue_supported: true,
            resp_enabled: true,
            subscribe_supported: true,
            support_refresh: true,
            version: Some("7.2.140".to_string()),
            ban_duration: Duration::from_secs(30 * 60),
            record_requests: false,
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            seed: 0x00c0_ffee,
        }
    }
}

/// One HTTP request the fake received.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    pub method: String,
    pub path: String,
    pub query: String,
    /// Header names lower-cased, values lossily decoded, in arrival order.
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
}

impl RecordedRequest {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }
}

/// State shared by every connection of the fake.
pub(crate) struct Shared {
    options: FakeCpaOptions,
    queue: queue::UsageQueue,
    auth: auth::AuthTable,
    generator: Mutex<EventGenerator>,
    /// Per-credential success/failure counters, as `GET auth-files` reports them.
    counters: Mutex<Vec<(u64, u64)>>,
    recorded: Mutex<Vec<RecordedRequest>>,
}

impl Shared {
    fn record(&self, request: RecordedRequest) {
        lock(&self.recorded).push(request);
    }

    fn auth_files(&self) -> Vec<Value> {
        let counters = lock(&self.counters);
        events::ACCOUNTS
            .iter()
            .zip(counters.iter())
            .filter(|(account, _)| !account.file_name.is_empty())
            .map(|(account, (success, failed))| {
                json!({
                    "id": account.file_name,
                    "auth_index": account.auth_index,
                    "name": account.file_name,
                    "type": account.provider,
                    "provider": account.provider,
                    "label": account.source,
                    "email": account.source,
                    "account": account.source,
                    "status": "active",
                    "status_message": "",
                    "disabled": false,
                    "unavailable": false,
                    "runtime_only": false,
                    "source": "file",
                    "success": success,
                    "failed": failed,
                })
            })
            .collect()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A running fake CPA. Dropping it stops the listener and closes every connection.
pub struct FakeCpa {
    shared: Arc<Shared>,
    addr: SocketAddr,
    server: Mutex<Option<JoinHandle<()>>>,
}

impl FakeCpa {
    pub async fn start(options: FakeCpaOptions) -> std::io::Result<FakeCpa> {
        let listener = TcpListener::bind(options.bind).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            queue: queue::UsageQueue::new(options.retention, options.publishing_enabled),
            auth: auth::AuthTable::new(options.management_key.clone(), options.ban_duration),
            generator: Mutex::new(EventGenerator::new(options.seed)),
            counters: Mutex::new(vec![(0, 0); events::ACCOUNTS.len()]),
            recorded: Mutex::new(Vec::new()),
            options,
        });
        let server = tokio::spawn(accept_loop(listener, shared.clone()));
        Ok(FakeCpa {
            shared,
            addr,
            server: Mutex::new(Some(server)),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:<port>`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Simulates `count` finished upstream attempts: realistic payloads go to the
    /// subscribers or the queue exactly as CPA's usage plugin would send them.
    ///
    /// Requests finish over time, not all in one instant: publishing pauses while a
    /// subscriber has more than half of its 256-message buffer filled (up to 200 ms per
    /// pause), so a subscriber that keeps reading is never dropped, while one that stops
    /// reading still overflows and is dropped as CPA would. Use [`FakeCpa::emit_now`] for
    /// an instantaneous burst.
    ///
    /// Returns what was emitted (including events that publishing-off or an overflowing
    /// subscriber discarded, as CPA would).
    pub async fn emit(&self, count: usize) -> Vec<EmittedEvent> {
        let emitted = self.generate(count);
        for chunk in emitted.chunks(32) {
            let deadline = tokio::time::Instant::now() + Duration::from_millis(200);
            while self.shared.queue.fullest_subscriber() > queue::SUBSCRIBER_BUFFER / 2
                && tokio::time::Instant::now() < deadline
            {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            for event in chunk {
                self.shared.queue.publish(event.payload.clone());
            }
            tokio::task::yield_now().await;
        }
        emitted
    }

    /// Publishes `count` events at once, without giving subscribers time to read.
    pub fn emit_now(&self, count: usize) -> Vec<EmittedEvent> {
        let emitted = self.generate(count);
        for event in &emitted {
            self.shared.queue.publish(event.payload.clone());
        }
        emitted
    }

    fn generate(&self, count: usize) -> Vec<EmittedEvent> {
        let emitted = lock(&self.shared.generator).generate(count);
        let mut counters = lock(&self.shared.counters);
        for event in &emitted {
            if let Some(index) = events::ACCOUNTS
                .iter()
                .position(|account| account.auth_index == event.account.auth_index)
            {
                let counter = &mut counters[index];
                if event.failed {
                    counter.1 += 1;
                } else {
                    counter.0 += 1;
                }
            }
        }
        emitted
    }

    /// Publishes one payload as given (for malformed-payload tests).
    pub fn push_raw(&self, payload: impl Into<Bytes>) -> bool {
        self.shared.queue.publish(payload.into())
    }

    pub fn queued_len(&self) -> usize {
        self.shared.queue.len()
    }

    pub fn subscriber_count(&self) -> usize {
        self.shared.queue.subscriber_count()
    }

    /// Subscribers removed for being 256 messages behind since start.
    pub fn dropped_subscribers(&self) -> u64 {
        self.shared.queue.dropped_subscribers()
    }

    /// Events lost because the only subscriber overflowed (neither delivered nor queued).
    pub fn lost_events(&self) -> u64 {
        self.shared.queue.lost_events()
    }

    /// Failed management logins (HTTP and RESP) since start.
    pub fn failed_auth_count(&self) -> u64 {
        self.shared.auth.total_failures()
    }

    pub fn is_banned(&self, ip: std::net::IpAddr) -> bool {
        self.shared.auth.is_banned(ip)
    }

    pub fn set_publishing(&self, enabled: bool) {
        self.shared.queue.set_publishing(enabled);
    }

    pub fn set_retention(&self, retention: Duration) {
        self.shared.queue.set_retention(retention);
    }

    /// Announces a credential change (`{"refresh":true}`) to subscribers.
    pub fn broadcast_refresh(&self) {
        self.shared.queue.broadcast_refresh();
    }

    /// The HTTP requests received so far (only with `record_requests`).
    pub fn recorded_requests(&self) -> Vec<RecordedRequest> {
        lock(&self.shared.recorded).clone()
    }

    /// Stops listening and closes every connection. Queue, subscribers and bans are lost,
    /// as when CPA exits.
    pub fn stop(&self) {
        if let Some(server) = lock(&self.server).take() {
            server.abort();
        }
        self.shared.queue.clear();
        self.shared.auth.clear();
    }

    /// Simulates a CPA restart: stop, stay down for `down_for` (connections are refused),
    /// then listen again on the same port with an empty queue.
    pub async fn restart(&self, down_for: Duration) -> std::io::Result<()> {
        self.stop();
        tokio::time::sleep(down_for).await;
        let mut attempts = 0;
        let listener = loop {
            match TcpListener::bind(self.addr).await {
                Ok(listener) => break listener,
                // The aborted accept task may need a moment to release the socket.
                Err(error) if attempts < 50 => {
                    attempts += 1;
                    tracing::debug!(%error, "rebinding the fake CPA port");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(error) => return Err(error),
            }
        };
        *lock(&self.server) = Some(tokio::spawn(accept_loop(listener, self.shared.clone())));
        Ok(())
    }
}

impl Drop for FakeCpa {
    fn drop(&mut self) {
        if let Some(server) = lock(&self.server).take() {
            server.abort();
        }
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    // Connection tasks live in this set, so aborting the accept task closes them all.
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    connections.spawn(serve_connection(stream, peer, shared.clone()));
                }
                Err(error) => {
                    tracing::debug!(%error, "fake CPA accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

async fn serve_connection(stream: TcpStream, peer: SocketAddr, shared: Arc<Shared>) {
    let _ = stream.set_nodelay(true);
    if shared.options.resp_enabled {
        // CPA sniffs the first byte with a 10 s deadline; RESP starts with one of `*$+-:`.
        let mut first = [0u8; 1];
        let peeked = tokio::time::timeout(Duration::from_secs(10), stream.peek(&mut first)).await;
        match peeked {
            Ok(Ok(1)) if matches!(first[0], b'*' | b'$' | b'+' | b'-' | b':') => {
                resp::serve(stream, peer.ip(), shared).await;
                return;
            }
            Ok(Ok(1)) => {}
            _ => return,
        }
    }
    let service = service_fn(move |request| http::handle(request, peer, shared.clone()));
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(stream), service)
        .await;
}
