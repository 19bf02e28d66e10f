//! The gap tracker: watches the collector and records every period during which it was
//! not receiving events (server down, CPA unreachable, key rejected, store failures) in
//! the `collection_gaps` table, so charts can show missing data instead of zero traffic.
//!
//! While the collector runs, a heartbeat is written every few seconds (and once more at
//! shutdown). A start that finds the last heartbeat older than [`DOWNTIME_THRESHOLD`]
//! opens a `server_down` gap from that heartbeat; the gap closes when the collector is
//! receiving again.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cpamp_collector::{CollectorState, CollectorStatus, StatusHandle};
use cpamp_domain::ports::{CollectionGap, GapCause, GapStore};
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

/// Gaps the tracker has seen but not yet written: the gap of a store that refuses
/// writes cannot be recorded until the store is back, so `/status` shows it from here
/// meanwhile (with `recorded: false`). Cheap to clone; clones share the list.
#[derive(Debug, Clone, Default)]
pub struct GapView {
    pending: Arc<Mutex<Vec<CollectionGap>>>,
}

impl GapView {
    /// The gaps not written yet, newest first (`id` 0).
    pub fn unrecorded(&self) -> Vec<CollectionGap> {
        let mut gaps = self.lock().clone();
        gaps.reverse();
        gaps
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<CollectionGap>> {
        self.pending
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn opened(&self, start_ms: i64, cause: GapCause, detail: &str) {
        let mut pending = self.lock();
        // The store keeps one open gap at a time; so does the view.
        if pending.iter().any(|gap| gap.end_ms.is_none()) {
            return;
        }
        pending.push(CollectionGap {
            id: 0,
            start_ms,
            end_ms: None,
            cause,
            detail: detail.to_string(),
        });
    }

    fn closed(&self, end_ms: i64) {
        for gap in self.lock().iter_mut().filter(|gap| gap.end_ms.is_none()) {
            gap.end_ms = Some(end_ms.max(gap.start_ms));
        }
    }

    /// The gap opened at `start_ms` now has its row.
    fn recorded(&self, start_ms: i64) {
        let mut pending = self.lock();
        if let Some(index) = pending.iter().position(|gap| gap.start_ms == start_ms) {
            pending.remove(index);
        }
    }
}

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
    ///
    /// Gaps are written by a task of their own, retried until the store takes them, and
    /// shown in `view` until then.
    pub async fn start<S: GapStore>(
        store: S,
        status: StatusHandle,
        now_ms: fn() -> i64,
        interrupted_read_at_ms: Option<i64>,
        view: GapView,
    ) -> GapTracker {
        let started_ms = now_ms();
        let open = match store.gaps(i64::MIN, i64::MAX, 1).await {
            Ok(gaps) => gaps.first().is_some_and(|gap| gap.end_ms.is_none()),
            Err(error) => {
                tracing::warn!(%error, "read collection gaps");
                false
            }
        };
        let mut first = None;
        if !open && let Ok(Some(heartbeat)) = store.last_heartbeat().await {
            let down_ms = started_ms.saturating_sub(heartbeat);
            if down_ms > i64::try_from(DOWNTIME_THRESHOLD.as_millis()).unwrap_or(i64::MAX) {
                let detail = format!(
                    "the Manager Server was not collecting from {} until it started at {} ({} s)",
                    crate::doctor::format_ms(heartbeat),
                    crate::doctor::format_ms(started_ms),
                    down_ms / 1000
                );
                first = Some(Change::Open {
                    start_ms: heartbeat,
                    cause: GapCause::ServerDown,
                    detail,
                });
            }
        }
        if !open
            && first.is_none()
            && let Some(read_at) = interrupted_read_at_ms
        {
            let detail = format!(
                "the Manager Server was stopped abruptly while reading from CPA at {} and started again at {}; the \
                 events of that read still on their way from CPA, if any, were lost (those that had arrived were kept)",
                crate::doctor::format_ms(read_at),
                crate::doctor::format_ms(started_ms),
            );
            first = Some(Change::Open {
                start_ms: read_at,
                cause: GapCause::ServerDown,
                detail,
            });
        }
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(run(store, status, now_ms, open, first, view, stopped));
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
async fn write<S: GapStore>(store: S, mut changes: mpsc::UnboundedReceiver<Change>, view: GapView) {
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
                Ok(()) => {
                    if let Change::Open { start_ms, .. } = &change {
                        view.recorded(*start_ms);
                    }
                    break;
                }
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
    first: Option<Change>,
    view: GapView,
    mut stopped: watch::Receiver<bool>,
) {
    let (changes, receiver) = mpsc::unbounded_channel();
    let writer = tokio::spawn(write(store, receiver, view.clone()));
    // Every gap opened goes through here: shown at once, written when the store allows.
    let send = |change: Change| {
        match &change {
            Change::Open {
                start_ms,
                cause,
                detail,
            } => view.opened(*start_ms, *cause, detail),
            Change::Close { end_ms } => view.closed(*end_ms),
            Change::Heartbeat { .. } => {}
        }
        let _ = changes.send(change);
    };
    let open = open || first.is_some();
    if let Some(change) = first {
        send(change);
    }
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
            let cause = classify(&snapshot);
            let detail = if cause == GapCause::StoreFailed && !snapshot.store_error.is_empty() {
                // The store's own error, even when CPA's connection failed meanwhile.
                format!(
                    "consume: {} ({} events received from CPA are held until the store takes writes)",
                    snapshot.store_error, snapshot.held_items
                )
            } else if !snapshot.last_error.is_empty() {
                snapshot.last_error.clone()
            } else if snapshot.pending_items > 0 {
                format!(
                    "{} events received from CPA could not be stored",
                    snapshot.pending_items
                )
            } else {
                "the collector has not connected to CPA yet".to_string()
            };
            send(Change::Open {
                start_ms: last_receiving_ms,
                cause,
                detail,
            });
        } else if gap_open
            && (state == CollectorState::Running
                || (state == CollectorState::Stopped && state_since.elapsed() >= STOPPED_GRACE))
        {
            gap_open = false;
            send(Change::Close { end_ms: now });
        }
        match state {
            CollectorState::Running => {
                last_receiving_ms = now;
                if last_heartbeat.is_none_or(|at| at.elapsed() >= HEARTBEAT_INTERVAL) {
                    last_heartbeat = Some(Instant::now());
                    send(Change::Heartbeat { at_ms: now });
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
                    send(Change::Heartbeat { at_ms: now_ms() });
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
        "broken pipe",
        "connection closed",
        "handshake",
        "subscription ended",
        "no reply from cpa",
    ]
    .iter()
    .any(|needle| error.contains(needle))
    {
        GapCause::CpaUnreachable
    } else {
        GapCause::CollectorError
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(mode: &str, last_error: &str) -> CollectorStatus {
        CollectorStatus {
            state: CollectorState::Error,
            mode: mode.to_string(),
            transport: mode.to_string(),
            last_error: last_error.to_string(),
            ..CollectorStatus::default()
        }
    }

    /// A CPA connection that drops is a connection gap in every transport, whatever
    /// stage the error names (a RESP pop reply shares `consume:` with the store).
    #[test]
    fn a_dropped_cpa_connection_is_a_connection_gap_in_every_transport() {
        for (mode, error) in [
            (
                "http",
                "http: GET /v0/management/usage-queue?count=100: connection closed before message completed",
            ),
            (
                "http",
                "connect: dial tcp 127.0.0.1:8317: Connection refused (os error 111)",
            ),
            ("resp", "consume: EOF"),
            ("resp", "consume: Connection reset by peer (os error 104)"),
            (
                "resp",
                "connect: dial tcp 127.0.0.1:8317: Connection refused (os error 111)",
            ),
            ("subscribe", "subscribe: subscription ended"),
            ("subscribe", "subscribe: EOF"),
            (
                "subscribe",
                "subscribe: no reply from CPA for 40 s; reconnecting",
            ),
        ] {
            assert_eq!(
                classify(&status(mode, error)),
                GapCause::CpaUnreachable,
                "{mode}: {error}"
            );
        }
    }

    /// The store's refusal is `store_failed` in every transport, even when CPA's
    /// connection failed meanwhile; a rejected key is `auth_rejected`.
    #[test]
    fn store_and_auth_failures_keep_their_causes() {
        for mode in ["http", "resp", "subscribe"] {
            let mut failing = status(
                mode,
                "consume: database unavailable: database or disk is full",
            );
            failing.store_error = "database unavailable: database or disk is full".to_string();
            failing.pending_items = 10;
            assert_eq!(classify(&failing), GapCause::StoreFailed, "{mode}");
            failing.last_error = "consume: EOF".to_string();
            assert_eq!(classify(&failing), GapCause::StoreFailed, "{mode}");
            let mut rejected = status(mode, "auth: ERR invalid management key");
            rejected.auth_rejected = true;
            assert_eq!(classify(&rejected), GapCause::AuthRejected, "{mode}");
            assert_eq!(
                classify(&status(mode, "consume: unexpected RESP pop response int64")),
                GapCause::CollectorError,
                "{mode}"
            );
        }
    }

    /// A gap is shown from memory until its row is written, then only from the store.
    #[test]
    fn the_view_shows_a_gap_until_it_is_recorded() {
        let view = GapView::default();
        view.opened(1_000, GapCause::StoreFailed, "consume: disk full");
        view.opened(
            2_000,
            GapCause::StoreFailed,
            "a second open gap is not shown",
        );
        let shown = view.unrecorded();
        assert_eq!(shown.len(), 1);
        assert_eq!((shown[0].start_ms, shown[0].end_ms), (1_000, None));
        view.closed(5_000);
        assert_eq!(view.unrecorded()[0].end_ms, Some(5_000));
        view.recorded(1_000);
        assert!(view.unrecorded().is_empty());
    }
}
