//! Account automation services: what runs beside the HTTP routes to label usage events
//! with CPA's credentials and act on those credentials.
//!
//! Layout:
//! - `cpa`: the CPA credential calls ([`cpa::CpaClient`]: auth files, status, delete,
//!   download, `api-call`).
//! - `enrich`: the auth-file cache that labels new events ([`enrich::Enricher`]).
//! - `ingest`: the collector's sink, wrapping the store ([`ingest::IngestSink`]): labels
//!   events, stores them, hands newly stored failures to the workers below.
//! - `coordinator`: the per-file lock every account change takes.
//! - `gate`: finding the exact credential before changing it.
//! - `policy`: the three switches (cooldowns, queue, auto-disable).
//! - `cooldowns`: quota cooldowns and their recovery.
//! - `actions`: the account action queue and its manual actions.
//! - `audit`: the audit log of automatic account changes.
//! - `quota_evidence`: quota snapshots from Codex response headers.
//! - `inspection`: server inspection runs, their lease, cancel and schedule.
//! - `bookkeeping`: auth-file changes made through the proxy (locked, and ending claims).
//!
//! Every status change automation makes goes through `coordinator` + `gate` and is written
//! to `audit`. Ownership rule: each automation restores only what it disabled itself, and
//! a change a person makes through the panel ends automation's claim.

pub mod actions;
pub mod audit;
pub mod bookkeeping;
pub mod cooldowns;
pub mod coordinator;
pub mod cpa;
pub mod enrich;
pub mod gate;
pub mod ingest;
pub mod inspection;
pub mod policy;
pub mod quota_evidence;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::web;
use cpamp_domain::automation::cooldown::{Trigger, detect};
use cpamp_domain::event::UsageEvent;
use tokio::sync::{Notify, mpsc};

pub use audit::AuditLog;
pub use coordinator::MutationCoordinator;
pub use enrich::Enricher;
pub use policy::Switches;

use crate::connection::CpaConnection;
use crate::state::{AppState, Store};

/// How long a collector start waits for the first auth-file listing of a connection.
/// Nothing is popped yet, so CPA still holds every event meanwhile.
pub const FIRST_LISTING_WAIT: Duration = Duration::from_secs(2);
/// Newly stored failures waiting for the workers; more are dropped (ingest never waits).
const COLLECTED_QUEUE: usize = 4096;
/// Jobs per worker (the Go server's queue size).
const WORKER_QUEUE: usize = 256;

/// The automation services of one process. Cheap to clone.
#[derive(Clone)]
pub struct Automation {
    /// The auth-file cache that labels new events.
    pub enricher: Arc<Enricher>,
    /// The account processing switches in effect.
    pub switches: Arc<Switches>,
    /// The per-file lock every account status change holds.
    pub coordinator: MutationCoordinator,
    /// The automation audit log.
    pub audit: AuditLog,
    /// Wakes the cooldown worker (a new cooldown, a changed connection).
    pub cooldown_wake: Arc<Notify>,
    /// Server inspection (runs, lease, schedule).
    pub inspector: Arc<inspection::Inspector>,
    collected: mpsc::Sender<Vec<UsageEvent>>,
    dropped: Arc<AtomicU64>,
    pending: Arc<Mutex<Option<mpsc::Receiver<Vec<UsageEvent>>>>>,
}

impl Default for Automation {
    fn default() -> Automation {
        let (collected, receiver) = mpsc::channel(COLLECTED_QUEUE);
        Automation {
            enricher: Arc::default(),
            switches: Arc::default(),
            coordinator: MutationCoordinator::default(),
            audit: AuditLog::default(),
            cooldown_wake: Arc::default(),
            inspector: Arc::default(),
            collected,
            dropped: Arc::default(),
            pending: Arc::new(Mutex::new(Some(receiver))),
        }
    }
}

impl Automation {
    /// The collector (re)starts with `connection` (or stops: `None`).
    pub async fn collector_connection(&self, connection: Option<&CpaConnection>) {
        self.enricher
            .set_source(connection.map(cpa::CpaClient::new));
        // Due cooldowns need the connection; look again now.
        self.cooldown_wake.notify_one();
        if connection.is_some() {
            self.enricher.ready(FIRST_LISTING_WAIT).await;
        }
    }

    /// Hands newly stored failures to the workers without waiting.
    pub(crate) fn collected(&self, events: Vec<UsageEvent>) {
        if events.is_empty() {
            return;
        }
        let count = events.len() as u64;
        if self.collected.try_send(events).is_err() {
            self.dropped.fetch_add(count, Ordering::Relaxed);
            tracing::warn!(
                events = count,
                "account automation is behind; failures dropped from automation (they are stored)"
            );
        }
    }

    /// Failures automation had to drop because its workers were behind.
    pub fn dropped_events(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Loads the policy and starts the workers. Call once, after the state exists.
    pub async fn start<S: Store>(state: web::Data<AppState<S>>) {
        let automation = state.automation.clone();
        match policy::load_overrides(&state.store).await {
            Ok(saved) => automation
                .switches
                .apply(&policy::resolve(&state.startup.automation, &saved)),
            Err(error) => {
                tracing::warn!(%error, "reading the account processing policy failed; using startup values");
                automation.switches.apply(&policy::resolve(
                    &state.startup.automation,
                    &policy::Overrides::default(),
                ));
            }
        }
        let Some(collected) = automation
            .pending
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take()
        else {
            return;
        };
        let (cooldown_jobs, cooldown_receiver) = mpsc::channel(WORKER_QUEUE);
        let (action_jobs, action_receiver) = mpsc::channel(WORKER_QUEUE);
        tokio::spawn(cooldowns::run(state.clone(), cooldown_receiver));
        tokio::spawn(actions::run(state.clone(), action_receiver));
        tokio::spawn(inspection::schedule(state.clone()));
        tokio::spawn(dispatch(
            state.clone(),
            collected,
            cooldown_jobs,
            action_jobs,
        ));
    }
}

/// Routes each newly stored event: failures to the workers whose switch is on at that
/// moment, Codex quota headers into quota snapshots.
async fn dispatch<S: Store>(
    state: web::Data<AppState<S>>,
    mut collected: mpsc::Receiver<Vec<UsageEvent>>,
    cooldowns: mpsc::Sender<Trigger>,
    actions: mpsc::Sender<actions::Job>,
) {
    let switches = state.automation.switches.clone();
    while let Some(events) = collected.recv().await {
        let now = jiff::Timestamp::now().as_millisecond();
        let evidence: Vec<_> = events
            .iter()
            .filter_map(quota_evidence::observation_of)
            .collect();
        if !evidence.is_empty()
            && let Err(error) = state.store.write_observations(evidence, now).await
        {
            tracing::warn!(%error, "storing quota snapshots from response headers failed");
        }
        for event in events.into_iter().filter(|event| event.failed) {
            if switches.quota_cooldown()
                && let Some(trigger) = detect(&event, now)
                && cooldowns.try_send(trigger).is_err()
            {
                tracing::warn!("quota cooldown queue full; a trigger was dropped");
            }
            if switches.queue()
                && let Some(job) = actions::job_for(&event)
                && actions.try_send(job).is_err()
            {
                tracing::warn!("account action queue full; a failure was dropped");
            }
        }
    }
}
