//! The gap tracker: watches the collector and records every period during which it was
//! not receiving events (server down, CPA unreachable, key rejected, store failures) in
//! the `collection_gaps` table, so charts can show missing data instead of zero traffic.
//!
//! While the collector runs, a heartbeat is written every few seconds (and once more at
//! shutdown). A start that finds the last heartbeat older than [`DOWNTIME_THRESHOLD`]
//! opens a `server_down` gap from that heartbeat; the gap closes when the collector is
//! receiving again.

use std::time::{Duration, Instant};

use cpamp_collector::{CollectorState, CollectorStatus, StatusHandle};
use cpamp_domain::ports::{GapCause, GapStore};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

/// How often the collector status is sampled.
pub const SAMPLE_INTERVAL: Duration = Duration::from_secs(1);
/// How often a heartbeat is written while the collector is receiving.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(5);
/// A restart quicker than this is not recorded as downtime.
pub const DOWNTIME_THRESHOLD: Duration = Duration::from_secs(2);
/// A collector that stays `starting` this long without receiving opens a gap.
const STARTING_GRACE: Duration = Duration::from_secs(10);
/// A collector stopped this long (monitoring off, not configured) ends an open gap: no
/// data is expected from then on.
const STOPPED_GRACE: Duration = Duration::from_secs(60);

/// The running tracker. [`GapTracker::shutdown`] writes the final heartbeat.
pub struct GapTracker {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl GapTracker {
    /// Checks for downtime since the last heartbeat, then starts sampling `status`.
    /// `interrupted_read_at_ms` is when the previous process began a read from CPA it
    /// never finished (it was killed inside it; see the collector's inbox): whatever that
    /// read carried is lost, so a gap opens there even after a restart too quick to count
    /// as downtime.
    pub async fn start<S: GapStore>(
        store: S,
        status: StatusHandle,
        now_ms: fn() -> i64,
        interrupted_read_at_ms: Option<i64>,
    ) -> GapTracker {
        let started_ms = now_ms();
        let mut open = match store.gaps(i64::MIN, i64::MAX, 1).await {
            Ok(gaps) => gaps.first().is_some_and(|gap| gap.end_ms.is_none()),
            Err(error) => {
                tracing::warn!(%error, "read collection gaps");
                false
            }
        };
        if !open && let Ok(Some(heartbeat)) = store.last_heartbeat().await {
            let down_ms = started_ms.saturating_sub(heartbeat);
            if down_ms > i64::try_from(DOWNTIME_THRESHOLD.as_millis()).unwrap_or(i64::MAX) {
                let detail = format!(
                    "the Manager Server was not collecting from {} until it started at {} ({} s)",
                    crate::doctor::format_ms(heartbeat),
                    crate::doctor::format_ms(started_ms),
                    down_ms / 1000
                );
                match store
                    .open_gap(heartbeat, GapCause::ServerDown, &detail)
                    .await
                {
                    Ok(_) => open = true,
                    Err(error) => tracing::warn!(%error, "record server downtime gap"),
                }
            }
        }
        if !open && let Some(read_at) = interrupted_read_at_ms {
            let detail = format!(
                "the Manager Server was stopped abruptly while reading from CPA at {} and started again at {}; the \
                 events of that read still on their way from CPA, if any, were lost (those that had arrived were kept)",
                crate::doctor::format_ms(read_at),
                crate::doctor::format_ms(started_ms),
            );
            match store.open_gap(read_at, GapCause::ServerDown, &detail).await {
                Ok(_) => open = true,
                Err(error) => tracing::warn!(%error, "record an interrupted read as a gap"),
            }
        }
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(run(store, status, now_ms, open, stopped));
        GapTracker { stop, task }
    }

    /// Stops sampling; writes a last heartbeat if the collector was receiving.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

/// A change the sampler saw, written by the writer task. Sampling never waits for the
/// database, so a store that refuses writes cannot hide its own gap.
#[derive(Debug)]
enum Change {
    Open {
        start_ms: i64,
        cause: GapCause,
        detail: String,
    },
    Close {
        end_ms: i64,
    },
    Heartbeat {
        at_ms: i64,
    },
}

/// Applies changes in order; a refused write is retried until it succeeds or the tracker
/// shuts down (then the remaining changes get [`WRITER_DRAIN`] to land).
async fn write<S: GapStore>(store: S, mut changes: mpsc::UnboundedReceiver<Change>) {
    while let Some(change) = changes.recv().await {
        // A newer heartbeat makes an older one pointless.
        if let Change::Heartbeat { .. } = change
            && !changes.is_empty()
        {
            continue;
        }
        loop {
            let result = match &change {
                Change::Open {
                    start_ms,
                    cause,
                    detail,
                } => store.open_gap(*start_ms, *cause, detail).await.map(|_| ()),
                Change::Close { end_ms } => store.close_open_gaps(*end_ms).await,
                Change::Heartbeat { at_ms } => store.heartbeat(*at_ms).await,
            };
            match result {
                Ok(()) => break,
                Err(error) => {
                    tracing::debug!(%error, ?change, "collection gap write refused; retrying");
                    if changes.is_closed() && changes.is_empty() {
                        // Shutting down with the store refusing writes: give up.
                        return;
                    }
                    tokio::time::sleep(SAMPLE_INTERVAL).await;
                }
            }
        }
    }
}

/// How long shutdown waits for queued gap writes.
const WRITER_DRAIN: Duration = Duration::from_secs(3);

async fn run<S: GapStore>(
    store: S,
    status: StatusHandle,
    now_ms: fn() -> i64,
    open: bool,
    mut stopped: watch::Receiver<bool>,
) {
    let (changes, receiver) = mpsc::unbounded_channel();
    let writer = tokio::spawn(write(store, receiver));
    let mut last_heartbeat: Option<Instant> = None;
    let mut state_since = Instant::now();
    let mut last_state = None;
    // The last moment the collector was seen receiving; a gap starts there.
    let mut last_receiving_ms = now_ms();
    // A gap left open by the previous process (or the downtime gap) is already stored.
    let mut gap_open = open;
    loop {
        let snapshot = status.snapshot();
        // Items held after a refused insert mean nothing new is being stored, even while
        // the transport itself keeps running.
        let state = if snapshot.pending_items > 0 {
            CollectorState::Error
        } else {
            snapshot.state
        };
        if last_state != Some(state) {
            last_state = Some(state);
            state_since = Instant::now();
        }
        let now = now_ms();
        let not_receiving = match state {
            CollectorState::Running | CollectorState::Stopped => false,
            CollectorState::Error => true,
            CollectorState::Starting => state_since.elapsed() >= STARTING_GRACE,
        };
        if not_receiving && !gap_open {
            gap_open = true;
            let detail = if !snapshot.last_error.is_empty() {
                snapshot.last_error.clone()
            } else if snapshot.pending_items > 0 {
                format!(
                    "{} events received from CPA could not be stored",
                    snapshot.pending_items
                )
            } else {
                "the collector has not connected to CPA yet".to_string()
            };
            let _ = changes.send(Change::Open {
                start_ms: last_receiving_ms,
                cause: classify(&snapshot),
                detail,
            });
        } else if gap_open
            && (state == CollectorState::Running
                || (state == CollectorState::Stopped && state_since.elapsed() >= STOPPED_GRACE))
        {
            gap_open = false;
            let _ = changes.send(Change::Close { end_ms: now });
        }
        match state {
            CollectorState::Running => {
                last_receiving_ms = now;
                if last_heartbeat.is_none_or(|at| at.elapsed() >= HEARTBEAT_INTERVAL) {
                    last_heartbeat = Some(Instant::now());
                    let _ = changes.send(Change::Heartbeat { at_ms: now });
                }
            }
            CollectorState::Stopped => last_receiving_ms = now,
            CollectorState::Error | CollectorState::Starting => {}
        }
        tokio::select! {
            () = tokio::time::sleep(SAMPLE_INTERVAL) => {}
            _ = stopped.changed() => {
                // The state sampled last decides: the collector may already be stopping.
                if !gap_open && last_state == Some(CollectorState::Running) {
                    let _ = changes.send(Change::Heartbeat { at_ms: now_ms() });
                }
                drop(changes);
                if tokio::time::timeout(WRITER_DRAIN, writer).await.is_err() {
                    tracing::warn!("collection gap writes did not finish before shutdown");
                }
                return;
            }
        }
    }
}

/// Names the cause of a collector that is not receiving.
pub fn classify(snapshot: &CollectorStatus) -> GapCause {
    let error = snapshot.last_error.to_ascii_lowercase();
    if snapshot.auth_rejected || error.starts_with("auth:") {
        GapCause::AuthRejected
    } else if !snapshot.store_error.is_empty() || snapshot.pending_items > 0 {
        // Only the store's own refusal: a RESP pop reply error (`consume: EOF`, a dropped
        // CPA connection) shares the `consume:` prefix but is a CPA-side failure.
        GapCause::StoreFailed
    } else if [
        "refused",
        "dial tcp",
        "timeout",
        "timed out",
        "unreachable",
        "no route",
        "dns",
        "lookup",
        "reset",
        "eof",
    ]
    .iter()
    .any(|needle| error.contains(needle))
    {
        GapCause::CpaUnreachable
    } else {
        GapCause::CollectorError
    }
}
