//! The auth-file cache behind enrichment (automation spec §1): CPA's listing, fetched
//! per CPA URL and key, keyed by auth index, and copied onto new usage events before they
//! are stored.
//!
//! Ingest never waits for CPA. A batch uses the listing in hand; a listing older than
//! [`TTL`] (or one CPA announced as changed with `{"refresh":true}`) is fetched again in
//! the background while the batch goes on with the old one. A failed fetch is not retried
//! for [`RETRY_AFTER_FAILURE`]. (The Go server fetched in the batch, up to 5 s per batch,
//! on every batch while CPA was down.) Only the first listing of a connection is worth a
//! short wait, and that wait happens before the collector starts popping
//! ([`Enricher::ready`]), when CPA still holds the events.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cpamp_domain::automation::enrich::{AuthSnapshots, qualifies};
use cpamp_domain::ports::IngestBatch;
use tokio::sync::{Notify, watch};
use tokio::time::Instant;

use super::cpa::CpaClient;

/// How long a listing is used before it is fetched again (from the start of its fetch).
pub const TTL: Duration = Duration::from_secs(30);
/// How long one fetch may take.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// How long after a failed fetch the next one starts.
pub const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(15);

/// The cache. Shared by the ingest pipeline and whoever (re)starts the collector.
pub struct Enricher {
    state: Mutex<State>,
    fetched: Notify,
    enriched_events: AtomicU64,
    failed_fetches: AtomicU64,
}

#[derive(Default)]
struct State {
    client: Option<CpaClient>,
    /// Bumped when the connection changes; a fetch for an older one is discarded.
    generation: u64,
    snapshots: Option<Arc<AuthSnapshots>>,
    fetch_started: Option<Instant>,
    fetching: bool,
    retry_at: Option<Instant>,
    /// CPA announced a change since the listing was fetched.
    stale: bool,
    /// CPA announced a change while a fetch was running: fetch again when it ends.
    again: bool,
    /// The first fetch of the current connection ended (with or without a listing).
    settled: bool,
    last_error: Option<String>,
}

/// Figures for `/status` and `/metrics`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EnricherStats {
    /// Credentials in the cached listing.
    pub credentials: usize,
    /// Events labelled from the listing since start.
    pub enriched_events: u64,
    /// Listing fetches that failed since start.
    pub failed_fetches: u64,
    /// Why the last fetch failed, if it did.
    pub last_error: Option<String>,
}

impl Default for Enricher {
    fn default() -> Enricher {
        Enricher {
            state: Mutex::new(State::default()),
            fetched: Notify::new(),
            enriched_events: AtomicU64::new(0),
            failed_fetches: AtomicU64::new(0),
        }
    }
}

impl Enricher {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Follows the collector's connection: a new CPA or key drops the listing in hand and
    /// fetches the new one at once; `None` (collector stopped) forgets it.
    pub fn set_source(self: &Arc<Self>, client: Option<CpaClient>) {
        {
            let mut state = self.state();
            let same = match (&state.client, &client) {
                (Some(current), Some(next)) => current.same_source(next),
                (None, None) => true,
                _ => false,
            };
            if same {
                return;
            }
            let generation = state.generation + 1;
            *state = State {
                client,
                generation,
                ..State::default()
            };
        }
        self.fetched.notify_waiters();
        self.start_fetch();
    }

    /// CPA said its credentials changed (`{"refresh":true}`): fetch again now.
    pub fn refresh(self: &Arc<Self>) {
        {
            let mut state = self.state();
            state.stale = true;
            state.retry_at = None;
            state.again = state.fetching;
        }
        self.start_fetch();
    }

    /// Calls [`Enricher::refresh`] for every refresh CPA announces until `notifications`
    /// closes.
    pub fn follow_refreshes(self: &Arc<Self>, mut notifications: watch::Receiver<u64>) {
        let enricher = Arc::downgrade(self);
        tokio::spawn(async move {
            while notifications.changed().await.is_ok() {
                match enricher.upgrade() {
                    Some(enricher) => enricher.refresh(),
                    None => return,
                }
            }
        });
    }

    /// Waits until the first listing of the current connection arrived or failed, for at
    /// most `budget`.
    pub async fn ready(&self, budget: Duration) {
        let deadline = Instant::now() + budget;
        loop {
            let notified = self.fetched.notified();
            {
                let state = self.state();
                if state.client.is_none() || state.settled {
                    return;
                }
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return;
            }
        }
    }

    /// Fills the account fields of the batch's events from the listing in hand. Never
    /// waits: an old or missing listing is refreshed in the background.
    pub fn enrich(self: &Arc<Self>, batch: &mut IngestBatch) {
        if !batch.events.iter().any(qualifies) {
            return;
        }
        let (snapshots, refetch) = {
            let state = self.state();
            let Some(client) = &state.client else {
                return;
            };
            // Only collected batches are enriched, and a batch taken from an earlier
            // connection is not labelled from this one.
            if batch.origin.cpa_base_url() != Some(client.base_url()) {
                return;
            }
            let now = Instant::now();
            let old = state
                .fetch_started
                .is_none_or(|started| now.duration_since(started) >= TTL);
            let may_retry = state.retry_at.is_none_or(|at| now >= at);
            let refetch =
                (state.snapshots.is_none() || old || state.stale) && !state.fetching && may_retry;
            (state.snapshots.clone(), refetch)
        };
        if refetch {
            self.start_fetch();
        }
        if let Some(snapshots) = snapshots {
            let changed = snapshots.apply(&mut batch.events);
            self.enriched_events
                .fetch_add(changed as u64, Ordering::Relaxed);
        }
    }

    /// The cache's figures now.
    pub fn stats(&self) -> EnricherStats {
        let state = self.state();
        EnricherStats {
            credentials: state.snapshots.as_ref().map_or(0, |map| map.len()),
            enriched_events: self.enriched_events.load(Ordering::Relaxed),
            failed_fetches: self.failed_fetches.load(Ordering::Relaxed),
            last_error: state.last_error.clone(),
        }
    }

    fn start_fetch(self: &Arc<Self>) {
        let (client, generation) = {
            let mut state = self.state();
            let Some(client) = state.client.clone() else {
                return;
            };
            if state.fetching {
                return;
            }
            state.fetching = true;
            (client, state.generation)
        };
        let enricher = Arc::clone(self);
        tokio::spawn(async move {
            let started = Instant::now();
            let captured_at_ms = jiff::Timestamp::now().as_millisecond();
            let result = client.list_raw(None, None, FETCH_TIMEOUT).await;
            let again = {
                let mut state = enricher.state();
                if state.generation != generation {
                    return;
                }
                state.fetching = false;
                state.settled = true;
                match result {
                    Ok(entries) => {
                        let snapshots = AuthSnapshots::from_entries(&entries, captured_at_ms);
                        tracing::debug!(
                            credentials = snapshots.len(),
                            "CPA auth files fetched for enrichment"
                        );
                        state.snapshots = Some(Arc::new(snapshots));
                        state.fetch_started = Some(started);
                        state.stale = false;
                        state.retry_at = None;
                        state.last_error = None;
                    }
                    Err(error) => {
                        enricher.failed_fetches.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(%error, "fetching CPA auth files for enrichment failed; events keep their current labels");
                        state.retry_at = Some(Instant::now() + RETRY_AFTER_FAILURE);
                        state.last_error = Some(error.to_string());
                    }
                }
                std::mem::take(&mut state.again)
            };
            enricher.fetched.notify_waiters();
            if again {
                enricher.refresh();
            }
        });
    }
}
