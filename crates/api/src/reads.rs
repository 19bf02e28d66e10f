//! Analytics reads under load: a bounded number computed at once, off the HTTP workers,
//! identical requests sharing one computation, and a short-lived copy of each answer.
//!
//! Dashboard and monitoring answers are computed by scanning rollups on the read pool.
//! Without a bound, a hundred panels refreshing at once queue on the pool until their
//! waits time out, and work for clients that already left keeps running. [`Reads`]:
//! - runs at most [`Reads::turns`] computations at once, leaving the rest of the read
//!   pool to `/status`, `/health` and the other routes, which never wait here; with
//!   [`Reads::computing_on`] they run on a runtime of their own, so an HTTP worker
//!   never spends its time decoding rollups while `/status` waits behind it;
//! - lets at most [`MAX_WAITING`] more wait, each for at most [`TURN_WAIT`]; beyond that
//!   the answer is `503 server_busy` with `Retry-After: 1` at once, as it is for a read
//!   arriving on a crowded HTTP worker (`lane.rs`);
//! - joins a request to a computation already running for the same route and input
//!   (single flight), and answers from the last answer for [`FRESH_FOR`] as long as no
//!   event was stored since (the data version the caller passes) and no write request
//!   (a price, an alias, an import, …) was answered since ([`invalidate_after_writes`]);
//! - while a computation for newer data is running, answers from the last answer at once
//!   if its data is at most [`STALE_FOR`] old (no write request answered since): under a
//!   steady stream of events every answer is then at most that old, and only the request
//!   that starts a computation waits for it. A request with nothing running computes, so
//!   a client asking after an event was stored always sees it;
//! - drops a computation when every request waiting for it has gone (the client closed
//!   its connection), so no work runs for nobody.
//!
//! Callers build the key with [`key`] from the route and a canonical form of the input in
//! which "now" is one value ([`live_key_json`], [`LIVE_SLACK_MS`]): panels send the
//! current millisecond in every request, and two panels asking for "today up to now" a
//! few hundred milliseconds apart ask the same question.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use actix_web::HttpResponse;
use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::{Method, StatusCode};
use actix_web::middleware::Next;
use bytes::Bytes;
use futures_util::FutureExt;
use futures_util::future::{BoxFuture, Shared, WeakShared};
use serde_json::Value;
use sha2::Digest;

use crate::error::{ApiError, ErrorCode};

/// Most requests waiting for a turn at once.
pub const MAX_WAITING: usize = 64;
/// Longest wait for a turn.
pub const TURN_WAIT: Duration = Duration::from_secs(3);
/// How long an answer is reused while no event was stored.
pub const FRESH_FOR: Duration = Duration::from_secs(1);
/// How old the data of an answer may be when it is given while a newer one is computed.
pub const STALE_FOR: Duration = Duration::from_secs(5);
/// A time in a request within this many milliseconds of the server's clock means "now".
pub const LIVE_SLACK_MS: i64 = 2_000;
/// Most answers and flights remembered.
const MAX_ENTRIES: usize = 256;
/// Most bytes of answers kept at once. Panels ask for pages of events (about 0.7 MB
/// each): without a bound on bytes, 256 kept copies held about 180 MB long after
/// the copies were too old to be given.
pub const MAX_KEPT_BYTES: usize = 8 << 20;

/// An error that can be handed to every request sharing a computation.
#[derive(Debug, Clone)]
struct Refusal {
    status: StatusCode,
    code: ErrorCode,
    message: String,
    retry_after_secs: Option<u64>,
}

impl From<ApiError> for Refusal {
    fn from(error: ApiError) -> Refusal {
        Refusal {
            status: error.status,
            code: error.code,
            message: error.message,
            retry_after_secs: error.retry_after_secs,
        }
    }
}

impl From<Refusal> for ApiError {
    fn from(refusal: Refusal) -> ApiError {
        let mut error = ApiError::new(refusal.status, refusal.code, refusal.message);
        error.retry_after_secs = refusal.retry_after_secs;
        error
    }
}

type Computation = BoxFuture<'static, Result<Bytes, Refusal>>;
type Flight = Shared<Computation>;

/// The last answer for a key.
struct Done {
    /// When the computation that produced it started (its data is at least that new).
    at: Instant,
    version: u64,
    generation: u64,
    answer: Bytes,
}

/// What is known about one key: the computation running for it and the last answer.
#[derive(Default)]
struct Slot {
    running: Option<(u64, WeakShared<Computation>)>,
    done: Option<Done>,
}

impl Slot {
    fn running(&self) -> Option<Flight> {
        self.running.as_ref().and_then(|(_, weak)| weak.upgrade())
    }
}

/// The gate and the shared answers; registered as `web::Data<Reads>`.
pub struct Reads {
    turns: tokio::sync::Semaphore,
    capacity: usize,
    waiting: AtomicUsize,
    entries: Mutex<HashMap<[u8; 32], Slot>>,
    counts: Counts,
    /// Bumped by every answered write request: copies from before are not reused.
    generation: AtomicU64,
    /// Numbers flights, so a finished one clears only its own mark.
    flights: AtomicU64,
    /// Where computations run (else on the task of the request that starts them).
    computing: Option<tokio::runtime::Handle>,
}

/// What the gate did since the process started (reported by `/metrics`).
#[derive(Debug, Default)]
pub struct Counts {
    /// Computations started.
    pub computed: AtomicU64,
    /// Answers given from a running computation or a fresh copy.
    pub shared: AtomicU64,
    /// Answers given from the last copy while a newer one was being computed.
    pub stale: AtomicU64,
    /// Requests answered 503 (too many waiting, waited too long, or a crowded worker).
    pub refused: AtomicU64,
}

impl std::fmt::Debug for Reads {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Reads")
            .field("turns", &self.capacity)
            .finish_non_exhaustive()
    }
}

/// The key of a request: the route and its input (query string or body).
pub fn key(route: &str, input: &[u8]) -> [u8; 32] {
    let mut hasher = sha2::Sha256::new();
    hasher.update(route.as_bytes());
    hasher.update([0]);
    hasher.update(input);
    hasher.finalize().into()
}

/// A canonical form of `input` for [`key`]: object members sorted, and each top-level
/// member named in `live` whose value is a number within [`LIVE_SLACK_MS`] of `now_ms`
/// replaced by `"now"`. `None` when `input` is not JSON (the caller keys the raw bytes).
pub fn live_key_json(input: &[u8], live: &[&str], now_ms: i64) -> Option<Vec<u8>> {
    let mut value: Value = serde_json::from_slice(input).ok()?;
    if let Value::Object(members) = &mut value {
        for name in live {
            if let Some(member) = members.get_mut(*name)
                && member
                    .as_i64()
                    .is_some_and(|ms| ms.abs_diff(now_ms) <= LIVE_SLACK_MS.unsigned_abs())
            {
                *member = Value::String("now".to_string());
            }
        }
    }
    serde_json::to_vec(&canonical(value)).ok()
}

/// The same canonical form for a query string: pairs sorted, and each pair named in
/// `live` whose value is an integer within [`LIVE_SLACK_MS`] of `now_ms` given as `now`.
pub fn live_key_query(pairs: &[(String, String)], live: &[&str], now_ms: i64) -> Vec<u8> {
    let mut sorted: Vec<(&str, String)> = pairs
        .iter()
        .map(|(name, value)| {
            let is_now = live.contains(&name.as_str())
                && value
                    .trim()
                    .parse::<i64>()
                    .is_ok_and(|ms| ms.abs_diff(now_ms) <= LIVE_SLACK_MS.unsigned_abs());
            (
                name.as_str(),
                if is_now {
                    "now".to_string()
                } else {
                    value.clone()
                },
            )
        })
        .collect();
    sorted.sort();
    let mut out = Vec::new();
    for (name, value) in sorted {
        out.extend_from_slice(name.as_bytes());
        out.push(b'=');
        out.extend_from_slice(value.as_bytes());
        out.push(0);
    }
    out
}

/// `value` with every object's members in sorted order.
fn canonical(value: Value) -> Value {
    match value {
        Value::Object(members) => {
            let sorted: BTreeMap<String, Value> = members
                .into_iter()
                .map(|(name, member)| (name, canonical(member)))
                .collect();
            Value::Object(sorted.into_iter().collect())
        }
        Value::Array(items) => Value::Array(items.into_iter().map(canonical).collect()),
        other => other,
    }
}

/// Drops the copies too old to be given again (older than [`STALE_FOR`]), then the
/// oldest copies until those kept hold at most [`MAX_KEPT_BYTES`], and the keys with
/// neither a copy nor a computation.
fn prune(entries: &mut HashMap<[u8; 32], Slot>) {
    let mut kept: Vec<(Instant, [u8; 32], usize)> = Vec::new();
    for (key, slot) in entries.iter_mut() {
        if slot
            .done
            .as_ref()
            .is_some_and(|done| done.at.elapsed() >= STALE_FOR)
        {
            slot.done = None;
        }
        if let Some(done) = &slot.done {
            kept.push((done.at, *key, done.answer.len()));
        }
    }
    let mut bytes: usize = kept.iter().map(|(_, _, len)| len).sum();
    if bytes > MAX_KEPT_BYTES {
        kept.sort_unstable_by_key(|(at, _, _)| *at);
        for (_, key, len) in kept {
            if bytes <= MAX_KEPT_BYTES {
                break;
            }
            if let Some(slot) = entries.get_mut(&key) {
                slot.done = None;
            }
            bytes -= len;
        }
    }
    entries.retain(|_, slot| slot.done.is_some() || slot.running().is_some());
}

/// Bytes of the answers kept.
#[cfg(test)]
fn kept_bytes(reads: &Reads) -> usize {
    lock(&reads.entries)
        .values()
        .filter_map(|slot| slot.done.as_ref())
        .map(|done| done.answer.len())
        .sum()
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn busy(message: &str) -> Refusal {
    Refusal {
        status: StatusCode::SERVICE_UNAVAILABLE,
        code: ErrorCode::ServerBusy,
        message: format!("{message}; retry in a second"),
        retry_after_secs: Some(1),
    }
}

/// Aborts a spawned computation when the last request waiting for it is dropped.
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Reads {
    /// At most `turns` computations at once (at least one).
    pub fn new(turns: usize) -> Reads {
        let turns = turns.max(1);
        Reads {
            turns: tokio::sync::Semaphore::new(turns),
            capacity: turns,
            waiting: AtomicUsize::new(0),
            entries: Mutex::new(HashMap::new()),
            counts: Counts::default(),
            generation: AtomicU64::new(0),
            flights: AtomicU64::new(0),
            computing: None,
        }
    }

    /// Runs computations on `runtime` (a runtime of their own, so the HTTP workers stay
    /// free for `/status`, `/health` and every other route).
    pub fn computing_on(mut self, runtime: tokio::runtime::Handle) -> Reads {
        self.computing = Some(runtime);
        self
    }

    /// Computations allowed at once.
    pub fn turns(&self) -> usize {
        self.capacity
    }

    /// What the gate did since the process started.
    pub fn counts(&self) -> &Counts {
        &self.counts
    }

    /// Forgets every kept answer (something they may depend on was written).
    pub fn invalidate(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// The JSON answer for `key`: a fresh copy of the last answer (same `version`), a
    /// recent copy while a newer answer is computed, the computation already running for
    /// it, or `compute` run in its turn.
    pub async fn answer<F>(
        self: std::sync::Arc<Self>,
        key: [u8; 32],
        version: u64,
        compute: F,
    ) -> Result<HttpResponse, ApiError>
    where
        F: Future<Output = Result<Bytes, ApiError>> + Send + 'static,
    {
        // A crowded worker turns reads away before it spends anything on them, so the
        // probes queued on it are answered in time (`lane.rs`).
        if crate::lane::crowded() {
            self.counts.refused.fetch_add(1, Ordering::Relaxed);
            return Err(busy("the server is answering too many requests").into());
        }
        let generation = self.generation.load(Ordering::Acquire);
        let flight = {
            let mut entries = lock(&self.entries);
            if entries.len() >= MAX_ENTRIES && !entries.contains_key(&key) {
                entries.retain(|_, slot| {
                    slot.running().is_some()
                        || slot
                            .done
                            .as_ref()
                            .is_some_and(|done| done.at.elapsed() < STALE_FOR)
                });
            }
            let slot = entries.entry(key).or_default();
            let copy = slot
                .done
                .as_ref()
                .filter(|done| done.generation == generation);
            if let Some(done) =
                copy.filter(|done| done.version == version && done.at.elapsed() < FRESH_FOR)
            {
                self.counts.shared.fetch_add(1, Ordering::Relaxed);
                return Ok(json(done.answer.clone()));
            }
            match slot.running() {
                Some(flight) => {
                    if let Some(done) = copy.filter(|done| done.at.elapsed() < STALE_FOR) {
                        self.counts.stale.fetch_add(1, Ordering::Relaxed);
                        return Ok(json(done.answer.clone()));
                    }
                    self.counts.shared.fetch_add(1, Ordering::Relaxed);
                    flight
                }
                None => {
                    let id = self.flights.fetch_add(1, Ordering::Relaxed);
                    let flight = self
                        .clone()
                        .flight(key, id, version, generation, compute)
                        .boxed()
                        .shared();
                    slot.running = flight.downgrade().map(|weak| (id, weak));
                    flight
                }
            }
        };
        flight.await.map(json).map_err(ApiError::from)
    }

    /// One computation: run in its turn (on the computing runtime when there is one),
    /// then kept as the key's last answer.
    async fn flight<F>(
        self: std::sync::Arc<Self>,
        key: [u8; 32],
        id: u64,
        version: u64,
        generation: u64,
        compute: F,
    ) -> Result<Bytes, Refusal>
    where
        F: Future<Output = Result<Bytes, ApiError>> + Send + 'static,
    {
        let started = Instant::now();
        let turn = Self::in_turn(self.clone(), compute);
        let outcome = match &self.computing {
            Some(runtime) => {
                let task = runtime.spawn(turn);
                let _abort = AbortOnDrop(task.abort_handle());
                match task.await {
                    Ok(outcome) => outcome,
                    Err(error) => Err(Refusal::from(ApiError::internal(
                        "analytics computation failed",
                        &error,
                    ))),
                }
            }
            None => turn.await,
        };
        let mut entries = lock(&self.entries);
        let slot = entries.entry(key).or_default();
        if slot.running.as_ref().is_some_and(|(mark, _)| *mark == id) {
            slot.running = None;
        }
        if let Ok(answer) = &outcome
            && slot.done.as_ref().is_none_or(|done| done.at <= started)
        {
            slot.done = (answer.len() <= MAX_KEPT_BYTES).then(|| Done {
                at: started,
                version,
                generation,
                answer: answer.clone(),
            });
        }
        prune(&mut entries);
        outcome
    }

    async fn in_turn<F>(reads: std::sync::Arc<Reads>, compute: F) -> Result<Bytes, Refusal>
    where
        F: Future<Output = Result<Bytes, ApiError>> + Send + 'static,
    {
        let turn = {
            let before = reads.waiting.fetch_add(1, Ordering::AcqRel);
            let acquired = if before >= MAX_WAITING {
                Err(busy("too many analytics requests are waiting"))
            } else {
                match tokio::time::timeout(TURN_WAIT, reads.turns.acquire()).await {
                    Ok(Ok(turn)) => Ok(turn),
                    _ => Err(busy("analytics requests are queued too long")),
                }
            };
            reads.waiting.fetch_sub(1, Ordering::AcqRel);
            if acquired.is_err() {
                reads.counts.refused.fetch_add(1, Ordering::Relaxed);
            }
            acquired?
        };
        reads.counts.computed.fetch_add(1, Ordering::Relaxed);
        let outcome = compute.await.map_err(Refusal::from);
        drop(turn);
        outcome
    }
}

/// Middleware: after any answered request that may write (not GET, HEAD or OPTIONS,
/// and not the monitoring query, which is a POST that only reads), kept analytics
/// answers are forgotten, so a saved price or alias shows in the next answer.
pub async fn invalidate_after_writes(
    request: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let writes = !matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS
    ) && request.path() != "/v0/management/monitoring/analytics";
    let reads = writes
        .then(|| request.app_data::<actix_web::web::Data<Reads>>().cloned())
        .flatten();
    let response = next.call(request).await;
    if let Some(reads) = reads {
        reads.invalidate();
    }
    response
}

fn json(body: Bytes) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::AtomicU32;

    #[tokio::test]
    async fn identical_requests_share_one_computation_and_a_fresh_answer() {
        let reads = Arc::new(Reads::new(1));
        let runs = Arc::new(AtomicU32::new(0));
        let compute = |runs: Arc<AtomicU32>| async move {
            runs.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(50)).await;
            Ok(Bytes::from_static(b"{}\n"))
        };
        let key = key("dashboard", b"a=1");
        let answers = futures_util::future::join_all(
            (0..10).map(|_| reads.clone().answer(key, 7, compute(runs.clone()))),
        )
        .await;
        assert!(answers.iter().all(Result::is_ok));
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        // Fresh and unchanged: answered from the copy.
        reads
            .clone()
            .answer(key, 7, compute(runs.clone()))
            .await
            .expect("copy");
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        // A new event (version) or another input computes again.
        reads
            .clone()
            .answer(key, 8, compute(runs.clone()))
            .await
            .expect("new");
        assert_eq!(runs.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn kept_copies_stay_within_their_byte_bound_and_the_newest_are_kept() {
        let reads = Arc::new(Reads::new(1));
        let runs = Arc::new(AtomicU32::new(0));
        let page = MAX_KEPT_BYTES / 5;
        // Answers `size` bytes for `input`, computed or from a kept copy.
        let ask = |input: &str, size: usize| {
            let runs = runs.clone();
            reads
                .clone()
                .answer(key("monitoring", input.as_bytes()), 1, async move {
                    runs.fetch_add(1, Ordering::SeqCst);
                    Ok(Bytes::from(vec![b' '; size]))
                })
        };
        for input in 0..40 {
            ask(&format!("nonce={input}"), page).await.expect("answer");
            assert!(
                kept_bytes(&reads) <= MAX_KEPT_BYTES,
                "after {input} answers"
            );
        }
        assert_eq!(kept_bytes(&reads), 5 * page);
        // The newest answer is still given from its copy; the oldest was dropped.
        let before = runs.load(Ordering::SeqCst);
        ask("nonce=39", page).await.expect("copy");
        assert_eq!(runs.load(Ordering::SeqCst), before);
        ask("nonce=0", page).await.expect("again");
        assert_eq!(runs.load(Ordering::SeqCst), before + 1);
        // An answer larger than the bound is given but never kept.
        let answer = ask("all", MAX_KEPT_BYTES + 1).await.expect("huge");
        assert_eq!(answer.status(), StatusCode::OK);
        assert!(kept_bytes(&reads) <= MAX_KEPT_BYTES);
        ask("all", MAX_KEPT_BYTES + 1).await.expect("huge again");
        assert_eq!(runs.load(Ordering::SeqCst), before + 3);
    }

    #[tokio::test]
    async fn while_a_newer_answer_is_computed_the_last_copy_is_answered_at_once() {
        let reads = Arc::new(Reads::new(1));
        let key = key("dashboard", b"today");
        reads
            .clone()
            .answer(key, 1, async { Ok(Bytes::from_static(b"old")) })
            .await
            .expect("first");
        // Nothing is running: a request for newer data computes and waits for it.
        let (release, released) = tokio::sync::oneshot::channel::<()>();
        let slow = async move {
            let _ = released.await;
            Ok(Bytes::from_static(b"new"))
        };
        let starter = reads.clone().answer(key, 2, slow);
        let observer = async {
            while reads.counts().computed.load(Ordering::SeqCst) < 2 {
                tokio::task::yield_now().await;
            }
            // While it runs, the copy is answered without waiting.
            let copy = reads
                .clone()
                .answer(key, 3, async { Ok(Bytes::from_static(b"unused")) })
                .await
                .expect("copy");
            let body = actix_web::body::to_bytes(copy.into_body())
                .await
                .expect("body");
            assert_eq!(body, Bytes::from_static(b"old"));
            assert_eq!(reads.counts().stale.load(Ordering::SeqCst), 1);
            let _ = release.send(());
        };
        let (fresh, ()) = futures_util::future::join(starter, observer).await;
        let body = actix_web::body::to_bytes(fresh.expect("answer").into_body())
            .await
            .expect("body");
        assert_eq!(body, Bytes::from_static(b"new"));
        // A write request since: no copy is reused, even while a computation runs.
        reads.invalidate();
        let runs = Arc::new(AtomicU32::new(0));
        let counted = {
            let runs = runs.clone();
            async move {
                runs.fetch_add(1, Ordering::SeqCst);
                Ok(Bytes::from_static(b"after write"))
            }
        };
        let after = reads.clone().answer(key, 2, counted).await.expect("after");
        let body = actix_web::body::to_bytes(after.into_body())
            .await
            .expect("body");
        assert_eq!(body, Bytes::from_static(b"after write"));
        assert_eq!(runs.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn computations_run_on_their_runtime_and_stop_when_abandoned() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("computing")
            .enable_all()
            .build()
            .expect("runtime");
        let reads = Arc::new(Reads::new(1).computing_on(runtime.handle().clone()));
        let where_ran = async {
            let name = std::thread::current().name().unwrap_or("").to_string();
            Ok(Bytes::from(name))
        };
        let answer = reads
            .clone()
            .answer(key("monitoring", b"a"), 1, where_ran)
            .await
            .expect("answer");
        let body = actix_web::body::to_bytes(answer.into_body())
            .await
            .expect("body");
        assert_eq!(body, Bytes::from_static(b"computing"));
        let finished = Arc::new(AtomicU32::new(0));
        let slow = {
            let finished = finished.clone();
            async move {
                tokio::time::sleep(Duration::from_millis(300)).await;
                finished.fetch_add(1, Ordering::SeqCst);
                Ok(Bytes::new())
            }
        };
        let abandoned = tokio::time::timeout(
            Duration::from_millis(50),
            reads.clone().answer(key("monitoring", b"b"), 1, slow),
        )
        .await;
        assert!(abandoned.is_err());
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert_eq!(
            finished.load(Ordering::SeqCst),
            0,
            "an abandoned computation ran on"
        );
        runtime.shutdown_background();
    }

    #[test]
    fn requests_for_now_share_a_key_and_others_do_not() {
        let now = 1_787_400_000_000;
        let body = |to: i64, at: i64| {
            format!(
                r#"{{"from_ms":1787356800000,"to_ms":{to},"now_ms":{at},"include":{{"timeline":true,"summary":true}}}}"#
            )
        };
        let live = |text: &str| live_key_json(text.as_bytes(), &["to_ms", "now_ms"], now);
        // Two panels a few hundred milliseconds apart, members in another order.
        let first = live(&body(now - 300, now - 301)).expect("json");
        let reordered = format!(
            r#"{{"include":{{"summary":true,"timeline":true}},"now_ms":{},"to_ms":{},"from_ms":1787356800000}}"#,
            now + 500,
            now + 501
        );
        assert_eq!(first, live(&reordered).expect("json"));
        // A range ending an hour ago is its own question.
        assert_ne!(first, live(&body(now - 3_600_000, now)).expect("json"));
        // Another start is another question.
        let other_start = body(now, now).replace("1787356800000", "1787270400000");
        assert_ne!(first, live(&other_start).expect("json"));
        assert_eq!(live_key_json(b"not json", &["to_ms"], now), None);

        let pairs = |at: i64| {
            vec![
                ("today_start_ms".to_string(), "1787356800000".to_string()),
                ("now_ms".to_string(), at.to_string()),
                ("top_models".to_string(), "5".to_string()),
            ]
        };
        let query = |at: i64| live_key_query(&pairs(at), &["now_ms"], now);
        assert_eq!(query(now - 1_000), query(now + 1_500));
        let mut reversed = pairs(now);
        reversed.reverse();
        assert_eq!(query(now), live_key_query(&reversed, &["now_ms"], now));
        assert_ne!(query(now), query(now - 60_000));
    }

    #[tokio::test]
    async fn beyond_the_waiting_room_the_answer_is_503_at_once() {
        let reads = Arc::new(Reads::new(1));
        let forever = || async {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            Ok(Bytes::new())
        };
        let mut held = Vec::new();
        for index in 0..=MAX_WAITING {
            let reads = reads.clone();
            let key = key("monitoring", format!("{index}").as_bytes());
            held.push(tokio::spawn(async move {
                reads
                    .answer(key, 1, forever())
                    .await
                    .map(|_| ())
                    .map_err(|error| error.status)
            }));
        }
        while reads.waiting.load(Ordering::SeqCst) < MAX_WAITING {
            tokio::task::yield_now().await;
        }
        let started = Instant::now();
        let error = reads
            .clone()
            .answer(key("monitoring", b"one more"), 1, forever())
            .await
            .expect_err("refused");
        assert!(started.elapsed() < Duration::from_secs(1));
        assert_eq!(error.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(error.code, ErrorCode::ServerBusy);
        assert_eq!(error.retry_after_secs, Some(1));
        assert_eq!(reads.counts().refused.load(Ordering::SeqCst), 1);
        assert_eq!(reads.counts().computed.load(Ordering::SeqCst), 1);
        for task in held {
            task.abort();
        }
    }

    #[tokio::test]
    async fn a_computation_nobody_waits_for_is_dropped_and_errors_are_not_kept() {
        let reads = Arc::new(Reads::new(1));
        let started = Arc::new(AtomicU32::new(0));
        let finished = Arc::new(AtomicU32::new(0));
        let slow = {
            let (started, finished) = (started.clone(), finished.clone());
            async move {
                started.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_secs(30)).await;
                finished.fetch_add(1, Ordering::SeqCst);
                Ok(Bytes::new())
            }
        };
        let key = key("monitoring", b"{}");
        let abandoned = tokio::time::timeout(
            Duration::from_millis(50),
            reads.clone().answer(key, 1, slow),
        )
        .await;
        assert!(abandoned.is_err());
        assert_eq!(started.load(Ordering::SeqCst), 1);
        // The turn is free again at once, and the next request computes anew.
        let failing = async { Err(ApiError::bad_request(ErrorCode::InvalidRequest, "bad")) };
        let error = reads
            .clone()
            .answer(key, 1, failing)
            .await
            .expect_err("error");
        assert_eq!(error.status, StatusCode::BAD_REQUEST);
        let ok = async { Ok(Bytes::from_static(b"[]")) };
        assert!(reads.clone().answer(key, 1, ok).await.is_ok());
        assert_eq!(finished.load(Ordering::SeqCst), 0);
    }

    #[actix_web::test]
    async fn a_crowded_worker_refuses_reads_at_once() {
        let reads = Arc::new(Reads::new(1));
        let runs = Arc::new(AtomicU32::new(0));
        let key = key("dashboard", b"today");
        let ask = |reads: &Arc<Reads>| {
            let counted = runs.clone();
            reads.clone().answer(key, 1, async move {
                counted.fetch_add(1, Ordering::SeqCst);
                Ok(Bytes::from_static(b"{}"))
            })
        };
        ask(&reads).await.expect("an answer before the crowd");
        crate::lane::crowd_this_worker();
        // Not even the fresh copy is given: the worker spends nothing on the read.
        let error = ask(&reads).await.expect_err("refused");
        assert_eq!(error.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(error.code, ErrorCode::ServerBusy);
        assert_eq!(error.retry_after_secs, Some(1));
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        assert_eq!(reads.counts().refused.load(Ordering::Relaxed), 1);
    }
}
