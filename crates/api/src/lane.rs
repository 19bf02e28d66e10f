//! Answers handed to the connections a bounded number at once, so `/status`, `/health`
//! and `/metrics` never queue behind a crowd of panel answers.
//!
//! A connection stays on the HTTP worker that accepted it, and a worker serves its
//! connections in turn. With a hundred panels polling, a worker has tens of answers
//! ready at any moment; writing each (copying it into the connection's buffer, the
//! socket write) is most of what an answered request costs the worker, so a `/status`
//! request arriving behind them would wait for all of them: its p99 grows with the
//! number of connections per worker, not with the work any one of them asks for.
//!
//! [`deliver_in_turn`] (the outermost middleware) lets at most [`Lane::turns`] complete
//! answers be written at once. An answer that is ready waits for a turn without taking
//! the worker (the request's task is parked, not queued), and gives the turn back once
//! its last byte is handed to the connection, or when the connection drops it. The
//! answers of [`PRIORITY_PATHS`] and streamed answers (exports, `GET /usage`, proxied
//! answers, whose length is not known) take no turn. A wait lasts at most
//! [`TURN_WAIT`]: an answer whose client reads slowly keeps its turn while it is
//! written, and a few such clients must not stop every other answer.
//!
//! Turns bound how many answers are written at once, not how many a crowd of clients
//! asks for: each client that gets an answer asks again, and a worker busy with them
//! all still runs late. Each worker therefore measures how late it runs (a tick every
//! [`TICK`] while it serves requests) and counts as crowded for [`HOLD`] after a tick
//! that came more than [`LATE`] late while it had started at least [`CROWD`] requests
//! in its last [`WINDOW_TICKS`] ticks.
//! While its worker is crowded, an analytics read is refused at once with `503
//! server_busy` and `Retry-After: 1` ([`crowded`], checked by `Reads::answer`): the
//! panels ask again a second later, and the worker's queue, and with it the wait of
//! every `/status` and `/health` behind it, stays short. Nothing else is refused: probes,
//! writes and the proxy are served whatever the load.

use std::cell::Cell;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use actix_web::body::{BodySize, BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::web;
use bytes::Bytes;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Paths answered as soon as they are asked, without a turn.
pub const PRIORITY_PATHS: [&str; 3] = ["/status", "/health", "/metrics"];

/// The longest an answer waits for its turn before it is written anyway.
pub const TURN_WAIT: Duration = Duration::from_millis(250);

/// The turns; registered as `web::Data<Lane>`.
#[derive(Debug)]
pub struct Lane {
    turns: Arc<Semaphore>,
    capacity: usize,
}

impl Lane {
    /// At most `turns` answers written at once (at least one).
    pub fn new(turns: usize) -> Lane {
        let turns = turns.max(1);
        Lane {
            turns: Arc::new(Semaphore::new(turns)),
            capacity: turns,
        }
    }

    /// Answers written at once.
    pub fn turns(&self) -> usize {
        self.capacity
    }

    /// A turn, or `None` after [`TURN_WAIT`].
    async fn turn(&self) -> Option<OwnedSemaphorePermit> {
        match self.turns.clone().try_acquire_owned() {
            Ok(permit) => Some(permit),
            Err(_) => tokio::time::timeout(TURN_WAIT, self.turns.clone().acquire_owned())
                .await
                .ok()
                .and_then(Result::ok),
        }
    }
}

/// How often a worker that serves requests checks how late it runs.
pub const TICK: Duration = Duration::from_millis(5);
/// How late a tick may come before its worker counts as crowded.
pub const LATE: Duration = Duration::from_millis(2);
/// Requests a worker must have started in its last [`WINDOW_TICKS`] ticks (100 ms) to
/// count as crowded when a tick comes late: 500 a second on one worker, which no panel
/// (the browser opens six connections at most, spread over the workers) ever asks for,
/// even while a page loads.
pub const CROWD: u32 = 50;
/// The ticks whose started requests are counted.
pub const WINDOW_TICKS: usize = 20;
/// How long a worker counts as crowded after a late tick.
pub const HOLD: Duration = Duration::from_millis(250);

/// What a worker knows about its own load (each HTTP worker is one thread).
#[derive(Default)]
struct Worker {
    /// Requests started since the current tick began.
    started: Cell<u32>,
    /// Requests started in each of the last ticks (a ring).
    window: Cell<[u32; WINDOW_TICKS]>,
    /// The ring's next slot.
    slot: Cell<usize>,
    /// A tick is pending on this worker.
    ticking: Cell<bool>,
    /// The worker counts as crowded until then.
    crowded_until: Cell<Option<Instant>>,
}

thread_local! {
    static WORKER: Worker = Worker::default();
}

/// Notes a request started on this thread's worker, and starts its ticks if none run.
fn note_started() {
    let start_ticks = WORKER.with(|worker| {
        worker.started.set(worker.started.get().saturating_add(1));
        !worker.ticking.replace(true)
    });
    if start_ticks {
        actix_web::rt::spawn(ticks());
    }
}

/// Ticks while the worker serves requests; stops after a tick in which none started.
async fn ticks() {
    loop {
        WORKER.with(|worker| worker.started.set(0));
        let began = Instant::now();
        actix_web::rt::time::sleep(TICK).await;
        let late = began.elapsed().saturating_sub(TICK);
        let idle = WORKER.with(|worker| {
            let started = worker.started.get();
            let mut window = worker.window.get();
            let slot = worker.slot.get();
            window[slot] = started;
            worker.slot.set((slot + 1) % WINDOW_TICKS);
            let recent: u32 = window
                .iter()
                .fold(0, |sum, count| sum.saturating_add(*count));
            if late > LATE && recent >= CROWD {
                worker.crowded_until.set(Some(Instant::now() + HOLD));
            }
            if started == 0 {
                worker.ticking.set(false);
                window = [0; WINDOW_TICKS];
            }
            worker.window.set(window);
            started == 0
        });
        if idle {
            return;
        }
    }
}

/// Whether the worker running the caller is crowded (see the module).
pub fn crowded() -> bool {
    WORKER.with(|worker| {
        worker
            .crowded_until
            .get()
            .is_some_and(|until| Instant::now() < until)
    })
}

/// Marks the caller's worker crowded, as a late tick with a crowd would.
#[cfg(test)]
pub(crate) fn crowd_this_worker() {
    WORKER.with(|worker| worker.crowded_until.set(Some(Instant::now() + HOLD)));
}

/// Whether answers to `path` are written without a turn.
pub fn is_priority(path: &str) -> bool {
    PRIORITY_PATHS.contains(&path)
}

/// Writes every complete answer in its turn (see the module).
pub async fn deliver_in_turn(
    request: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    note_started();
    let lane = (!is_priority(request.path()))
        .then(|| request.app_data::<web::Data<Lane>>().cloned())
        .flatten();
    let response = next.call(request).await?.map_into_boxed_body();
    let Some(lane) = lane else {
        return Ok(response);
    };
    if !matches!(response.response().body().size(), BodySize::Sized(_)) {
        return Ok(response);
    }
    let permit = lane.turn().await;
    Ok(response.map_body(|_, body| BoxBody::new(InTurn { body, permit })))
}

/// A body that holds its turn until its last byte is taken (or it is dropped).
struct InTurn {
    body: BoxBody,
    permit: Option<OwnedSemaphorePermit>,
}

impl MessageBody for InTurn {
    type Error = Box<dyn std::error::Error>;

    fn size(&self) -> BodySize {
        self.body.size()
    }

    fn poll_next(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, Self::Error>>> {
        let this = self.get_mut();
        let next = Pin::new(&mut this.body).poll_next(cx);
        if matches!(next, Poll::Ready(None) | Poll::Ready(Some(Err(_)))) {
            this.permit = None;
        }
        next
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[actix_web::test]
    async fn a_turn_is_held_until_the_last_byte_is_taken() {
        let lane = Lane::new(1);
        let permit = lane.turn().await;
        assert!(permit.is_some());
        let body = BoxBody::new(Bytes::from_static(b"{\"ok\":true}"));
        let mut held = std::pin::pin!(InTurn { body, permit });
        // The only turn is taken while the body is unread.
        assert!(lane.turns.clone().try_acquire_owned().is_err());
        let first = std::future::poll_fn(|cx| held.as_mut().poll_next(cx)).await;
        assert_eq!(
            first.expect("a chunk").expect("infallible"),
            Bytes::from_static(b"{\"ok\":true}")
        );
        let end = std::future::poll_fn(|cx| held.as_mut().poll_next(cx)).await;
        assert!(end.is_none());
        assert!(lane.turns.clone().try_acquire_owned().is_ok());
    }

    #[actix_web::test]
    async fn a_dropped_body_gives_its_turn_back() {
        let lane = Lane::new(1);
        let permit = lane.turn().await;
        let held = InTurn {
            body: BoxBody::new(Bytes::from_static(b"unread")),
            permit,
        };
        assert!(lane.turns.clone().try_acquire_owned().is_err());
        drop(held);
        assert!(lane.turns.clone().try_acquire_owned().is_ok());
    }

    #[tokio::test]
    async fn a_wait_for_a_turn_ends_after_the_limit() {
        let lane = Lane::new(1);
        let _held = lane.turn().await.expect("the only turn");
        let started = std::time::Instant::now();
        assert!(lane.turn().await.is_none());
        assert!(started.elapsed() >= TURN_WAIT);
    }

    /// `requests` started during one tick that comes late (the thread blocked as a
    /// crowd of requests would block it); then the tick has run.
    async fn late_tick_with(requests: u32) {
        note_started();
        // The ticks begin.
        actix_web::rt::task::yield_now().await;
        for _ in 0..requests {
            note_started();
        }
        std::thread::sleep(TICK + LATE + Duration::from_millis(5));
        actix_web::rt::time::sleep(Duration::from_millis(1)).await;
    }

    #[actix_web::test]
    async fn a_late_worker_with_a_crowd_is_crowded_for_a_while() {
        late_tick_with(CROWD).await;
        assert!(crowded());
        actix_web::rt::time::sleep(HOLD + TICK * 3).await;
        assert!(!crowded(), "crowded after the hold, with no request since");
        assert!(
            !WORKER.with(|worker| worker.ticking.get()),
            "ticks stop on an idle worker"
        );
    }

    #[actix_web::test]
    async fn a_late_worker_without_a_crowd_is_not_crowded() {
        late_tick_with(CROWD - 2).await;
        assert!(!crowded());
    }

    #[test]
    fn probes_take_no_turn() {
        for path in ["/status", "/health", "/metrics"] {
            assert!(is_priority(path));
        }
        for path in [
            "/status/",
            "/v0/management/dashboard/summary",
            "/management.html",
        ] {
            assert!(!is_priority(path));
        }
    }
}
