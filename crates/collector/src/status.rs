//! The collector's live status: what `/status` and `/metrics` render. Plain data, cheap to
//! snapshot; counters survive collector restarts and reset with the process.

use std::sync::{Arc, Mutex};

use tokio::sync::watch;

/// The single-consumer limitation, stated wherever the status is shown.
pub const SINGLE_CONSUMER_NOTE: &str = "Run one consumer per CPA: HTTP and RESP pops remove events from CPA's queue, so \
another manager or Redis client popping the same CPA takes events this server never sees (subscribers each receive \
every event, but while any subscriber exists CPA queues nothing for pollers).";

/// The hint shown when a RESP client reached an HTTP endpoint.
pub const RESP_OVER_HTTP_HINT: &str = "The upstream answered RESP with HTTP: it is an HTTP reverse proxy or not CPA's \
API port. Use collector mode `http`, or point the URL at CPA's port directly (default 8317), not through an HTTP \
reverse proxy.";

/// `collector.collector` in `/status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CollectorState {
    /// Not running: before the first start or after `stop`/`shutdown`.
    #[default]
    Stopped,
    /// A run was started (or `auto` moved on to the next transport) and is connecting to CPA.
    Starting,
    /// Taking events off CPA's queue.
    Running,
    /// The last attempt failed; `last_error` says why. The run retries with backoff, or
    /// pauses when CPA rejected the key (`auth_rejected`).
    Error,
}

impl CollectorState {
    /// The state's name as `/status` spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            CollectorState::Stopped => "stopped",
            CollectorState::Starting => "starting",
            CollectorState::Running => "running",
            CollectorState::Error => "error",
        }
    }
}

/// A snapshot of the collector (server-core §3.9 `collector.*` plus diagnostics).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CollectorStatus {
    /// Whether the collector runs, starts, stopped or fails.
    pub state: CollectorState,
    /// CPA base URL of the current run; "" before the first start.
    pub upstream: String,
    /// Configured mode (`auto`/`subscribe`/`http`/`resp`).
    pub mode: String,
    /// Active transport (`subscribe`/`http`/`resp`); "" until chosen.
    pub transport: String,
    /// RESP list key and pub/sub channel in use.
    pub queue: String,
    /// Unix ms of the last non-empty read from CPA; 0 = never.
    pub last_consumed_at_ms: i64,
    /// Unix ms of the last commit that inserted or skipped at least one event; 0 = never.
    pub last_inserted_at_ms: i64,
    /// Items received from CPA since the process started.
    pub total_consumed: u64,
    /// Events stored for the first time.
    pub total_inserted: u64,
    /// Events already stored (same event hash) and skipped.
    pub total_skipped: u64,
    /// Items kept as dead letters (not decodable as a usage event).
    pub total_dead_lettered: u64,
    /// `<stage>: <error>`; "" when the last attempt succeeded.
    pub last_error: String,
    /// Items received from CPA and held in memory because the store refused them.
    pub pending_items: usize,
    /// CPA rejected the management key; the run is paused until restarted with new settings.
    pub auth_rejected: bool,
    /// Why `auto` left a transport (for example the RESP error that made it use HTTP).
    pub fallback_reason: String,
    /// Pop polls in a row that found CPA's queue empty.
    pub consecutive_empty_polls: u64,
    /// CPA announced `{"support_refresh":true}` on the current subscription.
    pub support_refresh: bool,
    /// `{"refresh":true}` messages received (auth-file caches should be dropped on change).
    pub refresh_count: u64,
    /// Active problems, each a sentence that names the fix.
    pub warnings: Vec<String>,
    /// Always [`SINGLE_CONSUMER_NOTE`].
    pub note: &'static str,
}

/// Shared, cloneable access to the live status.
#[derive(Clone)]
pub struct StatusHandle {
    inner: Arc<Mutex<CollectorStatus>>,
    refresh: Arc<watch::Sender<u64>>,
}

impl StatusHandle {
    /// Status before the first start: stopped, showing the startup mode and queue.
    pub fn new(mode: &str, queue: &str) -> StatusHandle {
        let status = CollectorStatus {
            mode: mode.to_string(),
            queue: queue.to_string(),
            note: SINGLE_CONSUMER_NOTE,
            ..CollectorStatus::default()
        };
        StatusHandle {
            inner: Arc::new(Mutex::new(status)),
            refresh: Arc::new(watch::channel(0).0),
        }
    }

    /// A copy of the current status.
    pub fn snapshot(&self) -> CollectorStatus {
        self.lock().clone()
    }

    /// Changes each time CPA sends `{"refresh":true}`; holders of auth-file caches watch it.
    pub fn refresh_notifications(&self) -> watch::Receiver<u64> {
        self.refresh.subscribe()
    }

    pub(crate) fn update(&self, change: impl FnOnce(&mut CollectorStatus)) {
        let mut status = self.lock();
        change(&mut status);
        let hint_needed = status.last_error.contains("unsupported RESP prefix 'H'")
            || status
                .fallback_reason
                .contains("unsupported RESP prefix 'H'");
        set_warning(&mut status.warnings, RESP_OVER_HTTP_HINT, hint_needed);
    }

    pub(crate) fn refreshed(&self) {
        let count = {
            let mut status = self.lock();
            status.refresh_count += 1;
            status.refresh_count
        };
        self.refresh.send_replace(count);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, CollectorStatus> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl std::fmt::Debug for StatusHandle {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_tuple("StatusHandle")
            .field(&self.snapshot())
            .finish()
    }
}

/// Adds or removes one warning sentence, keeping the others.
pub(crate) fn set_warning(warnings: &mut Vec<String>, warning: &str, active: bool) {
    let present = warnings.iter().position(|existing| existing == warning);
    match (present, active) {
        (None, true) => warnings.push(warning.to_string()),
        (Some(index), false) => {
            warnings.remove(index);
        }
        _ => {}
    }
}

/// Removes every warning that starts with `prefix`, then adds `warning` if given.
pub(crate) fn replace_warning(warnings: &mut Vec<String>, prefix: &str, warning: Option<String>) {
    warnings.retain(|existing| !existing.starts_with(prefix));
    if let Some(warning) = warning {
        warnings.push(warning);
    }
}
