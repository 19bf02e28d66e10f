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
//!   `config`, `api-keys`), `/healthz`, `/`, `/v1/models`;
//! - credentials: `auth-files` (list with CPA's field names and filters, `status`,
//!   `DELETE`, `download`) and `api-call` with scripted upstream answers, so automation can
//!   be tested end to end (see `credentials`);
//! - the `errors` pub/sub channel (never queued; discarded without a subscriber).
//!
//! Layout: `queue` (queue, subscribers, errors channel), `auth` (key check and bans), `resp`
//! and `http` (the two protocols), `events` (realistic payloads), `credentials` (auth files
//! and `api-call`), `traffic` (CPA 7.2 payloads with response headers and nanosecond
//! timestamps at any instant, for benchmarks at scale), `corpus` (a long stream of varied,
//! unique payloads for round trips and benchmarks).
//!
//! # Example: a fake CPA with queued usage events
//!
//! The fake listens on a free local port; point a collector (or any CPA client) at
//! [`FakeCpa::base_url`] with the management key given here. `cpamp-collector`'s crate
//! documentation consumes this queue.
//!
//! ```
//! use cpamp_testkit::{FakeCpa, FakeCpaOptions};
//!
//! #[tokio::main]
//! async fn main() -> std::io::Result<()> {
//!     let cpa = FakeCpa::start(FakeCpaOptions::new("management-key")).await?;
//!     assert!(cpa.base_url().starts_with("http://127.0.0.1:"));
//!     // Realistic CPA payloads, queued as CPA queues them.
//!     let emitted = cpa.emit(100).await;
//!     assert_eq!(cpa.queued_len(), emitted.len());
//!     assert!(emitted.iter().all(|event| !event.request_id.is_empty()));
//!     // Nobody has tried a wrong key yet, so nobody is banned.
//!     assert_eq!(cpa.failed_auth_count(), 0);
//!     Ok(())
//! }
//! ```

#![warn(missing_docs)]

pub mod auth;
pub mod corpus;
mod credentials;
pub mod events;
mod files;
pub mod go_schema;
mod http;
pub mod queue;
mod resp;
pub mod traffic;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

pub use credentials::{ApiCallAnswer, ApiCallRecord, AuthFile, StatusChange};
pub use events::{Account, EmittedEvent, EventGenerator, PayloadSpec, error_event};
pub use files::ReadOnlyFiles;
pub use traffic::Traffic;

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
    /// `proxy-url` in the management config (empty: none).
    pub proxy_url: String,
}

impl FakeCpaOptions {
    /// Options for a fake CPA 7.2.140 that accepts `management_key`, on a free port of
    /// 127.0.0.1: a 60 s queue retention, publishing on, HTTP queue, RESP and `SUBSCRIBE`
    /// supported, a 30-minute ban, no request recording.
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
            proxy_url: String::new(),
        }
    }
}

/// One HTTP request the fake received.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    /// The HTTP method (`GET`, `PATCH`, …).
    pub method: String,
    /// The path without the query string.
    pub path: String,
    /// The raw query string ("" when there is none).
    pub query: String,
    /// Header names lower-cased, values lossily decoded, in arrival order.
    pub headers: Vec<(String, String)>,
    /// The request body as received.
    pub body: Bytes,
}

impl RecordedRequest {
    /// The first value of the header `name` (compared case-insensitively).
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
    errors: queue::ErrorChannel,
    generator: Mutex<EventGenerator>,
    credentials: Mutex<credentials::Credentials>,
    recorded: Mutex<Vec<RecordedRequest>>,
}

impl Shared {
    fn record(&self, request: RecordedRequest) {
        lock(&self.recorded).push(request);
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
    /// Binds `options.bind` and serves HTTP and RESP there until dropped.
    pub async fn start(options: FakeCpaOptions) -> std::io::Result<FakeCpa> {
        let listener = TcpListener::bind(options.bind).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            queue: queue::UsageQueue::new(options.retention, options.publishing_enabled),
            auth: auth::AuthTable::new(options.management_key.clone(), options.ban_duration),
            errors: queue::ErrorChannel::new(),
            generator: Mutex::new(EventGenerator::new(options.seed)),
            credentials: Mutex::new(credentials::Credentials::new(credentials::default_files())),
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

    /// The address the fake listens on.
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
        let mut credentials = lock(&self.shared.credentials);
        for event in &emitted {
            credentials.count_request(event.account.auth_index, event.failed);
        }
        emitted
    }

    /// Publishes one payload as given (for malformed-payload tests).
    pub fn push_raw(&self, payload: impl Into<Bytes>) -> bool {
        self.shared.queue.publish(payload.into())
    }

    /// Events waiting in the usage queue (expired ones are pruned lazily, as CPA does).
    pub fn queued_len(&self) -> usize {
        self.shared.queue.len()
    }

    /// Live subscribers of the usage channel.
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

    /// Usage messages handed to a subscriber whose connection ended (the peer vanished)
    /// before they could be written to it: delivered as far as CPA is concerned, lost
    /// with the connection, as in CPA.
    pub fn undelivered_events(&self) -> u64 {
        self.shared.queue.undelivered()
    }

    /// Failed management logins (HTTP and RESP) since start.
    pub fn failed_auth_count(&self) -> u64 {
        self.shared.auth.total_failures()
    }

    /// Whether `ip` is banned for too many failed management logins.
    pub fn is_banned(&self, ip: std::net::IpAddr) -> bool {
        self.shared.auth.is_banned(ip)
    }

    /// Turns usage publishing on or off (CPA's `usage-statistics-enabled`); while off,
    /// events are discarded.
    pub fn set_publishing(&self, enabled: bool) {
        self.shared.queue.set_publishing(enabled);
    }

    /// How long a queued event is kept before it is pruned (CPA keeps a minute).
    pub fn set_retention(&self, retention: Duration) {
        self.shared.queue.set_retention(retention);
    }

    /// Announces a credential change (`{"refresh":true}`) to subscribers.
    pub fn broadcast_refresh(&self) {
        self.shared.queue.broadcast_refresh();
    }

    /// The credentials `GET auth-files` lists now, in insertion order.
    pub fn auth_files(&self) -> Vec<AuthFile> {
        lock(&self.shared.credentials).files.clone()
    }

    /// The credential with this runtime id or file name.
    pub fn auth_file(&self, name: &str) -> Option<AuthFile> {
        lock(&self.shared.credentials)
            .files
            .iter()
            .find(|file| file.id == name || file.name == name)
            .cloned()
    }

    /// Replaces every credential.
    pub fn set_auth_files(&self, files: Vec<AuthFile>) {
        lock(&self.shared.credentials).files = files;
    }

    /// Adds a credential, or replaces the one with the same runtime id.
    pub fn upsert_auth_file(&self, file: AuthFile) {
        let mut credentials = lock(&self.shared.credentials);
        match credentials
            .files
            .iter_mut()
            .find(|known| known.id == file.id)
        {
            Some(known) => *known = file,
            None => credentials.files.push(file),
        }
    }

    /// Changes a credential's status the way an operator does in CPA's own UI: no
    /// status change is recorded as coming through the management API.
    pub fn set_disabled_directly(&self, name: &str, disabled: bool) -> bool {
        let mut credentials = lock(&self.shared.credentials);
        match credentials
            .files
            .iter_mut()
            .find(|file| file.id == name || file.name == name)
        {
            Some(file) => {
                file.disabled = disabled;
                file.status = if disabled { "disabled" } else { "active" }.to_string();
                true
            }
            None => false,
        }
    }

    /// The status changes applied through `PATCH auth-files/status`, oldest first.
    pub fn status_changes(&self) -> Vec<StatusChange> {
        lock(&self.shared.credentials).status_changes.clone()
    }

    /// Physical files removed through `DELETE auth-files`, oldest first.
    pub fn deleted_auth_files(&self) -> Vec<String> {
        lock(&self.shared.credentials).deleted.clone()
    }

    /// Makes `GET auth-files` answer only after `delay` (a CPA that is slow to list).
    pub fn set_auth_files_delay(&self, delay: Duration) {
        lock(&self.shared.credentials).list_delay = delay;
    }

    /// Makes `GET auth-files` fail with `status` (`None` restores normal answers).
    pub fn set_auth_files_failure(&self, status: Option<u16>) {
        lock(&self.shared.credentials).list_failure = status;
    }

    /// Scripts the upstream answer of `api-call` for requests with this auth index
    /// (empty: any) whose URL contains `url_contains`. `times: None` answers forever;
    /// rules are tried in the order they were added. Unscripted calls fail as an
    /// unreachable upstream does (502 `request failed`).
    pub fn script_api_call(
        &self,
        auth_index: &str,
        url_contains: &str,
        answer: ApiCallAnswer,
        times: Option<u32>,
    ) {
        lock(&self.shared.credentials)
            .api_rules
            .push(credentials::ApiCallRule {
                auth_index: auth_index.to_string(),
                url_contains: url_contains.to_string(),
                answer,
                times,
            });
    }

    /// The `api-call` requests received so far, after `$TOKEN$` substitution.
    pub fn api_calls(&self) -> Vec<ApiCallRecord> {
        lock(&self.shared.credentials).api_calls.clone()
    }

    /// Publishes one event on the `errors` channel; returns false when no subscriber
    /// received it (CPA discards it then).
    pub fn publish_error(&self, event: &Value) -> bool {
        self.shared.errors.publish(Bytes::from(event.to_string()))
    }

    /// Live subscribers of the `errors` channel.
    pub fn error_subscriber_count(&self) -> usize {
        self.shared.errors.subscriber_count()
    }

    /// Error events published while nobody was subscribed.
    pub fn discarded_errors(&self) -> u64 {
        self.shared.errors.discarded()
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
        self.shared.errors.clear();
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

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    async fn read_until(stream: &mut TcpStream, needle: &str) -> String {
        let mut seen = Vec::new();
        let mut buffer = [0u8; 4096];
        while !String::from_utf8_lossy(&seen).contains(needle) {
            let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buffer))
                .await
                .expect("a reply in time")
                .unwrap();
            assert!(read > 0, "closed; got {:?}", String::from_utf8_lossy(&seen));
            seen.extend_from_slice(&buffer[..read]);
        }
        String::from_utf8_lossy(&seen).into_owned()
    }

    #[tokio::test]
    async fn the_errors_channel_reaches_subscribers_only() {
        let cpa = FakeCpa::start(FakeCpaOptions::new("k")).await.unwrap();
        let account = events::ACCOUNTS[0];
        let event = error_event(&account, 429, "quota", true);
        assert!(!cpa.publish_error(&event), "nobody listens: discarded");
        assert_eq!(cpa.discarded_errors(), 1);

        let mut stream = TcpStream::connect(cpa.addr()).await.unwrap();
        stream
            .write_all(b"*2\r\n$4\r\nAUTH\r\n$1\r\nk\r\n*2\r\n$9\r\nSUBSCRIBE\r\n$6\r\nerrors\r\n")
            .await
            .unwrap();
        read_until(&mut stream, "errors").await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while cpa.error_subscriber_count() == 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(cpa.publish_error(&event));
        let frames = read_until(&mut stream, "auth_status").await;
        assert!(
            frames.contains("\"auth_id\":\"codex-alice.dev@example.com.json\""),
            "{frames}"
        );
        assert!(
            !frames.contains("support_refresh"),
            "no opening message on errors"
        );
        // Errors are never queued for pops.
        assert_eq!(cpa.queued_len(), 0);
    }
}
