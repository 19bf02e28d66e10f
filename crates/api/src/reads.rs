//! Analytics reads under load: a bounded number computed at once, identical requests
//! sharing one computation, and a short-lived copy of each answer.
//!
//! Dashboard and monitoring answers are computed by scanning rollups on the read pool.
//! Without a bound, a hundred panels refreshing at once queue on the pool until their
//! waits time out, and work for clients that already left keeps running. [`Reads`]:
//! - runs at most [`Reads::turns`] computations at once, leaving the rest of the read
//!   pool to `/status`, `/health` and the other routes, which never wait here;
//! - lets at most [`MAX_WAITING`] more wait, each for at most [`TURN_WAIT`]; beyond that
//!   the answer is `503 server_busy` with `Retry-After: 1` at once;
//! - joins a request to a computation already running for the same route and input
//!   (single flight), and answers from the last answer for [`FRESH_FOR`] as long as no
//!   event was stored since (the data version the caller passes) and no write request
//!   (a price, an alias, an import, …) was answered since ([`invalidate_after_writes`]);
//! - drops a computation when every request waiting for it has gone (the client closed
//!   its connection), so no work runs for nobody.

use std::collections::HashMap;
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
use sha2::Digest;

use crate::error::{ApiError, ErrorCode};

/// Most requests waiting for a turn at once.
pub const MAX_WAITING: usize = 64;
/// Longest wait for a turn.
pub const TURN_WAIT: Duration = Duration::from_secs(3);
/// How long an answer is reused while no event was stored.
pub const FRESH_FOR: Duration = Duration::from_secs(1);
/// Most answers and flights remembered.
const MAX_ENTRIES: usize = 256;

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

type Flight = Shared<BoxFuture<'static, Result<Bytes, Refusal>>>;

enum Entry {
    Running(WeakShared<BoxFuture<'static, Result<Bytes, Refusal>>>),
    Done {
        at: Instant,
        version: u64,
        generation: u64,
        answer: Bytes,
    },
}

/// The gate and the shared answers; registered as `web::Data<Reads>`.
pub struct Reads {
    turns: tokio::sync::Semaphore,
    capacity: usize,
    waiting: AtomicUsize,
    entries: Mutex<HashMap<[u8; 32], Entry>>,
    counts: Counts,
    /// Bumped by every answered write request: copies from before are not reused.
    generation: AtomicU64,
}

/// What the gate did since the process started (reported by `/metrics`).
#[derive(Debug, Default)]
pub struct Counts {
    /// Computations started.
    pub computed: AtomicU64,
    /// Answers given from a running computation or a fresh copy.
    pub shared: AtomicU64,
    /// Requests answered 503 (too many waiting, or waited too long).
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
        }
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

    /// The JSON answer for `key`: a fresh copy of the last answer (same `version`), the
    /// computation already running for it, or `compute` run in its turn.
    pub async fn answer<F>(
        self: std::sync::Arc<Self>,
        key: [u8; 32],
        version: u64,
        compute: F,
    ) -> Result<HttpResponse, ApiError>
    where
        F: Future<Output = Result<Bytes, ApiError>> + Send + 'static,
    {
        let generation = self.generation.load(Ordering::Acquire);
        let flight = {
            let mut entries = lock(&self.entries);
            let joined = match entries.get(&key) {
                Some(Entry::Done {
                    at,
                    version: stored,
                    generation: written,
                    answer,
                }) if *stored == version && *written == generation && at.elapsed() < FRESH_FOR => {
                    self.counts.shared.fetch_add(1, Ordering::Relaxed);
                    return Ok(json(answer.clone()));
                }
                Some(Entry::Running(weak)) => weak.upgrade(),
                _ => None,
            };
            match joined {
                Some(flight) => {
                    self.counts.shared.fetch_add(1, Ordering::Relaxed);
                    flight
                }
                None => {
                    if entries.len() >= MAX_ENTRIES {
                        entries.retain(|_, entry| match entry {
                            Entry::Running(weak) => weak.upgrade().is_some(),
                            Entry::Done { at, .. } => at.elapsed() < FRESH_FOR,
                        });
                    }
                    let flight: Flight = Self::in_turn(self.clone(), compute).boxed().shared();
                    if let Some(weak) = flight.downgrade() {
                        entries.insert(key, Entry::Running(weak));
                    }
                    flight
                }
            }
        };
        let outcome = flight.await;
        let mut entries = lock(&self.entries);
        match &outcome {
            Ok(answer) => {
                entries.insert(
                    key,
                    Entry::Done {
                        at: Instant::now(),
                        version,
                        generation,
                        answer: answer.clone(),
                    },
                );
            }
            Err(_) => {
                if matches!(entries.get(&key), Some(Entry::Running(weak)) if weak.upgrade().is_none())
                {
                    entries.remove(&key);
                }
            }
        }
        drop(entries);
        outcome.map(json).map_err(ApiError::from)
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
}
